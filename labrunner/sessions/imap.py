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
from labrunner.sessions.core import (
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
        shown = data.decode("utf-8", "replace") if size <= show else f"«literal, {size} bytes»"
        wire.ctx.record(wire.result, wire.info.conn, "S", shown, tls=wire.tls)


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
            raise SessionError(f"{wire.where}: {line[:60]!r} is not an IMAP response",
                               hint="check the port and the security mode: is this an IMAP server?")


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 section 4.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
            account = self.ctx.profile.account
            self.command(f"LOGIN {quote(account.login)} {quote(self.ctx.secret)}", sensitive=True,
                         shown=f"LOGIN {quote(account.login)} «redacted»")
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
