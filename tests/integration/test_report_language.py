"""The report's language against the real sandbox (issue 15): an error the run recorded is
said in Chinese in a Chinese report, in English in an English one, beside each other."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from labfiles import cli, write_lab  # type: ignore[import-not-found]  # same folder

from labrunner.sandbox.faults import block_port, unblock_port

pytestmark = pytest.mark.integration


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_port_25_blocked_is_explained_in_chinese_with_the_unblocking(
        sandbox: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> None:
    lab = write_lab(tmp_path, sandbox_instance)
    block_port(sandbox_instance, 25)
    try:
        res = cli(lab, "run", "plain-smtp", "--json")
    finally:
        unblock_port(sandbox_instance, 25)
    assert res.returncode == 1, res.stdout + res.stderr
    run_dir = Path(json.loads(res.stdout)["run"])
    text = " ".join(pdf_text(run_dir / "report.pdf").split())
    assert "出站 25 端口被封禁了" in text and "25 端口解封" in text
    assert "cannot be reached from the target" not in text and "outbound port 25" not in text
    # the English report, beside the Chinese one, says it in English
    cli(lab, "report", "--lang", "en", str(run_dir), check=True)
    english = " ".join(pdf_text(run_dir / "report.en.pdf").split())
    assert "outbound port 25 is blocked" in english and "unblock port 25" in english
    assert " ".join(pdf_text(run_dir / "report.pdf").split()) == text
