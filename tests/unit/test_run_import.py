"""`labrunner run --import` with only imported scenarios selected: nothing runs on the target,
so it is not connected to at all (no SSH password, no host key, no network needed).

The target of the profile is a TCP port of this test on 127.0.0.1, with no SSH server behind it:
any connection attempt stays in its backlog, and is seen there after the run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPS = ROOT / "tests" / "fixtures" / "captures"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@pytest.fixture
def target() -> Iterator[socket.socket]:
    """A listening port standing for the target's sshd; nothing ever answers on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def _attempts(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_a_run_of_imported_captures_only_never_connects_to_the_target(tmp_path: Path, target: socket.socket) -> None:
    port = target.getsockname()[1]
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "captures").mkdir()
    shutil.copy(CAPS / "smtp-plain.pcapng", tmp_path / "captures")
    (tmp_path / "scenarios" / "smtp.yaml").write_text(
        "title: {zh: 发信, en: Sending}\nsteps:\n  - smtp: {server: smtp, security: plain}\n", encoding="utf-8")
    (tmp_path / "scenarios" / "other.yaml").write_text(
        "title: {zh: 其他, en: Other}\nsteps:\n  - smtp: {server: smtp, security: plain}\n", encoding="utf-8")
    # The target wants a password nobody set and has no known host key: connecting would fail.
    (tmp_path / "lab.yaml").write_text(f"""default_profile: ecs
report: {{school: S, course: C, lab: L, student: {{name: N, id: "1", class: K}}, lang: en}}
profiles:
  ecs:
    target: {{host: 127.0.0.1, port: {port}, user: student, password: {{env: LABRUNNER_TEST_SSH_PW}},
             known_hosts: {tmp_path / "known_hosts"}, connect_timeout: 3}}
    servers:
      smtp: {{host: 127.0.0.1, plain: 25}}
    account: {{address: student@example.org, secret: {{env: LABRUNNER_TEST_MAIL_PW}}}}
""", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "LABRUNNER_TEST_SSH_PW"}
    env["LABRUNNER_TEST_MAIL_PW"] = "mail-Pa55"
    res = subprocess.run([sys.executable, "-m", "labrunner", "run", "--no-pdf",
                          "--import", "smtp=captures/smtp-plain.pcapng", "-c", str(tmp_path / "lab.yaml")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert _attempts(target) == 0, res.stderr
    assert res.returncode == 0, res.stderr
    assert "connecting to" not in res.stderr
    run = tmp_path / "output" / "latest"
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    (entry,) = manifest["scenarios"]
    assert entry["status"] == "passed" and entry["imported"]["capture"] == "smtp-plain.pcapng"
    assert entry["frames"] == 34
    assert "EHLO" in (run / "report.html").read_text(encoding="utf-8")
