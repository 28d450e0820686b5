"""Reports of a class run rendered in worker processes (report/workers.py): out of the class
run's process, with its redactor, and with a clear line when a render fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from labrunner.errors import LabError
from labrunner.report.overview import review_rows, verify_summary
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


def test_the_worker_verifies_the_report_for_the_overview_which_keeps_its_verdict(workers, tmp_path: Path) -> None:
    """The class overview's `labrunner verify` of each report (the captures analysed again) is
    done by the report's worker right after the render, not by the class's process at the end."""
    run = copy_run(tmp_path, "dave")
    res = workers.render(run, pdf=False, verify=True)
    assert res["verify"] == verify_summary(run)  # the cell the overview would have computed
    assert res["verify"]["status"] == "differs"  # recorded before sanitized captures existed
    folder = tmp_path / "class" / "20261126-150000"
    folder.mkdir(parents=True)
    row = {"name": "dave", "run": f"../../dave/{RUN_ID}", "report_pdf": None,
           "verify": {"status": "ok", "text": "6 scenario(s) match their captures", "differences": []}}
    review_rows([row], folder)
    assert row["verify"]["status"] == "ok"  # kept, not verified a second time
    assert row["mixed_runs"] == ["smtp-starttls: run 20261126-140210"]  # the rest of the review still done


def _ignores_sigint(pid: int) -> bool:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGINT - 1)))


def test_workers_start_with_the_pool_deaf_to_ctrl_c_and_a_dead_one_is_replaced(tmp_path: Path) -> None:
    """All workers exist once the pool does, ignoring SIGINT from their start (a Ctrl-C to the
    class run's process group while a worker was still importing killed it with a traceback and
    broke the pool for every later student); a worker that dies anyway (SIGKILL: out of memory)
    costs no report: the next render gets a new pool."""
    with ReportWorkers(2) as pool:
        pids = list(pool._pool._processes)
        assert len(pids) == 2
        assert all(_ignores_sigint(pid) for pid in pids)
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        run = copy_run(tmp_path, "dave")
        assert pool.render(run, pdf=False)["pid"] in pids  # still the same, living workers
        os.kill(pids[0], signal.SIGKILL)
        os.kill(pids[1], signal.SIGKILL)
        res = pool.render(run, pdf=False)
        assert res["html"] == run / "report.html" and res["pid"] not in pids
