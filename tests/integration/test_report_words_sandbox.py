"""F2 and D1 against the sandbox: the password a student pastes into the notes and reflections
(as it is, in base64 after the 334 prompt, as AUTH PLAIN) reaches no file of the run, and notes
edited after the run are in `labrunner report`'s PDF, still without the password."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from labfiles import SCENARIOS, cli, write_lab  # type: ignore[import-not-found]  # same folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import secretscan  # type: ignore[import-not-found]  # tests/secretscan.py

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def pasted(password: str, address: str, marker: str) -> str:
    blob = base64.b64encode(b"\0" + address.encode() + b"\0" + password.encode()).decode()
    answer = base64.b64encode(password.encode()).decode()
    return (f"{marker}\n\n我的授权码：{password}\n\n```\nC: AUTH PLAIN {blob}\n"
            f"S: 334 UGFzc3dvcmQ6\nC: {answer}\n```\n\n{password}\n")


def scenario_with_notes(folder: Path, notes: str) -> None:
    folder.mkdir(exist_ok=True)
    head = (SCENARIOS / "plain-smtp.yaml").read_text("utf-8").split("\nnotes:")[0]
    (folder / "plain-smtp.yaml").write_text(
        f"{head}\nnotes:\n  zh: {json.dumps(notes, ensure_ascii=False)}\n", "utf-8")


def test_pasted_password_is_in_no_file_and_edited_notes_reach_the_pdf(sandbox: dict[str, Any],
                                                                      sandbox_instance: str, tmp_path: Path) -> None:
    account = sandbox["account"]
    password, users = account["password"], [account["address"], account["user"]]
    scenario_with_notes(tmp_path / "sc", pasted(password, account["address"], "FIRST-NOTES"))
    lab = write_lab(tmp_path, sandbox_instance, scenarios_dir="sc")
    text = lab.read_text("utf-8").replace(
        "  lang: zh\n", f"  lang: zh\n  reflections: {{zh: {json.dumps(pasted(password, users[0], 'MY-WORDS'))}}}\n")
    lab.write_text(text, "utf-8")
    res = cli(lab, "run", check=True)
    assert password not in res.stdout + res.stderr
    output = tmp_path / "output"
    run_dir = (output / "latest").resolve()
    pdf_text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(run_dir / "report.pdf"), "-"],
                              capture_output=True, text=True, check=True).stdout
    assert "FIRST-NOTES" in pdf_text and "MY-WORDS" in pdf_text  # the words are there, the password not
    assert len(secretscan.scanned_files(output)) >= 5
    assert secretscan.scan_tree(output, password, users) == []

    # the student edits the notes after the run, then renders the report again
    scenario_with_notes(tmp_path / "sc", pasted(password, account["address"], "EDITED-NOTES"))
    res = cli(lab, "report", check=True)
    assert password not in res.stdout + res.stderr
    pdf_text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(run_dir / "report.pdf"), "-"],
                              capture_output=True, text=True, check=True).stdout
    assert "EDITED-NOTES" in pdf_text and "FIRST-NOTES" not in pdf_text
    assert secretscan.scan_tree(output, password, users) == []
