"""HTTP (inside HTTPS when decrypted): requests, responses, bodies, form fields, credentials."""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from labrunner.analysis import mail as mailsum
from labrunner.analysis.dialogue.base import (
    _SECRET_PARAM_BYTES,
    _SENSITIVE_HEADERS,
    MAX_LINES_PER_ENTRY,
    REDACTED,
    Conversation,
    _text,
    mask_query,
    tr,
)

BODY_KEEP = mailsum.PARSE_LIMIT  # how much of an HTTP form body is kept (messages: mailsum.Body)


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
