"""Sessions against the sandbox's real Postfix, Dovecot and nginx, through the SSH executor.

Every connection leaves from the sandbox's `ecs` host (direct-tcpip through its sshd), as in
a real run. What the client recorded is checked against what the servers logged and what
Postfix delivered into the Maildir.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from labfiles import write_lab  # type: ignore[import-not-found]  # same folder

from labrunner.capture import finalize
from labrunner.config.load import load_lab, load_scenarios, profile_from_state
from labrunner.config.model import (
    AccountSpec,
    Attachment,
    HttpsStep,
    ImapStep,
    LineItem,
    LinesStep,
    MessageSpec,
    Pop3Step,
    Profile,
    SmtpStep,
    TargetSpec,
)
from labrunner.errors import ConnectError, SessionError
from labrunner.executor import connect
from labrunner.executor.base import Executor
from labrunner.mime import dot_stuff, strip_trace_headers
from labrunner.sandbox import block_port, extra_account, netns_exec, unblock_port
from labrunner.secrets import REDACTED, Redactor
from labrunner.sessions import SessionContext, StepResult, run_step, run_steps
from labrunner.sessions.imap import ImapSession, quote

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# A wrong secret that cannot be mistaken for a word of a server reply once redacted.
WRONG = "not-the-password-7Qz"


@dataclass
class Lab:
    instance: str
    state: dict[str, Any]
    profile: Profile
    executor: Executor

    @property
    def secret(self) -> str:
        return str(self.state["account"]["password"])


@pytest.fixture(scope="module")
def lab(sandbox: dict[str, Any], sandbox_instance: str) -> Iterator[Lab]:
    instance, state = sandbox_instance, sandbox
    base = Profile(name="sandbox", target=TargetSpec(host="unset"), servers={},
                   account=AccountSpec(address="unset"), from_sandbox=True)
    profile = profile_from_state(base, state)
    executor = connect(profile.target)
    try:
        yield Lab(instance, state, profile, executor)
    finally:
        executor.close()


def make_ctx(lab: Lab, tmp_path: Path, *, secret: str | None = None, profile: Profile | None = None,
             **options: Any) -> SessionContext:
    return SessionContext(
        executor=lab.executor, profile=profile or lab.profile, secret=secret or lab.secret,
        keylog=tmp_path / "keylog.txt", redactor=Redactor(), scenario_dir=tmp_path,
        deadline=time.monotonic() + 120, **options)


def commands(result: StepResult, conn: int | None = None) -> list[str]:
    return [e["text"] for e in result.events if e["dir"] == "C" and (conn is None or e["conn"] == conn)]


def replies(result: StepResult) -> list[str]:
    return [e["text"] for e in result.events if e["dir"] == "S"]


def assert_no_secret(lab: Lab, results: list[StepResult]) -> None:
    text = json.dumps([r.to_dict() for r in results], ensure_ascii=False)
    raw = lab.secret.encode()
    for form in (lab.secret, base64.b64encode(raw).decode(),
                 base64.b64encode(b"\0" + lab.profile.account.login.encode() + b"\0" + raw).decode()):
        assert form not in text


def maildir_file(lab: Lab, message_id: str, timeout: float = 15.0) -> bytes:
    """The delivered file holding ``message_id`` (Postfix's virtual delivery writes it)."""
    root = Path(lab.state["maildir"])
    needle = f"Message-ID: {message_id}".encode()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for sub in ("new", "cur"):
            for path in (root / sub).glob("*") if (root / sub).is_dir() else []:
                data = path.read_bytes()
                if needle in data:
                    return data
        time.sleep(0.2)
    raise AssertionError(f"{message_id} not delivered to {root}")


def postfix_session(lab: Lab, queue_id: str) -> dict[str, int]:
    """The command counts Postfix logged at the end of the smtpd session that queued ``queue_id``."""
    log = Path(lab.state["logs"]["postfix"])
    end = time.monotonic() + 10
    while time.monotonic() < end:
        lines = log.read_text(errors="replace").splitlines()
        pid = next((m.group(1) for line in lines
                    if (m := re.search(r"smtpd\[(\d+)\]: " + queue_id + r": client=", line))), None)
        if pid is not None:
            start = next(i for i, line in enumerate(lines) if f"{queue_id}: client=" in line)
            for line in lines[start:]:
                m = re.search(r"smtpd\[" + pid + r"\]: disconnect from .*? ((?:\w+=\d+(?:/\d+)? ?)+)$", line)
                if m:
                    return {k: int(v.split("/")[0]) for k, v in (p.split("=") for p in m.group(1).split())}
        time.sleep(0.2)
    raise AssertionError(f"no smtpd session for {queue_id} in {log}")


def client_counts(result: StepResult) -> dict[str, int]:
    """The transcript's commands counted the way Postfix's disconnect line counts them."""
    counts: dict[str, int] = {}
    after_auth = False
    for text in commands(result):
        word = text.split(" ")[0].lower()
        if text.startswith("DATA fragment"):
            continue
        if after_auth and word not in ("mail", "quit", "rset", "noop", "ehlo", "helo"):
            continue  # AUTH LOGIN continuation lines are part of the one AUTH command
        after_auth = word == "auth" and text.upper() == "AUTH LOGIN"
        counts[word] = counts.get(word, 0) + 1
    counts["commands"] = sum(counts.values())
    return counts


def check_delivered(lab: Lab, result: StepResult) -> None:
    """The Maildir file is exactly the bytes sent, below the trace headers Postfix added."""
    assert result.message is not None and result.body is not None
    delivered = maildir_file(lab, result.message["message_id"])
    message, trace = strip_trace_headers(delivered)
    assert trace[:1] == ["Return-Path"] and "Received" in trace and "Delivered-To" in trace
    # The Maildir stores LF line ends; the wire carried CRLF: compare byte for byte after that.
    assert message == result.body.encode("utf-8").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- every scenario of scenarios/ -----------------------------------------------------------

SCENARIOS = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_runs_green(lab: Lab, tmp_path: Path, name: str) -> None:
    doc = load_lab(ROOT / "lab.yaml")
    (scenario,) = load_scenarios(doc, [name])
    ctx = make_ctx(lab, tmp_path)
    ctx.scenario_dir = scenario.path.parent
    results = run_steps(list(scenario.steps), ctx)
    assert [r.error for r in results] == [None] * len(scenario.steps)
    assert all(r.ok for r in results)
    assert_no_secret(lab, results)
    for result in results:
        if result.message is not None:
            check_delivered(lab, result)
            if result.kind == "smtp":
                assert postfix_session(lab, result.message["queue_id"]) == client_counts(result)
        find = getattr(scenario.steps[results.index(result)], "find", None)
        if find is not None:
            sender = next(r for r in results if r.id == find)
            assert sender.message is not None and result.found is not None
            assert result.found["message_id"] == sender.message["message_id"]
            assert result.found["identical"] in (True, None)  # None: TOP shows only part of it
    tls_conns = [c for r in results for c in r.connections if c.tls is not None]
    if tls_conns:
        assert stat.S_IMODE(os.stat(ctx.keylog).st_mode) == 0o600
        keylog = ctx.keylog.read_text()
        # One line of client secrets per connection (TLS 1.3: CLIENT_TRAFFIC_SECRET_0; 1.2: CLIENT_RANDOM).
        assert keylog.count("CLIENT_TRAFFIC_SECRET_0") + keylog.count("CLIENT_RANDOM") >= len(tls_conns)


# --- SMTP variants --------------------------------------------------------------------------


@pytest.mark.parametrize(("security", "port", "auth"), [
    ("plain", 25, "login"), ("starttls", 587, "plain"), ("tls", 465, "login"),
])
def test_smtp_modes_and_auth(lab: Lab, tmp_path: Path, security: str, port: int, auth: str) -> None:
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 4)
    step = SmtpStep(security=security, auth=auth, id="m", message=MessageSpec(  # type: ignore[arg-type]
        subject="实验5 附件测试", text="line one\n.starts with a dot\n..two dots\n",
        html="<p>实验 <b>HTML</b></p>",
        attachments=(Attachment(name="notes.pdf", path="notes.pdf"),
                     Attachment(name="说明.txt", content="附件内容", content_type="text/plain"))))
    ctx = make_ctx(lab, tmp_path)
    result = run_step(step, ctx)
    assert result.ok, result.error
    assert result.port == port
    sent = commands(result)
    if auth == "plain":
        assert "AUTH PLAIN «redacted»" in sent
    else:
        assert "AUTH LOGIN" in sent and "«redacted»" in sent
        assert base64.b64encode(lab.profile.account.login.encode()).decode() in sent
    assert result.message is not None
    assert result.message["parts"] == ["text/plain", "text/html", "application/pdf", "text/plain"]
    assert any(t.startswith("DATA fragment, ") and "实验5 附件测试" in t for t in sent)
    tls = result.connections[0].tls
    if security == "plain":
        assert tls is None
    else:
        assert tls is not None and tls.version == "TLSv1.3" and tls.verified
        assert tls.peer_certificate is not None and tls.peer_certificate["key_type"] == "RSA"
        assert "DNS:smtp.lab.test" in tls.peer_certificate["san"]
        upgrade = next(i for i, e in enumerate(result.events) if e["text"].startswith("TLS handshake done"))
        assert all(e["tls"] for e in result.events[upgrade:])
        assert not any(e["tls"] for e in result.events[:upgrade])
    check_delivered(lab, result)
    assert postfix_session(lab, result.message["queue_id"]) == client_counts(result)
    assert_no_secret(lab, [result])


def test_smtp_pipelining_several_recipients_and_extra(lab: Lab, tmp_path: Path) -> None:
    me = lab.profile.account.address
    step = SmtpStep(security="starttls", pipelining=True, rcpt_to=(me, me), extra=("NOOP", "RSET"),
                    message=MessageSpec(subject="pipelining", text="two recipients"))
    result = run_step(step, make_ctx(lab, tmp_path))
    assert result.ok, result.error
    assert result.details["pipelining"] is True
    sent = commands(result)
    i = sent.index(f"MAIL FROM:<{me}>")
    assert sent[i:i + 4] == [f"MAIL FROM:<{me}>", f"RCPT TO:<{me}>", f"RCPT TO:<{me}>", "DATA"]
    # Pipelined: all four commands were sent before the first of their replies came back.
    events = [e for e in result.events if e["dir"] in "CS"]
    first = next(k for k, e in enumerate(events) if e["text"] == f"MAIL FROM:<{me}>")
    assert [e["dir"] for e in events[first:first + 7]] == ["C"] * 4 + ["S"] * 3
    assert sent[-3:] == ["NOOP", "RSET", "QUIT"]
    assert result.message is not None
    assert postfix_session(lab, result.message["queue_id"]) == client_counts(result)


def test_smtp_wrong_password_says_what_to_do(lab: Lab, tmp_path: Path) -> None:
    result = run_step(SmtpStep(security="starttls"), make_ctx(lab, tmp_path, secret="not-the-password"))
    assert not result.ok and result.error_type == "SessionError"
    assert result.error is not None
    assert "AUTH LOGIN (password) → 535" in result.error
    assert "Authentication failed: wrong user name or password" in result.error
    assert result.hint and "authorization code" in result.hint
    assert commands(result)[-1] == "QUIT"  # a polite goodbye after the failure
    assert "not-the-password" not in json.dumps(result.to_dict())


def test_smtp_expected_auth_failure_is_ok(lab: Lab, tmp_path: Path) -> None:
    step = SmtpStep(security="tls", expect={"auth": 535})
    result = run_step(step, make_ctx(lab, tmp_path, secret=WRONG))
    assert result.ok and result.expected_failure == "auth 535"
    assert result.message is None


def test_smtp_refused_recipient(lab: Lab, tmp_path: Path) -> None:
    step = SmtpStep(security="starttls", rcpt_to=("nobody@lab.test",), message=MessageSpec(subject="x"))
    result = run_step(step, make_ctx(lab, tmp_path))
    assert not result.ok and result.error is not None
    assert "RCPT TO:<nobody@lab.test> → 550" in result.error
    assert "no such recipient" in result.error
    assert result.hint and "recipient address" in result.hint

    expected = replace(step, expect={"rcpt": 550})
    result = run_step(expected, make_ctx(lab, tmp_path))
    assert result.ok and result.expected_failure == "rcpt 550"
    assert commands(result)[-3:] == ["RCPT TO:<nobody@lab.test>", "RSET", "QUIT"]


def test_closed_port_is_a_connect_error(lab: Lab, tmp_path: Path) -> None:
    result = run_step(SmtpStep(security="plain", port=2525), make_ctx(lab, tmp_path))
    assert not result.ok and result.error_type == "ConnectError"
    assert result.error is not None and "2525" in result.error and "refused" in result.error
    assert isinstance(result.exception, ConnectError)


@pytest.mark.parametrize("how", ["reject", "drop"])
def test_blocked_port_25_points_to_465_and_587(lab: Lab, tmp_path: Path, how: str) -> None:
    block_port(lab.instance, 25, how=how)
    try:
        result = run_step(SmtpStep(security="plain"), make_ctx(lab, tmp_path, connect_timeout=2.0))
    finally:
        unblock_port(lab.instance, 25)
    assert not result.ok and result.error_type == "ConnectError"
    assert result.error is not None
    assert "port 465 and 587 can: outbound port 25 is blocked" in result.error
    assert result.hint and "security: tls (port 465)" in result.hint


# --- the telnet exercise --------------------------------------------------------------------


def test_lines_step_wrong_expectation_names_the_line(lab: Lab, tmp_path: Path) -> None:
    script = (LineItem(expect=220), LineItem(send="HELO lab-client", expect=250),
              LineItem(send="AUTH LOGIN", expect=334), LineItem(send="{account.user|base64}", expect=334),
              LineItem(send="{account.secret|base64}", expect=235), LineItem(send="QUIT", expect=221))
    ok = run_step(LinesStep(script=script), make_ctx(lab, tmp_path))
    assert ok.ok, ok.error
    assert commands(ok) == ["HELO lab-client", "AUTH LOGIN",
                            base64.b64encode(lab.profile.account.login.encode()).decode(), "«redacted»", "QUIT"]
    assert [r[:3] for r in replies(ok)] == ["220", "250", "334", "334", "235", "221"]
    bad = run_step(LinesStep(script=script), make_ctx(lab, tmp_path, secret=WRONG))
    assert not bad.ok and bad.error is not None
    assert "script[5] `{account.secret|base64}`: expected 235, the server replied 535" in bad.error


def test_lines_pop3_and_imap_over_tls(lab: Lab, tmp_path: Path) -> None:
    pop = LinesStep(server="pop3", protocol="pop3", security="tls", port="tls", script=(
        LineItem(expect="+OK"), LineItem(send="USER {account.user}", expect="+OK"),
        LineItem(send="PASS {account.secret}", expect="+OK"), LineItem(send="LIST", expect="+OK"),
        LineItem(send="QUIT", expect="+OK")))
    result = run_step(pop, make_ctx(lab, tmp_path))
    assert result.ok, result.error
    assert commands(result)[1] == "PASS «redacted»"
    assert replies(result)[-1].startswith("+OK")
    imap = LinesStep(server="imap", protocol="imap", security="plain", port="plain", script=(
        LineItem(expect="OK"), LineItem(send="a1 LOGIN {account.user} {account.secret}", expect="OK"),
        LineItem(send="a2 SELECT INBOX", expect="OK"), LineItem(send="a3 LOGOUT", expect="OK")))
    result = run_step(imap, make_ctx(lab, tmp_path))
    assert result.ok, result.error
    assert commands(result)[0] == "a1 LOGIN «redacted»" or lab.secret not in commands(result)[0]
    assert_no_secret(lab, [result])


# --- POP3 -----------------------------------------------------------------------------------


def send_probe(lab: Lab, ctx: SessionContext, subject: str) -> StepResult:
    result = run_step(SmtpStep(id="probe", security="tls", message=MessageSpec(subject=subject, text=subject)), ctx)
    assert result.ok, result.error
    return result


def dovecot_lines(lab: Lab, since: int, what: str, *, wait: float = 5.0) -> list[str]:
    """Log lines after ``since`` holding ``what``; Dovecot writes a session's line after it has
    closed it, a moment after our QUIT returned, so give it up to ``wait`` seconds."""
    give_up = time.monotonic() + wait
    while True:
        lines = Path(lab.state["logs"]["dovecot"]).read_text(errors="replace").splitlines()[since:]
        found = [line for line in lines if what in line]
        if found or time.monotonic() > give_up:
            return found
        time.sleep(0.1)


def dovecot_mark(lab: Lab) -> int:
    return len(Path(lab.state["logs"]["dovecot"]).read_text(errors="replace").splitlines())


@pytest.mark.parametrize(("security", "port"), [("plain", 110), ("starttls", 110), ("tls", 995)])
def test_pop3_finds_the_sent_message(lab: Lab, tmp_path: Path, security: str, port: int) -> None:
    ctx = make_ctx(lab, tmp_path)
    sent = send_probe(lab, ctx, f"pop3 {security}")
    mark = dovecot_mark(lab)
    result = run_step(Pop3Step(security=security, find="probe", auth="apop"), ctx)  # type: ignore[arg-type]
    assert result.ok, result.error
    assert result.port == port
    assert result.found is not None and sent.message is not None
    assert result.found["message_id"] == sent.message["message_id"]
    assert result.found["identical"] is True  # RETR gave the bytes sent, below the trace headers
    assert result.found["trace_headers"][0] == "Return-Path"
    # Dovecot has no APOP secret here: the client says so and logs in with USER/PASS.
    assert any("no APOP timestamp" in e["text"] for e in result.events)
    sent_cmds = commands(result)
    assert "PASS «redacted»" in sent_cmds and sent_cmds[-1] == "QUIT"
    assert ("STLS" in sent_cmds) == (security == "starttls")
    # What Dovecot logged for the session agrees with the transcript.
    logged = dovecot_lines(lab, mark, "retr=")  # the line Dovecot writes as the session ends
    retr = sum(1 for c in sent_cmds if c.startswith("RETR "))
    top = sum(1 for c in sent_cmds if c.startswith("TOP "))
    assert any(f"top={top}/" in line and f"retr={retr}/" in line for line in logged), logged
    logins = dovecot_lines(lab, mark, "pop3-login: Info: Login")
    assert logins and (", TLS" in logins[-1]) == (security != "plain")


def test_pop3_top_and_delete(lab: Lab, tmp_path: Path) -> None:
    ctx = make_ctx(lab, tmp_path)
    send_probe(lab, ctx, "to be deleted")
    result = run_step(Pop3Step(security="tls", find="probe", top_lines=2, delete=True), ctx)
    assert result.ok, result.error
    assert result.found is not None and result.found["identical"] is None  # TOP is not the whole message
    number = result.found["number"]
    assert f"TOP {number} 2" in commands(result) and f"DELE {number}" in commands(result)
    again = run_step(Pop3Step(security="tls", find="probe"), make_ctx(lab, tmp_path, find_timeout=1.0,
                                                                      sent=dict(ctx.sent)))
    assert not again.ok and again.error is not None and "is not in the mailbox" in again.error


def test_pop3_wrong_password(lab: Lab, tmp_path: Path) -> None:
    result = run_step(Pop3Step(security="tls", commands=()), make_ctx(lab, tmp_path, secret=WRONG))
    assert not result.ok and result.error is not None
    assert "PASS … → -ERR [AUTH]" in result.error and "wrong user name or password" in result.error


# --- IMAP -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("security", "port"), [("plain", 143), ("starttls", 143), ("tls", 993)])
def test_imap_finds_the_sent_message(lab: Lab, tmp_path: Path, security: str, port: int) -> None:
    ctx = make_ctx(lab, tmp_path)
    sent = send_probe(lab, ctx, f"imap {security}")
    mark = dovecot_mark(lab)
    result = run_step(ImapStep(security=security, find="probe"), ctx)  # type: ignore[arg-type]
    assert result.ok, result.error
    assert result.port == port and sent.message is not None
    assert result.found is not None and result.found["identical"] is True
    verbs = [c.split()[1] for c in commands(result)]
    expected = ["CAPABILITY", "LOGIN", "SELECT", "SEARCH", "FETCH", "FETCH", "LOGOUT"]
    if security == "starttls":
        expected[1:1] = ["STARTTLS", "CAPABILITY"]
    assert verbs == expected
    logins = dovecot_lines(lab, mark, "imap-login: Info: Login")
    assert logins and (", TLS" in logins[-1]) == (security != "plain")
    assert_no_secret(lab, [result])


def test_imap_wrong_password(lab: Lab, tmp_path: Path) -> None:
    result = run_step(ImapStep(security="tls"), make_ctx(lab, tmp_path, secret=WRONG))
    assert not result.ok and result.error is not None
    assert "LOGIN … → NO [AUTHENTICATIONFAILED]" in result.error


# What a quoted string cannot carry (UTF-8) or carries only escaped (" and \\): LOGIN must send
# such a password as a literal. 19 bytes in UTF-8.
ODD_PASSWORD = 'pä"ss\\wörd 密码'


@pytest.mark.parametrize("literal", ["LITERAL+", "synchronizing"])
def test_imap_login_sends_an_unquotable_password_as_a_literal(lab: Lab, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              literal: str) -> None:
    if literal == "synchronizing":
        # Dovecot offers LITERAL+; a server without it must say "+" before the literal is sent.
        login = ImapSession.login
        monkeypatch.setattr(ImapSession, "login", lambda self, caps: login(self, caps - {"LITERAL+", "LITERAL-"}))
    size = len(ODD_PASSWORD.encode())
    mark = dovecot_mark(lab)
    with extra_account(lab.instance, "odd", ODD_PASSWORD) as account:
        profile = replace(lab.profile, account=AccountSpec(address=account["address"]))
        result = run_step(ImapStep(security="tls"), make_ctx(lab, tmp_path, secret=ODD_PASSWORD, profile=profile))
        assert result.ok, result.error
        logins = dovecot_lines(lab, mark, "imap-login: Info: Login: user=<odd@lab.test>")
    assert logins
    events = [(e["dir"], e["text"]) for e in result.events]
    start = events.index(("C", f'a002 LOGIN "odd@lab.test" {{{size}{"+" if literal == "LITERAL+" else ""}}}'))
    if literal == "LITERAL+":
        assert events[start + 1] == ("C", REDACTED)
    else:
        assert events[start + 1][0] == "S" and events[start + 1][1].startswith("+")
        assert events[start + 2] == ("C", REDACTED)
    assert any(d == "S" and t.startswith("a002 OK") for d, t in events)
    written = json.dumps(result.to_dict(), ensure_ascii=False) + Path(lab.state["logs"]["dovecot"]).read_text(
        errors="replace")
    for form in (ODD_PASSWORD, quote(ODD_PASSWORD)[1:-1], base64.b64encode(ODD_PASSWORD.encode()).decode()):
        assert form not in written


def test_imap_login_name_as_a_literal_is_read_by_the_server(lab: Lab, tmp_path: Path) -> None:
    # Dovecot refuses such a name, but with NO (it read both literals), not BAD (a parse error).
    profile = replace(lab.profile, account=AccountSpec(address='o"dd@lab.test'))
    result = run_step(ImapStep(security="tls"), make_ctx(lab, tmp_path, secret=ODD_PASSWORD, profile=profile))
    assert not result.ok and result.error is not None
    assert "LOGIN … → NO [AUTHENTICATIONFAILED]" in result.error
    texts = commands(result)
    assert 'a002 LOGIN {13+}' in texts and 'o"dd@lab.test {19+}' in texts and REDACTED in texts


def test_literal_password_is_in_no_file_of_a_run_but_the_capture(lab: Lab, tmp_path: Path) -> None:
    # The whole pipeline: on plain 143 the literal's bytes are in the clear in the capture; the
    # analysis (by protocol position), transcript and report must not show them.
    e = lab.state["ecs"]
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "odd.yaml").write_text(
        "title: odd\nobjective: odd\ncapture: {enabled: true}\n"
        "steps:\n  - imap: {security: plain, search: ALL}\n", encoding="utf-8")
    profile = (f"  odd:\n    target: {{host: {e['host']}, user: {e['user']}, key: {e['key']}, "
               f"known_hosts: {e['known_hosts']}}}\n"
               f"    servers: {{imap: {{host: imap.lab.test, plain: 143}}}}\n    ca_file: {lab.state['ca_file']}\n"
               f"    account: {{address: odd@lab.test, secret: {{env: LR_ODD_PASSWORD}}}}\n")
    lab_file = write_lab(tmp_path, lab.instance, scenarios_dir="sc", profiles=profile)
    with extra_account(lab.instance, "odd", ODD_PASSWORD):
        res = subprocess.run([sys.executable, "-m", "labrunner", "run", "odd", "--profile", "odd", "-c",
                              str(lab_file)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                             stdin=subprocess.DEVNULL, env={**os.environ, "LR_ODD_PASSWORD": ODD_PASSWORD})
    assert res.returncode == 0, res.stdout + res.stderr
    raw = ODD_PASSWORD.encode()
    files = [p for p in (tmp_path / "output").rglob("*") if p.is_file() and not p.is_symlink()]
    capture = [p for p in files if p.name == "capture.pcapng"]
    assert len(capture) == 1 and raw in capture[0].read_bytes()  # it did go over the wire in clear text
    for path in files:
        if path not in capture:
            data = path.read_bytes()
            for form in (raw, quote(ODD_PASSWORD)[1:-1].encode(), base64.b64encode(raw)):
                assert form not in data, path
    assert ODD_PASSWORD not in res.stdout + res.stderr


# --- HTTPS ----------------------------------------------------------------------------------


def test_https_tls12_with_the_seed_cipher_and_tls13(lab: Lab, tmp_path: Path) -> None:
    ctx = make_ctx(lab, tmp_path)
    r12 = run_step(HttpsStep(tls_version="1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256"), ctx)
    r13 = run_step(HttpsStep(tls_version="1.3"), ctx)
    assert r12.ok and r13.ok, (r12.error, r13.error)
    t12, t13 = r12.connections[0].tls, r13.connections[0].tls
    assert t12 is not None and t13 is not None
    assert (t12.version, t12.cipher) == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")
    assert t13.version == "TLSv1.3" and t13.cipher.startswith("TLS_")
    cert = t13.peer_certificate
    assert cert is not None and cert["key_type"] == "RSA" and cert["key_size"] >= 2048
    assert "DNS:mail.lab.test" in cert["san"] and "CA" in cert["issuer"]
    assert r13.details["status"] == 200 and r13.details["body_size"] > 0
    keylog = ctx.keylog.read_text()
    assert "CLIENT_RANDOM " in keylog and "CLIENT_TRAFFIC_SECRET_0 " in keylog


def test_https_unverifiable_certificate_and_wrong_status(lab: Lab, tmp_path: Path) -> None:
    no_ca = replace(lab.profile, ca_file=None)
    result = run_step(HttpsStep(), make_ctx(lab, tmp_path, profile=no_ca))
    assert not result.ok and result.error is not None
    # OpenSSL's wording depends on whether the server sends its CA along: either says it.
    assert re.search(r"certificate was not accepted: (self-signed certificate in certificate chain"
                     r"|unable to get local issuer certificate)$", result.error)
    assert result.hint is not None and "ca_file" in result.hint
    missing = run_step(HttpsStep(path="/no-such-page", expect_status=200), make_ctx(lab, tmp_path))
    assert not missing.ok and missing.error is not None and "→ 404" in missing.error


def test_https_follows_a_same_host_redirect_on_a_new_connection(lab: Lab, tmp_path: Path) -> None:
    # nginx's /login answers 302 to /, as mail.qq.com does at its root.
    result = run_step(HttpsStep(path="/login"), make_ctx(lab, tmp_path))
    assert result.ok, result.error
    assert [c.port for c in result.connections] == [443, 443]
    first, second = (commands(result, c.conn) for c in result.connections)
    assert first[0] == "GET /login HTTP/1.1" and second[0] == "GET / HTTP/1.1"
    assert replies(result)[0] == "HTTP/1.1 302 Moved Temporarily"
    assert any(e["dir"] == "*" and "following the redirect to /" in e["text"] for e in result.events)
    (hop,) = result.details["redirects"]
    assert hop["status"] == 302 and hop["path"] == "/login" and hop["location"] == "https://mail.lab.test/"
    assert result.details["status"] == 200 and result.details["path"] == "/" and result.details["title"]


def test_https_redirect_not_followed_is_recorded(lab: Lab, tmp_path: Path) -> None:
    ctx = make_ctx(lab, tmp_path)
    # follow_redirects: 0 keeps the 302 itself, which expect_status may then ask for.
    kept = run_step(HttpsStep(path="/login", follow_redirects=0, expect_status=302), ctx)
    assert kept.ok, kept.error
    assert len(kept.connections) == 1 and kept.details["location"] == "https://mail.lab.test/"
    followed = run_step(HttpsStep(path="/login", expect_status=302), ctx)
    assert not followed.ok and followed.hint is not None and "set follow_redirects: 0" in followed.hint
    # Another host is another server: recorded, not followed, and the hint says where it points.
    away = run_step(HttpsStep(path="/elsewhere"), ctx)
    assert not away.ok and len(away.connections) == 1 and away.details["redirects"] == []
    assert away.error is not None and away.error.endswith("GET /elsewhere → 302 Moved Temporarily (expected 200)")
    assert away.hint is not None and "redirects to https://www.lab.test/" in away.hint
    assert "another host" in away.hint
    # A loop ends at the limit, with one connection per request.
    loop = run_step(HttpsStep(path="/loop", follow_redirects=3), ctx)
    assert not loop.ok and len(loop.connections) == 4 and len(loop.details["redirects"]) == 3
    assert loop.hint is not None and "after 3 redirect(s), the limit of follow_redirects" in loop.hint


def test_each_redirect_hop_is_captured_and_decrypted(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "redir.yaml").write_text(
        "title: redirect\nobjective: follow it\ncapture: {enabled: true}\nsteps:\n"
        "  - https: {tls_version: '1.2', ciphers: ECDHE-RSA-AES128-GCM-SHA256, path: /login}\n"
        "  - https: {tls_version: '1.3', path: /login}\n", encoding="utf-8")
    lab_file = write_lab(tmp_path, lab.instance, scenarios_dir="sc")
    res = subprocess.run([sys.executable, "-m", "labrunner", "run", "redir", "--no-pdf", "-c", str(lab_file)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    run = tmp_path / "output" / "latest" / "redir"
    streams = json.loads((run / "analysis.json").read_text(encoding="utf-8"))["streams"]
    requests = [(s["tls"]["version"], next(d["text"].split("\n")[0] for d in s["dialogue"]
                                           if d["dir"] == "C" and d["text"].startswith("GET ")))
                for s in streams if s["protocol"] == "HTTPS"]
    assert requests == [("TLS 1.2", "GET /login HTTP/1.1"), ("TLS 1.2", "GET / HTTP/1.1"),
                        ("TLS 1.3", "GET /login HTTP/1.1"), ("TLS 1.3", "GET / HTTP/1.1")]
    steps = json.loads((run / "transcript.json").read_text(encoding="utf-8"))["steps"]
    assert [len(step["connections"]) for step in steps] == [2, 2]


def test_step_results_are_json(lab: Lab, tmp_path: Path) -> None:
    ctx = make_ctx(lab, tmp_path)
    results = run_steps([SmtpStep(id="j", security="starttls", message=MessageSpec(subject="json")),
                         ImapStep(security="tls", find="j")], ctx)
    data = json.loads(json.dumps([r.to_dict() for r in results]))
    assert [d["ok"] for d in data] == [True, True]
    conns = [c["conn"] for d in data for c in d["connections"]]
    assert conns == sorted(set(conns))  # unique and in order across the scenario
    # The server address as the target resolved it: what the capture shows.
    assert {c["server_ip"] for d in data for c in d["connections"]} == {lab.state["mail"]["host"]}
    for d in data:
        times = [e["time"] for e in d["events"]]
        assert times == sorted(times)
        assert set(d["events"][0]) == {"conn", "dir", "time", "text", "tls", "note", "fields"}  # "connecting"
        greeting = next(e for e in d["events"] if e["dir"] == "S")  # a line the server sent
        assert set(greeting) == {"conn", "dir", "time", "text", "tls"}
    assert isinstance(SessionError("x"), Exception)


# --- the transcript against the wire -------------------------------------------------------


@dataclass
class Stream:
    client: str  # "ip:port"
    server: str
    client_bytes: bytes
    server_bytes: bytes


def _follow(pcapng: Path, index: int, layer: str) -> tuple[dict[str, str], dict[str, bytes]]:
    out = subprocess.run(["tshark", "-r", str(pcapng), "-q", "-z", f"follow,{layer},raw,{index}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    nodes = dict(re.findall(r"^Node (\d): (\S+)$", out, re.MULTILINE))
    data: dict[str, bytearray] = {"0": bytearray(), "1": bytearray()}
    for line in out.splitlines():
        m = re.fullmatch(r"(\t?)([0-9a-f]+)", line)
        if m:  # node 1's data is indented by a tab
            data["1" if m.group(1) else "0"] += bytes.fromhex(m.group(2))
    return nodes, {k: bytes(v) for k, v in data.items()}


def follow(pcapng: Path, index: int, layer: str) -> Stream:
    """One TCP stream's payload by direction, as Wireshark's "Follow TCP/TLS Stream" shows it."""
    def is_server(addr: str) -> bool:
        return addr.rsplit(":", 1)[1] in ("25", "465", "587", "110", "143")

    tcp_nodes, _ = _follow(pcapng, index, "tcp")
    client = next(a for a in tcp_nodes.values() if not is_server(a))
    server = next(a for a in tcp_nodes.values() if is_server(a))
    # Node 0 is whoever sent data first; tshark 4.0 names only that node in a TLS follow.
    nodes, data = _follow(pcapng, index, layer)
    server_node = "0" if nodes.get("0") == server else "1"
    client_node = "1" if server_node == "0" else "0"
    return Stream(client, server, data[client_node], data[server_node])


def _summary(line: str) -> bool:
    return line.startswith(("message data, ", "headers of message ", "… ", "«literal")) or "\n" in line


def expected_bytes(result: StepResult, conn: int, secret_b64: str, tls: bool | None = None) -> tuple[bytes, bytes]:
    """What the transcript says went each way; the redacted line stands for the secret it hides.

    ``tls``: only the events before (False) or after (True) the TLS upgrade.
    """
    client, server = bytearray(), bytearray()
    for e in result.events:
        if e["conn"] != conn or e["dir"] == "*" or (tls is not None and e["tls"] != tls):
            continue
        if e["dir"] == "S":
            server += e["text"].encode() + b"\r\n"
        elif e["text"].startswith("DATA fragment, "):
            assert result.body is not None
            client += dot_stuff(result.body.encode())
        else:
            client += e["text"].replace("«redacted»", secret_b64).encode() + b"\r\n"
    return bytes(client), bytes(server)


def settle(path: Path, quiet: float = 0.5, limit: float = 10.0) -> None:
    """Wait until tcpdump has written what it saw: the file stops growing for ``quiet`` s.

    SIGTERM makes tcpdump leave at once, dropping packets it has not written yet.
    """
    end = time.monotonic() + limit
    size, since = -1, time.monotonic()
    while time.monotonic() < end:
        now = path.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def test_transcripts_agree_with_the_capture_on_the_target(lab: Lab, tmp_path: Path) -> None:
    """tcpdump on the target sees exactly the lines the transcript holds, TLS ones decrypted."""
    ecs = lab.state["ecs"]
    pcap = tmp_path / "capture.pcap"
    argv = netns_exec(lab.instance, "ecs", ["tcpdump", "-U", "--immediate-mode", "-n", "-i", ecs["interface"],
                                            "-w", "-", "tcp port 25 or 465 or 587 or 110 or 143"])
    ctx = make_ctx(lab, tmp_path)
    telnet = LinesStep(id="t", script=(
        LineItem(expect=220), LineItem(send="HELO lab-client", expect=250), LineItem(send="AUTH LOGIN", expect=334),
        LineItem(send="{account.user|base64}", expect=334), LineItem(send="{account.secret|base64}", expect=235),
        LineItem(send="MAIL FROM:<{account.address}>", expect=250),
        LineItem(send="RCPT TO:<{account.address}>", expect=250), LineItem(send="DATA", expect=354),
        LineItem(send_message=MessageSpec(subject="实验5 telnet", text=".leading dot\nend"), expect=250),
        LineItem(send="QUIT", expect=221)))
    with pcap.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None and "listening on" in proc.stderr.readline()
            results = [
                run_step(SmtpStep(security="plain", message=MessageSpec(subject="wire", text="a\n.b\n")), ctx),
                run_step(SmtpStep(security="tls", auth="plain", message=MessageSpec(subject="wire tls")), ctx),
                run_step(telnet, ctx),
                run_step(Pop3Step(security="plain", find="t"), ctx),
                run_step(ImapStep(security="plain", find="t"), ctx),
                run_step(SmtpStep(security="starttls", message=MessageSpec(subject="wire starttls")), ctx),
            ]
        finally:
            settle(pcap)
            proc.terminate()
            proc.wait(timeout=10)
    assert all(r.ok for r in results), [r.error for r in results]
    pcapng = finalize(pcap, ctx.keylog, tmp_path / "capture.pcapng")
    # What each «redacted» in the transcript stands for on the wire.
    hidden = [base64.b64encode(lab.secret.encode()).decode(),
              base64.b64encode(f"\0{lab.profile.account.login}\0{lab.secret}".encode()).decode(),
              base64.b64encode(lab.secret.encode()).decode(), lab.secret, quote(lab.secret)]
    layers = ["tcp", "tls", "tcp", "tcp", "tcp"]
    for index, (result, layer, secret) in enumerate(zip(results[:5], layers, hidden, strict=True)):
        stream = follow(pcapng, index, layer)
        assert stream.client.startswith(ecs["host"] + ":")  # the traffic left from the target host
        assert stream.server.endswith(f":{result.port}")
        client, server = expected_bytes(result, result.connections[0].conn, secret)
        assert stream.client_bytes == client
        if result.kind in ("smtp", "lines"):
            assert stream.server_bytes == server
        else:
            # POP3/IMAP transcripts summarise retrieved messages; every other reply line is on
            # the wire, in the same order.
            wire = iter(stream.server_bytes.decode("utf-8", "replace").split("\r\n"))
            shown = [e["text"] for e in result.events
                     if e["conn"] == result.connections[0].conn and e["dir"] == "S" and not _summary(e["text"])]
            missing = next((line for line in shown if not any(line == w for w in wire)), None)
            assert shown and missing is None
    # STARTTLS: the plain part of the stream, then a TLS handshake record, then (decrypted)
    # exactly the lines the transcript marks as inside TLS.
    upgraded = results[5]
    conn = upgraded.connections[0].conn
    before, before_s = expected_bytes(upgraded, conn, "", tls=False)
    after, after_s = expected_bytes(upgraded, conn, hidden[0], tls=True)
    plain_part = follow(pcapng, 5, "tcp")
    assert plain_part.client_bytes.startswith(before + b"\x16\x03")  # ClientHello right after STARTTLS
    assert plain_part.server_bytes.startswith(before_s + b"\x16\x03")
    assert before.endswith(b"STARTTLS\r\n") and before_s.endswith(b"220 2.0.0 Ready to start TLS\r\n")
    tls_part = follow(pcapng, 5, "tls")
    assert (tls_part.client_bytes, tls_part.server_bytes) == (after, after_s)
