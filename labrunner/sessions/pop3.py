"""The POP3 client: USER/PASS or APOP, STAT/LIST/UIDL, finding and retrieving a sent message.

Plain on 110, STLS on 110 (RFC 2595) and implicit TLS on 995. A POP3 server shows the
maildrop as it was at login, so a message still being delivered is looked for again in a
new session until the find deadline.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time

from labrunner.config.model import Pop3Step
from labrunner.errors import SessionError, UsageError
from labrunner.mime import compare_delivered, dot_unstuff, header_value
from labrunner.protocols import pop3 as codes
from labrunner.secrets import quoted
from labrunner.sessions.context import (
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

# Lines of a multi-line answer shown one by one in the transcript; the rest are summarised.
SHOWN_LINES = 40


def read_status(wire: Wire, deadline: float | None = None) -> tuple[bool, str]:
    line = wire.read_line(deadline if deadline is not None else wire.reply_deadline())
    text = line.decode("utf-8", "replace")
    if text.startswith(codes.OK):
        return True, text[3:].strip()
    if text.startswith(codes.ERR):
        return False, text[4:].strip()
    wire.broken = True
    raise SessionError(f"{wire.where}: {quoted(text, wire.ctx.redactor)} is not a POP3 reply",
                       hint="check the port and the security mode: is this a POP3 server, and does it expect TLS?")


def read_multiline(wire: Wire, deadline: float | None = None, *, limit: int = MAX_REPLY,
                   show: int = SHOWN_LINES) -> list[bytes]:
    """The lines up to the "." terminator (still dot-stuffed).

    The first ``show`` lines are recorded, the rest summarised; with ``show=0`` nothing is
    recorded and the caller summarises (a message is one event, like DATA).
    """
    deadline = deadline if deadline is not None else wire.reply_deadline()
    lines: list[bytes] = []
    total = 0
    while True:
        line = wire.read_line(deadline, record=len(lines) < show)
        if line == b".":
            if show and len(lines) > show:
                wire.ctx.note(wire.result, wire.info.conn, "more_lines", direction="S", tls=wire.tls,
                              n=len(lines) - show, size=total)
                wire.ctx.record(wire.result, wire.info.conn, "S", ".", tls=wire.tls)
            return lines
        total += len(line) + 2
        if total > limit:
            raise SessionError(f"{wire.where}: the answer to {wire.last_command} is larger than "
                               f"{limit // (1024 * 1024)} MiB")
        lines.append(line)


def is_multiline(command: str) -> bool:
    words = command.split()
    if not words:
        return False
    verb = words[0].upper()
    return verb in codes.MULTILINE or (verb in codes.MULTILINE_WITHOUT_ARG and len(words) == 1)


class Pop3Session:
    def __init__(self, step: Pop3Step, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
        self.step = step
        self.ctx = ctx
        self.result = result
        self.step_deadline = step_deadline
        self.wire: Wire | None = None
        self.stat: int | None = None
        self.sent: SentMessage | None = None
        if step.find is not None:
            self.sent = sent_by(ctx, step.find, "pop3")
        if step.delete and step.find is None and step.retrieve != "last":
            # A student's real mailbox is at stake: delete one known message, never "all".
            raise UsageError("pop3 step: delete removes only the message named by find: (or the last one "
                             "with retrieve: last)", hint="add find: <id of the smtp step>, or remove delete")

    def command(self, line: str, *, sensitive: bool = False, shown: str | None = None) -> tuple[bool, str]:
        assert self.wire is not None
        self.wire.send_line(line, sensitive=sensitive, shown=shown)
        return read_status(self.wire)

    def require(self, line: str, *, sensitive: bool = False, shown: str | None = None) -> str:
        ok, text = self.command(line, sensitive=sensitive, shown=shown)
        if not ok:
            raise self.failure(line.split()[0], text)
        return text

    def failure(self, verb: str, text: str) -> SessionError:
        assert self.wire is not None
        code = re.match(r"\[([A-Z/-]+)\]", text)
        meaning = codes.explain(code.group(1), self.ctx.lang) if code else ""
        meaning = meaning or codes.explain("-ERR", self.ctx.lang)
        return SessionError(f"{self.wire.where}: {self.wire.last_command} → -ERR {text}: {meaning}",
                            hint=codes.hint(verb, self.result.host, self.ctx.lang) or None)

    def run(self) -> None:
        context = client_context(self.ctx.keylog, self.ctx.profile.ca_file)
        delay = 0.25
        find_deadline = min(time.monotonic() + self.ctx.find_timeout, self.step_deadline)
        attempt = 0
        while True:
            attempt += 1
            if self.session(context):
                break
            remaining = find_deadline - time.monotonic()
            if remaining <= 0:
                assert self.sent is not None
                raise not_delivered(f"POP3 {self.result.host}:{self.result.port}", self.sent,
                                    f"the mailbox ({attempt} sessions)", self.ctx.find_timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 4.0)
        if self.result.found is not None:
            self.result.found["sessions"] = attempt

    def session(self, context: ssl.SSLContext) -> bool:
        """One POP3 session; True when the sought message (if any) was found."""
        step = self.step
        self.wire = connect(self.ctx, self.result, "POP3", self.result.host, self.result.port,
                            step.security, self.step_deadline, context)
        try:
            return self.dialogue(context)
        except SessionError:
            self.wire.goodbye("QUIT", read_status)
            raise
        finally:
            self.wire.close()

    def dialogue(self, context: ssl.SSLContext) -> bool:
        assert self.wire is not None
        wire = self.wire
        wire.last_command = "the greeting"
        ok, greeting = read_status(wire)
        if not ok:
            raise self.failure("greeting", greeting)
        caps = self.capa()
        if self.step.security == "starttls":
            if "STLS" not in caps:
                raise SessionError(f"{wire.where}: the server does not offer STLS",
                                   hint="use security: tls (995), or check the port")
            self.require("STLS")
            wire.start_tls(context, self.result.host)
            caps = self.capa()  # RFC 2595: capabilities may change after TLS
        self.login(greeting, caps)
        self.stat = None  # the message count this session's STAT gave, if any
        for command in self.step.commands:
            self.run_command(command)
        found = self.find_and_retrieve(caps)
        self.require("QUIT")
        return found

    def capa(self) -> dict[str, str]:
        assert self.wire is not None
        ok, _ = self.command("CAPA")
        caps: dict[str, str] = {}
        if ok:
            for line in read_multiline(self.wire):
                word, _, rest = line.decode("utf-8", "replace").partition(" ")
                caps[word.upper()] = rest
        key = "capabilities_tls" if self.wire.tls else "capabilities"
        self.result.details[key] = caps
        return caps

    def login(self, greeting: str, caps: dict[str, str]) -> None:
        account = self.ctx.profile.account
        if self.step.auth == "apop":
            stamp = re.search(r"<[^<>]+@[^<>]+>", greeting)
            if stamp:
                digest = hashlib.md5((stamp.group(0) + self.ctx.secret).encode("utf-8")).hexdigest()
                # The digest is not the secret, but it allows an offline guessing attack: hide it.
                self.require(f"APOP {account.login} {digest}", sensitive=True,
                             shown=f"APOP {account.login} «md5 digest»")
                self.result.details["auth"] = "apop"
                return
            assert self.wire is not None
            self.wire.note("no_apop")
        self.require(f"USER {account.login}")
        self.require(f"PASS {self.ctx.secret}", sensitive=True)
        self.result.details["auth"] = "user"

    def run_command(self, command: str) -> list[bytes]:
        assert self.wire is not None
        text = self.require(command)
        lines = read_multiline(self.wire) if is_multiline(command) else []
        verb = command.split()[0].upper()
        if verb == "STAT":
            m = re.match(r"(\d+)\s+(\d+)", text)
            if m:
                self.result.details["stat"] = {"messages": int(m.group(1)), "octets": int(m.group(2))}
                self.stat = int(m.group(1))
        elif verb in ("LIST", "UIDL") and len(command.split()) == 1:
            self.result.details[verb.lower()] = {
                int(n): v for n, _, v in (ln.decode("utf-8", "replace").partition(" ") for ln in lines)
                if n.isdigit()}
        return lines

    def count(self) -> int:
        if self.stat is not None:
            return self.stat  # the scenario's own STAT already said it
        stat = self.require("STAT")
        m = re.match(r"(\d+)", stat)
        return int(m.group(1)) if m else 0

    def retr(self, number: int) -> bytes:
        assert self.wire is not None
        top = self.step.top_lines
        command = f"TOP {number} {top}" if top is not None else f"RETR {number}"
        self.require(command)
        lines = read_multiline(self.wire, limit=MAX_MESSAGE, show=0)
        data = dot_unstuff(lines)
        self.ctx.note(self.result, self.wire.info.conn, "message_data", direction="S", tls=self.wire.tls,
                      size=len(data), lines=len(lines), mid=header_value(data, "Message-ID") or None)
        self.ctx.record(self.result, self.wire.info.conn, "S", ".", tls=self.wire.tls)
        return data

    def find_and_retrieve(self, caps: dict[str, str]) -> bool:
        assert self.wire is not None
        step = self.step
        total = self.count()
        found_number: int | None = None
        if self.sent is not None:
            for number in range(total, 0, -1):  # newest first: the sought message is recent
                if "TOP" in caps:
                    self.require(f"TOP {number} 0")
                    head = dot_unstuff(read_multiline(self.wire, show=0))
                    self.ctx.note(self.result, self.wire.info.conn, "headers", direction="S", tls=self.wire.tls,
                                  n=number, size=len(head), mid=header_value(head, "Message-ID") or None)
                    self.ctx.record(self.result, self.wire.info.conn, "S", ".", tls=self.wire.tls)
                else:
                    head = self.retr(number)
                if header_value(head, "Message-ID") == self.sent.message_id:
                    found_number = number
                    break
            if found_number is None:
                self.wire.note("not_yet", mid=self.sent.message_id)
                return False
        numbers: list[int] = []
        if step.retrieve == "found" and found_number is not None:
            numbers = [found_number]
        elif step.retrieve == "last" and total:
            numbers = [total]
        elif step.retrieve == "all":
            numbers = list(range(1, total + 1))
        for number in numbers:
            data = self.retr(number)
            if number == found_number and self.sent is not None:
                identical, trace = compare_delivered(self.sent.data, data)
                self.result.found = {
                    "step": self.sent.step_id, "message_id": self.sent.message_id, "number": number,
                    "uid": self.uid(number) if "UIDL" in caps else None,
                    "size": len(data), "trace_headers": trace,
                    # RETR returns the whole message: it must be the bytes sent plus trace headers.
                    "identical": identical if step.top_lines is None else None,
                }
        if found_number is not None and self.result.found is None and self.sent is not None:
            self.result.found = {"step": self.sent.step_id, "message_id": self.sent.message_id,
                                 "number": found_number, "uid": None, "size": None, "trace_headers": [],
                                 "identical": None}
        if step.delete:
            target = found_number if found_number is not None else (total if step.retrieve == "last" else None)
            if target:
                self.require(f"DELE {target}")
        return True

    def uid(self, number: int) -> str | None:
        text = self.require(f"UIDL {number}")
        parts = text.split()
        return parts[1] if len(parts) > 1 else None



def run(step: Pop3Step, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    Pop3Session(step, ctx, result, step_deadline).run()
