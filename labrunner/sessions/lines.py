"""The telnet exercise: lines sent exactly as written, each checked against the reply it expects.

A line's reply is read the way the protocol frames it (SMTP multi-line codes, POP3 status and
dot-terminated lists, IMAP tagged completion). A line without ``expect`` is sent without
waiting, like typing in telnet; a line without ``send`` only reads (the greeting).
"""

from __future__ import annotations

import ssl

from labrunner.config.model import LineItem, LinesStep
from labrunner.errors import ConnectError, SessionError, UsageError
from labrunner.mime import build_message, dot_stuff
from labrunner.protocols import imap as imap_codes
from labrunner.protocols import pop3 as pop3_codes
from labrunner.protocols import smtp as smtp_codes
from labrunner.sessions import imap, pop3, smtp
from labrunner.sessions.context import SentMessage, SessionContext, StepResult
from labrunner.sessions.placeholders import expand
from labrunner.sessions.tls import client_context
from labrunner.sessions.wire import Wire, connect


class LinesSession:
    def __init__(self, step: LinesStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
        self.step = step
        self.ctx = ctx
        self.result = result
        self.step_deadline = step_deadline
        self.wire: Wire | None = None
        self.last_sent = ""

    def run(self) -> None:
        context: ssl.SSLContext | None = None
        if self.step.security == "tls":
            context = client_context(self.ctx.keylog, self.ctx.profile.ca_file)
        try:
            self.wire = connect(self.ctx, self.result, self.step.protocol.upper(), self.result.host,
                                self.result.port, self.step.security, self.step_deadline, context)
        except ConnectError as exc:
            if self.step.protocol == "smtp" and self.result.port == 25:
                raise smtp.port25_blocked(self.ctx, self.result.host, exc) from None
            raise
        try:
            for number, item in enumerate(self.step.script, 1):
                self.line(number, item)
        finally:
            self.wire.close()

    def line(self, number: int, item: LineItem) -> None:
        assert self.wire is not None
        wire = self.wire
        # script[N] is the key path `labrunner validate` uses; the file position, when the
        # scenario was loaded from a file, is what an editor jumps to.
        where = f"{item.where}: script[{number}]" if item.where else f"script[{number}]"
        if item.send is not None and item.send_message is not None:
            raise UsageError(f"{where}: give either send or send_message, not both")
        if item.send is not None:
            expanded = expand(item.send, self.ctx.profile.account, self.ctx.secret, where=where)
            wire.send_line(expanded.text, sensitive=expanded.sensitive)
            self.last_sent = expanded.text
            label = f"{where} `{self.ctx.redactor(item.send)}`"
        elif item.send_message is not None:
            self.send_message(item)
            label = f"{where} (the message)"
            self.last_sent = "."
        else:
            label = f"{where} (reading {'the greeting' if number == 1 else 'a reply'})"
            wire.last_command = "the greeting" if number == 1 else "the previous line"
        if item.expect is None and (item.send is not None or item.send_message is not None):
            return  # typed without waiting for an answer, as in telnet
        got, meaning = self.read_reply(item)
        if item.expect is not None and not self.matches(got, item.expect):
            raise SessionError(f"{wire.where}: {label}: expected {item.expect}, the server replied {got}"
                               + (f": {meaning}" if meaning else ""),
                               hint=self.hint(got) or None)

    def send_message(self, item: LineItem) -> None:
        assert self.wire is not None and item.send_message is not None
        account = self.ctx.profile.account
        spec = item.send_message
        message = build_message(spec, sender=spec.from_ or account.address,
                                recipients=spec.to or (account.address,), scenario_dir=self.ctx.scenario_dir)
        payload = dot_stuff(message.data)
        self.ctx.note(self.result, self.wire.info.conn, "data_fragment", direction="C", tls=self.wire.tls,
                      size=len(payload), summary=message.summary())
        self.wire.last_command = "the message (end of DATA)"
        self.wire.send_bytes(payload)
        self.result.message = message.record(len(payload), self.ctx.redactor)
        self.result.body = message.data.decode("utf-8", "replace")  # in memory only (StepResult.to_dict)
        step_id = self.step.id or f"lines@{self.result.started}"
        self.ctx.sent[step_id] = SentMessage(step_id, message.message_id, message.subject, message.data,
                                             message.sha256, message.recipients)

    def read_reply(self, item: LineItem) -> tuple[str, str]:
        """The reply as the student would compare it (code or status word) and its meaning."""
        assert self.wire is not None
        wire = self.wire
        lang = self.ctx.lang
        if self.step.protocol == "smtp":
            reply = smtp.read_reply(wire)
            return str(reply.code), f"{reply.text} ({smtp_codes.explain(reply.code, lang)})"
        if self.step.protocol == "pop3":
            ok, text = pop3.read_status(wire)
            if ok and item.send is not None and pop3.is_multiline(self.last_sent):
                pop3.read_multiline(wire)
            status = pop3_codes.OK if ok else pop3_codes.ERR
            return status, text
        tag = self.last_sent.split()[0] if self.last_sent.split() and item.send is not None else "*"
        response = imap.read_response(wire, tag)
        return response.status, f"{response.text} ({imap_codes.explain(response.status, lang)})"

    def matches(self, got: str, expect: int | str) -> bool:
        want = str(expect).strip().upper()
        if self.step.protocol == "smtp" and want.isdigit() and len(want) == 1:
            return got.startswith(want)
        return got.upper() == want

    def hint(self, got: str) -> str:
        lang = self.ctx.lang
        if self.step.protocol == "smtp" and got.isdigit():
            return smtp_codes.hint(int(got), self.result.host, lang)
        verb = self.last_sent.split()[0].upper() if self.last_sent.split() else ""
        if self.step.protocol == "pop3":
            return pop3_codes.hint(verb, self.result.host, lang)
        verb = self.last_sent.split()[1].upper() if len(self.last_sent.split()) > 1 else ""
        return imap_codes.hint(verb, self.result.host, lang)


def run(step: LinesStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    LinesSession(step, ctx, result, step_deadline).run()
