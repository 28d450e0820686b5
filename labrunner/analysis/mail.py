"""Summaries of mail messages seen in a capture, as Wireshark's IMF/MIME view shows them."""

from __future__ import annotations

import binascii
import contextlib
import email.policy
import email.utils
import quopri
import re
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import BytesHeaderParser
from typing import Any

# Only this much of a message is parsed; the size counts everything.
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
    try:
        text = str(_UNSTRUCTURED("subject", raw)).strip()
    except (ValueError, LookupError, UnicodeError, IndexError):
        text = ""
    return text or raw.strip()


def _addresses(value: str | None) -> list[str]:
    if not value:
        return []
    text = _decoded(value) or ""
    return [a.strip() for a in text.replace("\n", " ").split(",") if a.strip()]


_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_PARTS = 200


def _split(raw: bytes) -> tuple[Message, bytes]:
    """Headers (parsed by the stdlib) and the body. The full feed parser compiles one regular
    expression per multipart boundary, which dominated the analysis of many messages."""
    end = _HEADER_END.search(raw)
    head, body = (raw[:end.start()], raw[end.end():]) if end else (raw, b"")
    return parse_headers(head), body


# A header line as the stdlib's feed parser recognises it (email.feedparser.headerRE), minus
# its corner cases (an empty name, a "From " envelope line), which go to the stdlib itself.
_NAMED = re.compile(r"[\041-\071\073-\176]+:")


def parse_headers(head: bytes) -> Message:
    """``BytesHeaderParser(policy=compat32)`` of a header block, the same Message, faster.

    The feed parser's generator machinery costs ~70 µs per MIME part (a third of a mail
    summary). A plain block (ASCII, CRLF or LF line ends, every line a "Name: value" or its
    continuation) is split here with the policy's own header_source_parse; anything else is
    left to the stdlib. test_analysis_headers checks both give the same headers.
    """
    fast = _plain_headers(head)
    if fast is not None:
        return fast
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")


def _plain_headers(head: bytes) -> Message | None:
    if not head or not head.isascii() or b"\r" in head.replace(b"\r\n", b""):
        return None
    lines = head.decode("ascii").split("\n")
    if lines[0][:1] in (" ", "\t"):
        return None
    policy = email.policy.compat32
    msg = Message(policy=policy)
    current: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            current.append(line + "\n")
            continue
        if line.startswith("From ") or not _NAMED.match(line):
            return None
        if current:
            msg.set_raw(*policy.header_source_parse(current))
        current = [line + "\n"]
    msg.set_raw(*policy.header_source_parse(current))
    return msg


def _decoded_size(body: bytes, encoding: str) -> int:
    with contextlib.suppress(ValueError, binascii.Error):
        if encoding == "base64":
            return len(binascii.a2b_base64(body))
        if encoding == "quoted-printable":
            return len(quopri.decodestring(body))
    return len(body)


def _walk(raw: bytes, parts: list[dict[str, Any]], depth: int = 0) -> Message:
    msg, body = _split(raw)
    ctype = msg.get_content_type()
    boundary = msg.get_param("boundary") if ctype.startswith("multipart/") else None
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
    parts.append({
        "content_type": ctype,
        "charset": msg.get_content_charset(),
        "size": _decoded_size(body.rstrip(b"\r\n") if encoding not in ("base64", "quoted-printable") else body,
                              encoding),
        "filename": _decoded(msg.get_filename()),
        "disposition": msg.get_content_disposition(),
        "encoding": encoding,
    })
    return msg


def summarize(raw: bytes, *, size: int, frame: int, direction: str, truncated: bool = False) -> dict[str, Any]:
    """``raw``: the message as transferred (dot-unstuffed), possibly cut at PARSE_LIMIT."""
    parts: list[dict[str, Any]] = []
    msg = _walk(raw[:PARSE_LIMIT], parts)
    attachments = [{"filename": p["filename"], "content_type": p["content_type"], "size": p["size"]}
                   for p in parts if p["filename"] or p["disposition"] == "attachment"]
    return {
        "frame": frame,
        "dir": direction,
        "size": size,
        "from": _decoded(msg.get("From")),
        "to": _addresses(msg.get("To")),
        "cc": _addresses(msg.get("Cc")),
        "subject": _decoded(msg.get("Subject")),
        "subject_raw": (str(msg.get("Subject")).strip() if msg.get("Subject") is not None else None),
        "date": _decoded(msg.get("Date")),
        "message_id": _decoded(msg.get("Message-ID")),
        "parts": parts,
        "attachments": attachments,
        "truncated": truncated or len(raw) > PARSE_LIMIT,
    }


def one_line(mail: dict[str, Any], *, label: str) -> str:
    """``DATA fragment, 4671 bytes`` + ``from: …, subject: … (text/plain) (image/png: a.png)``."""
    kinds = " ".join(
        f"({p['content_type']}: {p['filename']})" if p["filename"] else f"({p['content_type']})"
        for p in mail["parts"])
    head = f"from: {mail['from'] or ''}, subject: {mail['subject'] or ''}"
    cut = " [only partly in the capture]" if mail["truncated"] else ""
    return f"{label}, {mail['size']} bytes{cut}\n{head} {kinds}".rstrip()
