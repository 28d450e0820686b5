"""IMAP (RFC 3501): tagged commands and responses, literals, FETCHed messages, AUTHENTICATE."""

from __future__ import annotations

import re
from typing import Any

from labrunner.analysis import mail as mailsum
from labrunner.analysis.dialogue.base import (
    _HEADER_LINE,
    MAX_LINES_PER_ENTRY,
    REDACTED,
    Conversation,
    _text,
    b64text,
    is_command,
    lone_token,
    tr,
)
from labrunner.protocols import imap as imap_table

IMAP_VERBS = frozenset(imap_table.COMMANDS) | {
    "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "CHECK", "CLOSE",
    "EXPUNGE", "STORE", "COPY", "MOVE", "UID", "IDLE", "ENABLE", "ID", "NAMESPACE", "GETQUOTA",
    "GETQUOTAROOT", "SETQUOTA", "UNSELECT", "GETACL", "SETACL", "COMPRESS", "XLIST"}
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_ARG = re.compile(r'"(?:[^"\\]|\\.)*"|\{\d+\+?\}|\S+')
# The FETCH data item a server literal belongs to (RFC 3501 7.4.2, RFC 3516 BINARY)
_FETCH_ITEM = re.compile(r"((?:BODY|BINARY)\[([^\]]*)\](<\d+>)?|RFC822(?:\.HEADER|\.TEXT)?)\s+~?\{\d+\+?\}$",
                         re.IGNORECASE)
_FETCH_START = re.compile(r"^\* (\d+) FETCH ", re.IGNORECASE)
MAX_HEADERS_KEPT = 64  # FETCHed headers waiting for their text (BODY[TEXT]) of the same message
MAX_HEADER = 1 << 20  # a header literal longer than this is not kept for its text


def fetch_item(line: str) -> tuple[str, str]:
    """(kind, name) of the FETCH data item whose literal ``line`` announces.

    kind: "message" (RFC822, BODY[], BINARY[]), "header" (RFC822.HEADER, BODY[HEADER],
    BODY[HEADER.FIELDS (...)]), "text" (RFC822.TEXT, BODY[TEXT]), "part" (a MIME part, a
    partial <origin>, a part's header), "" (not a FETCH item: decided by the content).
    """
    m = _FETCH_ITEM.search(line)
    if m is None:
        return "", ""
    name, section, partial = m.group(1), m.group(2), m.group(3)
    if section is None:  # RFC822[.HEADER|.TEXT]
        kind = {"RFC822": "message", "RFC822.HEADER": "header", "RFC822.TEXT": "text"}[name.upper()]
        return kind, name
    if partial:
        return "part", name
    section = section.strip().upper()
    if not section:
        return "message", name
    if section == "HEADER" or section.startswith(("HEADER.FIELDS ", "HEADER.FIELDS.NOT ")):
        return "header", name
    if section == "TEXT":
        return "text", name
    return "part", name


class Imap(Conversation):
    protocol = "IMAP"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.cmd: list[str] = []  # a client command being assembled across literals
        self.cmd_first = 0
        self.cmd_slot: int | None = None
        self.group: list[str] = []  # server lines up to the tagged completion
        self.group_first = 0
        self.group_slot: int | None = None
        self.group_frame, self.group_time = 0, 0.0
        self.tags: dict[str, str] = {}
        self.auth_tag: str | None = None
        self.starttls_tag: str | None = None
        self.literal: mailsum.Body | None = None  # the literal being read
        self.literal_prefix = 0  # bytes put before it: the header fetched before a BODY[TEXT]
        self.literal_cut = False  # bytes of it are not in the capture
        self.literal_first = 0
        self.literal_slot: int | None = None
        self.literal_item = ("", "")  # fetch_item() of the server literal being read
        self.fetch_msg = ""  # the message number of the FETCH response being read
        # msg -> [mail index (once shown), header, frame]: a whole header FETCHed, kept for its text
        self.headers: dict[str, list[Any]] = {}
        self.continued = False  # the next server line continues the line before a literal
        self.deferred: list[dict[str, Any]] = []  # literals shown after their command/response

    def line(self, d: str, raw: bytes, first: int, frame: int, time: float) -> None:
        lit = _LITERAL.search(raw)
        text = _text(raw)
        if d == "C":
            if self.group and not self.cmd:
                self._emit_group(self.group_frame, self.group_time)
            if not self.cmd and (self.auth_tag or (" " not in text.strip() and lone_token(text, ()))):
                if not is_command(text, IMAP_VERBS, tagged=True):
                    self._auth_line(text, first, frame, time)
                    return
                self.auth_tag = None
            if not self.cmd:
                self.cmd_first = first
                # a command carrying a literal ends after the server's "+" (RFC 3501 7.5) and
                # the literal itself: keep its place where its first byte flowed
                self.cmd_slot = self.reserve() if lit else None
            self.cmd.append(text)
            if lit:
                self.need["C"] = int(lit.group(1))
                self.literal_first = frame
                self.literal_item = ("", "")
                return
            self._command(frame, time)
            return
        if not self.group:
            self.group_first = first
            self.group_slot = self.reserve() if lit else None
        self.group.append(text)
        self.group_frame, self.group_time = frame, time
        continued, self.continued = self.continued, False
        start = _FETCH_START.match(text)
        if start:
            self.fetch_msg = start.group(1)
        if lit:
            self.need["S"] = int(lit.group(1))
            self.literal_first = frame
            self.literal_item = fetch_item(text)
            return
        if continued:
            return  # the rest of a response line that carried a literal, e.g. ")"
        if text.startswith("+"):
            if not self.auth_tag and not self.cmd and not self.tags:
                # a continuation for no command the capture saw (it started after AUTHENTICATE):
                # the client's answer is SASL data until a tagged completion
                self.auth_tag = "*"
            self._emit_group(frame, time, continuation=True)
            return
        tag = text.split(" ", 1)[0]
        if tag != "*" or len(self.group) >= MAX_LINES_PER_ENTRY:
            self._emit_group(frame, time)

    def raw(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool,
            cut: bool = False) -> None:
        if self.literal is None:
            self.literal_first = first
            self.literal_slot = self.reserve()
            self.literal = mailsum.Body()
            self.literal_prefix = 0
            if d == "S" and self.literal_item[0] == "text" and self.fetch_msg in self.headers:
                header = self.headers[self.fetch_msg][1]  # one message: the header, then its text
                self.literal.add(header)
                self.literal_prefix = len(header)
        self.literal.add(chunk)
        if d == "C" and self.cmd and self.cmd[0].split(" ")[1:2] and self.cmd[0].split(" ")[1].upper() == "LOGIN":
            self.mark(d)  # LOGIN's user name or password sent as a literal
        if not done:
            return
        body, slot, prefix = self.literal, self.literal_slot, self.literal_prefix
        cut = cut or self.literal_cut
        self.literal_cut = False
        self.literal = None
        self.literal_slot = None
        size = body.size - prefix
        target = self.cmd if d == "C" else self.group
        if d == "S":
            self.continued = True
        kind, name = self.literal_item if d == "S" else ("", "")
        if kind == "header" and self.fetch_msg and "FIELDS" not in name.upper():
            # a whole header: its text may follow, in this response (BODY[HEADER] {n} ... BODY[TEXT])
            # or in a later one
            self.headers[self.fetch_msg] = [None, body.head(MAX_HEADER), frame]
            if len(self.headers) > MAX_HEADERS_KEPT:
                self.headers.pop(next(iter(self.headers)))
        if not kind:
            looks_like_mail = size > 64 and _HEADER_LINE.search(body.head(2000)) is not None
            kind = "message" if looks_like_mail else ""
        if kind:
            # shown right after the command or response that carries it
            self.deferred.append({"body": body, "size": size, "d": d, "frame": frame, "time": time,
                                  "first": self.literal_first, "cut": cut, "slot": slot, "kind": kind,
                                  "name": name, "msg": self.fetch_msg, "merged": prefix > 0})
            what = tr(self.lang, "message", "邮件") if kind == "message" else name
            target.append(tr(self.lang, f"[{what}: {size} bytes, see below]", f"[{what}：{size} 字节，见下]"))
            return
        self.drop_slot(slot)
        if d == "C" and self.cmd and self.cmd[0].split(" ")[1:2] and \
                self.cmd[0].split(" ")[1].upper() == "LOGIN" and not self.show:
            target.append(REDACTED)
        else:
            target.append(_text(body.head(200)) if size < 200 else f"[{size} bytes]")

    def _command(self, frame: int, time: float) -> None:
        lang = self.lang
        text = "".join(self.cmd) if len(self.cmd) == 1 else "\n".join(self.cmd)
        self.cmd = []
        parts = _ARG.findall(text)
        tag = parts[0] if parts else ""
        verb = parts[1].upper() if len(parts) > 1 else ""
        if verb == "UID" and len(parts) > 2:
            verb = "UID " + parts[2].upper()
        redacted = False
        if verb == "LOGIN":
            self.credentials_seen = True
            last = parts[-1] if len(parts) >= 4 else ""
            if last and not last.startswith("{") and last != REDACTED:
                self.mark("C", last[1:-1] if last.startswith('"') and len(last) > 1 else last)
        if verb == "LOGIN" and len(parts) >= 4 and not self.show:
            # The password is LOGIN's last argument; a user name sent as a literal adds tokens
            # ({n} and its content) before it, so it is not always the fourth.
            last = parts[-1]
            if not last.startswith("{") and last != REDACTED:
                idx = text.rfind(last)
                text = text[:idx] + REDACTED + text[idx + len(last):]
            redacted = True
        elif verb == "AUTHENTICATE":
            self.auth_tag = tag
            if len(parts) >= 4:
                shown, redacted = self.secret(parts[3])
                text = f"{parts[0]} {parts[1]} {parts[2]} {shown}"
        elif verb == "STARTTLS":
            self.starttls_tag = tag
        self.tags[tag] = verb
        if len(self.tags) > 1000:
            self.tags.pop(next(iter(self.tags)))
        slot, self.cmd_slot = self.cmd_slot, None
        self.add("C", text, frame, time, first=self.cmd_first, kind="command", redacted=redacted,
                 explanation=imap_table.explain_command(verb.split(" ")[-1], lang), slot=slot)
        self._flush_deferred()

    def _auth_line(self, text: str, first: int, frame: int, time: float) -> None:
        if text.strip() == "*":
            self.add("C", text, frame, time, first=first, kind="auth",
                     explanation=tr(self.lang, "cancels the authentication", "取消认证"))
            return
        shown, redacted = self.secret(text)
        self.add("C", shown, frame, time, first=first, kind="auth", redacted=redacted,
                 explanation=tr(self.lang, "SASL credentials (base64)", "SASL 认证数据（Base64）")
                 + (tr(self.lang, ", redacted", "，已隐去") if redacted else ""))

    def line_start(self, d: str, text: str) -> bool:
        words = text.split()
        if d == "S":
            return bool(words) and (words[0] in ("*", "+") or (
                len(words) > 1 and words[1].upper() in ("OK", "NO", "BAD", "BYE", "PREAUTH")))
        return (len(words) > 1 and words[1].upper() in IMAP_VERBS) or lone_token(text, ()) or \
            text.strip().upper() == "DONE"

    def _emit_group(self, frame: int, time: float, *, continuation: bool = False) -> None:
        lines, self.group = self.group, []
        last = lines[-1]
        words = last.split(" ")
        lang = self.lang
        if continuation:
            decoded = b64text(last[2:]) if len(last) > 2 else None
            explanation = tr(lang, "continuation: the server waits for more from the client",
                             "继续：服务器等待客户端继续发送") + (f": “{decoded}”" if decoded else "")
        elif words[0] == "*":
            key = words[2] if len(words) > 2 and words[1].isdigit() else (words[1] if len(words) > 1 else "")
            explanation = imap_table.explain(key, lang)
        else:
            status = words[1].upper() if len(words) > 1 else ""
            verb = self.tags.pop(words[0], "")
            explanation = imap_table.explain(status, lang)
            if verb:
                explanation = f"{verb}: {explanation}" if explanation else verb
            if words[0] == self.auth_tag or self.auth_tag == "*":
                self.auth_tag = None
            if words[0] == self.starttls_tag:
                self.starttls_tag = None
                if status == "OK":
                    self.upgraded = True
        slot, self.group_slot = self.group_slot, None
        self.add("S", "\n".join(lines), frame, time, first=self.group_first, kind="reply",
                 explanation=explanation, slot=slot)
        self._flush_deferred()

    def _flush_deferred(self) -> None:
        deferred, self.deferred = self.deferred, []
        for lit in deferred:
            kind = lit["kind"]
            if kind == "message":
                self.add_mail(lit["body"], lit["d"], lit["frame"], lit["time"], lit["first"],
                              label="literal message" if lit["d"] == "S" else "APPEND message", cut=lit["cut"],
                              slot=lit["slot"], explanation=tr(self.lang, "a message carried as an IMAP literal",
                                                               "以 IMAP 字面量传送的邮件"))
            elif kind == "header":
                self._header_literal(lit)
            elif kind == "text" and lit["merged"] and lit["msg"] in self.headers:
                self._text_literal(lit)
            else:
                self._part_literal(lit)

    def _header_literal(self, lit: dict[str, Any]) -> None:
        """A message's header fetched alone: summarised (from, subject) until its text comes."""
        summary = self.summary(lit["body"], "S", lit["frame"], cut=lit["cut"])
        summary["parts"], summary["attachments"] = [], []  # the body was not fetched (yet)
        self.mail.append(summary)
        self.add("S", mailsum.one_line(summary, label=f"literal {lit['name']} (header)"), lit["frame"], lit["time"],
                 kind="data", first=lit["first"], mail=len(self.mail) - 1, slot=lit["slot"],
                 explanation=tr(self.lang, "the header of a message, fetched without its text",
                                "单独取回的邮件首部（不含正文）"))
        kept = self.headers.get(lit["msg"])
        if kept is not None and kept[2] == lit["frame"] and kept[0] is None:
            kept[0] = len(self.mail) - 1  # where its text, when it comes, puts the whole message

    def _text_literal(self, lit: dict[str, Any]) -> None:
        """The text of a message whose header was fetched before: one message, header + text."""
        index, _header, header_frame = self.headers.pop(lit["msg"])
        summary = self.summary(lit["body"], "S", lit["frame"], cut=lit["cut"])
        if index is None:  # the header's own summary was not made (lost in a gap)
            self.mail.append(summary)
            index = len(self.mail) - 1
        else:
            self.mail[index] = summary
        self.add("S", mailsum.one_line(summary, label=f"message {lit['msg']} (header + {lit['name']})"),
                 lit["frame"], lit["time"],
                 kind="data", first=lit["first"], mail=index, slot=lit["slot"],
                 explanation=tr(self.lang, f"the text of message {lit['msg']}, whose header came in frame "
                                f"{header_frame}: summarised together",
                                f"第 {lit['msg']} 封邮件的正文，其首部在第 {header_frame} 帧：合并摘要"))

    def _part_literal(self, lit: dict[str, Any]) -> None:
        """A part of a message (a MIME part, a partial range, a text without its header): not a mail."""
        self.add("S", tr(self.lang, f"literal {lit['name']}, {lit['size']} bytes (part of message {lit['msg']})",
                         f"字面量 {lit['name']}，{lit['size']} 字节（第 {lit['msg']} 封邮件的一部分）"),
                 lit["frame"], lit["time"], kind="data", first=lit["first"], slot=lit["slot"],
                 explanation=tr(self.lang, "a part of a message, not a whole message: not summarised",
                                "邮件的一部分而非整封邮件：不做摘要"))

    def raw_gap(self, d: str, missing: int) -> None:
        if self.literal is not None:
            self.literal.size += missing
            self.literal_cut = True

    def reset_after_gap(self, d: str) -> None:
        self.continued = False
        if d == "S":
            self.group = []
            self.group_slot = None
        else:
            self.cmd = []
            self.cmd_slot = None
        self.literal = None
        self.literal_slot = None
        self.literal_cut = False

    def flush_pending(self) -> None:
        if self.cmd:
            self._command(*self.last_position())
        if self.group:
            self._emit_group(*self.last_position())
