"""F15 (YAML) and F21: values Python cannot hold are located errors (exit 2), not crashes (exit 4);
a scenario file that links out of its folder is not read, so its lines are never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from labrunner.errors import ExitStatus

SCENARIO = "title: {title}\nobjective: o\norder: {order}\nsteps:\n  - smtp: {{security: plain, auth: none}}\n"


def validate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", "validate", "-c", "lab.yaml"], cwd=root,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def project(root: Path, **files: str) -> Path:
    (root / "scenarios").mkdir(parents=True)
    (root / "lab.yaml").write_text(files.pop("lab", "profiles:\n  sandbox: {from_sandbox: true}\n"), "utf-8")
    for name, text in files.items():
        (root / "scenarios" / f"{name}.yaml").write_text(text, "utf-8")
    return root


@pytest.mark.parametrize(("title", "order", "where", "says"), [
    ("t", "9" * 5000, "scenarios/s.yaml:3:8: ", "a number 5000 digits long"),
    ("t", "-" + "1" * 4400, "scenarios/s.yaml:3:8: ", "a number 4400 digits long"),
    ('"\\ud800"', "1", "scenarios/s.yaml:1:8: ", "lone surrogate"),
    ('"ok \\udfff"', "1", "scenarios/s.yaml:1:8: ", "the escape \\udfff"),
])
def test_values_python_cannot_hold_are_located_errors(tmp_path: Path, title: str, order: str, where: str,
                                                      says: str):
    res = validate(project(tmp_path, s=SCENARIO.format(title=title, order=order)))
    assert res.returncode == ExitStatus.USAGE, res.stderr
    assert res.stderr.startswith(where) and says in res.stderr.splitlines()[0], res.stderr
    assert "internal error" not in res.stderr and len(res.stderr) < 400


def test_a_lone_surrogate_in_lab_yaml_too(tmp_path: Path):
    lab = 'report: {student: {name: "\\ud83d"}}\nprofiles:\n  sandbox: {from_sandbox: true}\n'
    res = validate(project(tmp_path, lab=lab, s=SCENARIO.format(title="t", order=1)))
    assert res.returncode == ExitStatus.USAGE and res.stderr.startswith("lab.yaml:1:26: "), res.stderr


def test_a_scenario_linking_out_of_its_folder_is_not_read(tmp_path: Path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$saltsalt$hashhashhash:20228:0:99999:7:::\n")
    secret.chmod(0o600)
    root = project(tmp_path / "p", s=SCENARIO.format(title="t", order=1))
    os.symlink(secret, root / "scenarios" / "evil.yaml")
    os.symlink(root / "scenarios" / "s.yaml", root / "scenarios" / "same.yaml")  # inside: fine
    res = validate(root)
    assert res.returncode == ExitStatus.USAGE, res.stderr
    assert "evil.yaml:1:1: " in res.stderr and "outside the scenario folder" in res.stderr
    assert "same.yaml" not in res.stderr
    assert "hashhash" not in res.stderr and "root:" not in res.stderr and str(secret) not in res.stderr
