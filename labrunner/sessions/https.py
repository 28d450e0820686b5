"""The web-mail exercise: one HTTPS request with a chosen TLS version (and cipher suites).

The request and the response head are recorded like the other dialogues; the body is
summarised. The certificate the client received is kept from the client side because TLS 1.3
encrypts it on the wire.
"""

from __future__ import annotations

import hashlib
import re

from labrunner import __version__
from labrunner.config.model import HttpsStep
from labrunner.errors import SessionError, UsageError
from labrunner.secrets import REDACTED
from labrunner.sessions.core import MAX_LINE, MAX_MESSAGE, SessionContext, StepResult
from labrunner.sessions.tls import client_context
from labrunner.sessions.wire import Wire, connect

MAX_HEADERS = 200
# A web mail's session cookie logs in as the student as well as the password does.
_COOKIE = re.compile(r"^((?:Set-)?Cookie:\s*[^=;\s]+=)[^;]*", re.IGNORECASE)


def mask_cookie(line: str) -> str:
    return _COOKIE.sub(lambda m: m.group(1) + REDACTED, line)


def read_head(wire: Wire, deadline: float) -> tuple[int, str, list[tuple[str, str]]]:
    status_line = wire.read_line(deadline).decode("iso-8859-1")
    m = re.match(r"HTTP/(\d\.\d|\d) (\d{3})(?: (.*))?$", status_line)
    if not m:
        raise SessionError(f"{wire.where}: {status_line[:60]!r} is not an HTTP status line",
                           hint="check the port: is a web server listening there?")
    headers: list[tuple[str, str]] = []
    while True:
        line = wire.read_line(deadline, limit=MAX_LINE, mask=mask_cookie).decode("iso-8859-1")
        if not line:
            return int(m.group(2)), m.group(3) or "", headers
        if len(headers) >= MAX_HEADERS:
            raise SessionError(f"{wire.where}: more than {MAX_HEADERS} response headers")
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))


def read_body(wire: Wire, headers: list[tuple[str, str]], deadline: float, method: str, status: int) -> bytes:
    fields = {name.lower(): value for name, value in headers}
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = wire.read_line(deadline, record=False).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise SessionError(f"{wire.where}: bad chunk size {size_line[:20]!r}") from None
            if size == 0:
                while wire.read_line(deadline, record=False):  # trailers up to the blank line
                    pass
                return bytes(body)
            if len(body) + size > MAX_MESSAGE:
                raise SessionError(f"{wire.where}: the response body is larger than 64 MiB")
            body += wire.read_exact(size, deadline)
            wire.read_line(deadline, record=False)
    if "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise SessionError(f"{wire.where}: bad Content-Length {fields['content-length']!r}") from None
        if length > MAX_MESSAGE:
            raise SessionError(f"{wire.where}: the response body is larger than 64 MiB")
        return wire.read_exact(length, deadline)
    return wire.read_to_eof(deadline, MAX_MESSAGE)


def run(step: HttpsStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    if step.ciphers and step.tls_version == "1.3":
        raise UsageError("https step: ciphers applies to TLS 1.2 only (TLS 1.3 suites are fixed by OpenSSL)",
                         hint="remove ciphers, or set tls_version: '1.2'")
    if not step.path.startswith("/") or any(c in step.path for c in "\r\n "):
        raise UsageError(f"https step: path {step.path!r} must start with / and hold no spaces")
    context = client_context(ctx.keylog, ctx.profile.ca_file, version=step.tls_version, ciphers=step.ciphers)
    host = result.host
    wire = connect(ctx, result, "HTTPS", host, result.port, "tls", step_deadline, context)
    try:
        authority = host if result.port == 443 else f"{host}:{result.port}"
        request = [f"{step.method} {step.path} HTTP/1.1", f"Host: {authority}",
                   f"User-Agent: labrunner/{__version__}", "Accept: */*", "Connection: close"]
        for line in request:
            ctx.record(result, wire.info.conn, "C", line, tls=True)
        ctx.record(result, wire.info.conn, "C", "", tls=True)
        wire.last_command = f"{step.method} {step.path}"
        wire.send_bytes("".join(line + "\r\n" for line in request).encode("ascii") + b"\r\n")
        deadline = wire.reply_deadline()
        status, reason, headers = read_head(wire, deadline)
        body = read_body(wire, headers, deadline, step.method.upper(), status)
        fields = {name.lower(): value for name, value in headers}
        ctx.record(result, wire.info.conn, "S",
                   f"body, {len(body)} bytes ({fields.get('content-type', 'no content type')})", tls=True)
        title = re.search(rb"<title[^>]*>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
        result.details.update({
            "status": status, "reason": reason, "headers": [list(h) for h in headers],
            "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
            "title": title.group(1).decode("utf-8", "replace").strip() if title else None,
        })
        if status != step.expect_status:
            raise SessionError(f"{wire.where}: {step.method} {step.path} → {status} {reason} "
                               f"(expected {step.expect_status})",
                               hint="check path: and expect_status: in the scenario")
    finally:
        wire.close()
