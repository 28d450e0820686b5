"""Hostile names and paths: nothing a lab file, a scenario file name or the command line says can
make a run write outside its output folder. (Names inside the run folder: test_runfolder.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labrunner import cli
from labrunner.config.load import load_lab, load_scenarios
from labrunner.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parents[2]
LAB = """default_profile: p
scenarios_dir: scenarios
output_dir: output
report: {{school: S, course: C, lab: L, student: {{name: N, id: "1", class: K}}}}
profiles:
  p:
    target: {{host: 192.0.2.1, user: u}}
    servers: {{smtp: {{host: smtp.example.com, plain: 25}}}}
    account: {{address: a@example.com, secret: {{env: LR_UNUSED}}}}
{extra}"""


def make_lab(folder: Path, extra: str = "", scenario_files: tuple[str, ...] = ("plain-smtp.yaml",)) -> Path:
    (folder / "scenarios").mkdir(parents=True)
    for name in scenario_files:
        shutil.copy(REPO / "scenarios" / "plain-smtp.yaml", folder / "scenarios" / name)
    (folder / "lab.yaml").write_text(LAB.format(extra=extra), encoding="utf-8")
    return folder / "lab.yaml"


def test_dot_files_never_become_scenarios(tmp_path: Path) -> None:
    """`..yaml` and `...yaml` would be the scenario names `.` and `..`: hidden files are skipped."""
    lab = load_lab(make_lab(tmp_path, scenario_files=("plain-smtp.yaml", "..yaml", "...yaml", ".x.yaml")))
    assert [s.name for s in load_scenarios(lab, None)] == ["plain-smtp"]


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "/etc/passwd", "plain-smtp/../../x"])
def test_a_scenario_named_like_a_path_on_the_command_line_is_refused(
        tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    lab = make_lab(tmp_path)
    assert cli.main(["run", name, "-c", str(lab)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"labrunner: error: no scenario named {name!r}")
    assert err[0].endswith("available: plain-smtp")
    assert not (tmp_path / "output").exists() and "Traceback" not in "".join(err)
    with pytest.raises(UsageError):
        load_scenarios(load_lab(lab), [name])


@pytest.mark.parametrize("name", ["..", "...", ".hidden", "../x", "-rf"])
def test_an_inventory_name_that_is_no_folder_name_is_refused_when_the_lab_is_read(tmp_path: Path, name: str) -> None:
    extra = f"""inventory:
  - {{name: "{name}", target: {{host: 192.0.2.2, user: u}}, account: {{address: b@example.com, secret: {{env: X}}}}}}
"""
    with pytest.raises(ConfigError) as info:
        load_lab(make_lab(tmp_path, extra))
    assert "inventory[1].name: must be a folder name" in str(info.value)
