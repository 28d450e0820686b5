"""A wheel install renders reports: the built-in templates are package data (issue 19), read
from the installed package's folder, not from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "run"


def build_wheel(tmp: Path) -> Path:
    """labrunner's wheel, built from a copy of the source (the worktree gets no build/ folder).
    Without an index: the dev group's setuptools (>= 77) builds it in this venv."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "labrunner", src / "labrunner", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.fail(f"pip wheel failed (the dev group needs setuptools >= 77: `make setup`):\n{res.stderr[-2000:]}")
    return next(out.glob("labrunner-*.whl"))


@pytest.mark.slow
def test_the_wheel_carries_the_templates_and_renders_a_report_from_them(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = ROOT / "labrunner" / "templates"
    expected = {p.relative_to(ROOT).as_posix() for p in templates.rglob("*") if p.is_file()
                and "__pycache__" not in p.parts}
    assert {"labrunner/templates/report.html", "labrunner/templates/partials/stream.html",
            "labrunner/templates/print.css", "labrunner/templates/overview.html"} <= expected
    assert expected <= names, f"not in the wheel: {sorted(expected - names)}"

    # the unpacked wheel as the only labrunner on the path (the venv's dependencies stay)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    shutil.copytree(FIXTURE, tmp_path / "output")
    run_dir = next((tmp_path / "output").glob("*/manifest.json")).parent
    code = ("import sys; from pathlib import Path; import labrunner; from labrunner.report import render\n"
            "assert Path(labrunner.__file__).is_relative_to(sys.argv[1]), labrunner.__file__\n"
            "assert render.BUILTIN_TEMPLATES.is_relative_to(sys.argv[1]), render.BUILTIN_TEMPLATES\n"
            "print(render.render_html(Path(sys.argv[2]), lang='en'))\n")
    res = subprocess.run([sys.executable, "-c", code, str(site.resolve()), str(run_dir)], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    html = Path(res.stdout.strip()).read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "@page" in html  # base.html with print.css
    for heading in ("Contents", "1 Objectives", "Appendix"):  # partials/toc.html, objectives.html, appendix.html
        assert heading in html, heading
