"""Faults no real server here produces on demand: a scripted peer on a socket pair.

Postfix and Dovecot never trickle a reply, send an endless line or inject bytes after
STARTTLS; these tests play such a server so the deadlines and caps are really exercised.
Everything a real server can do is tested against the sandbox (tests/integration).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from labrunner.config.model import AccountSpec, LineItem, LinesStep, Profile, ServerSpec, SmtpStep, TargetSpec
from labrunner.errors import ConnectError
from labrunner.executor.facts import TargetFacts
from labrunner.secrets import Redactor
from labrunner.sessions import SessionContext, StepResult, run_step, run_steps
from labrunner.sessions.imap import read_response
from labrunner.sessions.wire import connect

Server = Callable[[socket.socket], None]


class ScriptedExecutor:
    """open_connection gives one end of a socket pair; ``server`` plays the other end."""

    host_label = "scripted"

    def __init__(self, server: Server, refuse: tuple[int, ...] = ()) -> None:
        self.server = server
        self.refuse = refuse
        self.opened: list[int] = []
        self.threads: list[threading.Thread] = []
        self.facts = TargetFacts(self)  # asks through run(): NotImplementedError, no address known

    def open_connection(self, host: str, port: int, timeout: float) -> socket.socket:
        self.opened.append(port)
        if port in self.refuse:
            raise ConnectError(f"{host}:{port}: connection refused")
        ours, theirs = socket.socketpair()
        thread = threading.Thread(target=self._serve, args=(theirs,), daemon=True)
        thread.start()
        self.threads.append(thread)
        return ours

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.server(sock)
        except OSError:
            pass  # the client hung up first: expected in most of these tests
        finally:
            sock.close()

    def run(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError

    start = run

    def close(self) -> None:
        pass


def lines_of(sock: socket.socket):
    """The client's lines, one at a time."""
    buf = b""
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        yield line.decode()


def smtp_server(answers: dict[str, bytes], greeting: bytes = b"220 fake ESMTP\r\n", delay: float = 0.0) -> Server:
    """A minimal SMTP peer: ``answers`` by verb (default 250), DATA read up to its lone dot."""
    answers = {"DATA": b"354 go ahead\r\n", "QUIT": b"221 bye\r\n", **answers}

    def serve(sock: socket.socket) -> None:
        sock.sendall(greeting)
        in_data = False
        for line in lines_of(sock):
            if in_data:
                if line == ".":
                    in_data = False
                    sock.sendall(b"250 2.0.0 Ok: queued as FAKE1\r\n")
                continue
            verb = line.split(" ")[0].upper()
            time.sleep(delay)
            answer = answers.get(verb, b"250 ok\r\n")
            sock.sendall(answer)
            in_data = verb == "DATA" and answer.startswith(b"354")
            if verb == "QUIT":
                return
    return serve


def make_ctx(tmp_path: Path, server: Server, **options: object) -> SessionContext:
    profile = Profile(
        name="scripted", target=TargetSpec(host="scripted"),
        servers={"smtp": ServerSpec("smtp.fake.test", {"plain": 25, "starttls": 587, "tls": 465}),
                 "imap": ServerSpec("imap.fake.test", {"plain": 143})},
        account=AccountSpec(address="me@fake.test"))
    # The product's own time limits unless a test is about one: a peer thread that answers
    # within them on an idle machine may not on a loaded CI machine.
    return SessionContext(executor=ScriptedExecutor(server), profile=profile,  # type: ignore[arg-type]
                          secret="s3cret-Value!", keylog=tmp_path / "keylog.txt", redactor=Redactor(),
                          scenario_dir=tmp_path, deadline=time.monotonic() + 60, **options)  # type: ignore[arg-type]


def plain(**kwargs: object) -> SmtpStep:
    return SmtpStep(security="plain", auth="none", **kwargs)  # type: ignore[arg-type]


def test_a_trickling_server_hits_the_reply_deadline(tmp_path: Path) -> None:
    def trickle(sock: socket.socket) -> None:
        sock.sendall(b"220 ")
        while True:  # one byte at a time, never a whole line
            sock.sendall(b"x")
            time.sleep(0.02)

    result = run_step(plain(), make_ctx(tmp_path, trickle, reply_timeout=0.5))
    assert not result.ok and result.error_type == "SessionError"
    assert result.error == "SMTP smtp.fake.test:25: no complete reply to the greeting within the reply time limit"


def test_the_step_deadline_bounds_a_slow_but_steady_server(tmp_path: Path) -> None:
    # each reply in time, all of them together too slow
    slow = smtp_server({}, delay=0.2)

    result = run_step(plain(extra=("NOOP",) * 50), make_ctx(tmp_path, slow, step_timeout=1.0))
    assert not result.ok and result.error is not None
    assert result.error.endswith("within the step's time limit")


def test_an_endless_line_is_cut_at_64_kib(tmp_path: Path) -> None:
    def endless(sock: socket.socket) -> None:
        while True:
            sock.sendall(b"2" * 65536)

    result = run_step(plain(), make_ctx(tmp_path, endless))
    assert not result.ok and result.error is not None
    assert "a reply line to the greeting is longer than 64 KiB" in result.error
    assert result.hint == "check the port: is another service listening there?"


def test_an_endless_multiline_reply_is_cut(tmp_path: Path) -> None:
    def endless(sock: socket.socket) -> None:
        sock.sendall(b"220 hi\r\n")
        next(lines_of(sock))
        while True:
            sock.sendall(b"250-more\r\n" * 1000)

    result = run_step(plain(), make_ctx(tmp_path, endless))
    assert not result.ok and result.error == (
        "SMTP smtp.fake.test:25: the reply to EHLO lab-client has more than 1000 lines or 4 MiB; "
        "the server does not speak SMTP")


def test_not_an_smtp_server(tmp_path: Path) -> None:
    result = run_step(plain(), make_ctx(tmp_path, smtp_server({}, greeting=b"HTTP/1.1 400 Bad Request\r\n")))
    assert not result.ok and result.error is not None
    assert "'HTTP/1.1 400 Bad Request' is not an SMTP reply" in result.error
    assert result.hint is not None and "does it expect TLS?" in result.hint


def test_ehlo_refused_falls_back_to_helo(tmp_path: Path) -> None:
    server = smtp_server({"EHLO": b"502 5.5.2 Error: command not recognized\r\n", "HELO": b"250 fake\r\n"})
    result = run_step(plain(), make_ctx(tmp_path, server))
    assert result.ok, result.error
    sent = [e["text"] for e in result.events if e["dir"] == "C"]
    assert sent[:2] == ["EHLO lab-client", "HELO lab-client"]
    assert any("falling back to HELO" in e["text"] for e in result.events if e["dir"] == "*")
    assert result.details["capabilities"] == {}


def test_the_server_hangs_up(tmp_path: Path) -> None:
    def hang_up(sock: socket.socket) -> None:
        sock.sendall(b"220 hi\r\n")
        next(lines_of(sock))

    result = run_step(plain(), make_ctx(tmp_path, hang_up))
    assert not result.ok and result.error == (
        "SMTP smtp.fake.test:25: the server closed the connection after EHLO lab-client")


def test_bytes_injected_before_the_tls_handshake_are_refused(tmp_path: Path) -> None:
    server = smtp_server({"EHLO": b"250-fake\r\n250 STARTTLS\r\n",
                          # CVE-2011-0411 style: a reply smuggled in with the STARTTLS answer
                          "STARTTLS": b"220 go ahead\r\n250 injected\r\n"})
    result = run_step(SmtpStep(security="starttls", auth="none"), make_ctx(tmp_path, server))
    assert not result.ok and result.error is not None
    assert "sent data after accepting TLS and before the handshake" in result.error
    assert not any(e["tls"] for e in result.events)


def test_starttls_not_offered_and_auth_not_offered(tmp_path: Path) -> None:
    server = smtp_server({"EHLO": b"250-fake\r\n250 8BITMIME\r\n"})
    result = run_step(SmtpStep(security="starttls"), make_ctx(tmp_path, server))
    assert result.error == "SMTP smtp.fake.test:587: the server does not offer STARTTLS"
    result = run_step(SmtpStep(security="plain", auth="login"), make_ctx(tmp_path, server))
    assert result.error == ("SMTP smtp.fake.test:25: AUTH LOGIN is not offered here "
                            "(the server offers no AUTH at all)")
    assert result.hint is not None and "only after TLS" in result.hint


def test_auth_secret_never_reaches_the_transcript(tmp_path: Path) -> None:
    server = smtp_server({"EHLO": b"250-fake\r\n250 AUTH LOGIN PLAIN\r\n", "AUTH": b"535 5.7.8 no\r\n",
                          "QUIT": b"221 bye\r\n"})
    result = run_step(SmtpStep(security="plain", auth="plain"), make_ctx(tmp_path, server))
    assert not result.ok
    assert result.error == ("SMTP smtp.fake.test:25: AUTH … → 535 5.7.8 no: "
                            "Authentication failed: wrong user name or password (authorization code)")
    assert "AUTH PLAIN «redacted»" in [e["text"] for e in result.events]
    assert "s3cret" not in str(result.to_dict())


def test_port_25_blocked_while_465_and_587_connect(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, smtp_server({}))
    executor = ctx.executor
    assert isinstance(executor, ScriptedExecutor)
    executor.refuse = (25,)
    result = run_step(plain(), ctx)
    assert result.error_type == "ConnectError" and result.error is not None
    assert "but port 465 and 587 can: outbound port 25 is blocked" in result.error
    assert executor.opened == [25, 465, 587]
    executor.refuse = (25, 465, 587)
    result = run_step(plain(), ctx)
    assert result.error == "smtp.fake.test:25: connection refused"  # nothing works: the plain error


def test_imap_literals_are_read_by_count(tmp_path: Path) -> None:
    body = b"line1\r\n* 2 FETCH fake untagged inside the literal\r\na001 OK fake end\r\n"

    def imap(sock: socket.socket) -> None:
        sock.sendall(b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\na001 OK done\r\n")
        sock.recv(10)

    ctx = make_ctx(tmp_path, imap)
    result = StepResult(kind="imap", id=None, server="imap", host="imap.fake.test", port=143,
                        security="plain", started=0.0, started_wall=0.0)
    wire = connect(ctx, result, "IMAP", "imap.fake.test", 143, "plain", time.monotonic() + 5)
    response = read_response(wire, "a001")
    wire.close()
    assert (response.status, response.text) == ("OK", "done")
    assert response.literals == [body]
    assert response.untagged == [f"1 FETCH (BODY[] {{{len(body)}}})"]


def test_lines_step_reports_the_line_and_meaning(tmp_path: Path) -> None:
    server = smtp_server({"HELO": b"250 fake\r\n", "MAIL": b"553 5.7.1 sender not owned\r\n"})
    step = LinesStep(script=(LineItem(expect=220), LineItem(send="HELO x", expect=250),
                             LineItem(send="MAIL FROM:<{account.address}>", expect=250)))
    result = run_step(step, make_ctx(tmp_path, server))
    assert result.error == (
        "SMTP smtp.fake.test:25: script[3] `MAIL FROM:<{account.address}>`: expected 250, the server replied 553: "
        "5.7.1 sender not owned (Mailbox name not allowed (bad address, or the sender is not the logged-in account))")
    assert result.hint == "the sender should be the logged-in account's address"


def test_a_lines_failure_points_at_the_line_of_the_scenario_file(tmp_path: Path) -> None:
    # `line 2` once meant the script's second item, which a student looked for as line 2 of the file.
    server = smtp_server({"QUIT": b"221 2.0.0 Bye\r\n"})
    step = LinesStep(script=(LineItem(expect=220, where="scenarios/t.yaml:25:11"),
                             LineItem(send="QUIT", expect=250, where="scenarios/t.yaml:37:11")))
    result = run_step(step, make_ctx(tmp_path, server))
    assert result.error is not None
    assert result.error.startswith(
        "SMTP smtp.fake.test:25: scenarios/t.yaml:37:11: script[2] `QUIT`: expected 250, the server replied 221: "
        "2.0.0 Bye")


def test_run_steps_stops_at_the_first_failure_and_respects_the_scenario_deadline(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, smtp_server({"QUIT": b"221 bye\r\n"}, greeting=b"554 go away\r\n"))
    results = run_steps([plain(), plain()], ctx)
    assert len(results) == 1 and results[0].error is not None and "→ 554 go away" in results[0].error
    ctx.deadline = time.monotonic() - 1
    late = run_step(plain(), ctx)
    assert late.error == "the scenario's time limit was reached before this step"


@pytest.mark.parametrize(("server_name", "expected"), [
    ("nope", "profile 'scripted' has no server 'nope' (it has: imap, smtp)"),
    ("imap", "profile 'scripted': server 'imap' has no port for 'tls'"),
])
def test_profile_problems_are_usage_errors(tmp_path: Path, server_name: str, expected: str) -> None:
    result = run_step(SmtpStep(server=server_name, security="tls"), make_ctx(tmp_path, smtp_server({})))
    assert result.error == expected and result.error_type == "UsageError"


# --- POP3: what the sandbox's Dovecot cannot show -------------------------------------------
# Dovecot keeps only password hashes there, so it never offers APOP; and Postfix delivers in
# milliseconds, so a POP3 session never starts before the mail is in. A scripted peer plays both.

RFC1939_STAMP = "<1896.697170952@dbc.mtview.ca.us>"  # RFC 1939 section 7 example: secret "tanstaaf"
RFC1939_DIGEST = "c4c9334bac560ecc979e58001b3e22fb"


def pop3_server(message: bytes, *, empty_sessions: int = 0, log: list[str] | None = None) -> Server:
    sessions = [0]

    def serve(sock: socket.socket) -> None:
        sessions[0] += 1
        have = [] if sessions[0] <= empty_sessions else [message]
        sock.sendall(f"+OK POP3 server ready {RFC1939_STAMP}\r\n".encode())
        for line in lines_of(sock):
            if log is not None:
                log.append(line)
            verb, *args = line.split()
            if verb == "CAPA":
                sock.sendall(b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\n.\r\n")
            elif verb == "APOP":
                ok = args == ["mrose", RFC1939_DIGEST]
                sock.sendall(b"+OK maildrop locked\r\n" if ok else b"-ERR [AUTH] bad digest\r\n")
            elif verb == "STAT":
                sock.sendall(f"+OK {len(have)} {sum(map(len, have))}\r\n".encode())
            elif verb == "TOP" or verb == "RETR":
                data = have[int(args[0]) - 1]
                if verb == "TOP":
                    data = data.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
                stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                                   for ln in data.split(b"\r\n")[:-1])
                sock.sendall(b"+OK\r\n" + stuffed + b".\r\n")
            elif verb == "UIDL":
                sock.sendall(f"+OK {args[0]} uid-{args[0]}\r\n".encode())
            elif verb == "QUIT":
                sock.sendall(b"+OK bye\r\n")
                return
            else:
                sock.sendall(b"+OK\r\n")
    return serve


class FindClock:
    """The POP3 step's clock, moved on only by its own sleeps between sessions.

    How many sessions fit in find_timeout is the step's policy (0.25 s between sessions,
    doubling); on the real clock a loaded machine fits fewer, and the count would measure the
    machine instead of the policy. The sessions themselves keep the real clock (wire.py).
    """

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture()
def find_clock(monkeypatch: pytest.MonkeyPatch) -> FindClock:
    from labrunner.sessions import pop3

    clock = FindClock()
    monkeypatch.setattr(pop3, "time", clock)
    return clock


def test_apop_digest_is_rfc1939s_and_hidden(tmp_path: Path, find_clock: FindClock) -> None:
    from labrunner.config.model import Pop3Step
    from labrunner.sessions.context import SentMessage

    sent = b"Received: x\r\nMessage-ID: <m1@lab>\r\nSubject: s\r\n\r\n.dotted line\r\nbody\r\n"
    delivered = b"Return-Path: <a@b>\r\nDelivered-To: a@b\r\n" + sent
    log: list[str] = []
    ctx = make_ctx(tmp_path, pop3_server(delivered, empty_sessions=2, log=log), find_timeout=5.0)
    ctx.profile = Profile(name="p", target=TargetSpec(host="t"),
                          servers={"pop3": ServerSpec("pop.fake.test", {"plain": 110})},
                          account=AccountSpec(address="mrose@fake.test", user="mrose"))
    ctx.secret = "tanstaaf"
    ctx.sent["m"] = SentMessage("m", "<m1@lab>", "s", sent, "", ("mrose@fake.test",))
    result = run_step(Pop3Step(auth="apop", find="m", commands=()), ctx)
    assert result.ok, result.error
    assert f"APOP mrose {RFC1939_DIGEST}" in log  # what the server got
    shown = [e["text"] for e in result.events if e["dir"] == "C"]
    assert "APOP mrose «md5 digest»" in shown and RFC1939_DIGEST not in str(result.to_dict())
    # Not delivered in the first two sessions: looked for again in new sessions until it was.
    assert len(result.connections) == 3
    assert result.found is not None
    assert (result.found["sessions"], result.found["uid"], result.found["identical"]) == (3, "uid-1", True)
    assert result.found["trace_headers"] == ["Return-Path", "Delivered-To"]
    assert find_clock.sleeps == [0.25, 0.5]  # the pause between sessions doubles


def test_pop3_gives_up_at_the_find_deadline(tmp_path: Path, find_clock: FindClock) -> None:
    from labrunner.config.model import Pop3Step
    from labrunner.sessions.context import SentMessage

    ctx = make_ctx(tmp_path, pop3_server(b"", empty_sessions=1000), find_timeout=0.6)
    ctx.profile = Profile(name="p", target=TargetSpec(host="t"),
                          servers={"pop3": ServerSpec("pop.fake.test", {"plain": 110})},
                          account=AccountSpec(address="mrose@fake.test"))
    ctx.sent["m"] = SentMessage("m", "<m1@lab>", "s", b"", "", ())
    result = run_step(Pop3Step(auth="user", find="m", commands=()), ctx)
    assert not result.ok and result.error is not None
    assert result.error == ("POP3 pop.fake.test:110: the message <m1@lab> sent by step 'm' is not in the mailbox "
                            "(3 sessions) after 1 s")
    # 0.25 s, then only what was left of the 0.6 s; one last session at the deadline
    assert len(result.connections) == 3
    assert find_clock.sleeps == pytest.approx([0.25, 0.35])


def test_a_long_imap_search_line_is_read_and_shortened_in_the_transcript(tmp_path: Path) -> None:
    numbers = " ".join(str(n) for n in range(1, 20001))  # a mailbox of 20000 messages: ~110 KB

    def imap(sock: socket.socket) -> None:
        sock.sendall(f"* SEARCH {numbers}\r\na001 OK done\r\n".encode())
        sock.recv(10)

    ctx = make_ctx(tmp_path, imap)
    result = StepResult(kind="imap", id=None, server="imap", host="imap.fake.test", port=143,
                        security="plain", started=0.0, started_wall=0.0)
    wire = connect(ctx, result, "IMAP", "imap.fake.test", 143, "plain", time.monotonic() + 5)
    response = read_response(wire, "a001")
    wire.close()
    assert response.untagged == [f"SEARCH {numbers}"]
    shown = next(e["text"] for e in result.events if e["dir"] == "S")
    assert shown.endswith(f" … ({len(numbers) + 9} bytes in all)") and len(shown) < 2100


def test_pop3_never_deletes_more_than_one_known_message(tmp_path: Path) -> None:
    from labrunner.config.model import Pop3Step

    ctx = make_ctx(tmp_path, pop3_server(b""))
    ctx.profile = Profile(name="p", target=TargetSpec(host="t"),
                          servers={"pop3": ServerSpec("pop.fake.test", {"plain": 110})},
                          account=AccountSpec(address="me@fake.test"))
    result = run_step(Pop3Step(retrieve="all", delete=True), ctx)
    assert result.error_type == "UsageError" and result.error is not None
    assert result.error.startswith("pop3 step: delete removes only the message named by find:")
    assert result.connections == []  # refused before connecting
