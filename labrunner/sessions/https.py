"""The web-mail exercise: one HTTPS request with a chosen TLS version (and cipher suites).

The request and the response head are recorded like the other dialogues; the body is
summarised. The certificate the client received is kept from the client side because TLS 1.3
encrypts it on the wire.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from urllib.parse import urljoin, urlsplit

from labrunner import __version__
from labrunner.config.model import HttpsStep
from labrunner.errors import SessionError, UsageError
from labrunner.secrets import REDACTED
from labrunner.sessions.context import MAX_LINE, MAX_MESSAGE, SessionContext, StepResult
from labrunner.sessions.tls import client_context
from labrunner.sessions.wire import Wire, connect

MAX_HEADERS = 200
# The TLS 1.2 suites a desktop Chrome or Firefox offers, in their order (the seed's browser
# offered such a list to mail.qq.com). Without ``ciphers:`` a TLS 1.2 step offers these and
# the server chooses by its own preference: the sandbox's nginx picks
# ECDHE-RSA-AES128-GCM-SHA256, as QQ Mail did (the ECDSA suites need an ECDSA certificate).
BROWSER_TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
))
# A web mail's session cookie logs in as the student as well as the password does: every
# value of a Cookie header (a browser sends all its cookies in one), the value of a Set-Cookie
# (its attributes, path, expiry ..., stay readable).
_SET_COOKIE = re.compile(r"^(Set-Cookie:\s*[^=;\s]+=)[^;]*", re.IGNORECASE)
_COOKIE = re.compile(r"^Cookie:", re.IGNORECASE)
_PAIR = re.compile(r"([^=;\s]+=)[^;]*")


def mask_cookie(line: str) -> str:
    if _COOKIE.match(line):
        name, _, value = line.partition(":")
        return f"{name}: " + _PAIR.sub(lambda m: m.group(1) + REDACTED, value.strip())
    return _SET_COOKIE.sub(lambda m: m.group(1) + REDACTED, line)


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


# Statuses whose Location a browser follows (RFC 9110 15.4); 300 and 304 are not redirects to follow.
REDIRECTS = (301, 302, 303, 307, 308)


def same_host_target(location: str, host: str, port: int, current: str) -> str | None:
    """The path to request next when ``location`` stays on ``https://host:port``; else None.

    Another host (or plain http) would be another server, outside the scenario's capture
    filter and its profile: such a redirect is recorded, not followed.
    """
    base = f"https://{host}:{port}{current}"
    url = urlsplit(urljoin(base, location.strip()))
    try:
        same = url.scheme == "https" and (url.hostname or "").lower() == host.lower() and (url.port or 443) == port
    except ValueError:  # a port that is not a number
        return None
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    if not same or any(c in target for c in "\r\n \t"):
        return None
    return target


def exchange(ctx: SessionContext, result: StepResult, context: ssl.SSLContext, method: str, path: str,
             step_deadline: float, *, headers: tuple[tuple[str, str], ...] = (), body: bytes = b"",
             shown_body: str | None = None) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """One request on its own connection (Connection: close, as the transcript shows).

    ``headers`` follow the usual ones (a Cookie's values are masked in the transcript);
    ``body`` is sent with its Content-Length and recorded as ``shown_body`` (a form with its
    password already masked), else as its size.
    """
    host = result.host
    wire = connect(ctx, result, "HTTPS", host, result.port, "tls", step_deadline, context)
    try:
        authority = host if result.port == 443 else f"{host}:{result.port}"
        request = [f"{method} {path} HTTP/1.1", f"Host: {authority}",
                   f"User-Agent: labrunner/{__version__}", "Accept: */*", "Connection: close"]
        request += [f"{name}: {value}" for name, value in headers]
        if body or method == "POST":
            request.append(f"Content-Length: {len(body)}")
        if any(c in line for line in request for c in "\r\n"):
            raise SessionError(f"HTTPS {host}:{result.port}: a request line may not contain CR or LF")
        for line in request:
            ctx.record(result, wire.info.conn, "C", mask_cookie(line), tls=True)
        ctx.record(result, wire.info.conn, "C", "", tls=True)
        if body and shown_body is not None:
            ctx.record(result, wire.info.conn, "C", shown_body, tls=True)
        elif body:
            ctx.note(result, wire.info.conn, "body_sent", direction="C", tls=True, size=len(body))
        wire.last_command = f"{method} {path}"
        wire.send_bytes("".join(line + "\r\n" for line in request).encode("utf-8") + b"\r\n" + body)
        deadline = wire.reply_deadline()
        status, reason, reply_headers = read_head(wire, deadline)
        reply = read_body(wire, reply_headers, deadline, method, status)
        fields = {name.lower(): value for name, value in reply_headers}
        ctx.note(result, wire.info.conn, "body", direction="S", tls=True, size=len(reply),
                 type=fields.get("content-type"))
        return status, reason, reply_headers, reply
    finally:
        wire.close()


def masked_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """The headers as the transcript keeps them: cookie values masked (a session cookie logs in)."""
    return [[name, mask_cookie(f"{name}: {value}").split(": ", 1)[1]] for name, value in headers]


def https_context(ctx: SessionContext, version: str, ciphers: str | None) -> ssl.SSLContext:
    """A browser-like client context: its TLS 1.2 suites (unless ``ciphers`` forces some), ALPN http/1.1.

    OpenSSL adds the other usual extensions itself (server name, supported groups x25519,
    P-256 ..., signature algorithms, session ticket, extended master secret, renegotiation info).
    Only http/1.1 is offered in ALPN: this client does not speak HTTP/2.
    """
    if ciphers is None and version == "1.2":
        ciphers = BROWSER_TLS12_CIPHERS
    context = client_context(ctx.keylog, ctx.profile.ca_file, version=version, ciphers=ciphers)
    context.set_alpn_protocols(["http/1.1"])
    return context


def check_step(kind: str, version: str, ciphers: str | None, path: str) -> None:
    """What the schema checks, again for steps built in code."""
    if ciphers and version == "1.3":
        raise UsageError(f"{kind} step: ciphers applies to TLS 1.2 only (TLS 1.3 suites are fixed by OpenSSL)",
                         hint="remove ciphers, or set tls_version: '1.2'")
    if not path.startswith("/") or any(c in path for c in "\r\n "):
        raise UsageError(f"{kind} step: path {path!r} must start with / and hold no spaces")


def run(step: HttpsStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    check_step("https", step.tls_version, step.ciphers, step.path)
    context = https_context(ctx, step.tls_version, step.ciphers)
    method, path = step.method.upper(), step.path
    redirects: list[dict[str, object]] = []
    while True:
        status, reason, headers, body = exchange(ctx, result, context, method, path, step_deadline)
        location = next((value for name, value in headers if name.lower() == "location"), None)
        target = same_host_target(location, result.host, result.port, path) \
            if status in REDIRECTS and location is not None else None
        if target is None or len(redirects) >= step.follow_redirects:
            break
        redirects.append({"status": status, "reason": reason, "path": path, "location": location})
        # A browser turns a redirected POST into a GET (RFC 9110 15.4.2-4), except for 307/308.
        if status in (301, 302, 303) and method == "POST":
            method = "GET"
        path = target
        ctx.note(result, result.connections[-1].conn, "redirect", status=status, reason=reason, path=path)
    fields = {name.lower(): value for name, value in headers}
    title = re.search(rb"<title[^>]*>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
    result.details.update({
        "status": status, "reason": reason, "headers": masked_headers(headers),
        "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
        "title": title.group(1).decode("utf-8", "replace").strip() if title else None,
        "path": path, "location": fields.get("location"), "redirects": redirects,
    })
    if status != step.expect_status:
        where = f"HTTPS {result.host}:{result.port}"
        hint = "check path: and expect_status: in the scenario"
        if status in REDIRECTS and location is not None:
            why = (f"after {len(redirects)} redirect(s), the limit of follow_redirects"
                   if target is not None else "a redirect to another host or scheme is not followed")
            hint = f"it redirects to {location} ({why}); {hint}"
        elif redirects and step.expect_status in REDIRECTS:
            hint = (f"the redirect of {redirects[0]['path']} was followed; to check the redirect "
                    "itself, set follow_redirects: 0")
        raise SessionError(f"{where}: {method} {path} → {status} {reason} (expected {step.expect_status})",
                           hint=hint)
