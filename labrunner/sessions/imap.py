"""The IMAP client: CAPABILITY, STARTTLS, LOGIN, SELECT, SEARCH, FETCH, LOGOUT (RFC 3501).

Plain or STARTTLS on 143, implicit TLS on 993. Responses may carry literals (``{123}`` then
123 bytes), which are read by count, not by line. A message sent earlier is looked for with
SEARCH HEADER Message-ID, polling with NOOP until it is delivered or the find deadline passes.
"""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass, field

from labrunner.config.model import ImapStep
from labrunner.errors import SessionError
from labrunner.mime import compare_delivered
from labrunner.protocols import imap as codes
from labrunner.secrets import REDACTED, quoted
from labrunner.sessions.context import (
    MAX_LINE,
    MAX_MESSAGE,
    MAX_REPLY,
    SentMessage,
    SessionContext,
    StepResult,
    not_delivered,
    sent_by,
)
from labrunner.sessions.tls import client_context
from labrunner.sessions.wire import Wire, connect

_LITERAL = re.compile(rb"\{(\d+)\+?\}$")
# Literals up to this size are shown in the transcript; longer ones are summarised.
SHOWN_LITERAL = 4096


@dataclass
class Response:
    tag: str
    status: str  # OK / NO / BAD (BYE for an untagged end)
    text: str
    untagged: list[str] = field(default_factory=list)  # "* ..." lines, literals replaced by {n}
    literals: list[bytes] = field(default_factory=list)


def read_line_with_literals(wire: Wire, deadline: float, budget: list[int],
                            show: int = SHOWN_LITERAL) -> tuple[str, list[bytes]]:
    """One logical response line: physical lines joined around their literals."""
    parts: list[str] = []
    literals: list[bytes] = []
    while True:
        # One IMAP line can be long (SEARCH of a large mailbox); the response budget caps it.
        raw = wire.read_line(deadline, limit=max(MAX_LINE, budget[0]))
        budget[0] -= len(raw) + 2
        if budget[0] < 0:
            raise SessionError(f"{wire.where}: the response to {wire.last_command} is too large")
        parts.append(raw.decode("utf-8", "replace"))
        m = _LITERAL.search(raw)
        if not m:
            return "".join(parts), literals
        size = int(m.group(1))
        budget[0] -= size
        if budget[0] < 0:
            raise SessionError(f"{wire.where}: a literal of {size} bytes in the response to "
                               f"{wire.last_command} is too large")
        data = wire.read_exact(size, deadline)
        literals.append(data)
        if size <= show:
            wire.ctx.record(wire.result, wire.info.conn, "S", data.decode("utf-8", "replace"), tls=wire.tls)
        else:
            wire.ctx.note(wire.result, wire.info.conn, "literal", direction="S", tls=wire.tls, size=size)


def read_response(wire: Wire, tag: str, deadline: float | None = None, limit: int = MAX_REPLY,
                  show: int = SHOWN_LITERAL) -> Response:
    deadline = deadline if deadline is not None else wire.reply_deadline()
    budget = [limit]
    untagged: list[str] = []
    literals: list[bytes] = []
    while True:
        line, lits = read_line_with_literals(wire, deadline, budget, show)
        literals += lits
        head, _, rest = line.partition(" ")
        if head == tag:
            status, _, text = rest.partition(" ")
            return Response(tag, status.upper(), text, untagged, literals)
        if head == "*":
            untagged.append(rest)
            if rest.upper().startswith("BYE") and tag != "*":
                # The server is leaving; a tagged reply may still follow (LOGOUT) or not.
                continue
        elif head != "+":
            wire.broken = True
            raise SessionError(f"{wire.where}: {quoted(line, wire.ctx.redactor)} is not an IMAP response",
                               hint="check the port and the security mode: is this an IMAP server?")


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 section 4.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def astring(text: str) -> str | bytes:
    """A LOGIN argument as it goes on the wire: a quoted string, or the bytes of a literal.

    RFC 3501 quoted strings carry 7-bit text only; an 8-bit (UTF-8) name or password must be
    a literal. ``"`` and ``\\`` could be escaped, but servers differ in unescaping them, and a
    literal is read by count, so a password is always delivered exactly as typed.
    """
    if all(" " <= c <= "~" and c not in '"\\' for c in text):
        return quote(text)
    return text.encode("utf-8")


# LITERAL- (RFC 7888) allows non-synchronizing literals up to this size.
LITERAL_MINUS_MAX = 4096


class ImapSession:
    def __init__(self, step: ImapStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
        self.step = step
        self.ctx = ctx
        self.result = result
        self.step_deadline = step_deadline
        self.wire: Wire | None = None
        self.counter = 0
        self.sent: SentMessage | None = None
        if step.find is not None:
            self.sent = sent_by(ctx, step.find, "imap")

    def command(self, line: str, *, sensitive: bool = False, shown: str | None = None,
                ok: bool = True, limit: int = MAX_REPLY, show: int = SHOWN_LITERAL) -> Response:
        assert self.wire is not None
        self.counter += 1
        tag = f"a{self.counter:03d}"
        self.wire.send_line(f"{tag} {line}", sensitive=sensitive,
                            shown=f"{tag} {shown}" if shown is not None else None)
        # Errors name the command, not its tag; a credential never reaches an error line.
        self.wire.last_command = f"{line.split()[0]} …" if sensitive else line
        response = read_response(self.wire, tag, limit=limit, show=show)
        if ok and response.status != codes.OK:
            raise self.failure(line.split()[0], response)
        return response

    def failure(self, verb: str, response: Response) -> SessionError:
        assert self.wire is not None
        code = re.match(r"\[([A-Z-]+)", response.text)
        meaning = (codes.explain(code.group(1), self.ctx.lang) if code else "") or codes.explain(
            response.status, self.ctx.lang)
        return SessionError(
            f"{self.wire.where}: {self.wire.last_command} → {response.status} {response.text}: {meaning}",
            hint=codes.hint(verb, self.result.host, self.ctx.lang) or None)

    def run(self) -> None:
        context = client_context(self.ctx.keylog, self.ctx.profile.ca_file)
        self.wire = connect(self.ctx, self.result, "IMAP", self.result.host, self.result.port,
                            self.step.security, self.step_deadline, context)
        try:
            self.dialogue(context)
        except SessionError:
            self.logout_quietly()
            raise
        finally:
            self.wire.close()

    def capability(self) -> set[str]:
        response = self.command("CAPABILITY")
        caps: set[str] = set()
        for line in response.untagged:
            if line.upper().startswith("CAPABILITY"):
                caps |= {w.upper() for w in line.split()[1:]}
        assert self.wire is not None
        self.result.details["capabilities_tls" if self.wire.tls else "capabilities"] = sorted(caps)
        return caps

    def dialogue(self, context: ssl.SSLContext) -> None:
        assert self.wire is not None
        wire = self.wire
        wire.last_command = "the greeting"
        greeting = read_response(wire, "*")
        if greeting.status not in (codes.OK, codes.PREAUTH):
            raise self.failure("greeting", greeting)
        caps = self.capability()
        if self.step.security == "starttls":
            if "STARTTLS" not in caps:
                raise SessionError(f"{wire.where}: the server does not offer STARTTLS",
                                   hint="use security: tls (993), or check the port")
            self.command("STARTTLS")
            wire.start_tls(context, self.result.host)
            caps = self.capability()  # RFC 3501 6.2.1: capabilities may change after TLS
        if greeting.status != codes.PREAUTH:
            if "LOGINDISABLED" in caps:
                raise SessionError(f"{wire.where}: the server refuses LOGIN on this connection (LOGINDISABLED)",
                                   hint="use security: starttls or tls")
            self.login(caps)
        selected = self.command(f"SELECT {quote(self.step.mailbox)}")
        for line in selected.untagged:
            m = re.match(r"(\d+) EXISTS", line)
            if m:
                self.result.details["exists"] = int(m.group(1))
        numbers = self.find() if self.sent is not None else self.search(self.step.search)
        self.result.details["search"] = numbers
        if numbers:
            shown = numbers[-10:]  # the newest few: FETCH of a whole large mailbox is not the point
            self.command(f"FETCH {','.join(map(str, shown))} {self.step.fetch}", limit=MAX_MESSAGE)
            if self.sent is not None:
                self.verify(numbers[-1])
        response = self.command("LOGOUT", ok=False)
        if response.status != codes.OK:
            raise self.failure("LOGOUT", response)

    def login(self, caps: set[str]) -> None:
        user, secret = astring(self.ctx.profile.account.login), astring(self.ctx.secret)
        if isinstance(user, str) and isinstance(secret, str):
            self.command(f"LOGIN {user} {secret}", sensitive=True, shown=f"LOGIN {user} {REDACTED}")
            return
        literals = [len(a) for a in (user, secret) if isinstance(a, bytes)]
        # Non-synchronizing literals save a round trip per argument where the server allows them.
        non_sync = "LITERAL+" in caps or ("LITERAL-" in caps and max(literals) <= LITERAL_MINUS_MAX)
        self.command_with_literals("LOGIN", [(user, False), (secret, True)], non_sync=non_sync)

    def command_with_literals(self, verb: str, args: list[tuple[str | bytes, bool]], *,
                              non_sync: bool) -> Response:
        """A command whose ``bytes`` arguments go as literals (RFC 3501 4.3, RFC 7888).

        Each argument is (value, secret); a secret is never in the transcript or an error line.
        With synchronizing literals the server must answer ``+`` before each literal is sent.
        """
        assert self.wire is not None
        wire = self.wire
        self.counter += 1
        tag = f"a{self.counter:03d}"
        wire.last_command = f"{verb} …"
        raw, shown = bytearray(f"{tag} {verb}".encode("ascii")), f"{tag} {verb}"
        for value, secret in args:
            if isinstance(value, str):
                raw += b" " + value.encode("ascii")
                shown += " " + (REDACTED if secret else value)
                continue
            marker = f" {{{len(value)}{'+' if non_sync else ''}}}"
            self.send_physical(bytes(raw) + marker.encode("ascii"), shown + marker)
            if not non_sync:
                self.continuation(tag, verb)
            # The literal's bytes begin the next physical line; a name is shown as text.
            raw, shown = bytearray(value), REDACTED if secret else value.decode("utf-8", "replace")
        self.send_physical(bytes(raw), shown)
        response = read_response(wire, tag)
        if response.status != codes.OK:
            raise self.failure(verb, response)
        return response

    def send_physical(self, data: bytes, shown: str) -> None:
        assert self.wire is not None
        self.ctx.record(self.result, self.wire.info.conn, "C", shown, tls=self.wire.tls)
        self.wire.send_bytes(data + b"\r\n")

    def continuation(self, tag: str, verb: str) -> None:
        """Wait for the server's go-ahead (``+ ...``) before a synchronizing literal."""
        assert self.wire is not None
        deadline = self.wire.reply_deadline()
        while True:
            line = self.wire.read_line(deadline).decode("utf-8", "replace")
            if line.startswith("+"):
                return
            head, _, rest = line.partition(" ")
            if head == tag:  # the server refused the literal: its tagged reply says why
                status, _, text = rest.partition(" ")
                raise self.failure(verb, Response(tag, status.upper(), text))
            if head != "*":
                self.wire.broken = True
                raise SessionError(f"{self.wire.where}: {quoted(line, self.wire.ctx.redactor)} is not an IMAP response",
                                   hint="check the port and the security mode: is this an IMAP server?")

    def search(self, criteria: str) -> list[int]:
        response = self.command(f"SEARCH {criteria}")
        numbers: list[int] = []
        for line in response.untagged:
            if line.upper().startswith("SEARCH"):
                numbers += [int(n) for n in line.split()[1:] if n.isdigit()]
        return numbers

    def find(self) -> list[int]:
        assert self.sent is not None and self.wire is not None
        deadline = min(time.monotonic() + self.ctx.find_timeout, self.step_deadline)
        delay = 0.25
        polls = 0
        while True:
            numbers = self.search(f"HEADER Message-ID {quote(self.sent.message_id)}")
            if numbers:
                self.result.found = {"step": self.sent.step_id, "message_id": self.sent.message_id,
                                     "number": numbers[-1], "polls": polls}
                return numbers
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise not_delivered(self.wire.where, self.sent, self.step.mailbox, self.ctx.find_timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 4.0)
            polls += 1
            self.command("NOOP")  # lets the server report the new message (RFC 3501 6.1.2)

    def verify(self, number: int) -> None:
        """Fetch the whole found message and compare it with the bytes sent."""
        assert self.sent is not None and self.result.found is not None
        # The whole message is summarised in the transcript, as DATA and RETR are.
        response = self.command(f"FETCH {number} (UID BODY.PEEK[])", limit=MAX_MESSAGE, show=0)
        data = max(response.literals, key=len) if response.literals else b""
        identical, trace = compare_delivered(self.sent.data, data)
        uid = next((m.group(1) for line in response.untagged
                    if (m := re.search(r"UID (\d+)", line))), None)
        self.result.found.update({"uid": uid, "size": len(data), "trace_headers": trace,
                                  "identical": identical})

    def logout_quietly(self) -> None:
        assert self.wire is not None
        self.counter += 1
        tag = f"a{self.counter:03d}"
        self.wire.goodbye(f"{tag} LOGOUT", lambda wire, deadline: read_response(wire, tag, deadline))


def run(step: ImapStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    ImapSession(step, ctx, result, step_deadline).run()
