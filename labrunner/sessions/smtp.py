"""The SMTP client: plain (25), STARTTLS (587) and implicit TLS (465), as a mail client does it.

One function per phase keeps the order of RFC 5321 visible: greeting, EHLO (HELO fallback),
STARTTLS and EHLO again, AUTH, MAIL/RCPT/DATA (pipelined when asked and offered), extra
commands, QUIT. Each reply is checked against the scenario's expectation for its phase.
"""

from __future__ import annotations

import base64
import re
import ssl
from dataclasses import dataclass

from labrunner.config.model import SmtpStep
from labrunner.errors import ConnectError, SessionError, UsageError
from labrunner.mime import BuiltMessage, build_message, dot_stuff
from labrunner.protocols import smtp as codes
from labrunner.secrets import quoted
from labrunner.sessions.context import MAX_REPLY, SentMessage, SessionContext, StepResult
from labrunner.sessions.tls import client_context
from labrunner.sessions.wire import Wire, connect


@dataclass
class Reply:
    code: int
    lines: list[str]  # the text after "250-" / "250 " of each line

    @property
    def text(self) -> str:
        return " | ".join(line for line in self.lines if line) if len(self.lines) > 1 else (
            self.lines[0] if self.lines else "")


def read_reply(wire: Wire, deadline: float | None = None) -> Reply:
    """One reply, single or multi-line ("250-..." continued, "250 ..." last)."""
    deadline = deadline if deadline is not None else wire.reply_deadline()
    lines: list[str] = []
    total = 0
    code = 0
    while True:
        raw = wire.read_line(deadline)
        total += len(raw) + 2
        if total > MAX_REPLY or len(lines) >= 1000:
            raise SessionError(f"{wire.where}: the reply to {wire.last_command} has more than 1000 lines "
                               "or 4 MiB; the server does not speak SMTP")
        if len(raw) < 3 or not raw[:3].isdigit() or raw[3:4] not in (b"", b" ", b"-"):
            wire.broken = True
            raise SessionError(
                f"{wire.where}: {quoted(raw.decode('utf-8', 'replace'), wire.ctx.redactor)} is not an SMTP reply",
                hint="check the port and the security mode: is this an SMTP server, and does it expect TLS?")
        this = int(raw[:3])
        if lines and this != code:
            raise SessionError(f"{wire.where}: a multi-line reply changed its code from {code} to {this}")
        code = this
        lines.append(raw[4:].decode("utf-8", "replace"))
        if raw[3:4] != b"-":
            return Reply(code, lines)


def matches(code: int, want: int) -> bool:
    """An expectation is an exact code (550) or a class digit (5 = any 5xx)."""
    return code == want if want >= 100 else code // 100 == want


def capabilities(reply: Reply) -> dict[str, str]:
    """EHLO keywords → their parameters; the first line is the server's name, not a keyword."""
    caps: dict[str, str] = {}
    for line in reply.lines[1:]:
        word, _, params = line.strip().partition(" ")
        if "=" in word and word.upper().startswith("AUTH="):  # old "AUTH=LOGIN" form
            word, params = "AUTH", word.split("=", 1)[1] + " " + params
        key = word.upper()
        caps[key] = (caps.get(key, "") + " " + params).strip()
    return caps


class SmtpSession:
    def __init__(self, step: SmtpStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
        self.step = step
        self.ctx = ctx
        self.result = result
        self.step_deadline = step_deadline
        self.host = result.host
        self.port = result.port
        unknown = sorted(set(step.expect) - set(codes.PHASES) - {w.split()[0].lower() for w in step.extra if w})
        if unknown:
            raise UsageError(f"smtp step: unknown expect key(s) {', '.join(unknown)}",
                             hint=f"known phases: {', '.join(codes.PHASES)}, or a command word of extra")
        self.wire: Wire | None = None
        self.caps: dict[str, str] = {}
        self.stopped = False  # an expected refusal ended the transaction

    # --- reply checks -------------------------------------------------------------------

    def check(self, phase: str, reply: Reply, ok: tuple[int, ...], *, final: bool = True) -> bool:
        """True to go on; False when the scenario expected this refusal (ends the mail); raises otherwise.

        An expectation is about a phase's last reply: an intermediate success (334 in the
        middle of AUTH LOGIN) passes whatever the scenario expects at the end.
        """
        want = self.step.expect.get(phase)
        if not final and reply.code in ok:
            return True
        if want is not None:
            if matches(reply.code, want):
                if reply.code in ok:
                    return True
                self.result.expected_failure = f"{phase} {reply.code}"
                self.note("expected_reply", phase=phase, code=reply.code)
                return False
            raise self.failure(reply, f"expected {want}")
        if reply.code in ok:
            return True
        raise self.failure(reply)

    def failure(self, reply: Reply, expected: str = "") -> SessionError:
        assert self.wire is not None
        meaning = codes.explain(reply.code, self.ctx.lang)
        extra = f" ({expected})" if expected else ""
        return SessionError(
            f"{self.wire.where}: {self.wire.last_command} → {reply.code} {reply.text}{extra}: {meaning}",
            hint=codes.hint(reply.code, self.host, self.ctx.lang) or None,
        )

    def note(self, key: str, **fields: str | int | None) -> None:
        assert self.wire is not None
        self.wire.note(key, **fields)

    def command(self, line: str, *, sensitive: bool = False, shown: str | None = None) -> Reply:
        assert self.wire is not None
        self.wire.send_line(line, sensitive=sensitive, shown=shown)
        return read_reply(self.wire)

    # --- phases -------------------------------------------------------------------------

    def run(self) -> None:
        step = self.step
        context = client_context(self.ctx.keylog, self.ctx.profile.ca_file)
        self.wire = self.open(context)
        try:
            self.dialogue(context)
        except SessionError:
            self.wire.goodbye("QUIT", read_reply)
            raise
        finally:
            self.wire.close()
        self.result.details["pipelining"] = bool(step.pipelining and "PIPELINING" in self.caps)

    def open(self, context: ssl.SSLContext) -> Wire:
        try:
            return connect(self.ctx, self.result, "SMTP", self.host, self.port, self.step.security,
                           self.step_deadline, context)
        except ConnectError as exc:
            if self.port == 25:
                raise port25_blocked(self.ctx, self.host, exc) from None
            raise

    def dialogue(self, context: ssl.SSLContext) -> None:
        assert self.wire is not None
        wire = self.wire
        wire.last_command = "the greeting"
        if not self.check("greeting", read_reply(wire), (codes.SERVICE_READY,)):
            return self.quit()
        if not self.hello():
            return self.quit()
        if self.step.security == "starttls":
            if "STARTTLS" not in self.caps:
                raise SessionError(f"{wire.where}: the server does not offer STARTTLS",
                                   hint="use security: tls (465) or plain, or check the port")
            if not self.check("starttls", self.command("STARTTLS"), (codes.SERVICE_READY,)):
                return self.quit()
            wire.start_tls(context, self.host)
            # RFC 3207: what the server said before TLS is forgotten; ask again.
            if not self.hello():
                return self.quit()
        if self.step.auth != "none" and not self.authenticate():
            return self.quit()
        message = self.build()
        if not self.transaction(message):
            self.rset_after_refusal()
        for extra in self.step.extra:
            word = extra.split()[0].lower() if extra.strip() else ""
            reply = self.command(extra)
            self.check(word, reply, tuple(range(200, 300)))
        self.quit()

    def hello(self) -> bool:
        reply = self.command(f"EHLO {self.step.helo}")
        if reply.code in (codes.SYNTAX_ERROR, codes.NOT_IMPLEMENTED, codes.PARAM_NOT_IMPLEMENTED):
            self.note("helo_fallback")
            reply = self.command(f"HELO {self.step.helo}")
            self.caps = {}
            ok = self.check("helo", reply, (codes.OK,))
        else:
            ok = self.check("ehlo", reply, (codes.OK,))
            self.caps = capabilities(reply)
        self.result.details["capabilities" if not self.wire or not self.wire.tls else "capabilities_tls"] = (
            dict(self.caps))
        return ok

    def authenticate(self) -> bool:
        assert self.wire is not None
        mechanisms = self.caps.get("AUTH", "").upper().split()
        wanted = self.step.auth.upper()
        if wanted not in mechanisms:
            offered = " ".join(mechanisms) or "no AUTH at all"
            hint = ("servers often offer AUTH only after TLS: use security: starttls or tls"
                    if not self.wire.tls else "use auth: " + (mechanisms[0].lower() if mechanisms else "none"))
            raise SessionError(f"{self.wire.where}: AUTH {wanted} is not offered here (the server offers "
                               f"{offered})", hint=hint)
        login = self.ctx.profile.account.login
        secret = self.ctx.secret
        if wanted == "PLAIN":
            blob = _b64(f"\0{login}\0{secret}")
            reply = self.command(f"AUTH PLAIN {blob}", sensitive=True)
            return self.check("auth", reply, (codes.AUTH_SUCCESSFUL,))
        reply = self.command("AUTH LOGIN")
        if not self.check("auth", reply, (codes.AUTH_CONTINUE,), final=False):
            return False
        reply = self.command(_b64(login))
        self.wire.last_command = "AUTH LOGIN (user name)"
        if not self.check("auth", reply, (codes.AUTH_CONTINUE,), final=False):
            return False
        reply = self.command(_b64(secret), sensitive=True)
        self.wire.last_command = "AUTH LOGIN (password)"
        return self.check("auth", reply, (codes.AUTH_SUCCESSFUL,))

    def build(self) -> BuiltMessage:
        account = self.ctx.profile.account
        recipients = self.step.rcpt_to or (account.address,)
        message = build_message(self.step.message, sender=self.step.mail_from or account.address,
                                recipients=recipients, scenario_dir=self.ctx.scenario_dir)
        return message

    def transaction(self, message: BuiltMessage) -> bool:
        """MAIL, RCPT..., DATA, the message; False if an expected refusal ended it."""
        assert self.wire is not None
        wire = self.wire
        sender = self.step.mail_from or self.ctx.profile.account.address
        commands = [f"MAIL FROM:<{sender}>"] + [f"RCPT TO:<{r}>" for r in message.recipients] + ["DATA"]
        phases = ["mail"] + ["rcpt"] * len(message.recipients) + ["data"]
        rcpt_ok: tuple[int, ...] = (codes.OK, 251)
        ok_codes: list[tuple[int, ...]] = [(codes.OK,), *[rcpt_ok] * len(message.recipients),
                                           (codes.START_MAIL_INPUT,)]
        pipelined = self.step.pipelining and "PIPELINING" in self.caps
        if pipelined:
            # RFC 2920: the whole envelope in one write, then the replies in order.
            self.note("pipelining")
            for line in commands:
                self.ctx.record(self.result, wire.info.conn, "C", line, tls=wire.tls)
            wire.last_command = "the pipelined MAIL/RCPT/DATA"
            wire.send_bytes("".join(c + "\r\n" for c in commands).encode("utf-8"))
        elif self.step.pipelining:
            self.note("no_pipelining")
        accepted = 0
        mail_ok = True
        for command, phase, ok in zip(commands, phases, ok_codes, strict=True):
            if not pipelined and (not mail_ok or (phase == "data" and accepted == 0)):
                return False  # nothing to send to: stop before the next command
            if pipelined:
                wire.last_command = command
                reply = read_reply(wire)
            else:
                reply = self.command(command)
            if phase == "data" and (not mail_ok or accepted == 0):
                # Pipelined, every recipient refused: a 354 here still needs an (empty) end.
                if reply.code == codes.START_MAIL_INPUT:
                    wire.send_line(".")
                    read_reply(wire)
                return False
            if pipelined and not mail_ok:
                continue  # the server answers these with 503; MAIL's refusal already counted
            going = self.check(phase, reply, ok)
            if phase == "mail":
                mail_ok = going
            elif phase == "rcpt":
                accepted += going
            elif not going:
                return False
        return self.send_body(message)

    def send_body(self, message: BuiltMessage) -> bool:
        assert self.wire is not None
        wire = self.wire
        payload = dot_stuff(message.data)
        self.ctx.note(self.result, wire.info.conn, "data_fragment", direction="C", tls=wire.tls,
                      size=len(payload), summary=message.summary())
        wire.last_command = "the message (end of DATA)"
        wire.send_bytes(payload)
        reply = read_reply(wire)
        self.result.message = message.record(len(payload), self.ctx.redactor)
        self.result.body = message.data.decode("utf-8", "replace")  # in memory only (StepResult.to_dict)
        if not self.check("message", reply, (codes.OK,)):
            return False
        queued = re.search(r"queued as\s+(\S+)", reply.text, re.IGNORECASE)
        self.result.message["queue_id"] = queued.group(1).rstrip(".") if queued else None
        self.result.message["reply"] = f"{reply.code} {reply.text}"
        step_id = self.step.id or f"{self.result.kind}@{self.result.started}"
        self.ctx.sent[step_id] = SentMessage(step_id, message.message_id, message.subject, message.data,
                                             message.sha256, message.recipients)
        return True

    def rset_after_refusal(self) -> None:
        """After an expected refusal the transaction is abandoned cleanly, like a client does."""
        reply = self.command("RSET")
        if reply.code != codes.OK:
            raise self.failure(reply)

    def quit(self) -> None:
        reply = self.command("QUIT")
        self.check("quit", reply, (codes.CLOSING,))



def port25_blocked(ctx: SessionContext, host: str, exc: ConnectError) -> ConnectError:
    """Cloud hosts often block outbound 25: if 465 or 587 connect, say so and point there."""
    working = []
    for port in (465, 587):
        try:
            stream = ctx.executor.open_connection(host, port, min(5.0, ctx.connect_timeout))
        except ConnectError:
            continue
        stream.close()
        working.append(str(port))
    if not working:
        return exc
    return ConnectError(
        f"SMTP {host}:25 cannot be reached from the target ({exc.message}), but port "
        f"{' and '.join(working)} can: outbound port 25 is blocked, probably by the cloud provider",
        hint="Alibaba Cloud ECS and most clouds block outbound port 25 by default: a plain-text SMTP "
             "scenario needs it, so ask the provider to unblock port 25 (阿里云: 25 端口解封); the others "
             "can use security: tls (port 465) or security: starttls (port 587)",
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def run(step: SmtpStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    SmtpSession(step, ctx, result, step_deadline).run()
