"""Ctrl-C at every moment of a run (security review F14), and a run killed outright.

Each interrupt is sent when a progress line shows the run has reached a given moment (an event,
not a delay), to the whole process group as a terminal does. Whatever the moment: exit 130, the
manifest says interrupted, and the summary and the manifest give every scenario the same status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from labfiles import write_lab  # type: ignore[import-not-found]  # same folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PICKED = ["plain-smtp", "telnet-smtp", "pop3"]


def _run_until(lab: Path, marker: str, sig: int) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.Popen([sys.executable, "-m", "labrunner", "run", *PICKED, "--json", "--no-pdf", "-c", str(lab)],
                            cwd=lab.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(marker):
            os.killpg(proc.pid, sig)
            break
    else:
        proc.wait(60)
        raise AssertionError(f"the run never said {marker!r}:\n" + "".join(seen))
    out, err = proc.communicate(timeout=120)
    said = "".join(seen) + err
    summary = json.loads(out) if out.strip() else None
    return proc.returncode, summary, said


def _runs(lab: Path) -> list[Path]:
    out = lab.parent / "output"
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink()) if out.is_dir() else []


@pytest.mark.parametrize("marker", [
    "[1/3] plain-smtp: sessions",
    "[1/3] plain-smtp: stopping capture",
    "[2/3] telnet-smtp: starting capture",
    "[1/3] plain-smtp: passed",          # a scenario settling while the next ones run
    "[3/3] pop3: stopping capture",
    "[3/3] pop3: analysing",             # the last analyses, in the workers
    "[3/3] pop3: passed",
    "rendering the report",
])
def test_ctrl_c_at_every_moment(sandbox: dict[str, Any], sandbox_instance: str, tmp_path: Path,
                                marker: str) -> None:
    lab = write_lab(tmp_path, sandbox_instance)
    code, summary, said = _run_until(lab, marker, signal.SIGINT)
    assert code == 130, said
    assert summary is not None and summary["interrupted"] is True, said
    (run_dir,) = _runs(lab)
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    assert manifest["interrupted"] is True and manifest["ended"], said
    in_manifest = {e["name"]: e["status"] for e in manifest["scenarios"] if not e.get("reused")}
    in_summary = {r["scenario"]: r["status"] for r in summary["scenarios"]}
    assert in_summary == in_manifest and list(in_summary) == PICKED, said
    assert "running" not in in_summary.values(), said
    # every status the progress display printed is the one kept
    for name, status in in_summary.items():
        if f"{name}: passed" in said:
            assert status == "passed", said


def test_ctrl_c_while_connecting_writes_nothing(sandbox: dict[str, Any], sandbox_instance: str,
                                                 tmp_path: Path) -> None:
    lab = write_lab(tmp_path, sandbox_instance)
    code, _summary, said = _run_until(lab, "connecting to", signal.SIGINT)
    assert code == 130, said
    assert len(_runs(lab)) <= 1  # either no run yet, or one that says it was interrupted
    for run_dir in _runs(lab):
        assert json.loads((run_dir / "manifest.json").read_text("utf-8"))["interrupted"] is True


def test_kill_9_keeps_the_list_of_captured_scenarios(sandbox: dict[str, Any], sandbox_instance: str,
                                                     tmp_path: Path) -> None:
    """Killed outright once the second scenario starts: the first one's capture and sessions are
    done, and the manifest on disk lists it (runfolder reads "running" of a dead run as
    interrupted), with the second one."""
    lab = write_lab(tmp_path, sandbox_instance)
    code, _summary, said = _run_until(lab, "[2/3] telnet-smtp: starting capture", signal.SIGKILL)
    assert code == -signal.SIGKILL, said
    (run_dir,) = _runs(lab)
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    names = [e["name"] for e in manifest["scenarios"]]
    assert names[:2] == ["plain-smtp", "telnet-smtp"], (names, said)
    assert (run_dir / "plain-smtp" / "transcript.json").is_file()
    from labrunner import runfolder

    latest = runfolder.latest_results(lab.parent / "output")
    assert latest["plain-smtp"].status in ("passed", "interrupted")
    # The killed run's hold on the target (capture.hold_target) goes once the target's sshd has
    # seen the connection die; the next test's run needs the host free.
    netns = sandbox["ecs"]["netns"]
    deadline = time.monotonic() + 30
    while subprocess.run(["ip", "netns", "exec", netns, "flock", "-n", "/etc/hosts", "true"]).returncode:
        assert time.monotonic() < deadline, "the killed run's lock on the target was never released"
        time.sleep(0.2)
