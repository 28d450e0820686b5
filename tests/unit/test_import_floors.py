"""scripts/import_floors.py: labrunner's rooms import only downward (no cycle, no upward arrow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("import_floors", ROOT / "scripts" / "import_floors.py")
assert _spec is not None and _spec.loader is not None
floors_mod = importlib.util.module_from_spec(_spec)
sys.modules["import_floors"] = floors_mod
_spec.loader.exec_module(floors_mod)


def test_labrunner_has_no_import_cycle_and_no_upward_arrow(capsys: pytest.CaptureFixture[str]) -> None:
    assert floors_mod.main(["--src", str(ROOT)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(" 0 cycles, 0 upward arrows"), first


def _room(src: Path, rel: str, text: str) -> None:
    path = src / "labrunner" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_function_level_import_that_climbs_back_is_a_cycle(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _room(tmp_path, "__init__.py", "")
    _room(tmp_path, "errors.py", "")
    _room(tmp_path, "config/__init__.py", "from labrunner.errors import *\n")
    _room(tmp_path, "config/schema.py", "def check():\n    from labrunner.capture import rule\n")
    _room(tmp_path, "capture.py", "from .config import schema\nfrom labrunner import errors\n")
    _room(tmp_path, "cli.py", "from labrunner import capture\nif TYPE_CHECKING:\n    from labrunner import config\n")
    assert floors_mod.main(["--src", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "5 rooms on 3 floors, 6 arrows, 1 cycles, 2 upward arrows"
    assert "cycle: capture ↔ config" in out
    assert "upward arrow: config → capture (labrunner/config/schema.py)" in out
    # without the import under TYPE_CHECKING, cli no longer points at config
    assert floors_mod.main(["--src", str(tmp_path), "--runtime"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("5 rooms on 3 floors, 5 arrows, 1 cycles, 2 upward arrows")
