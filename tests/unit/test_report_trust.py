"""A run folder is data, never code (security review F3, F12, F13, F6): `labrunner report` on a
folder someone handed in runs nothing, fetches nothing, and reads or writes nothing outside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labrunner import cli
from labrunner.errors import ReportError
from labrunner.report import render_html

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run"
RUN_ID = "20261126-141500"
SSTI = '{% set x = cycler.__init__.__globals__.os.system("id > PROOF") %}SSTI-RAN'


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "output")
    return tmp_path / "output" / RUN_ID


def edit_manifest(run_dir: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = run_dir / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _hostile_templates(folder: Path, proof: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text(SSTI.replace("PROOF", str(proof)), encoding="utf-8")
    return folder


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_templates_named_in_the_manifest_are_never_used(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # F3: the review's reproduction, a folder carrying its own template
    proof = tmp_path / "ssti-proof"
    tpl = _hostile_templates(run_dir / "tpl", proof)
    monkeypatch.chdir(run_dir.parent.parent)
    value = str(tpl) if where == "absolute" else f"output/{RUN_ID}/tpl"
    edit_manifest(run_dir, lambda m: m["report"].update(templates=value))
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == 0
    assert not proof.exists()
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "SSTI-RAN" not in html and "2 实验环境" in html  # the built-in templates


def test_a_template_runs_in_jinjas_sandbox(run_dir: Path, tmp_path: Path) -> None:
    # even a folder given on purpose (--templates, lab.yaml) cannot reach Python's globals
    proof = tmp_path / "ssti-proof"
    tpl = _hostile_templates(tmp_path / "given", proof)
    with pytest.raises(ReportError, match="may not do"):
        render_html(run_dir, templates_dir=tpl)
    assert not proof.exists()


def test_the_sandboxed_templates_keep_autoescape(run_dir: Path) -> None:
    edit_manifest(run_dir, lambda m: m["report"]["student"].update(name="<b>x</b>"))
    html = render_html(run_dir).read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
