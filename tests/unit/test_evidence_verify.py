"""`labrunner verify` on input it cannot use (exit 2, one line, no traceback), and its rule for
hidden values (no sandbox needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labrunner.evidence.verify import _same_text
from labrunner.secrets import REDACTED


def _verify(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", "verify", str(target)], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    res = _verify(tmp_path)
    assert res.returncode == 2 and "no manifest.json here: not a run folder" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_a_missing_file(tmp_path: Path) -> None:
    res = _verify(tmp_path / "report.pdf")
    assert res.returncode == 2 and "no such file" in res.stderr


def test_a_pdf_without_evidence(tmp_path: Path) -> None:
    import weasyprint

    weasyprint.HTML(string="<p>a report from before issue 16</p>").write_pdf(tmp_path / "old.pdf")
    res = _verify(tmp_path / "old.pdf")
    assert res.returncode == 2 and "this PDF carries no evidence (no attached manifest.json)" in res.stderr


@pytest.mark.parametrize(("report", "capture", "same"), [
    ("AUTH PLAIN " + REDACTED, "AUTH PLAIN " + REDACTED, True),
    ("subject: " + REDACTED + " test", "subject: XXXXXXXX test", True),  # a secret form overwritten
    ("PASS hunter2", "PASS " + REDACTED, True),  # a report made with show_credentials
    ("220 smtp.lab.test ESMTP", "220 qq.com ESMTP", False),
    ("Cookie: " + REDACTED, "Cookie: a\nX-Forged: 1", False),  # a hidden value is one line at most
])
def test_hidden_values_match_the_other_side_on_their_line(report: str, capture: str, same: bool) -> None:
    assert _same_text(report, capture) is same


def test_a_damaged_analysis_is_a_difference_not_unusable_input(tmp_path: Path) -> None:
    import json

    run = tmp_path / "20261205-120000"
    (run / "plain-smtp").mkdir(parents=True)
    (run / "plain-smtp" / "analysis.json").write_text("{not json", "utf-8")
    (run / "plain-smtp" / "sanitized.pcapng").write_bytes(b"\x0a\x0d\x0d\x0a")
    files = {f: {"sha256": __import__("hashlib").sha256((run / "plain-smtp" / f).read_bytes()).hexdigest()}
             for f in ("analysis.json", "sanitized.pcapng")}
    (run / "manifest.json").write_text(json.dumps({"run_id": run.name, "scenarios": [
        {"name": "plain-smtp", "run_id": run.name, "dir": f"{run.name}/plain-smtp", "files": files}]}), "utf-8")
    res = _verify(run)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "DIFF  plain-smtp/analysis.json:" in res.stdout and "not readable JSON" in res.stdout
