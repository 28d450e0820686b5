"""A Ctrl-C at the terminal reaches the whole foreground process group. A run that is stopping
still finishes the analyses of the scenarios it captured (run/schedule.py), so the tools
those analyses start — tshark, editcap — must not receive it: killed, they turned captured
scenarios into "failed: tshark exited with status -2" in the student's report.

Each case runs in a child Python of its own session, with subprocess.Popen wrapped to send
SIGINT to that child's process group right after starting a tool (as a Ctrl-C during the
tool's run would); the child itself only notes the signal.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPS = ROOT / "tests" / "fixtures" / "captures"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

PRELUDE = r"""
import os, signal, subprocess, sys
from pathlib import Path
signal.signal(signal.SIGINT, lambda *_: print("SIGINT", flush=True))  # reset to default in exec'd tools
_Popen = subprocess.Popen
class Popen(_Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        os.killpg(os.getpgrp(), signal.SIGINT)  # a Ctrl-C while the tool runs
subprocess.Popen = Popen
"""


def _child(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True, cwd=tmp_path,
                          start_new_session=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                                   "HOME": str(tmp_path)})


def test_a_ctrl_c_does_not_kill_the_analysis_tshark(tmp_path):
    res = _child(f"""
from labrunner.analysis import analyze
doc = analyze(Path({str(CAPS / "smtp-plain.pcapng")!r}), lang="en")
print("streams", len(doc["streams"]))
""", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "SIGINT" in res.stdout and "streams 1" in res.stdout


def test_a_ctrl_c_does_not_kill_editcap_finishing_a_capture(tmp_path):
    from test_analysis_captures import _packets, _write

    pcap = _write(tmp_path, _packets(), "capture")  # a plain pcap, as tcpdump streams it
    res = _child(f"""
from labrunner.capture import finalize
out = finalize(Path({str(pcap)!r}), None, Path({str(tmp_path / "final.pcapng")!r}))
print("size", out.stat().st_size > 0)
""", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "SIGINT" in res.stdout and "size True" in res.stdout
