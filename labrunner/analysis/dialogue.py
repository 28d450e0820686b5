"""From the in-order bytes of a stream to the annotated dialogue of its protocol.

One ``Conversation`` per TCP stream receives the bytes of each direction (plain, or decrypted
by Wireshark) and groups them into entries by the protocol's own rules: multi-line replies,
SMTP DATA, POP3 multi-line responses, IMAP literals, HTTP headers and bodies. Credentials are
redacted by their position in the protocol, whatever their value.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from labrunner.analysis import mail as mailsum
from labrunner.protocols import imap as imap_table
from labrunner.protocols import pop3 as pop3_table
from labrunner.protocols import smtp as smtp_table
from labrunner.secrets import REDACTED  # one marker everywhere: the report's scrubber looks for it

MAX_ENTRIES = 2000
MAX_LINE = 64 * 1024  # a "line" longer than this is binary data, not a protocol line
MAX_LINES_PER_ENTRY = 200
BODY_KEEP = mailsum.PARSE_LIMIT  # how much of an HTTP form body is kept (messages: mailsum.Body)

Entry = dict[str, Any]
_HOLE: Entry = {}  # a place kept in the dialogue (Conversation.reserve), filled or dropped at the end
# The end of a dot-terminated body: the line holding a single dot (the CRLF before it belongs to
# the body). At the very start of a body the dot line has no CRLF before it: handled line-wise.
_BODY_END = re.compile(rb"\r?\n\.\r?\n")
_HEADER_LINE = re.compile(rb"^[A-Za-z-]+: ", re.MULTILINE)  # a message header field, roughly
# What a reply code or a command word means: the same few on every line of every session; the
# tables are constants, so asked once per (word, language) (bounded: a client may send any word)
_smtp_explain = functools.lru_cache(maxsize=1024)(smtp_table.explain)
_OCTETS = re.compile(r"^\+OK \d+ octets", re.IGNORECASE)  # POP3 RETR's reply (RFC 1939 example)


def body_end(buf: bytearray) -> int:
    """Where ``_BODY_END.search(buf)`` ends, or -1: with two memchr-fast finds instead of a regular
    expression that must try every byte (it starts with an optional CR); test_analysis_dialogue."""
    lf = buf.find(b"\n.\n")
    crlf = buf.find(b"\n.\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 4
    return lf + 3 if lf >= 0 else -1


def tr(lang: str, en: str, zh: str) -> str:
    return zh if lang == "zh" else en


def b64text(value: str) -> str | None:
    """The text inside a base64 blob, or None when it is not base64 of printable text."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text and all(c.isprintable() for c in text) else None


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\r\n").decode("utf-8", errors="replace")


# A client line that is one base64 token and no verb of the protocol is a SASL response or a
# password whose command the capture did not see (it started mid-session, or lost that
# segment): redacted by position, whatever the secret (issue 14, D2).
_LONE_TOKEN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


def lone_token(text: str, verbs: Any) -> bool:
    t = text.strip()
    return _LONE_TOKEN.fullmatch(t) is not None and t.upper() not in verbs


# Every verb of each protocol (the tables in labrunner.protocols explain the common ones only):
# what a line of a client can start with, for is_command and line_start.
SMTP_VERBS = frozenset(smtp_table.COMMANDS) | {"BDAT", "ETRN", "EXPN", "TURN", "ATRN", "XCLIENT", "XFORWARD"}
POP3_VERBS = frozenset(pop3_table.COMMANDS) | {"AUTH", "UTF8", "LANG", "XTND"}
IMAP_VERBS = frozenset(imap_table.COMMANDS) | {
    "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "CHECK", "CLOSE",
    "EXPUNGE", "STORE", "COPY", "MOVE", "UID", "IDLE", "ENABLE", "ID", "NAMESPACE", "GETQUOTA",
    "GETQUOTAROOT", "SETQUOTA", "UNSELECT", "GETACL", "SETACL", "COMPRESS", "XLIST"}


def is_command(text: str, verbs: Any, *, tagged: bool = False) -> bool:
    """A line no SASL exchange sends (those are base64): a verb of the protocol, with its
    arguments (IMAP: after a tag). Ends an exchange whose end the capture did not show, e.g.
    the server's side unreadable (D4)."""
    words = text.split()
    if tagged:
        return len(words) > 1 and words[1].upper() in verbs
    return bool(words) and words[0].upper() in verbs and not (len(words) == 1 and len(words[0]) >= 8)


class Conversation:
    """Base: line framing per direction, entries, caps. Subclasses implement ``line``."""

    protocol = "other"

    def __init__(self, *, lang: str, show_credentials: bool, redactor: Callable[[str], str] | None) -> None:
        self.lang = lang
        self.show = show_credentials
        self.redactor = redactor
        self.entries: list[Entry] = []
        self.holes = 0  # places kept by reserve() and not filled yet
        self.mail: list[dict[str, Any]] = []
        self.omitted = 0
        self.notes: list[str] = []
        self.buf = {"C": bytearray(), "S": bytearray()}
        self.buf_frame = {"C": 0, "S": 0}
        self.need = {"C": 0, "S": 0}  # > 0: raw bytes expected (literal, body), not lines
        self.decrypted = False
        self.upgrade_requested = False  # STARTTLS accepted: the rest of the plain bytes is TLS
        self.upgraded = False
        self.credentials_seen = False  # a password or SASL secret went over this stream
        # the capture did not see this direction's start (no SYN): its first line may be the end
        # of one that began before, e.g. of a password; shown only if it starts like a line of
        # the protocol (line_start), otherwise said to be a fragment (issue 14, D2)
        self.cut = {"C": False, "S": False}
        # Where credentials sit, for the sanitized copy of the capture: in tshark's relative
        # sequence numbers of each direction, [start, end) ranges of the plain bytes; inside TLS
        # only the fact (the sanitized copy then withholds that session's keys).
        self.carries_credentials = False
        self.secret_bytes: dict[str, list[tuple[int, int]]] = {"C": [], "S": []}
        self.pos: dict[str, int | None] = {"C": None, "S": None}  # stream offset of the end of buf
        self.cur: dict[str, tuple[int | None, bytes]] = {"C": (None, b""), "S": (None, b"")}

    # --- input -----------------------------------------------------------------------------

    def feed(self, d: str, data: bytes, frame: int, time: float, *, decrypted: bool,
             seq: int | None = None) -> None:
        self.decrypted = decrypted
        buf = self.buf[d]
        buf_frame = self.buf_frame  # (the dicts, never replaced, held in locals: once per line)
        need = self.need
        if not buf:
            buf_frame[d] = frame
        buf.extend(data)
        pos = self.pos[d] = seq + len(data) if seq is not None and seq >= 0 and not decrypted else None
        cur = self.cur
        in_body = self.in_body
        while buf:
            if need[d] == 0 and in_body(d):
                # a message body: find its end in one search instead of line by line
                end = body_end(buf)
                if end < 0:
                    keep = 4  # the start of a terminator split across segments
                    if len(buf) > keep:
                        self.body_bytes(d, bytes(buf[:-keep]), buf_frame[d], frame, time, done=False)
                        del buf[:-keep]
                        buf_frame[d] = frame
                    break
                chunk = bytes(buf[:end])
                del buf[:end]
                self.body_bytes(d, chunk, buf_frame[d], frame, time, done=True)
                buf_frame[d] = frame
                continue
            if need[d] > 0:
                take = min(need[d], len(buf))
                chunk = bytes(buf[:take])
                self._at(d, chunk)
                del buf[:take]
                need[d] -= take
                self.raw(d, chunk, buf_frame[d], frame, time, done=need[d] == 0)
                buf_frame[d] = frame
                continue
            if 20 <= buf[0] <= 23 and d == "C" and not decrypted and self.tls_after_starttls():
                break  # a Client Hello sent before the reply: left in buf for core.py, never as lines
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LINE:
                    chunk = bytes(buf)
                    buf.clear()
                    self.add(d, f"[{len(chunk)} bytes without a line end]", frame, time, kind="note",
                             first=buf_frame[d])
                break
            line = bytes(buf[:nl + 1])
            cur[d] = (pos - len(buf) if pos is not None else None, line)  # (_at inlined: once per line)
            del buf[:nl + 1]
            first = buf_frame[d]
            buf_frame[d] = frame
            if self.cut[d]:
                self.cut[d] = False
                if not self.line_start(d, _text(line)):
                    self.add(d, tr(self.lang, f"[{len(line)} bytes: no line of the protocol: perhaps the end of "
                                              "one that began before the capture]",
                                   f"[{len(line)} 字节：不是该协议的一行，可能是抓包开始之前就已开始的"
                                   "一行的结尾]"), frame, time, kind="gap", first=first)
                    continue
            self.line(d, line, first, frame, time)
            if self.upgraded and not decrypted:
                buf.clear()  # what follows STARTTLS's positive reply is TLS, not text
                break

    def tls_after_starttls(self) -> bool:
        """The client sent STARTTLS/STLS and its buffer now starts with a TLS record header: it
        began the handshake without waiting for the server's reply."""
        buf = self.buf["C"]
        return (len(buf) >= 5 and 20 <= buf[0] <= 23 and buf[1] == 3
                and bool(self.upgrade_requested or getattr(self, "starttls_tag", None)))

    def gap(self, d: str, missing: int, frame: int, time: float) -> None:
        left = self.need[d]
        self.buf[d].clear()
        if left > missing:
            # bytes lost inside a literal, a BDAT chunk or a body of known length: its length still
            # says where it ends, so what follows the hole is read as what it is
            self.need[d] = left - missing
            self.raw_gap(d, missing)
        else:
            self.need[d] = 0
            self.reset_after_gap(d)
        self.add(d, tr(self.lang, f"[{missing} bytes not in the capture]", f"[抓包中缺少 {missing} 字节]"),
                 frame, time, kind="gap")

    def finish(self, frame: int, time: float) -> None:
        for d in ("C", "S"):
            if self.buf[d] and not self.upgraded:
                rest = bytes(self.buf[d])
                self._at(d, rest)
                self.buf[d].clear()
                if self.need[d] > 0:
                    self.raw(d, rest, self.buf_frame[d], frame, time, done=True, cut=True)
                else:
                    self.line(d, rest, self.buf_frame[d], frame, time)
        self.flush_pending()
        self.drop_holes()

    # --- hooks -----------------------------------------------------------------------------

    def line(self, d: str, raw: bytes, first: int, frame: int, time: float) -> None:
        self.add(d, _text(raw), frame, time, first=first, kind="command" if d == "C" else "reply")

    def in_body(self, d: str) -> bool:
        """True while ``d`` sends a dot-terminated message body (SMTP DATA, POP3 RETR)."""
        return False

    def line_start(self, d: str, text: str) -> bool:
        """Whether ``text`` starts like a line of this protocol (for the first line of a capture
        that missed the start of the stream)."""
        return True

    def body_bytes(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool) -> None:
        pass

    def raw(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool,
            cut: bool = False) -> None:
        pass

    def reset_after_gap(self, d: str) -> None:
        pass

    def raw_gap(self, d: str, missing: int) -> None:
        """``missing`` bytes of the raw data being read (``need``) are not in the capture."""

    def flush_pending(self) -> None:
        pass

    # --- output ----------------------------------------------------------------------------

    def add(self, d: str, text: str, frame: int, time: float, *, kind: str, first: int | None = None,
            explanation: str | None = None, redacted: bool = False, mail: int | None = None,
            slot: int | None = None) -> None:
        """Append an entry, or fill the place ``slot`` (from ``reserve``) kept for it."""
        if slot is None and len(self.entries) >= MAX_ENTRIES:
            self.omitted += 1
            return
        if self.redactor is not None:
            clean = self.redactor(text)
            if clean != text:
                self.carries_credentials = True  # a known secret showed up (the sanitizer scans plain bytes too)
            redacted = redacted or clean != text
            text = clean
            if explanation:
                explanation = self.redactor(explanation)
        entry: Entry = {"dir": d, "frame": frame, "first_frame": first if first else frame, "time": time,
                        "text": text, "kind": kind, "explanation": explanation or None,
                        "decrypted": self.decrypted, "redacted": redacted}
        if mail is not None:
            entry["mail"] = mail
        if slot is not None and slot < len(self.entries) and self.entries[slot] is _HOLE:
            self.entries[slot] = entry
            self.holes -= 1
        else:
            self.entries.append(entry)

    def reserve(self) -> int | None:
        """Keep the next place in the dialogue for an entry whose first byte flows now but whose end
        comes later (an IMAP command or response carrying a literal), so that entries stay in the
        order their first bytes flowed; None when the dialogue is full."""
        if len(self.entries) >= MAX_ENTRIES:
            return None
        self.entries.append(_HOLE)
        self.holes += 1
        return len(self.entries) - 1

    def drop_slot(self, slot: int | None) -> None:
        """A place reserved for an entry that will not be shown after all."""
        if slot is not None and slot == len(self.entries) - 1 and self.entries[slot] is _HOLE:
            self.entries.pop()
            self.holes -= 1

    def drop_holes(self) -> None:
        """Places reserved for entries that never came (a gap, the end of the capture)."""
        if self.holes:
            self.entries = [e for e in self.entries if e is not _HOLE]
            self.holes = 0

    def last_position(self) -> tuple[int, float]:
        """Frame and time of the latest entry: where an unfinished reply is shown at the end."""
        for entry in reversed(self.entries):
            if entry is not _HOLE:
                return int(entry["frame"]), float(entry["time"])
        return 0, 0.0

    def secret(self, value: str, d: str = "C") -> tuple[str, bool]:
        self.credentials_seen = True
        self.mark(d, value)
        return (value, False) if self.show else (REDACTED, True)

    # --- where credentials sit (for evidence/sanitize.py) ------------------------------------

    def _at(self, d: str, raw: bytes) -> None:
        """``raw`` (the start of buf) is handed to line()/raw() next: remember where it sits."""
        pos = self.pos[d]
        self.cur[d] = (pos - len(self.buf[d]) if pos is not None else None, raw)

    def mark(self, d: str, value: str | None = None) -> None:
        """The bytes of ``value`` in the current line of ``d`` (all of it when None, or when it
        cannot be found there) carry a credential."""
        self.carries_credentials = True
        start, raw = self.cur[d]
        if start is None or not raw or value == "":
            return  # inside TLS (or no position): the sanitized copy withholds the keys instead
        body = raw.rstrip(b"\r\n")
        at, size = 0, len(body)
        if value is not None:
            needle = value.encode("utf-8", "replace")
            found = body.rfind(needle) if needle else -1
            if found >= 0:
                at, size = found, len(needle)
        if size:
            self.secret_bytes[d].append((start + at, start + at + size))

    def summary(self, body: mailsum.Body, d: str, frame: int, *, cut: bool = False) -> dict[str, Any]:
        summary = body.summary(frame=frame, direction=d, truncated=cut)
        if self.redactor is not None:
            for key in ("from", "subject", "subject_raw"):
                if summary[key]:
                    summary[key] = self.redactor(summary[key])
        return summary

    def add_mail(self, body: mailsum.Body, d: str, frame: int, time: float, first: int, *,
                 label: str, explanation: str, cut: bool = False, slot: int | None = None) -> None:
        summary = self.summary(body, d, frame, cut=cut)
        self.mail.append(summary)
        self.add(d, mailsum.one_line(summary, label=label), frame, time, kind="data", first=first,
                 explanation=explanation, mail=len(self.mail) - 1, slot=slot)


class Generic(Conversation):
    """Unknown protocols: text lines as they are, binary data as a byte count."""

    def line(self, d: str, raw: bytes, first: int, frame: int, time: float) -> None:
        text = _text(raw)
        printable = sum(c.isprintable() or c in "\t" for c in text)
        if text and printable < 0.9 * len(text):
            text = f"[{len(raw)} bytes of binary data]"
        redacted = False
        if not self.show:
            # what looks like an HTTP credential is hidden here too (a stream whose first bytes did
            # not say HTTP: the capture started inside a body; security review F9)
            name, sep, _value = text.partition(":")
            clean = f"{name}: {REDACTED}" if sep and name.strip().lower() in _SENSITIVE_HEADERS else mask_query(text)
            redacted, text = clean != text, clean
        self.add(d, text, frame, time, first=first, kind="command" if d == "C" else "reply", redacted=redacted)


class Encrypted:
    """What a passive observer sees of TLS application data: records, sizes, directions."""

    def __init__(self, conv: Conversation) -> None:
        self.conv = conv
        self.run: list[Any] | None = None  # [dir, records, bytes, first_frame, frame, time]

    def record(self, d: str, length: int, frame: int, time: float) -> None:
        if self.run and self.run[0] == d:
            self.run[1] += 1
            self.run[2] += length
            self.run[4], self.run[5] = frame, time
            return
        self.flush()
        self.run = [d, 1, length, frame, frame, time]

    def flush(self) -> None:
        if not self.run:
            return
        d, records, size, first, frame, time = self.run
        self.run = None
        lang = self.conv.lang
        self.conv.decrypted = False
        self.conv.add(d, tr(lang, f"[encrypted application data: {records} record(s), {size} bytes]",
                            f"[加密的应用数据：{records} 个记录，{size} 字节]"), frame, time, first=first,
                      kind="tls", explanation=tr(lang, "without the key log only sizes and timing are visible",
                                                 "没有密钥日志时，旁观者只能看到长度和时间"))


# --- SMTP --------------------------------------------------------------------------------------


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


# --- POP3 --------------------------------------------------------------------------------------


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


# --- IMAP --------------------------------------------------------------------------------------

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


# --- HTTP (inside HTTPS when decrypted) --------------------------------------------------------

_SENSITIVE_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
# A URL query parameter whose name says it holds a secret (?password=…, &access_token=…): its
# value is hidden in the request line and in any header (Referer, Location) that carries a URL.
_SECRET_PARAM = re.compile(
    r"((?:^|[?&;])(?:[\w.\-\[\]%]*?(?:pass|pwd|secret|token|auth|code|session|sid|key|credential)"
    r"[\w.\-\[\]%]*)=)[^&;#\s]*", re.IGNORECASE)


_SECRET_PARAM_BYTES = re.compile(_SECRET_PARAM.pattern.encode(), re.IGNORECASE)


def mask_query(text: str) -> str:
    """``GET /login?user=a&password=x`` → ``GET /login?user=a&password=«redacted»`` (D18)."""
    return _SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, text) if "=" in text else text


def _form_fields(body: bytes, show: bool, limit: int = 40) -> list[tuple[str, str]]:
    """A url-encoded form's fields, decoded; password-like values «redacted» (unless shown)."""
    from urllib.parse import unquote_plus

    fields = []
    for pair in body.split(b"&")[:limit]:
        name, _, value = pair.partition(b"=")
        secret = _SECRET_FIELD.match(name + b"=" + value) is not None
        key = _text(unquote_plus(name.decode("ascii", "replace")).encode())[:80]
        shown = unquote_plus(value.decode("ascii", "replace"))
        fields.append((key, REDACTED if secret and value and not show else _text(shown.encode())[:200]))
    return fields


# a form field whose name says it holds a secret: (name)=(value)
_SECRET_FIELD = re.compile(rb"(?:^|&)([^=&]*(?:pass|pwd|secret|token|auth|code)[^=&]*)=([^&]*)", re.I)


# a request body's field whose name says it holds a secret: url-encoded (name)=(value),
# JSON "(name)": "(value)", multipart name="(name)" ... (value)
_NAMES = rb"(?:pass|pwd|secret|token|auth|code)"
_SECRET_FIELDS = (
    re.compile(rb"(?:^|[&?])([^=&?\s]*" + _NAMES + rb"[^=&\s]*)=([^&\s#]*)", re.I),
    re.compile(rb'"([^"]*' + _NAMES + rb'[^"]*)"\s*:\s*"((?:[^"\\]|\\.)*)"', re.I),
    re.compile(rb'name="([^"]*' + _NAMES + rb'[^"]*)"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]*)', re.I),
)


class Http(Conversation):
    protocol = "HTTP"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.head: dict[str, list[str]] = {"C": [], "S": []}
        self.head_first = {"C": 0, "S": 0}
        self.methods: deque[str] = deque()
        self.body_mode = {"C": "", "S": ""}  # "", "length", "chunked", "close"
        self.body_size = {"C": 0, "S": 0}
        self.body_first = {"C": 0, "S": 0}
        self.binary = False
        self.form: list[tuple[int | None, bytes]] | None = None  # a request body being sent
        self.form_urlencoded = False  # ... as a url-encoded form (its fields are shown)
        self.form_fields: list[tuple[str, str]] = []  # the last form's fields, as shown

    def line(self, d: str, raw: bytes, first: int, frame: int, time: float) -> None:
        text = _text(raw)
        if self.body_mode[d] == "chunked":
            self._chunk_line(d, text, first, frame, time)
            return
        if not self.head[d]:
            if not text:
                return
            if raw[:3] == b"PRI" or (not text[:1].isalpha()):
                self.binary = True
                self.add(d, f"[{len(raw)} bytes of binary data (HTTP/2?)]", frame, time, first=first,
                         kind="note")
                return
            self.head_first[d] = first
        if text:
            name, sep, _value = text.partition(":")
            if sep and name.strip().lower() in _SENSITIVE_HEADERS:
                self.mark(d, _value.strip())
            elif "=" in text:  # the URL values mask_query hides: where they sit
                start, raw_line = self.cur[d]
                for m in _SECRET_PARAM_BYTES.finditer(raw_line):
                    self._mark_span(m.end(1), m.end(), [(start, raw_line)], d)
            if sep and name.strip().lower() in _SENSITIVE_HEADERS and not self.show:
                text = f"{name}: {REDACTED}"
            elif not self.show:
                text = mask_query(text)
            if len(self.head[d]) < MAX_LINES_PER_ENTRY:
                self.head[d].append(text)
            return
        lines, self.head[d] = self.head[d], []
        self._headers_done(d, lines, frame, time)

    def line_start(self, d: str, text: str) -> bool:
        if d == "S":
            return text.startswith("HTTP/")
        return text.split(" ", 1)[0].upper() in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH",
                                                  "CONNECT", "TRACE")

    def _headers_done(self, d: str, lines: list[str], frame: int, time: float) -> None:
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        first_line = lines[0]
        if d == "C":
            self.methods.append(first_line.split(" ", 1)[0].upper())
            explanation = tr(self.lang, "HTTP request", "HTTP 请求")
            self.form = []  # its password-like fields are looked for (_form)
            self.form_urlencoded = "x-www-form-urlencoded" in headers.get("content-type", "").lower()
        else:
            status = first_line.split(" ")
            explanation = tr(self.lang, f"HTTP response, status {status[1] if len(status) > 1 else '?'}",
                             f"HTTP 响应，状态码 {status[1] if len(status) > 1 else '?'}")
        redacted = any(REDACTED in ln for ln in lines)
        self.add(d, "\n".join(lines), frame, time, first=self.head_first[d], kind="command" if d == "C" else "reply",
                 explanation=explanation, redacted=redacted)
        no_body = False
        if d == "S":
            method = self.methods.popleft() if self.methods else ""
            code = first_line.split(" ")[1] if len(first_line.split(" ")) > 1 else ""
            no_body = method == "HEAD" or code in ("204", "304") or code.startswith("1")
        if no_body:
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.body_mode[d] = "chunked"
            self.body_size[d] = 0
            self.body_first[d] = frame
        elif headers.get("content-length", "").isdigit():
            n = int(headers["content-length"])
            if n:
                self.body_mode[d] = "length"
                self.need[d] = n
                self.body_size[d] = 0
                self.body_first[d] = frame
        elif d == "S":
            self.body_mode[d] = "close"
            self.need[d] = 1 << 62
            self.body_size[d] = 0
            self.body_first[d] = frame

    def _chunk_line(self, d: str, text: str, first: int, frame: int, time: float) -> None:
        size_text = text.split(";", 1)[0].strip()
        if not size_text:
            return
        try:
            size = int(size_text, 16)
        except ValueError:
            return
        if size == 0:
            self.body_mode[d] = ""
            self._body_entry(d, frame, time)
            return
        self.need[d] = size + 2

    def raw_gap(self, d: str, missing: int) -> None:
        self.body_size[d] += missing

    def raw(self, d: str, chunk: bytes, first: int, frame: int, time: float, *, done: bool,
            cut: bool = False) -> None:
        self.body_size[d] += len(chunk)
        if d == "C" and self.form is not None:
            self._form(chunk, done or cut)
        if self.body_mode[d] == "chunked":
            self.body_size[d] -= 2 if done and chunk.endswith(b"\r\n") else 0
            return
        if done or cut:
            self.body_mode[d] = ""
            self._body_entry(d, frame, time)

    def _form(self, chunk: bytes, done: bool) -> None:
        """A request body: the values of its password-like fields (url-encoded, JSON,
        multipart) are credentials."""
        assert self.form is not None
        if sum(len(c) for _, c in self.form) < BODY_KEEP:
            self.form.append((self.cur["C"][0], chunk))
        if not done:
            return
        parts, self.form = self.form, None
        body = b"".join(c for _, c in parts)
        if self.form_urlencoded:
            self.form_fields = _form_fields(body, self.show)
        for pattern in _SECRET_FIELDS:
            for m in pattern.finditer(body):
                self._mark_span(m.start(2), m.end(2), parts)

    def _mark_span(self, lo: int, hi: int, parts: list[tuple[int | None, bytes]], d: str = "C") -> None:
        """Bytes lo..hi of contiguous ``parts`` (start offset, bytes) carry a credential."""
        if lo >= hi:
            return
        self.carries_credentials = True
        at = 0
        for start, c in parts:
            a, z = max(lo, at), min(hi, at + len(c))
            if a < z and start is not None:
                self.secret_bytes[d].append((start + a - at, start + z - at))
            at += len(c)

    def _body_entry(self, d: str, frame: int, time: float) -> None:
        size = self.body_size[d]
        text = tr(self.lang, f"[body: {size} bytes]", f"[消息体：{size} 字节]")
        fields, self.form_fields = (self.form_fields, []) if d == "C" else ([], self.form_fields)
        if fields:  # a form (a web mail's login, its send): its fields, credentials redacted
            text += tr(self.lang, " form fields:", " 表单字段：") + "".join(f"\n{k}={v}" for k, v in fields)
        self.add(d, text, frame, time, first=self.body_first[d], kind="data",
                 redacted=any(v == REDACTED for _, v in fields))
        self.body_size[d] = 0

    def finish(self, frame: int, time: float) -> None:
        for d in ("C", "S"):
            if self.body_mode[d] == "close" and (self.body_size[d] or self.buf[d]):
                self.body_size[d] += len(self.buf[d])
                self.buf[d].clear()
                self.need[d] = 0
                self.body_mode[d] = ""
                self._body_entry(d, frame, time)
        super().finish(frame, time)


PROTOCOLS: dict[str, type[Conversation]] = {"SMTP": Smtp, "POP3": Pop3, "IMAP": Imap, "HTTP": Http,
                                             "HTTPS": Http}


def conversation(protocol: str, **kw: Any) -> Conversation:
    return PROTOCOLS.get(protocol, Generic)(**kw)
