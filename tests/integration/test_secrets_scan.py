"""Issue 13's "done when" scan: a full sandbox run of every default scenario with a mailbox
password that needs escaping in every protocol (`"`, `\\`, space, non-ASCII, `%+/=`), pasted
into the reflections too (plain, base64, AUTH PLAIN), then `labrunner report`; every file
written is searched (tests/secretscan.py) for every encoded form of the password, and only the
0600 captures and key logs may hold one. A password ending in CR is refused with nothing
written and nothing secret said."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labfiles import SCENARIOS  # type: ignore[import-not-found]  # same folder

from labrunner.sandbox import keys
from labrunner.sandbox.faults import _rewrite_users

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import secretscan  # type: ignore[import-not-found]  # tests/secretscan.py

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AWKWARD = 'pä"ss\\wörd 密码 %+/=x9'


@contextlib.contextmanager
def password_of(state: dict[str, Any], address: str, password: str) -> Iterator[None]:
    """The sandbox account ``address`` logs in with ``password`` inside the block (Dovecot checks
    the password for POP3, IMAP and Postfix's SMTP AUTH alike); its own one is back after."""
    users = Path(state["srv_dir"]) / "dovecot" / "users"
    before: list[str] = []

    def swap(lines: list[str]) -> list[str]:
        before[:] = lines
        return [f"{address}:{keys.ssha256(password)}\n" if ln.split(":", 1)[0] == address else ln for ln in lines]

    # Dovecot re-reads the file when its mtime or size changes: the hash has the same length and
    # the rewrite keeps the mtime, so it is set to now each time.
    _rewrite_users(users, swap)
    os.utime(users)
    try:
        yield
    finally:
        _rewrite_users(users, lambda _lines: before)
        os.utime(users)


def pasted(password: str, address: str) -> str:
    """What a student may paste into the reflections (as the handout's sample report did)."""
    blob = base64.b64encode(b"\0" + address.encode() + b"\0" + password.encode()).decode()
    answer = base64.b64encode(password.encode()).decode()
    return f"授权码：{password}\n\n    C: AUTH PLAIN {blob}\n    S: 334 UGFzc3dvcmQ6\n    C: {answer}\n"


def write_project(folder: Path, state: dict[str, Any], address: str, password: str = "") -> Path:
    ecs = state["ecs"]
    servers = state["servers"]
    lines = [f"      {name}: {{host: {spec['host']}, "
             + ", ".join(f"{mode}: {port}" for mode, port in spec["ports"].items() if port) + "}"
             for name, spec in servers.items()]
    folder.mkdir(parents=True, exist_ok=True)
    lab = folder / "lab.yaml"
    lab.write_text(f"""default_profile: awkward
scenarios_dir: {SCENARIOS}
report:
  student: {{name: 王五, id: "2020000001", class: 计科2001}}
  reflections: {{zh: {json.dumps(pasted(password, address), ensure_ascii=False)}}}
profiles:
  awkward:
    target: {{host: {ecs['host']}, user: {ecs['user']}, key: {ecs['key']}, known_hosts: {ecs['known_hosts']}}}
    servers:
{chr(10).join(lines)}
    ca_file: {state['ca_file']}
    account: {{address: {address}, secret: {{env: LR_SCAN_PASSWORD, prompt: false}}}}
""", encoding="utf-8")
    return lab


def labrunner(lab: Path, password: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", *args, "-c", str(lab)], cwd=lab.parent,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**os.environ, "LR_SCAN_PASSWORD": password})


@pytest.fixture(scope="module")
def account(sandbox: dict[str, Any]) -> dict[str, Any]:
    accounts = sandbox.get("accounts") or []
    if len(accounts) < 2:
        pytest.skip("needs a sandbox class (the session's sandbox has 3 targets)")
    return accounts[-1]  # not the first account: other tests read its state password


def test_no_file_but_the_private_ones_holds_an_awkward_password(sandbox: dict[str, Any], account: dict[str, Any],
                                                                tmp_path: Path) -> None:
    address = account["address"]
    users = [address, account.get("user") or address]
    lab = write_project(tmp_path, sandbox, address, AWKWARD)  # the reflections hold it, pasted
    with password_of(sandbox, address, AWKWARD):
        run = labrunner(lab, AWKWARD, "run")
        report = labrunner(lab, AWKWARD, "report")
    said = run.stdout + run.stderr + report.stdout + report.stderr
    assert run.returncode == 0 and report.returncode == 0, said
    assert not secretscan.leaks(said, AWKWARD, users), said
    output = tmp_path / "output"
    run_dir = (output / "latest").resolve()
    assert len(list(run_dir.glob("*/transcript.json"))) == 6 and (run_dir / "report.pdf").is_file()
    # the scan can fail: the password is in the clear in telnet-smtp's capture (AUTH LOGIN, base64)
    assert secretscan.scan_file(run_dir / "telnet-smtp" / "capture.pcapng", AWKWARD, users)
    assert len(secretscan.scanned_files(output)) >= 6 * 2 + 3
    assert secretscan.scan_tree(output, AWKWARD, users) == []


def test_a_password_ending_in_cr_is_refused_and_nothing_is_written(sandbox: dict[str, Any],
                                                                   account: dict[str, Any], tmp_path: Path) -> None:
    lab = write_project(tmp_path, sandbox, account["address"])
    secret = "crlf-ended-Secret9\r"
    res = labrunner(lab, secret, "run")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "ends with a carriage return (CR)" in res.stderr and "Traceback" not in res.stderr
    assert not secretscan.leaks(res.stdout + res.stderr, secret.strip(), [account["address"]])
    assert not secretscan.leaks(res.stdout + res.stderr, secret, [account["address"]])
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "lab.yaml"]
    assert written == []
