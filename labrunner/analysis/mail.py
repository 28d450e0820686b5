"""Summaries of mail messages seen in a capture, as Wireshark's IMF/MIME view shows them."""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import email.policy
import email.utils
import quopri
import re
from collections.abc import Callable, Iterable
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from typing import Any

# A message is kept whole up to this size; a bigger one is summarised as it arrives (Body).
PARSE_LIMIT = 4 << 20
_FOLD = re.compile(r"\r?\n(?=[ \t])")


# The registry (the same as email.policy.default's) builds a new header class on every lookup;
# look it up once.
_UNSTRUCTURED = HeaderRegistry()["subject"]


def _decoded(value: str | None) -> str | None:
    """A header value as a reader sees it: unfolded, RFC 2047 encoded words decoded.

    The modern header parser keeps the space between an encoded word and the plain text after
    it ("=?utf-8?b?...?= (lab 5)"); make_header(decode_header()) drops it.
    """
    if value is None:
        return None
    raw = _FOLD.sub("", str(value))
    if raw.isascii() and "=?" not in raw:
        # no encoded word: the parser would give the text back unchanged (test_analysis_headers)
        return raw.strip()
    text = _plain_words(raw)
    if text is None:
        text = _parsed(raw)
    return text or raw.strip()


def _parsed(raw: str) -> str:
    """The header parser's reading of an unfolded value, stripped ("" where it gives up)."""
    try:
        return str(_UNSTRUCTURED("subject", raw)).strip()
    except (ValueError, LookupError, UnicodeError, IndexError):
        return ""


# The header parser builds a token tree with defects for every value (~10 µs for the benchmark's
# "bench =?utf-8?b?5rWL6K+V?=", 2.5 µs here). A value of printable ASCII words and well-formed
# encoded words, separated by blanks, decodes here as the parser decodes it (get_unstructured +
# _encoded_words.decode).
_PRINTABLE = re.compile(r"[\x21-\x7e \t]*")
_BLANKS = re.compile(r"([ \t]+)")
# charset: no "*" (RFC 2231 language), no "?"; text: no "?" and at least one character
_ENCODED_WORD = re.compile(r"=\?([\x21-\x29\x2b-\x3e\x40-\x7e]+)\?([bBqQ])\?([\x21-\x3e\x40-\x7e]+)\?=")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_Q_BYTE = re.compile(rb"=([a-fA-F0-9]{2})")
_HEX = frozenset("0123456789abcdefABCDEF")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _plain_words(raw: str) -> str | None:
    """``raw`` decoded, stripped, as the header parser gives it; None: not sure, ask the parser.

    Not sure: other characters than printable ASCII and blanks, "=?" that is not a whole encoded
    word, base64 the parser would repair (padding, stray characters), a charset Python does not
    know or that cannot decode the bytes (the parser substitutes), surrogates in the result.
    """
    if not raw.isascii() or not _PRINTABLE.fullmatch(raw):
        return None
    out: list[str] = []
    encoded_before = False  # the last word was an encoded word
    pieces = _BLANKS.split(raw)
    for i in range(0, len(pieces), 2):  # words at even indices, the blanks between at odd ones
        word = pieces[i]
        if "=?" not in word:
            if word:  # "" at the ends: blanks before or after all words, stripped anyway
                if i:
                    out.append(pieces[i - 1])
                out.append(word)
                encoded_before = False
            continue
        m = _ENCODED_WORD.fullmatch(word)
        if m is None:
            return None
        charset, cte, text = m.groups()
        try:
            if cte in "bB":
                # a text starting with "=" would end the word early in the parser's "?=" search
                if not _BASE64.fullmatch(text):
                    return None
                # what strict base64 refuses, the parser pads or cleans: binascii.Error, its turn
                data = base64.b64decode(text, validate=True)
            else:
                # q text starting with "=" ends the parser's "?=" search early unless =XX follows
                if text[0] == "=" and not (len(text) > 2 and text[1] in _HEX and text[2] in _HEX):
                    return None
                data = _Q_BYTE.sub(lambda b: bytes.fromhex(b.group(1).decode()),
                                   text.encode("ascii").replace(b"_", b" "))
            decoded = data.decode(charset)
        except (binascii.Error, LookupError, UnicodeError, ValueError):
            return None
        if i and not encoded_before:
            out.append(pieces[i - 1])  # blanks between two encoded words vanish (RFC 2047 6.2)
        out.append(decoded)
        encoded_before = True
    text = "".join(out)
    if _SURROGATE.search(text):
        return None  # the parser would re-decode the whole value (email.utils._sanitize)
    return text.strip()


# characters that make a display name need quotes in an address (RFC 5322 3.2.3 specials)
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def _address(name: str, addr: str) -> str:
    """``Name <addr>``, or ``addr`` alone; a name with specials (``Last, First``) in quotes."""
    name = (_decoded(name) or "").strip()
    addr = addr.strip()
    if not name:
        return addr
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>" if addr else name


# "a@b" or "Words Only <a@b>": what getaddresses reads the same way (no quotes, comments,
# encoded words, dots or other specials in the name)
_PLAIN_ADDRESS = re.compile(r"\s*(?:([A-Za-z0-9_+-]+(?:[ \t]+[A-Za-z0-9_+-]+)*)[ \t]*"
                            r"<([A-Za-z0-9_+.-]+@[A-Za-z0-9.-]+)>|([A-Za-z0-9_+.-]+@[A-Za-z0-9.-]+))\s*")


def _plain_addresses(raw: str) -> list[str] | None:
    """``_addresses`` of a list of plain addresses without the stdlib's parser (~40 µs each);
    None: anything else. test_analysis_foreign_mail compares the two."""
    out = []
    for item in raw.split(","):
        m = _PLAIN_ADDRESS.fullmatch(item)
        if m is None:
            return None
        name, addr, bare = m.groups()
        out.append(f"{' '.join(name.split())} <{addr}>" if name else addr or bare)
    return out


def _addresses(value: str | None) -> list[str]:
    """An address list (RFC 5322 3.4) split into its addresses, names decoded (RFC 2047).

    Split before decoding: a comma inside a quoted name or an encoded word ("Last, First",
    =?UTF-8?B?...?= of "张三, 李四") belongs to the name.
    """
    if not value:
        return []
    raw = _FOLD.sub("", str(value))
    fast = _plain_addresses(raw)
    if fast is not None:
        return fast
    found = [_address(name, addr) for name, addr in email.utils.getaddresses([raw]) if name or addr]
    if found:
        return found
    text = _decoded(raw) or ""  # not an address list at all: show it as it is
    return [text] if text else []


def _mailbox(value: str | None) -> str | None:
    """A From value, normalised as _addresses does (``<a@b>`` is ``a@b``)."""
    if value is None:
        return None
    found = _addresses(value)
    return ", ".join(found) if found else _decoded(value)


_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_PARTS = 200


# A header field as the stdlib's feed parser recognises it (email.feedparser.headerRE: a name,
# a colon, continuation lines starting with a blank), minus its corner cases (an empty name, a
# "From " envelope line, a line that is neither), which go to the stdlib itself. The value is
# what compat32's header_source_parse keeps: blanks after the colon dropped, folds kept.
_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)(?:\n(?![ \t])|\Z)")


def parse_headers(head: bytes) -> Message:
    """``BytesHeaderParser(policy=compat32)`` of a header block, the same Message, faster.

    The feed parser's generator machinery costs ~70 µs per MIME part (a third of a mail
    summary). A plain block (ASCII, CRLF or LF line ends, every line a "Name: value" or its
    continuation) is split here as the policy's header_source_parse splits it; anything else is
    left to the stdlib. test_analysis_headers checks both give the same headers.
    """
    fast = _plain_headers(head)
    return fast if fast is not None else _stdlib_headers(head)


def _stdlib_headers(head: bytes) -> Message:
    if not head.isascii():
        # RFC 6532: header values may be raw UTF-8; parsed as bytes, each byte would become a
        # U+FFFD. Other 8-bit bytes (no charset is declared for headers) stay the stdlib's.
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return HeaderParser(policy=email.policy.compat32).parsestr(text + "\r\n\r\n")
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")


def _plain_headers(head: bytes) -> Message | None:
    fields = _plain_fields(head)
    return None if fields is None else _message(fields)


def _message(fields: list[tuple[str, str]]) -> Message:
    msg = Message(policy=email.policy.compat32)
    for name, value in fields:
        msg.set_raw(name, value)
    return msg


def _plain_fields(head: bytes) -> list[tuple[str, str]] | None:
    """The (name, value) pairs of a plain block, as compat32's header_source_parse gives them."""
    if not head or not head.isascii() or head.count(b"\r") != head.count(b"\r\n"):
        return None
    text = head.decode("ascii")
    fields = []
    end = 0
    while end < len(text):
        # anchored at each line: a search (finditer) would try every position of a long line
        # that is not a field, quadratic in its length
        m = _FIELD.match(text, end)
        if m is None:
            return None  # a line that is not a field
        end = m.end()
        fields.append((m[1], m[2].rstrip("\r\n")))
    return fields


# A Content-Type or Content-Disposition value without what compat32's parameter parsing
# (message._parseparam, utils.decode_params) treats specially: backslash escapes, RFC 2231
# "name*=", non-ASCII. Parentheses too: compat32 does not know comments, but a value with one
# is unusual enough to be left to it rather than reasoned about.
_PLAIN_PARAMS = re.compile(r"[\x21-\x27\x2b-\x5b\x5d-\x7e \t\r\n]*")


def _params(value: str) -> dict[str, str] | None:
    """``{name: Message.get_param(name)}`` of a header value; None: not sure, ask the stdlib.

    Each of get_param, get_content_charset and get_filename (which asks two headers) parses the
    whole value again and builds the RFC 2231 structures; one pass here serves them all.
    """
    if not _PLAIN_PARAMS.fullmatch(value):
        return None
    params: dict[str, str] = {}
    pending: list[str] = []  # the chunks so far of a parameter with a ";" between quotes
    quoted = False  # an odd number of quotes so far: the next ";" does not end the parameter
    for chunk in value.split(";"):
        if chunk.count('"') % 2:
            quoted = not quoted
        if quoted:
            pending.append(chunk)
            continue
        if pending:
            chunk = ";".join([*pending, chunk])
            pending = []
        name, eq, val = chunk.partition("=")
        name = name.strip().lower()
        if not name:
            continue  # empty (";;", a trailing ";"): nothing asks for it
        if name in params:
            return None  # the stdlib takes the first; be sure rather than clever
        # decode_params unquotes, quotes and get_param unquotes again: without backslashes,
        # that is one unquote
        params[name] = email.utils.unquote(val.strip()) if eq else ""
    return None if pending else params  # unbalanced quotes


class _Head:
    """The header fields of one MIME part, read as compat32's Message reads them.

    A plain block (see parse_headers) is looked up in a dict and its parameters parsed once by
    _params; the Message is built only when a value is unusual, and then answers instead.
    """

    __slots__ = ("_cd", "_ct", "_fields", "_first", "_msg")

    def __init__(self, head: bytes) -> None:
        self._fields = _plain_fields(head)
        self._msg: Message | None = None
        self._first: dict[str, str] | None = None
        self._ct: dict[str, str] | None = None
        self._cd: dict[str, str] | None = None
        if self._fields is None:
            self._msg = _stdlib_headers(head)
            return
        first: dict[str, str] = {}
        for name, value in self._fields:
            first.setdefault(name.lower(), value)  # Message.get: the first of the name
        self._first = first
        ct, cd = first.get("content-type"), first.get("content-disposition")
        self._ct = {} if ct is None else _params(ct)
        self._cd = {} if cd is None else _params(cd)

    @property
    def msg(self) -> Message:
        if self._msg is None:
            self._msg = _message(self._fields or [])
        return self._msg

    def get(self, name: str) -> Any:
        if self._first is None:
            return self.msg.get(name)
        return self._first.get(name.lower())  # compat32 gives an ASCII value back as stored

    def content_type(self) -> str:
        if self._first is None:
            return self.msg.get_content_type()
        value = self._first.get("content-type")
        if value is None:
            return "text/plain"  # Message's default type: _walk never sets digest parts' default
        ctype = value.partition(";")[0].strip().lower()
        return ctype if ctype.count("/") == 1 else "text/plain"

    def disposition(self) -> str | None:
        if self._first is None:
            return self.msg.get_content_disposition()
        value = self._first.get("content-disposition")
        return None if value is None else value.partition(";")[0].strip().lower()

    def boundary(self) -> Any:
        if self._ct is None:
            return self.msg.get_param("boundary")
        return self._ct.get("boundary")

    def charset(self) -> str | None:
        if self._ct is None:
            return self.msg.get_content_charset()
        value = self._ct.get("charset")
        return None if value is None else value.lower()

    def filename(self) -> str | None:
        if self._cd is None:
            return self.msg.get_filename()
        name = self._cd.get("filename")
        if name is None:
            if self._ct is None:
                return self.msg.get_filename()
            name = self._ct.get("name")
        # get_filename unquotes once more (utils.collapse_rfc2231_value)
        return None if name is None else email.utils.unquote(name).strip()


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))


def _plain_base64_size(body: bytes) -> int | None:
    """``len(binascii.a2b_base64(body))`` without decoding (half the time); None: not sure.

    Sure for lines of the base64 alphabet with at most two "=" at the very end and a multiple
    of four characters; anything else (other characters, padding inside, a short last group)
    is decoded by binascii, whose lenient rules then decide.
    """
    text = body.translate(None, b"\r\n")
    data = text.rstrip(b"=")
    pad = len(text) - len(data)
    if pad > 2 or len(text) % 4 or data.translate(None, _BASE64_ALPHABET):
        return None
    return len(text) // 4 * 3 - pad


def _decoded_size(body: bytes, encoding: str) -> int:
    if encoding == "base64":
        size = _plain_base64_size(body)
        if size is not None:
            return size
        try:
            return len(binascii.a2b_base64(body))
        except (ValueError, binascii.Error):
            # e.g. cut short by the end of the capture: what its characters decode to, as
            # MailStream counts a message too big to keep
            return len(body.translate(None, _NOT_BASE64)) * 6 // 8
    with contextlib.suppress(ValueError, binascii.Error):
        if encoding == "quoted-printable":
            return len(quopri.decodestring(body))
    return len(body)


def _walk(raw: bytes, parts: list[dict[str, Any]], depth: int = 0) -> _Head:
    end = _HEADER_END.search(raw)
    head, body = (raw[:end.start()], raw[end.end():]) if end else (raw, b"")
    # The full feed parser compiles one regular expression per multipart boundary, which
    # dominated the analysis of many messages: the parts are cut here.
    msg = _Head(head)
    ctype = msg.content_type()
    boundary = msg.boundary() if ctype.startswith("multipart/") else None
    if isinstance(boundary, str) and boundary and depth < 10:
        delimiter = b"--" + email.utils.unquote(boundary).encode("utf-8", "replace")
        pieces = body.split(delimiter)  # MIME picks boundaries that never occur inside a part
        for piece in pieces[1:]:
            if piece.startswith(b"--") or len(parts) >= MAX_PARTS:
                break  # the closing delimiter (what follows is the epilogue)
            content = piece.split(b"\n", 1)[1] if b"\n" in piece else b""
            # the line break before the next delimiter belongs to the delimiter (RFC 2046 5.1.1)
            content = content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")
            _walk(content, parts, depth + 1)
        return msg
    encoding = (msg.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    parts.append(_part(msg, ctype, encoding, _decoded_size(body, encoding)))
    return msg


def summarize(raw: bytes, *, size: int, frame: int, direction: str, truncated: bool = False) -> dict[str, Any]:
    """``raw``: the whole message as transferred (dot-unstuffed); a message too big to keep goes
    through ``Body``, which summarises it as it arrives (MailStream) with the same result."""
    prepared = PREPARED.get()
    walked = prepared.get(raw) if prepared else None
    if walked and prepared is not None:
        # _summary of these very bytes, made while tshark was starting (prepare), but for what
        # the call says (the keys in _summary's order)
        made = walked.pop()
        if not walked:
            del prepared[raw]
        return {"frame": frame, "dir": direction, "size": size, **made, "truncated": truncated}
    parts: list[dict[str, Any]] = []
    msg = _walk(raw, parts)
    return _summary(msg, parts, size=size, frame=frame, direction=direction, truncated=truncated)


# --- messages read ahead --------------------------------------------------------------------------
# tshark spends ~0.17 s loading its dissectors before its first line; the light pass reads the
# capture's packets meanwhile (tshark.light_rows). ``prepare`` then cuts what look like SMTP DATA
# messages out of those payloads and summarises each one (_walk and _summary, all of a summary but
# the four values of the call: frame, dir, size, truncated), one summary per message found,
# identical ones too. ``summarize`` takes one made of the very bytes it is given, once, and
# summarises any other message itself. Only a guess at what the dialogue will hand over; a wrong
# guess (segments out of order, a message that is no message) only costs that wasted summary,
# made before tshark has said anything.

Prepared = list[dict[str, Any]]  # summaries without frame, dir, size and truncated
PREPARED: contextvars.ContextVar[dict[bytes, Prepared] | None] = contextvars.ContextVar("PREPARED", default=None)
_DATA_COMMAND = re.compile(rb"(?:^|\r\n)DATA\r\n", re.IGNORECASE)


def prepare(directions: Iterable[bytes], ready: Callable[[], bool], prepared: dict[bytes, Prepared]) -> None:
    """Summarise the messages that follow a ``DATA`` line in each direction's bytes (a TCP
    connection's, in the order captured) into ``prepared``, until ``ready`` (tshark's first line
    is there)."""
    for data in directions:
        at = 0
        while True:
            m = _DATA_COMMAND.search(data, at)
            if m is None:
                break
            end = data.find(b"\r\n.\r\n", m.end() - 2)
            if end < 0:
                break
            at = end + 5
            # as Smtp and Body keep it: the CRLF before the dot line included, dots unstuffed
            body = data[m.end():end + 2]
            if body.startswith(b".."):
                body = body[1:]
            body = body.replace(b"\n..", b"\n.")
            if len(body) > PARSE_LIMIT:
                continue  # (summarised as it arrives: MailStream)
            parts: list[dict[str, Any]] = []
            made = _summary(_walk(body, parts), parts, size=0, frame=0, direction="", truncated=False)
            for key in ("frame", "dir", "size", "truncated"):  # (summarize puts the call's own)
                del made[key]
            prepared.setdefault(body, []).append(made)
            if ready():
                return


def _summary(msg: _Head, parts: list[dict[str, Any]], *, size: int, frame: int, direction: str,
             truncated: bool) -> dict[str, Any]:
    attachments = [{"filename": p["filename"], "content_type": p["content_type"], "size": p["size"]}
                   for p in parts if p["filename"] or p["disposition"] == "attachment"]
    subject = msg.get("Subject")
    return {
        "frame": frame,
        "dir": direction,
        "size": size,
        "from": _mailbox(msg.get("From")),
        "to": _addresses(msg.get("To")),
        "cc": _addresses(msg.get("Cc")),
        "subject": _decoded(subject),
        "subject_raw": (str(subject).strip() if subject is not None else None),
        "date": _decoded(msg.get("Date")),
        "message_id": _decoded(msg.get("Message-ID")),
        "parts": parts,
        "attachments": attachments,
        "truncated": truncated,
    }


def _part(msg: _Head, ctype: str, encoding: str, size: int) -> dict[str, Any]:
    return {
        "content_type": ctype,
        "charset": msg.charset(),
        # the part as decoded (RFC 2045): 7bit/8bit/binary are the bytes themselves, line breaks
        # (CRLF) included; only the CRLF before the next delimiter is not the part's
        "size": size,
        "filename": _decoded(msg.filename()),
        "disposition": msg.disposition(),
        "encoding": encoding,
    }


HEAD_MAX = 1 << 18  # a header block longer than this is not waited for


class MailStream:
    """The summary of a message fed piece by piece, in bounded memory: what ``_walk`` finds
    (the same headers, parts and decoded sizes for well-formed MIME), without the message.

    The bytes not yet read are the content of the entity (the message, or a part of one of the
    open multiparts) being read: its header block ("head"), its body ("body", only counted), or
    a preamble/epilogue ("skip"). A multipart's delimiter ends the entity wherever it occurs, as
    ``bytes.split`` finds it in ``_walk``; the bytes that could still begin one stay unread.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.delims: list[bytes] = []  # delimiters of the open multiparts, outermost first
        self.state = "head"
        self.top: _Head | None = None
        self.parts: list[dict[str, Any]] = []
        self.leaf: dict[str, Any] | None = None  # the part whose body is being counted
        self.count = 0  # bytes so far (base64: alphabet characters)
        self.qp = bytearray()  # quoted-printable: the line not decoded yet

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._run(final=False)

    def result(self) -> tuple[_Head, list[dict[str, Any]]]:
        self._run(final=True)
        return (self.top or _Head(b"")), self.parts

    def _hit(self) -> tuple[int, int] | None:
        """(position, level) of the first delimiter in the buffer; the outer one on a tie."""
        best: tuple[int, int] | None = None
        for level, delim in enumerate(self.delims):
            pos = self.buf.find(delim)
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, level)
        return best

    def _run(self, *, final: bool) -> None:
        keep = max((len(d) for d in self.delims), default=0) + 2
        while True:
            hit = self._hit()
            if hit is None:
                end = len(self.buf)
            else:
                end = hit[0]
                end -= 2 if self.buf[:end].endswith(b"\r\n") else 1 if self.buf[:end].endswith(b"\n") else 0
            if self.state == "head":
                found = _HEADER_END.search(self.buf, 0, end)
                if found is not None and (hit is not None or final or found.end() <= len(self.buf) - keep):
                    self._entity(bytes(self.buf[:found.start()]))
                    del self.buf[:found.end()]
                    keep = max((len(d) for d in self.delims), default=0) + 2
                    continue
                if hit is None and not final and len(self.buf) < HEAD_MAX:
                    return  # the header block goes on
                # the entity ends (or is absurdly long) before a blank line: all of it is header
                self._entity(bytes(self.buf[:end]))
                del self.buf[:end]
                keep = max((len(d) for d in self.delims), default=0) + 2
                continue
            if hit is None:
                # a body's last line break goes with the delimiter that may follow: held back
                upto = len(self.buf) if final else max(0, len(self.buf) - keep)
                if final and self.delims and self.state == "body":  # an unclosed part: _walk strips it
                    upto -= 2 if self.buf.endswith(b"\r\n") else 1 if self.buf.endswith(b"\n") else 0
                self._consume(upto)
                if final:
                    self._end_leaf()
                    self.buf.clear()
                return
            self._consume(end)
            self._end_leaf()
            if not self._delimiter((hit[0] - max(end, 0), hit[1]), final=final):
                return
            keep = max((len(d) for d in self.delims), default=0) + 2

    def _consume(self, upto: int) -> None:
        if upto <= 0:
            return
        if self.state == "body" and self.leaf is not None:
            data = bytes(self.buf[:upto])
            encoding = self.leaf["encoding"]
            if encoding == "base64":
                self.count += len(data.translate(None, _NOT_BASE64))
            elif encoding == "quoted-printable":
                self.qp += data
                cut = self.qp.rfind(b"\n") + 1
                if cut:
                    self.count += len(binascii.a2b_qp(bytes(self.qp[:cut])))
                    del self.qp[:cut]
            else:
                self.count += len(data)
        del self.buf[:upto]

    def _end_leaf(self) -> None:
        if self.leaf is not None:
            if self.qp:
                self.count += len(binascii.a2b_qp(bytes(self.qp)))
                self.qp.clear()
            encoding = self.leaf["encoding"]
            self.leaf["size"] = self.count * 6 // 8 if encoding == "base64" else self.count
            self.leaf = None
        self.count = 0
        self.state = "skip"

    def _entity(self, head: bytes) -> None:
        """The header block of the message or of a part: a multipart opens, a leaf is counted."""
        msg = _Head(head)
        if self.top is None:
            self.top = msg
        ctype = msg.content_type()
        boundary = msg.boundary() if ctype.startswith("multipart/") else None
        if isinstance(boundary, str) and boundary and len(self.delims) < 10:
            self.delims.append(b"--" + email.utils.unquote(boundary).encode("utf-8", "replace"))
            self.state = "skip"  # the preamble
            return
        encoding = (msg.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        self.leaf = _part(msg, ctype, encoding, 0)
        self.parts.append(self.leaf)
        self.count = 0
        self.state = "body"

    def _delimiter(self, hit: tuple[int, int], *, final: bool) -> bool:
        """A delimiter at the start of the buffer (after the content before it was read):
        the next part begins, or (closing delimiter, too many parts) the multipart ends.
        False: wait for more bytes to tell."""
        pos, level = hit
        delim = self.delims[level]
        del self.delims[level + 1:]  # multiparts inside the one whose delimiter this is end here
        start = pos + len(delim)
        # the piece bytes.split gives _walk ends where this level's delimiter (or an outer one) is next
        nexts = [n for d in self.delims[:level + 1] if (n := self.buf.find(d, start)) >= 0]
        end = min(nexts) if nexts else len(self.buf)
        if not nexts and not final and end - start < len(delim) + 1:
            return False  # the next two bytes, or a delimiter starting within them, not here yet
        if self.buf[start:min(end, start + 2)] == b"--" or len(self.parts) >= MAX_PARTS:
            del self.delims[level:]  # its epilogue: skipped up to an outer delimiter
            del self.buf[:start]
            self.state = "skip"
            return True
        nl = self.buf.find(b"\n", start, end)
        if nl < 0:
            if not nexts and not final and end - start < HEAD_MAX:
                return False  # the rest of the delimiter line has not come yet
            del self.buf[:end]
            self._entity(b"")  # a piece without a line break: an empty part, as _walk sees it
            return True
        del self.buf[:nl + 1]
        self.state = "head"
        return True


class Body:
    """A message as it arrives (SMTP DATA or BDAT, POP3 RETR, an IMAP literal): kept whole up to
    PARSE_LIMIT, beyond that summarised as it comes, so memory stays bounded whatever its size.

    ``dotted``: dot-stuffed (RFC 5321 4.5.2, RFC 1939 3): a line's doubled leading dot is undone.
    ``size`` counts the bytes as transferred.
    """

    def __init__(self, *, dotted: bool = False) -> None:
        self.data = bytearray()
        self.size = 0
        self.stream: MailStream | None = None
        self.first = b""  # the first HEAD_MAX bytes, once the rest is no longer kept
        self.dotted = dotted
        self.held = b""  # a dot after a line break at the end of a chunk: doubled or not?
        self.line_start = True

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.dotted:
            chunk = self._unstuff(chunk)
        if self.stream is not None:
            self.stream.feed(chunk)
            return
        self.data += chunk
        if len(self.data) > PARSE_LIMIT:
            self.first = bytes(self.data[:HEAD_MAX])  # what it starts with stays known
            self.stream = MailStream()
            self.stream.feed(bytes(self.data))
            self.data = bytearray()

    def _unstuff(self, chunk: bytes) -> bytes:
        text = self.held + chunk
        self.held = b""
        if text.endswith(b"\n.") or (text == b"." and self.line_start):
            self.held = b"."
            text = text[:-1]
        if self.line_start and text.startswith(b".."):
            text = text[1:]
        if text:
            self.line_start = text.endswith(b"\n")
        return text.replace(b"\n..", b"\n.")

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes (at most HEAD_MAX): what the message starts with."""
        return bytes(self.data[:n]) if self.stream is None else self.first[:n]

    def summary(self, *, frame: int, direction: str, truncated: bool = False,
                size: int | None = None) -> dict[str, Any]:
        if self.held:
            self.add_unstuffed(self.held)
            self.held = b""
        size = self.size if size is None else size
        if self.stream is None:
            return summarize(bytes(self.data), size=size, frame=frame, direction=direction, truncated=truncated)
        msg, parts = self.stream.result()
        return _summary(msg, parts, size=size, frame=frame, direction=direction, truncated=truncated)

    def add_unstuffed(self, chunk: bytes) -> None:
        if self.stream is not None:
            self.stream.feed(chunk)
        else:
            self.data += chunk


def one_line(mail: dict[str, Any], *, label: str) -> str:
    """``DATA fragment, 4671 bytes`` + ``from: …, subject: … (text/plain) (image/png: a.png)``."""
    kinds = " ".join(
        f"({p['content_type']}: {p['filename']})" if p["filename"] else f"({p['content_type']})"
        for p in mail["parts"])
    head = f"from: {mail['from'] or ''}, subject: {mail['subject'] or ''}"
    cut = " [only partly in the capture]" if mail["truncated"] else ""
    return f"{label}, {mail['size']} bytes{cut}\n{head} {kinds}".rstrip()
