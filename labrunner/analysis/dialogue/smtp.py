"""SMTP (RFC 5321): replies, DATA and BDAT messages, AUTH exchanges, pipelining."""

from __future__ import annotations

import functools
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
from labrunner.protocols import smtp as smtp_table

# What a reply code or a command word means: the same few on every line of every session; the
# tables are constants, so asked once per (word, language) (bounded: a client may send any word)
_smtp_explain = functools.lru_cache(maxsize=1024)(smtp_table.explain)

# Every verb of each protocol (the tables in labrunner.protocols explain the common ones only):
# what a line of a client can start with, for is_command and line_start.
SMTP_VERBS = frozenset(smtp_table.COMMANDS) | {"BDAT", "ETRN", "EXPN", "TURN", "ATRN", "XCLIENT", "XFORWARD"}


class Smtp(Conversation):
    protocol = "SMTP"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.reply: list[str] = []
        self.reply_first = 0
        self.in_data = False
        self.body = mailsum.Body(dotted=True)
        self.body_first = 0
        self.body_cut = False  # bytes of the message are not in the capture
        self.auth: str | None = None
        self.prompt = ""
        # AUTH LOGIN: only the first client line, and only without an initial response, is the
        # user name; every other client line of the exchange is a credential, whatever the
        # prompts say (a client that does not wait sends both before the second prompt).
        self.login_user_pending = False
        self.auth_lines = 0  # client lines the mechanism still needs
        self.auth_mech = ""
        # commands whose reply has not come yet (RFC 2920 pipelining): which reply answers DATA
        self.pending: deque[str] = deque(maxlen=256)
        self.server_seen = False
        self.client_seen = False
        self.data_state = ""  # "sent": DATA not answered yet; "early": its message came before the 354
        self.bdat_active = False  # a BDAT transaction (RFC 3030): chunks until BDAT ... LAST
        self.bdat_last = False
        self.bdat_cut = False

    def line(self, d: str, raw: bytes, first: int, frame: int, time: float) -> None:
        text = _text(raw)
        if d == "S":
            self.server_seen = True
            self._server(text, first, frame, time)
            return
        if not self.client_seen and not self.in_data and not self.pending and \
                text.split(" ", 1)[0].upper() not in smtp_table.COMMANDS and \
                (_HEADER_LINE.match(raw) or raw.startswith(b"--")):
            # the client's first line is a message header or a MIME delimiter, not a command: the
            # capture starts inside DATA; what follows up to the dot is the rest of a message
            self.in_data = True
            self.body_cut = True
        self.client_seen = True
        if self.data_state == "replied":
            self.data_state = ""
            self.in_data = True
            if text.split(" ", 1)[0].upper() == "DATA":  # the command the 354 answered
                self._command(text, first, frame, time)
                self.data_state = ""
                return
        if not self.in_data and self.data_state == "sent" and \
                text.split(" ", 1)[0].upper() not in smtp_table.COMMANDS:
            # Client bytes after DATA before its reply: the message itself. DATA ends a pipelined
            # group (RFC 2920 3.1), so nothing else may follow it unanswered: an early talker,
            # a capture of the client's side only, or segments captured out of order.
            self.data_state = "early"
            self.in_data = True
        if self.in_data:
            self._data(raw, first, frame, time)
        elif (self.auth or lone_token(text, smtp_table.COMMANDS)) and not is_command(text, SMTP_VERBS):
            self.auth = self.auth or "?"
            self._auth_line(text, first, frame, time)
        elif self.auth_lines > 0 and text.split(" ", 1)[0].upper() not in smtp_table.COMMANDS:
            # the AUTH exchange ended (its reply came first in a reordered capture) before the
            # client sent all the lines its mechanism needs: this is one of them
            self.auth = self.auth_mech
            self._auth_line(text, first, frame, time)
            self.auth = None
        else:
            self.auth = None
            self._command(text, first, frame, time)

    def line_start(self, d: str, text: str) -> bool:
        if d == "S":
            return text[:3].isdigit()
        # a command, a credential (redacted), or what shows the capture starts inside DATA (line)
        return text.split(" ", 1)[0].upper() in SMTP_VERBS or lone_token(text, ()) or text == "." or \
            text.startswith("--") or _HEADER_LINE.match(text.encode("utf-8", "replace")) is not None

    def _command(self, text: str, first: int, frame: int, time: float) -> None:
        verb, _, arg = text.partition(" ")
        verb_u = verb.upper()
        redacted = False
        extra = ""
        if verb_u == "AUTH":
            mech, _, initial = arg.strip().partition(" ")
            self.auth = self.auth_mech = mech.upper() or "?"
            self.login_user_pending = self.auth == "LOGIN" and not initial
            # without the server's side, the mechanism says how many lines follow (RFC 4954)
            self.auth_lines = (2 if self.auth == "LOGIN" else 1) - (1 if initial else 0)
            if initial:
                if self.auth == "LOGIN":
                    user = b64text(initial)
                    extra = tr(self.lang, f" — user name: {user}", f"——用户名：{user}") if user else ""
                elif initial != "=":
                    shown, redacted = self.secret(initial)
                    text = f"{verb} {mech} {shown}"
                    extra = tr(self.lang, " — initial response with the credentials",
                               "——初始响应中带有用户名和密码")
        elif verb_u == "STARTTLS":
            self.upgrade_requested = True
        elif verb_u == "BDAT":
            extra = self._bdat(arg, first)
        elif verb_u == "RSET":
            self._reset_mail()
        if verb_u == "DATA":
            self.data_state = "sent"
        elif self.data_state == "sent":
            self.data_state = ""  # a command after DATA: DATA was refused, no message follows
        self.pending.append(verb_u)
        explanation = (_smtp_explain(verb_u, self.lang) or "") + extra
        self.add("C", text, frame, time, first=first, kind="command", explanation=explanation,
                 redacted=redacted)
        if verb_u == "AUTH" and self.auth_lines <= 0 and not self.server_seen:
            self.auth = None  # the initial response was all: nothing more comes from the client
        if self.bdat_active and self.bdat_last and self.need["C"] == 0:
            self._end_bdat(frame, time)  # BDAT 0 LAST

    def _bdat(self, arg: str, first: int) -> str:
        """BDAT n [LAST] (RFC 3030): exactly n bytes of the message follow, whatever they hold."""
        words = arg.split()
        if not words or not words[0].isdigit():
            return ""
        size = int(words[0])
        if not self.bdat_active:
            self._reset_mail(dotted=False)
            self.bdat_active = True
            self.body_first = 0
        self.bdat_last = len(words) > 1 and words[1].upper() == "LAST"
        self.need["C"] = size
        if self.body_first == 0 and size:
            self.body_first = first
        return tr(self.lang, f" — {size} bytes of the message follow" + (", the last chunk" if self.bdat_last else ""),
                  f"——随后是邮件的 {size} 字节" + ("（最后一块）" if self.bdat_last else ""))

    def raw(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool,
            cut: bool = False) -> None:
        if d != "C" or not self.bdat_active:
            return
        self.body.add(chunk)
        self.bdat_cut = self.bdat_cut or cut
        if done and (self.bdat_last or cut):
            self._end_bdat(frame, time)

    def _end_bdat(self, frame: int, time: float) -> None:
        self.bdat_active = self.bdat_last = False
        self.add_mail(self.body, "C", frame, time, self.body_first or frame,
                      label="BDAT message", cut=self.bdat_cut,
                      explanation=tr(self.lang, "the message, sent in BDAT chunks (CHUNKING, RFC 3030)",
                                     "以 BDAT 分块发送的邮件（CHUNKING，RFC 3030）"))
        self._reset_mail()

    def _reset_mail(self, *, dotted: bool = True) -> None:
        self.body = mailsum.Body(dotted=dotted)  # BDAT chunks are not dot-stuffed (RFC 3030 2)
        self.body_cut = False
        self.bdat_active = self.bdat_last = self.bdat_cut = False

    def raw_gap(self, d: str, missing: int) -> None:
        if d == "C" and self.bdat_active:
            self.body.size += missing
            self.bdat_cut = True

    def reset_after_gap(self, d: str) -> None:
        if d == "S":
            self.reply = []
        elif self.in_data:
            self.body_cut = True
        elif self.bdat_active:
            self.bdat_cut = True

    def _auth_line(self, text: str, first: int, frame: int, time: float) -> None:
        lang = self.lang
        if text.strip() == "*":
            self.add("C", text, frame, time, first=first, kind="auth",
                     explanation=tr(lang, "cancels the authentication", "取消认证"))
            return
        if self.auth in ("LOGIN", "PLAIN") and self.auth_lines <= 0 and \
                text.split(" ", 1)[0].upper() in smtp_table.COMMANDS:
            # the mechanism's lines are all sent: a command after them means its reply was
            # captured out of order (or not at all)
            self.auth = None
            self._command(text, first, frame, time)
            return
        user_turn = self.login_user_pending and not self.prompt.lower().startswith("password")
        self.login_user_pending = False
        self.auth_lines -= 1
        if self.auth_lines <= 0 and not self.server_seen:
            self.auth = None  # no server in the capture: the mechanism's lines are all there
        if self.auth == "LOGIN" and user_turn:
            user = b64text(text)
            self.add("C", text, frame, time, first=first, kind="auth",
                     explanation=tr(lang, f"user name in base64: {user}", f"Base64 编码的用户名：{user}"))
            return
        shown, redacted = self.secret(text)
        what = tr(lang, "password (base64)", "Base64 编码的密码（授权码）") if self.auth == "LOGIN" else \
            tr(lang, f"{self.auth if self.auth != '?' else 'SASL'} credentials",
               f"{self.auth if self.auth != '?' else 'SASL'} 认证数据")
        if redacted:
            what += tr(lang, ", redacted", "，已隐去")
        elif self.auth == "LOGIN" and (plain := b64text(text)):
            what += f": {plain}"
        self.add("C", shown, frame, time, first=first, kind="auth", explanation=what, redacted=redacted)

    def in_body(self, d: str) -> bool:
        return d == "C" and self.in_data and (self.body.size > 0 or not self.buf["C"].startswith(b"."))

    def body_bytes(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool) -> None:
        if not self.body.size:
            self.body_first = first
        if done:
            dot = chunk.rstrip(b"\r\n")  # ... CRLF "." CRLF: the body ends before the dot line
            chunk = dot[:-1]
        self.body.add(chunk)
        if done:
            self._end_body(frame, time)

    def _end_body(self, frame: int, time: float) -> None:
        self.in_data = False
        self.add_mail(self.body, "C", frame, time, self.body_first, label="DATA fragment", cut=self.body_cut,
                      explanation=tr(self.lang, "the message itself, ended by a line with a single dot",
                                     "邮件内容本身，以只含一个“.”的行结束"))
        self._reset_mail()

    def _data(self, raw: bytes, first: int, frame: int, time: float) -> None:
        if not self.body.size:
            self.body_first = first
        if raw.rstrip(b"\r\n") == b".":
            self._end_body(frame, time)
            return
        self.body.add(raw)

    def _server(self, text: str, first: int, frame: int, time: float) -> None:
        if not self.reply:
            self.reply_first = first
        self.reply.append(text)
        if len(text) >= 4 and text[3] == "-" and len(self.reply) < MAX_LINES_PER_ENTRY:
            return
        self._emit_reply(frame, time)

    def _emit_reply(self, frame: int, time: float) -> None:
        lines, self.reply = self.reply, []
        last = lines[-1]
        code = last[:3]
        explanation = _smtp_explain(code, self.lang) if code.isdigit() else ""
        answered = self.pending.popleft() if self.pending and code.isdigit() and code != "334" else ""
        if code == "334":
            prompt = b64text(last[4:]) or ""
            if not self.auth:  # the capture missed the AUTH command: what follows is still SASL
                login = prompt.lower().rstrip(":") in ("username", "password")
                self.auth = "LOGIN" if login else "?"
                self.login_user_pending = prompt.lower().startswith("username")
            if prompt:
                explanation = tr(self.lang, f"334: the server asks for “{prompt}” (base64 “{last[4:].strip()}”)",
                                 f"334：服务器要求输入“{prompt}”（Base64 “{last[4:].strip()}”）")
            self.prompt = prompt
        elif self.auth and code.isdigit() and (answered == "AUTH" or "AUTH" not in self.pending):
            # only the reply to AUTH ends the exchange: in a capture whose segments are reordered
            # (or a pipelining client) the reply to EHLO may come after AUTH was sent
            self.auth = None
            self.prompt = ""
        if code == "354":
            if self.data_state == "sent":
                self.in_data = True
            elif self.data_state == "":
                # no DATA waits for it: the capture starts after DATA, or DATA was captured
                # after its reply (reordered segments); the next client line decides
                self.data_state = "replied"
                return self._add_reply(lines, frame, time, explanation)
            # "early": the message is being read, or was read already
            self.data_state = ""
        if self.upgrade_requested:
            self.upgrade_requested = False
            if code == "220":
                self.upgraded = True
                explanation = tr(self.lang, "220: ready to start TLS; the TLS handshake follows at once",
                                 "220：准备开始 TLS，随后立即进行 TLS 握手")
        self._add_reply(lines, frame, time, explanation)

    def _add_reply(self, lines: list[str], frame: int, time: float, explanation: str) -> None:
        self.add("S", "\n".join(lines), frame, time, first=self.reply_first, kind="reply",
                 explanation=explanation)

    def flush_pending(self) -> None:
        if self.reply:
            self._emit_reply(*self.last_position())
        if self.in_data and self.body.size:
            self.in_data = False
            self.add_mail(self.body, "C", *self.last_position(), self.body_first,
                          label="DATA fragment", cut=True,
                          explanation=tr(self.lang, "the capture ends inside the message", "抓包在邮件内容中途结束"))
        if self.bdat_active and self.body.size:
            self.bdat_cut = True
            self._end_bdat(*self.last_position())
