"""Summaries of mail messages seen in a capture, as Wireshark's IMF/MIME view shows them."""

from __future__ import annotations

import contextlib
import email
import email.policy
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

# Only this much of a message is parsed; the size counts everything.
PARSE_LIMIT = 4 << 20


def _decoded(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(make_header(decode_header(str(value)))).strip()
    except (ValueError, LookupError, UnicodeError):
        return str(value).strip()


def _addresses(value: str | None) -> list[str]:
    if not value:
        return []
    text = _decoded(value) or ""
    return [a.strip() for a in text.replace("\n", " ").split(",") if a.strip()]


def summarize(raw: bytes, *, size: int, frame: int, direction: str, truncated: bool = False) -> dict[str, Any]:
    """``raw``: the message as transferred (dot-unstuffed), possibly cut at PARSE_LIMIT."""
    msg: Message = email.message_from_bytes(raw[:PARSE_LIMIT], policy=email.policy.compat32)
    parts: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = None
        with contextlib.suppress(Exception):
            payload = part.get_payload(decode=True)
        filename = _decoded(part.get_filename())
        disposition = part.get_content_disposition()
        info = {
            "content_type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "size": len(payload) if isinstance(payload, bytes) else 0,
            "filename": filename,
            "disposition": disposition,
            "encoding": (part.get("Content-Transfer-Encoding") or "7bit").strip().lower(),
        }
        parts.append(info)
        if filename or disposition == "attachment":
            attachments.append({"filename": filename, "content_type": info["content_type"], "size": info["size"]})
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
