"""Build the real MIME message a scenario sends, and recognise it again after delivery.

The message is an ``email.message.EmailMessage`` serialised with the SMTP policy (CRLF line
ends, RFC 2047 encoded non-ASCII headers such as a Chinese subject). Bodies are forced to a
7-bit transfer encoding so the same bytes pass through any server, with or without 8BITMIME.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from labrunner.config.model import MessageSpec
from labrunner.errors import UsageError

# 7bit: non-ASCII text goes out as quoted-printable/base64, so no 8BITMIME is needed.
_POLICY = policy.SMTP.clone(cte_type="7bit")

# Headers a delivering MTA or MDA puts in front of the message (RFC 5321 section 4.4, Postfix
# local(8)/virtual(8), Dovecot LDA/LMTP).
TRACE_HEADERS = frozenset({"return-path", "received", "delivered-to", "x-original-to"})


@dataclass
class BuiltMessage:
    message_id: str  # with angle brackets, as in the header
    subject: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # the message as sent, CRLF line ends, before dot-stuffing
    parts: list[str] = field(default_factory=list)  # content types, in order

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def summary(self) -> str:
        """One line like Wireshark's IMF summary: from, subject and the parts' types."""
        types = " ".join(f"({t})" for t in self.parts)
        return f"from: <{self.sender}>, subject: {self.subject}, {types}".rstrip(", ")

    def record(self, wire_size: int, redact: Callable[[str], str]) -> dict[str, Any]:
        """What transcript.json keeps of a sent message: a summary, never the message itself.

        An attachment may hold anything (a file a scenario names, a secret): the file keeps its
        size and sha256 (the proof of what was sent, to compare with the delivered copy), the
        content types and the top-level headers, redacted (docs/transcript.md)."""
        headers = [[redact(name.strip()), redact(value.strip())]
                   for name, sep, value in (line.decode("utf-8", "replace").partition(":")
                                            for line in _header_lines(self.data)) if sep]
        return {
            "message_id": self.message_id, "subject": redact(self.subject), "from": self.sender,
            "recipients": list(self.recipients), "size": len(self.data), "wire_size": wire_size,
            "sha256": self.sha256, "parts": self.parts, "headers": headers,
        }


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "labrunner.invalid"


def build_message(
    spec: MessageSpec,
    *,
    sender: str,
    recipients: tuple[str, ...],
    scenario_dir: Path,
) -> BuiltMessage:
    """The message for ``spec``: text, optional HTML alternative, attachments, a fresh Message-ID."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = spec.from_ or sender
    msg["To"] = ", ".join(spec.to or recipients)
    msg["Subject"] = spec.subject
    msg["Date"] = formatdate(localtime=True)
    message_id = make_msgid(idstring="labrunner", domain=_domain(sender))
    msg["Message-ID"] = message_id
    msg.set_content(spec.text or "", subtype="plain", charset="utf-8")
    if spec.html is not None:
        msg.add_alternative(spec.html, subtype="html", charset="utf-8")
    for att in spec.attachments:
        maintype, _, subtype = (att.content_type or "application/octet-stream").partition("/")
        if att.path is not None:
            path = (scenario_dir / att.path).resolve()
            try:
                payload = path.read_bytes()
            except OSError as exc:
                raise UsageError(
                    f"attachment {att.name!r}: cannot read {path}: {exc.strerror}",
                    hint="the path is relative to the scenario file's folder",
                ) from None
            if att.content_type == "application/octet-stream":
                guessed = mimetypes.guess_type(att.name)[0]
                if guessed:
                    maintype, _, subtype = guessed.partition("/")
        else:
            payload = att.content.encode("utf-8")
        if maintype == "text":
            msg.add_attachment(payload.decode("utf-8", "replace"), subtype=subtype or "plain",
                               charset="utf-8", filename=att.name)
        else:
            msg.add_attachment(payload, maintype=maintype, subtype=subtype or "octet-stream",
                               filename=att.name)
    data = msg.as_bytes(policy=_POLICY)
    parts = [part.get_content_type() for part in msg.walk() if not part.is_multipart()]
    return BuiltMessage(
        message_id=message_id,
        subject=spec.subject,
        sender=sender,
        recipients=tuple(recipients),
        data=data,
        parts=parts,
    )


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, ended with CRLF.CRLF (RFC 5321 4.5.2)."""
    lines = re.split(rb"\r\n|\n", data)
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def dot_unstuff(lines: list[bytes]) -> bytes:
    """The message from multi-line POP3 lines (terminator already removed), with CRLF ends."""
    return b"".join((line[1:] if line.startswith(b"..") else line) + b"\r\n" for line in lines)


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def _header_lines(data: bytes) -> list[bytes]:
    """The header block of raw message bytes, one unfolded line per header."""
    head = _crlf(data).split(b"\r\n\r\n", 1)[0]
    return re.sub(rb"\r\n[ \t]+", b" ", head).split(b"\r\n")


def header_value(data: bytes, name: str) -> str | None:
    """A header's value from raw message bytes (unfolded), or None."""
    prefix = name.lower().encode("ascii") + b":"
    for line in _header_lines(data):
        if line.lower().startswith(prefix):
            return line[len(prefix):].strip().decode("utf-8", "replace")
    return None


def strip_trace_headers(delivered: bytes) -> tuple[bytes, list[str]]:
    """Split the trace headers a server put on top from the message itself.

    Returns the message (CRLF line ends) and the names of the removed headers, in order. Only
    a leading run of trace headers is removed: a ``Received`` inside the message stays.
    """
    lines = _crlf(delivered).split(b"\r\n")
    removed: list[str] = []
    i = 0
    while i < len(lines):
        name, colon, _ = lines[i].partition(b":")
        if not colon or name.decode("ascii", "replace").strip().lower() not in TRACE_HEADERS:
            break
        removed.append(name.decode("ascii", "replace").strip())
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):  # folded continuation
            i += 1
    return b"\r\n".join(lines[i:]), removed


def compare_delivered(sent: bytes, delivered: bytes) -> tuple[bool, list[str]]:
    """Whether ``delivered`` (from a Maildir, RETR or FETCH) is ``sent`` plus trace headers,
    and the names of the headers the servers added on top.

    The message must be the tail of what was delivered and everything before it trace
    headers; so a message that itself starts with ``Received:`` still compares equal.
    """
    want = _crlf(sent).rstrip(b"\r\n") + b"\r\n"
    have = _crlf(delivered).rstrip(b"\r\n") + b"\r\n"
    if have.endswith(want):
        rest, added = strip_trace_headers(have[: len(have) - len(want)])
        if rest == b"":
            return True, added
    return False, strip_trace_headers(delivered)[1]


def same_message(sent: bytes, delivered: bytes) -> bool:
    return compare_delivered(sent, delivered)[0]
