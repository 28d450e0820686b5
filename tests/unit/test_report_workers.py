"""Reports of a class run rendered in worker processes (report/workers.py): out of the class
run's process, with its redactor, and with a clear line when a render fails."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from labrunner.errors import LabError
from labrunner.report.workers import ReportWorkers, worker_count
from labrunner.secrets import Redactor

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run"
RUN_ID = "20261126-141500"
SECRET = "S3cr3t-pw!x"


@pytest.fixture(scope="module")
def workers():  # type: ignore[no-untyped-def]
    with ReportWorkers(2) as pool:
        yield pool


def copy_run(tmp_path: Path, name: str) -> Path:
    shutil.copytree(FIXTURE, tmp_path / name)
    return tmp_path / name / RUN_ID


def test_reports_are_rendered_by_other_processes_with_the_runs_redactor(workers, tmp_path: Path) -> None:
    runs = [copy_run(tmp_path, name) for name in ("alice", "bob")]
    manifest = runs[0] / "manifest.json"
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    doc["scenarios"][4]["error"] = f"login failed for password {SECRET}"
    manifest.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    redactor = Redactor()
    redactor.add(SECRET, ["student@lab.test"])
    results = [workers.render(run, pdf=False, redact=redactor) for run in runs]
    for run, res in zip(runs, results, strict=True):
        assert res["html"] == run / "report.html" and res["pdf"] is None
        assert res["pid"] != os.getpid()  # not the GIL of the class run's process
    html = (runs[0] / "report.html").read_text(encoding="utf-8")
    assert SECRET not in html and "login failed for password «redacted»" in html


def test_a_failed_render_comes_back_as_one_line(workers, tmp_path: Path) -> None:
    run = copy_run(tmp_path, "carol")
    (run / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LabError) as err:
        workers.render(run, pdf=False)
    assert "manifest.json" in str(err.value) and "\n" not in str(err.value)


def test_no_more_workers_than_students_or_cores() -> None:
    assert worker_count(1) == 1
    assert 1 <= worker_count(64) <= (os.cpu_count() or 1)
