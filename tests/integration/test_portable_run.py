"""A run folder is self-contained and portable (issue 15, student-ta review D2/D3), against the
sandbox: a re-run of one scenario makes a run folder holding every result its report uses, a
copied and renamed folder renders the same report, and one report never mixes two labs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from labfiles import cli, write_lab  # type: ignore[import-not-found]  # same folder

pytestmark = pytest.mark.integration

TWO = ["telnet-smtp", "pop3"]
SECOND_PROFILE = "  other:\n    from_sandbox: true\n    instance: {instance}\n"


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text("utf-8"))


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def runs(sandbox: dict[str, Any], sandbox_instance: str,
         tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two scenarios, then one of them again: (lab.yaml, first run, second run)."""
    lab = write_lab(tmp_path_factory.mktemp("portable"), sandbox_instance,
                    profiles=SECOND_PROFILE.format(instance=sandbox_instance))
    first = Path(json.loads(cli(lab, "run", *TWO, "--no-pdf", "--json", check=True).stdout)["run"])
    second = Path(json.loads(cli(lab, "run", "telnet-smtp", "--no-pdf", "--json", check=True).stdout)["run"])
    return lab, first, second


def test_a_rerun_of_one_scenario_holds_every_result_of_its_report(runs: tuple[Path, Path, Path]) -> None:
    _lab, first, second = runs
    entries = {e["name"]: e for e in manifest(second)["scenarios"]}
    assert list(entries) == TWO
    pop3 = entries["pop3"]
    assert pop3["reused"] and pop3["run_id"] == first.name and pop3["dir"] == "pop3"
    for name in TWO:
        assert entries[name]["dir"] == name
        for f in ("capture.pcapng", "transcript.json", "analysis.json"):
            assert (second / name / f).stat().st_size == entries[name]["files"][f]["size"], (name, f)
    # hard links to the first run's files: no second copy of the capture, still private
    mine, theirs = (second / "pop3" / "capture.pcapng").stat(), (first / "pop3" / "capture.pcapng").stat()
    assert (mine.st_ino, mine.st_dev) == (theirs.st_ino, theirs.st_dev) and mine.st_mode & 0o077 == 0


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed")
def test_a_copied_and_renamed_run_folder_renders_the_same_report(
        runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    lab, first, second = runs
    # what a TA does: unzip the handed-in output/latest under the student's id, elsewhere
    handed_in = tmp_path / "handed-in" / "2021210999-lab5"
    shutil.copytree(second, handed_in, symlinks=True)
    cli(lab, "report", str(second), check=True)
    original = pdf_text(second / "report.pdf")
    # the output folder the run came from is gone meanwhile: the copy needs nothing of it
    moved = first.parent.with_name("output-away")
    first.parent.rename(moved)
    try:
        res = cli(lab, "report", str(handed_in))
    finally:
        moved.rename(first.parent)
    assert res.returncode == 0, res.stderr
    copy = pdf_text(handed_in / "report.pdf")
    assert copy == original
    assert "未生成" not in copy and "文件不存在" not in copy  # not the hollow report of D2
    assert f"运行 {first.name}，环境配置 sandbox" in copy.replace("\n", "")  # pop3's section says where from


def test_a_run_on_another_profile_does_not_carry_over_results_of_this_one(
        runs: tuple[Path, Path, Path]) -> None:
    lab, _first, _second = runs
    third = Path(json.loads(cli(lab, "run", "-p", "other", "telnet-smtp", "--no-pdf", "--json",
                                check=True).stdout)["run"])
    doc = manifest(third)
    assert [e["name"] for e in doc["scenarios"]] == ["telnet-smtp"]  # pop3 was made on `sandbox`
    assert doc["scenarios"][0]["origin"]["profile"] == "other"


def test_latest_being_a_folder_stops_the_run_before_it_starts(runs: tuple[Path, Path, Path]) -> None:
    lab, first, _second = runs
    output = first.parent
    latest = output / "latest"
    was = os.readlink(latest)
    latest.unlink()
    latest.mkdir()
    before = sorted(p.name for p in output.iterdir())
    try:
        res = cli(lab, "run", "telnet-smtp", "--no-pdf")
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith(f"labrunner: error: {latest} is a folder, not the link")
        assert "Traceback" not in res.stderr
        assert sorted(p.name for p in output.iterdir()) == before  # no run folder, no .latest tmp
    finally:
        latest.rmdir()
        latest.symlink_to(was)
