"""F5: a scenario's attachment is a file of the project (no absolute path, no `..`, no link out),
refused at validate time with file:line:col; the message a step sends is not written whole into
transcript.json (size, sha256, content types and redacted headers instead)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sessions_faults import make_ctx, smtp_server  # type: ignore[import-not-found]

from labrunner.config.model import Attachment, MessageSpec, SmtpStep
from labrunner.errors import ExitStatus
from labrunner.run.scenario import write_transcript
from labrunner.sessions import run_step

STEP = """title: att
objective: att
steps:
  - smtp:
      security: plain
      auth: none
      message:
        subject: hi
        attachments:
          - {{name: a.txt, path: {path}}}
"""


def project(tmp_path: Path, path: str) -> Path:
    (tmp_path / "scenarios").mkdir(parents=True, exist_ok=True)
    (tmp_path / "scenarios" / "att.yaml").write_text(STEP.format(path=path), encoding="utf-8")
    (tmp_path / "lab.yaml").write_text("profiles:\n  sandbox: {from_sandbox: true}\n", encoding="utf-8")
    return tmp_path


def validate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", "validate", "-c", "lab.yaml"], cwd=root,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("path", "says"), [
    ("/etc/hostname", "an absolute path is not allowed here"),
    ("~/.ssh/id_ed25519", "an absolute path is not allowed here"),
    ("../outside.txt", "'..' is not allowed here"),
    ("files/../../outside.txt", "'..' is not allowed here"),
    ("link.txt", "a symbolic link to a file outside the project folder"),
    ("linked-dir/secret.txt", "a symbolic link to a file outside the project folder"),
])
def test_an_attachment_outside_the_project_is_a_located_error(tmp_path: Path, path: str, says: str):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET-LINE\n")
    root = project(tmp_path / "proj", path)
    (tmp_path / "proj" / "outside.txt").write_text("x")
    os.symlink(outside / "secret.txt", root / "scenarios" / "link.txt")
    os.symlink(outside, root / "scenarios" / "linked-dir")
    res = validate(root)
    assert res.returncode == ExitStatus.USAGE, res.stdout + res.stderr
    line = res.stderr.strip().splitlines()[0]
    assert line.startswith("scenarios/att.yaml:10:33: steps[1].smtp.message.attachments[1].path: "), line
    assert says in line, line
    assert "TOP-SECRET" not in res.stderr and str(outside) not in res.stderr  # neither content nor target


def test_an_attachment_in_the_project_is_fine_also_through_a_link_inside_it(tmp_path: Path):
    root = project(tmp_path, "files/a.txt")
    (root / "scenarios" / "files").mkdir()
    (root / "shared.txt").write_text("shared")
    os.symlink(root / "shared.txt", root / "scenarios" / "files" / "a.txt")  # to lab.yaml's folder
    res = validate(root)
    assert res.returncode == 0, res.stderr


def test_the_sent_message_is_summed_up_not_written(tmp_path: Path):
    secret_text = "PRIVATE-KEY-MATERIAL-0123456789"
    step = SmtpStep(security="plain", auth="none", message=MessageSpec(
        subject="report s3cret-Value!", text="hello",
        attachments=(Attachment(name="id_ed25519", content=secret_text),)))
    ctx = make_ctx(tmp_path, smtp_server({}))
    result = run_step(step, ctx)
    assert result.ok, result.error
    assert result.body is not None and "UFJJVkFURS1LRVkt" in result.body  # in memory: tests compare it
    write_transcript(tmp_path, "att", [result])
    written = (tmp_path / "transcript.json").read_text("utf-8")
    for form in (secret_text, base64.b64encode(secret_text.encode()).decode()[:16], "s3cret-Value!"):
        assert form not in written, form
    (step_doc,) = json.loads(written)["steps"]
    assert "body" not in step_doc
    message = step_doc["message"]
    assert message["size"] == len(result.body.encode()) and len(message["sha256"]) == 64
    headers = dict(message["headers"])
    assert headers["Subject"] == "report «redacted»" and headers["Message-ID"] == message["message_id"]
    assert message["subject"] == "report «redacted»"
    assert message["parts"] == ["text/plain", "application/octet-stream"]
