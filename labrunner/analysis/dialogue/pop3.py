"""POP3 (RFC 1939, 2449, 5034): status lines, multi-line responses, RETR/TOP messages, AUTH."""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from labrunner.analysis import mail as mailsum
from labrunner.analysis.dialogue.base import (
    _HEADER_LINE,
    MAX_LINES_PER_ENTRY,
    Conversation,
    _text,
    b64text,
    is_command,
    lone_token,
    tr,
)
from labrunner.protocols import pop3 as pop3_table

_OCTETS = re.compile(r"^\+OK \d+ octets", re.IGNORECASE)  # POP3 RETR's reply (RFC 1939 example)
POP3_VERBS = frozenset(pop3_table.COMMANDS) | {"AUTH", "UTF8", "LANG", "XTND"}


class Pop3(Conversation):
    protocol = "POP3"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.greeting = True
        self.pending: deque[tuple[str, bool]] = deque()
        self.multi: list[str] | None = None  # lines of a multi-line response being read
        self.multi_first = 0
        self.multi_verb = ""
        self.body = mailsum.Body(dotted=True)
        self.body_cut = False  # the message's beginning is not in the capture
        self.auth = False
        self.auth_lines = 0
        self.client_seen = False
        self.server_seen = False
        self.ok_unanswered = False  # the last reply was a +OK to a command not in the capture

    def line(self, d: str, raw: bytes, first: int, frame: int, time: float) -> None:
        text = _text(raw)
        if d == "C":
            self._command(text, first, frame, time)
            return
        self.server_seen = True
        if self.multi is not None:
            self._multi_line(raw, text, first, frame, time)
        else:
            self._status(text, first, frame, time, raw)

    def _command(self, text: str, first: int, frame: int, time: float) -> None:
        lang = self.lang
        self.client_seen = True
        if self.auth and self.auth_lines <= 0 and not self.server_seen and \
                text.split(" ", 1)[0].upper() in pop3_table.COMMANDS:
            self.auth = False  # no server in the capture: the mechanism's lines are all sent
        if (self.auth or lone_token(text, pop3_table.COMMANDS)) and not is_command(text, POP3_VERBS):
            self.auth_lines -= 1
            shown, redacted = self.secret(text)
            self.add("C", shown, frame, time, first=first, kind="auth", redacted=redacted,
                     explanation=tr(lang, "SASL credentials (base64)", "SASL 认证数据（Base64）")
                     + (tr(lang, ", redacted", "，已隐去") if redacted else ""))
            return
        self.auth = False
        verb, _, arg = text.partition(" ")
        verb_u = verb.upper()
        redacted = False
        if verb_u == "PASS" and arg:
            shown, redacted = self.secret(arg)
            text = f"{verb} {shown}"
        elif verb_u == "APOP":
            user, _, digest = arg.partition(" ")
            shown, redacted = self.secret(digest)
            text = f"{verb} {user} {shown}"
        elif verb_u == "AUTH" and arg:
            mech, _, initial = arg.partition(" ")
            self.auth = True
            # client lines the mechanism sends (RFC 5034): PLAIN one, LOGIN two, less an initial response
            self.auth_lines = (2 if mech.upper() == "LOGIN" else 1) - (1 if initial else 0)
            if initial:
                shown, redacted = self.secret(initial)
                text = f"{verb} {mech} {shown}"
        elif verb_u == "STLS":
            self.upgrade_requested = True
        multiline = verb_u in pop3_table.MULTILINE or (verb_u in pop3_table.MULTILINE_WITHOUT_ARG and not arg) \
            or (verb_u == "AUTH" and not arg)
        self.pending.append((verb_u, multiline))
        self.add("C", text, frame, time, first=first, kind="command", redacted=redacted,
                 explanation=pop3_table.explain_command(verb_u, lang))

    def line_start(self, d: str, text: str) -> bool:
        if d == "S":
            return text.startswith(("+OK", "-ERR", "+ ")) or text == "+"
        return text.split(" ", 1)[0].upper() in POP3_VERBS or lone_token(text, ())

    def _status(self, text: str, first: int, frame: int, time: float, raw: bytes) -> None:
        lang = self.lang
        if text.startswith("+ ") or text == "+":
            self.auth = True  # a SASL prompt, even when the capture missed the AUTH command
            self.greeting = False
            decoded = b64text(text[2:]) if len(text) > 2 else None
            self.add("S", text, frame, time, first=first, kind="reply",
                     explanation=tr(lang, "continue authentication", "继续认证")
                     + (f": “{decoded}”" if decoded else ""))
            return
        greeting, self.greeting = self.greeting and not self.pending and not self.client_seen, False
        if greeting and text[:1] in "+-":
            self.add("S", text, frame, time, first=first, kind="reply",
                     explanation=tr(lang, "greeting: the server is ready", "问候：服务器就绪"))
            return
        if text[:1] not in "+-" and not self.pending:
            # not a status line: the capture starts inside a multi-line response (or holds the
            # server's side only); a message's header line starts a message without its beginning
            self.multi, self.multi_first = [], first
            self.multi_verb = "RETR" if _HEADER_LINE.match(raw) else "?"
            # right after a +OK whose command is not in the capture, the response is whole
            self.body_cut = not self.ok_unanswered
            self.ok_unanswered = False
            self._multi_line(raw, text, first, frame, time)
            return
        self.ok_unanswered = False
        verb, multiline = self.pending.popleft() if self.pending else ("", False)
        if not verb and _OCTETS.match(text):
            verb, multiline = "RETR", True  # its command is not in the capture (RFC 1939 RETR reply)
        ok = text.upper().startswith("+OK")
        self.ok_unanswered = ok and not verb
        if (self.auth and verb != "AUTH") or (verb == "AUTH" and not multiline):
            self.auth = False
        if verb == "STLS" and ok:
            self.upgraded = True
        word = text.split(" ", 1)[0]
        explanation = pop3_table.explain(word, lang)
        code = re.match(r"^-ERR \[([A-Z/-]+)\]", text)
        if code:
            explanation = (explanation + "; " if explanation else "") + (pop3_table.explain(code.group(1), lang) or "")
        if verb in ("AUTH", "PASS", "APOP") and not multiline:
            # the answer to a login: its status says whether it worked (RFC 5034 4, RFC 1939 7)
            explanation = f"{verb}: " + (tr(lang, "logged in", "登录成功") if ok else explanation)
        if ok and multiline:
            self.multi = [text]
            self.multi_first = first
            self.multi_verb = verb
            if verb in ("RETR", "TOP"):
                self.add("S", text, frame, time, first=first, kind="reply", explanation=explanation)
                self.multi = []
            return
        self.add("S", text, frame, time, first=first, kind="reply", explanation=explanation)

    def in_body(self, d: str) -> bool:
        return (d == "S" and self.multi is not None and self.multi_verb in ("RETR", "TOP")
                and (self.body.size > 0 or not self.buf["S"].startswith(b".")))

    def body_bytes(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool) -> None:
        if not self.body.size:
            self.multi_first = first
        if done:
            chunk = chunk.rstrip(b"\r\n")[:-1]
        self.body.add(chunk)
        if done:
            self._end_multi(frame, time)

    def _multi_line(self, raw: bytes, text: str, first: int, frame: int, time: float) -> None:
        assert self.multi is not None
        body = self.multi_verb in ("RETR", "TOP")
        if body and not self.body.size:
            self.multi_first = first
        if text == ".":
            self._end_multi(frame, time)
            return
        if body:
            self.body.add(raw)
            return
        if text.startswith(".."):
            text = text[1:]
        if len(self.multi) < MAX_LINES_PER_ENTRY:
            self.multi.append(text)
        elif len(self.multi) == MAX_LINES_PER_ENTRY:
            self.multi.append("…")

    def _end_multi(self, frame: int, time: float, *, cut: bool = False) -> None:
        assert self.multi is not None
        if self.multi_verb in ("RETR", "TOP"):
            self.add_mail(self.body, "S", frame, time,
                          self.multi_first,
                          label=f"{self.multi_verb} message", cut=cut or self.body_cut,
                          explanation=tr(self.lang, "the message, ended by a line with a single dot",
                                         "邮件内容，以只含一个“.”的行结束"))
            self.body = mailsum.Body(dotted=True)
            self.body_cut = False
        else:
            lines = [*self.multi, "."] if not cut else self.multi
            self.add("S", "\n".join(lines), frame, time, first=self.multi_first, kind="reply",
                     explanation=pop3_table.explain_command(self.multi_verb, self.lang))
        self.multi = None

    def reset_after_gap(self, d: str) -> None:
        if d == "S" and self.multi is not None and self.multi_verb in ("RETR", "TOP"):
            self.body_cut = True  # the message goes on after the hole: summarised as partly captured
        elif d == "S":
            self.multi = None
            self.pending.clear()
            self.greeting = False

    def flush_pending(self) -> None:
        if self.multi is not None:
            self._end_multi(*self.last_position(), cut=True)
