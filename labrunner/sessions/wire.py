"""One connection of a session: lines in and out over the executor's stream, TLS on demand.

The stream is a socket or a paramiko channel, which cannot be wrapped by ``ssl`` as a socket;
TLS therefore runs over two ``ssl.MemoryBIO`` buffers that this class pumps through the
stream. Every read has an absolute deadline, so a trickling server cannot stretch a reply
forever, and every line is capped in length.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable

from labrunner.certificates import certificate_summary
from labrunner.errors import LabError, SessionError
from labrunner.executor.base import Stream
from labrunner.secrets import quoted
from labrunner.sessions.context import MAX_LINE, SHOWN_LINE, ConnectionInfo, SessionContext, StepResult, TlsInfo
from labrunner.sessions.tls import client_context


class Wire:
    def __init__(self, ctx: SessionContext, result: StepResult, stream: Stream,
                 info: ConnectionInfo, proto: str, step_deadline: float) -> None:
        self.ctx = ctx
        self.result = result
        self.stream = stream
        self.info = info
        self.proto = proto
        self.step_deadline = step_deadline
        self.last_command = "the greeting"
        self._buf = bytearray()
        self._ssl: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._closed = False
        # Set when the peer timed out, hung up or sent something unreadable: no goodbye then,
        # it would only wait for a reply that is not coming.
        self.broken = False

    # --- naming and recording -----------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.proto} {self.info.host}:{self.info.port}"

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    def note(self, key: str, **fields: str | int | None) -> None:
        """A note of the client on this connection (labrunner/protocols/notes.py)."""
        self.ctx.note(self.result, self.info.conn, key, direction="*", tls=self.tls, **fields)

    def reply_deadline(self, seconds: float | None = None) -> float:
        wait = self.ctx.reply_timeout if seconds is None else seconds
        return min(time.monotonic() + wait, self.step_deadline, self.ctx.deadline)

    # --- sending ------------------------------------------------------------------------

    def send_line(self, text: str, *, sensitive: bool = False, shown: str | None = None,
                  record: bool = True) -> None:
        """Send ``text`` + CRLF exactly; record it (``shown`` replaces it in the transcript)."""
        if "\r" in text or "\n" in text:
            # Never the line itself when it holds a credential (its form may be one the
            # redactor does not know); else quoted through the redactor (secrets.quoted).
            what = (f"the {text.split(' ', 1)[0][:20]} line (it holds a credential)" if sensitive
                    else quoted(text, self.ctx.redactor, 40))
            raise SessionError(f"{self.where}: a command line may not contain CR or LF: {what}",
                               hint="a value put into the line (an address, a password, a placeholder) "
                                    "holds a line break; remove it")
        self.last_command = self.ctx.redactor(shown if shown is not None else text)
        if sensitive:
            self.last_command = self.last_command.split(" ")[0] + " …"
        if record:
            # A given ``shown`` is already free of the secret; only raw sensitive text needs
            # the fallback of hiding the whole line.
            self.ctx.record(self.result, self.info.conn, "C", shown if shown is not None else text,
                            tls=self.tls, sensitive=sensitive and shown is None)
        self.send_bytes(text.encode("utf-8") + b"\r\n")

    def send_bytes(self, data: bytes) -> None:
        try:
            if self._ssl is None:
                self.stream.sendall(data)
                return
            self._ssl.write(data)
            self._flush()
        except (OSError, EOFError, ssl.SSLError) as exc:
            self.broken = True
            lost = self._link_lost(exc)
            if lost is not None:
                raise self._lost_error(lost) from None
            raise SessionError(f"{self.where}: the connection broke while sending ({_reason(exc)})") from None

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.stream.sendall(data)

    # --- receiving ----------------------------------------------------------------------

    def _recv_raw(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(deadline)
        self.stream.settimeout(remaining)
        try:
            return self.stream.recv(65536)
        except TimeoutError:
            raise self._timeout(deadline) from None
        except (OSError, EOFError) as exc:
            self.broken = True
            lost = self._link_lost(exc)
            if lost is not None:
                raise self._lost_error(lost) from None
            raise SessionError(f"{self.where}: the connection broke while reading ({_reason(exc)})") from None

    def _timeout(self, deadline: float) -> SessionError:
        self.broken = True
        which = "the scenario's time limit" if deadline >= self.ctx.deadline else (
            "the step's time limit" if deadline >= self.step_deadline else "the reply time limit")
        return SessionError(
            f"{self.where}: no complete reply to {self.last_command} within {which}",
            hint="the server is slow, or a firewall drops the traffic; check the port and the security mode",
        )

    def _recv(self, deadline: float) -> bytes:
        """Some plaintext bytes; b"" at the end of the stream."""
        if self._ssl is None:
            return self._recv_raw(deadline)
        while True:
            try:
                return self._ssl.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                raw = self._recv_raw(deadline)
                if raw:
                    self._in.write(raw)
                else:
                    self._in.write_eof()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                # Many servers close without close_notify after QUIT/LOGOUT: an end all the same.
                return b""
            except ssl.SSLError as exc:
                self.broken = True
                raise SessionError(f"{self.where}: TLS error while reading: {_reason(exc)}") from None

    def read_line(self, deadline: float, *, record: bool = True, limit: int = MAX_LINE,
                  mask: Callable[[str], str] | None = None) -> bytes:
        """One line without its CRLF (a bare LF is accepted); raises at EOF, timeout, overlong.

        ``mask`` rewrites the line as the transcript shows it (a cookie's value, say).
        """
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if record:
                    text = line.decode("utf-8", "replace")
                    if len(text) > SHOWN_LINE:
                        text = f"{text[:SHOWN_LINE]} … ({len(line)} bytes in all)"
                    if mask is not None:
                        text = mask(text)
                    self.ctx.record(self.result, self.info.conn, "S", text, tls=self.tls)
                return line
            if len(self._buf) > limit:
                self.broken = True
                raise SessionError(f"{self.where}: a reply line to {self.last_command} is longer than "
                                   f"{limit // 1024} KiB; the server does not speak this protocol",
                                   hint="check the port: is another service listening there?")
            chunk = self._recv(deadline)
            if not chunk:
                raise self.closed_error()
            self._buf += chunk

    def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            chunk = self._recv(deadline)
            if not chunk:
                raise self.closed_error()
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_to_eof(self, deadline: float, limit: int) -> bytes:
        while True:
            if len(self._buf) > limit:
                raise SessionError(f"{self.where}: the response is larger than {limit // (1024 * 1024)} MiB")
            chunk = self._recv(deadline)
            if not chunk:
                data = bytes(self._buf)
                self._buf.clear()
                return data
            self._buf += chunk

    def closed_error(self) -> SessionError:
        self.broken = True
        lost = self._link_lost()
        if lost is not None:
            return self._lost_error(lost)
        return SessionError(f"{self.where}: the server closed the connection after {self.last_command}",
                            hint="the server refused the session; its last reply in the transcript says why")

    def _lost_error(self, lost: LabError) -> SessionError:
        return SessionError(f"{self.where}: {lost.message.removeprefix(f'{self.ctx.executor.host_label}: ')} "
                            f"after {self.last_command}", hint=lost.hint)

    def _link_lost(self, cause: BaseException | None = None) -> LabError | None:
        """Why the stream ended when the connection to the target died, not the server.

        Every channel of a dead SSH connection ends as if its server had hung up; the SSH
        executor knows whether its connection is gone (a local executor has no link to lose).
        """
        check = getattr(self.ctx.executor, "link_lost", None)
        return check(cause) if check is not None else None

    # --- TLS ----------------------------------------------------------------------------

    def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> TlsInfo:
        try:
            return self._start_tls(context, server_hostname)
        except SessionError:
            self.broken = True  # half a handshake: the peer no longer reads plain commands
            raise

    def _start_tls(self, context: ssl.SSLContext, server_hostname: str) -> TlsInfo:
        if self._buf:
            # Bytes that came before the handshake would be read as if protected by TLS
            # (the STARTTLS command-injection flaw, CVE-2011-0411): refuse them.
            raise SessionError(f"{self.where}: the server sent data after accepting TLS and before the "
                               "handshake; refusing to go on")
        started = self.ctx.now()
        self.note("tls_starting", sni=server_hostname)
        obj = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        deadline = self.reply_deadline()
        self.last_command = "the TLS handshake"
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                raw = self._recv_raw(deadline)
                if not raw:
                    raise SessionError(f"{self.where}: the server closed the connection during the TLS "
                                       "handshake", hint=_tls_hint(context)) from None
                self._in.write(raw)
            except ssl.SSLCertVerificationError as exc:
                self._flush_quietly()
                raise SessionError(
                    f"{self.where}: the server's certificate was not accepted: {exc.verify_message}",
                    hint="set ca_file in the profile to the CA that issued it (the sandbox writes one), "
                         "or check the host name",
                ) from None
            except ssl.SSLError as exc:
                self._flush_quietly()
                raise SessionError(f"{self.where}: TLS handshake failed: {_reason(exc)}",
                                   hint=_tls_hint(context)) from None
        self._flush()
        self._ssl = obj
        cipher = obj.cipher()
        der = obj.getpeercert(binary_form=True)
        info = TlsInfo(
            version=obj.version() or "",
            cipher=cipher[0] if cipher else "",
            bits=cipher[2] if cipher else None,
            sni=server_hostname,
            verified=context.verify_mode == ssl.CERT_REQUIRED,
            peer_certificate=certificate_summary(der) if der else None,
            started=started,
            done=self.ctx.now(),
        )
        self.info.tls = info
        self.note("tls_done", version=info.version, cipher=info.cipher)
        return info

    def _flush_quietly(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._flush()  # the alert, so the server logs why

    def goodbye(self, line: str, read: Callable[[Wire, float], object]) -> None:
        """After a failure: say goodbye (QUIT/LOGOUT) if the server still listens; never raise."""
        if self._closed or self.broken:
            return
        with contextlib.suppress(SessionError):
            self.send_line(line)
            read(self, self.reply_deadline(3.0))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ssl is not None:
            # unwrap() writes close_notify, then wants the peer's: not needed, so not awaited.
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self._ssl.unwrap()
            self._flush_quietly()
        # paramiko raises EOFError closing a channel of an SSH connection that just died
        with contextlib.suppress(OSError, EOFError):
            self.stream.close()
        self.info.closed = self.ctx.now()
        self.note("closed")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__


def _tls_hint(context: ssl.SSLContext) -> str:
    return ("the server may not offer this TLS version or cipher suite "
            f"(asked: {context.minimum_version.name}..{context.maximum_version.name}); "
            "or the port does not speak TLS")


def connect(ctx: SessionContext, result: StepResult, proto: str, host: str, port: int,
            security: str, step_deadline: float, context: ssl.SSLContext | None = None) -> Wire:
    """Open a connection from the target host; with ``security == "tls"`` do the handshake now.

    Connection failures (refused, timed out, no route) are raised by the executor as
    ConnectError and pass through unchanged.
    """
    conn = ctx.next_conn()
    info = ConnectionInfo(conn=conn, host=host, port=port, security=security,
                          started=ctx.now(), started_wall=time.time())
    ctx.note(result, conn, "connecting", where=f"{host}:{port}")
    timeout = max(0.1, min(ctx.connect_timeout, step_deadline - time.monotonic(),
                           ctx.deadline - time.monotonic()))
    stream = ctx.executor.open_connection(host, port, timeout)
    result.connections.append(info)
    info.server_ip = ctx.address_of(host)
    wire = Wire(ctx, result, stream, info, proto, step_deadline)
    shown = f"{host} ({info.server_ip})" if info.server_ip and info.server_ip != host else host
    wire.note("connected", where=f"{shown}:{port}")
    if security == "tls":
        if context is None:
            context = client_context(ctx.keylog, ctx.profile.ca_file)
        try:
            wire.start_tls(context, host)
        except BaseException:
            wire.close()
            raise
    return wire
