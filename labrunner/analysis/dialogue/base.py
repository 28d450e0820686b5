"""What every protocol's dialogue shares: line framing per direction, entries, caps, credentials.

One ``Conversation`` per TCP stream receives the bytes of each direction (plain, or decrypted
by Wireshark) and groups them into entries; the subclasses in this package (smtp, pop3, imap,
http, mirroring ``labrunner/sessions/``) apply the protocol's own rules.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from typing import Any, cast

from labrunner.analysis import mail as mailsum
from labrunner.secrets import REDACTED  # one marker everywhere: the report's scrubber looks for it
from labrunner.text import Text

MAX_ENTRIES = 2000
MAX_LINE = 64 * 1024  # a "line" longer than this is binary data, not a protocol line
MAX_LINES_PER_ENTRY = 200

Entry = dict[str, Any]
# What the analysis itself says (an explanation, a note, the text of a gap) is in both languages:
# the document holds Text.pair(), {"zh": ..., "en": ...} (docs/analysis.md), so that a report in
# either language reads it from analysis.json without analysing the capture again.
Said = Text | dict[str, str]  # a Text, or its pair() made once (the protocol tables' meanings)
_HOLE: Entry = {}  # a place kept in the dialogue (Conversation.reserve), filled or dropped at the end
# The end of a dot-terminated body: the line holding a single dot (the CRLF before it belongs to
# the body). At the very start of a body the dot line has no CRLF before it: handled line-wise.
_BODY_END = re.compile(rb"\r?\n\.\r?\n")
_HEADER_LINE = re.compile(rb"^[A-Za-z-]+: ", re.MULTILINE)  # a message header field, roughly


def body_end(buf: bytearray) -> int:
    """Where ``_BODY_END.search(buf)`` ends, or -1: with two memchr-fast finds instead of a regular
    expression that must try every byte (it starts with an optional CR); test_analysis_dialogue."""
    lf = buf.find(b"\n.\n")
    crlf = buf.find(b"\n.\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 4
    return lf + 3 if lf >= 0 else -1


def meanings(explain: Callable[[str, str], str]) -> Callable[[str], Text | None]:
    """A protocol table's ``explain(word, lang)`` as one Text per word, made once: the same few
    words come on every line of every session (bounded: a client may send any word)."""

    @functools.lru_cache(maxsize=1024)
    def meaning(word: str) -> Text | None:
        zh, en = explain(word, "zh"), explain(word, "en")
        return Text(zh, en) if en else None  # (explain falls back to the other language)

    return meaning


def joined(lines: list[str | Text]) -> str | Text:
    """Lines joined by newlines; a Text when the analysis worded one of them (an IMAP literal's
    place: "[message: 500 bytes, see below]")."""
    try:
        return "\n".join(cast(list[str], lines))  # (no test per line: these are nearly always strings)
    except TypeError:
        return Text("\n".join(x.get("zh") if isinstance(x, Text) else x for x in lines),
                    "\n".join(x.get("en") if isinstance(x, Text) else x for x in lines))


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


def is_command(text: str, verbs: Any, *, tagged: bool = False) -> bool:
    """A line no SASL exchange sends (those are base64): a verb of the protocol, with its
    arguments (IMAP: after a tag). Ends an exchange whose end the capture did not show, e.g.
    the server's side unreadable (D4)."""
    words = text.split()
    if tagged:
        return len(words) > 1 and words[1].upper() in verbs
    return bool(words) and words[0].upper() in verbs and not (len(words) == 1 and len(words[0]) >= 8)


# --- credentials in HTTP headers and URLs (Http, and Generic for a stream that did not say HTTP) ---

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


class Conversation:
    """Base: line framing per direction, entries, caps. Subclasses implement ``line``."""

    protocol = "other"

    def __init__(self, *, show_credentials: bool, redactor: Callable[[str], str] | None) -> None:
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
                break  # a Client Hello sent before the reply: left in buf for streams.py, never as lines
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
                    self.add(d, Text(f"[{len(line)} 字节：不是该协议的一行，可能是抓包开始之前就已开始的一行的结尾]",
                                     f"[{len(line)} bytes: no line of the protocol: perhaps the end of one that "
                                     "began before the capture]"), frame, time, kind="gap", first=first)
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
        self.add(d, Text(f"[抓包中缺少 {missing} 字节]", f"[{missing} bytes not in the capture]"),
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

    def add(self, d: str, text: str | Text, frame: int, time: float, *, kind: str, first: int | None = None,
            explanation: Said | None = None, redacted: bool = False, mail: int | None = None,
            slot: int | None = None) -> None:
        """Append an entry, or fill the place ``slot`` (from ``reserve``) kept for it. ``text`` is
        what was sent, or a Text when the analysis words it (a gap, a summary of what it cannot show)."""
        if slot is None and len(self.entries) >= MAX_ENTRIES:
            self.omitted += 1
            return
        shown: str | dict[str, str] = text.pair if isinstance(text, Text) else text
        said = explanation.pair if isinstance(explanation, Text) else explanation
        if said is not None and not said["en"]:
            said = None  # (get() falls back to the other language: one empty means both are)
        if self.redactor is not None:
            redact = self.redactor
            clean = redact(shown) if isinstance(shown, str) else {"zh": redact(shown["zh"]), "en": redact(shown["en"])}
            if clean != shown:
                self.carries_credentials = True  # a known secret showed up (the sanitizer scans plain bytes too)
            redacted = redacted or clean != shown
            shown = clean
            if said is not None:
                said = {"zh": redact(said["zh"]), "en": redact(said["en"])}
        entry: Entry = {"dir": d, "frame": frame, "first_frame": first if first else frame, "time": time,
                        "text": shown, "kind": kind, "explanation": said,
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
                 label: str, explanation: Said, cut: bool = False, slot: int | None = None) -> None:
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


_KEYLESS = Text("没有密钥日志时，旁观者只能看到长度和时间", "without the key log only sizes and timing are visible")


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
        self.conv.decrypted = False
        self.conv.add(d, Text(f"[加密的应用数据：{records} 个记录，{size} 字节]",
                              f"[encrypted application data: {records} record(s), {size} bytes]"),
                      frame, time, first=first, kind="tls", explanation=_KEYLESS)
