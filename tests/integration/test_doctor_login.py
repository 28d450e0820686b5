"""`labrunner doctor` logs in to each mail service the scenarios use, from the target, against
the sandbox's real Postfix and Dovecot: a wrong password (student-ta D6) or a missing ca_file
(D10) is caught before the run, not after five failed scenarios (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from labfiles import write_lab  # type: ignore[import-not-found]  # same folder

from labrunner.secrets import secret_forms

pytestmark = pytest.mark.integration

LOGINS = ["log in to SMTP smtp.lab.test:465", "log in to POP3 pop.lab.test:995", "log in to IMAP imap.lab.test:993"]


def qq_like(sandbox: dict[str, Any], *, ca: bool) -> str:
    """A profile written the way a student writes the `qq` one, pointing at the sandbox."""
    ecs = sandbox["ecs"]
    return (f"  myecs:\n"
            f"    target: {{host: {ecs['host']}, user: {ecs['user']}, key: {ecs['key']}, "
            f"host_key: \"{ecs['host_key']}\"}}\n"
            "    servers:\n"
            "      smtp: {host: smtp.lab.test, plain: 25, starttls: 587, tls: 465}\n"
            "      pop3: {host: pop.lab.test, plain: 110, tls: 995}\n"
            "      imap: {host: imap.lab.test, plain: 143, tls: 993}\n"
            "      web: {host: mail.lab.test, tls: 443}\n"
            f"    account: {{address: {sandbox['account']['address']}, secret: {{env: QQ_AUTH_CODE}}}}\n"
            + (f"    ca_file: {sandbox['ca_file']}\n" if ca else ""))


def doctor(lab: Path, code: str) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ, "QQ_AUTH_CODE": code}
    res = subprocess.run([sys.executable, "-m", "labrunner", "doctor", "-p", "myecs", "--json", "-c", str(lab)],
                         capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    doc = json.loads(res.stdout)
    return res.returncode, {c["name"]: c for c in doc["checks"]}, res.stdout + res.stderr


def test_doctor_logs_in_and_catches_a_wrong_password(sandbox: dict[str, Any], sandbox_instance: str,
                                                     tmp_path: Path) -> None:
    # (the logins passing, with the sandbox profile: test_run.py's test_doctor_on_a_healthy_target)
    lab = write_lab(tmp_path, sandbox_instance, profiles=qq_like(sandbox, ca=True))
    wrong = "wrongpassword123"
    rc, checks, out = doctor(lab, wrong)
    assert rc == 1
    assert [name for name, c in checks.items() if not c["ok"]] == LOGINS
    assert "535" in checks[LOGINS[0]]["detail"] and "-ERR" in checks[LOGINS[1]]["detail"]
    assert "wrong user name or password" in checks[LOGINS[2]]["detail"]
    assert "authorization code" in checks[LOGINS[1]]["fix"]
    for form in secret_forms(wrong):
        assert form not in out


def test_doctor_catches_a_missing_ca_file(sandbox: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> None:
    lab = write_lab(tmp_path, sandbox_instance, profiles=qq_like(sandbox, ca=False))
    rc, checks, _ = doctor(lab, sandbox["account"]["password"])
    assert rc == 1
    for name in LOGINS:
        assert "certificate was not accepted" in checks[name]["detail"] and "ca_file" in checks[name]["fix"]
