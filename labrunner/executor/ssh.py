"""The SSH executor: commands, streams and TCP connections on the target host, over paramiko.

Trust: the server's host key must match a fingerprint pinned in lab.yaml
(``target.host_key``) or an entry of ``~/.ssh/known_hosts`` / ``target.known_hosts``. An
unknown or changed key is refused with its fingerprint and the exact way to trust it; only
``target.trust_on_first_use`` records an unknown key (never a changed one).

Deadlines are wall-clock: a watchdog closes the socket when connecting or authenticating takes
too long (paramiko's own timeouts bound single waits, not the whole exchange), and ``run``
(command.py, shared with the local executor) drains stdout and stderr together and stops the
command's whole process group on the target when its deadline passes.

One SSH connection is reused for everything of a run: commands, tcpdump, and the
``direct-tcpip`` channels the mail sessions use.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import hashlib
import logging
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labrunner.config.model import SecretRef, TargetSpec
from labrunner.errors import CommandTimeout, ConnectError, HostKeyError, UsageError
from labrunner.executor import _wire
from labrunner.executor.base import Stream, to_shell
from labrunner.executor.command import CommandRunner
from labrunner.executor.facts import TargetFacts

if TYPE_CHECKING:
    import paramiko

SecretResolver = Callable[[SecretRef, str], str]

KEEPALIVE_SECONDS = 15
_CHUNK = 1 << 16
# A bigger window than paramiko's 2 MiB default keeps a 20 MiB command output or a busy
# capture from stalling on window adjustments.
_WINDOW = 16 << 20
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256")
_KEY_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("ssh-ed25519",), ("ecdsa-sha2-nistp256",), ("ecdsa-sha2-nistp384",), ("ecdsa-sha2-nistp521",),
    _RSA_ALGORITHMS,
)
_ALL_KEY_TYPES = [a for fam in _KEY_FAMILIES for a in fam]


def _family_of(key_name: str) -> tuple[str, ...]:
    return _RSA_ALGORITHMS if key_name == "ssh-rsa" else (key_name,)
PORT25_HINT = _wire.PORT25_HINT


def fingerprint(key: Any) -> str:
    """The key's fingerprint as ``ssh-keygen -lf`` prints it: ``SHA256:`` + unpadded base64."""
    blob = key.asbytes() if hasattr(key, "asbytes") else bytes(key)
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def normalize_fingerprint(text: str) -> str:
    """Accept ``SHA256:xxx`` with or without padding, with a key type or size around it."""
    for word in text.replace(",", " ").split():
        if word.upper().startswith("SHA256:"):
            return "SHA256:" + word.split(":", 1)[1].rstrip("=")
    raise UsageError(
        f"target.host_key: {text!r} is not a SHA256 fingerprint",
        hint='write it as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it: "SHA256:..."',
    )


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _transport_class() -> type[paramiko.Transport]:
    """paramiko's Transport, keeping the server's reason when it refuses to open a channel.

    paramiko only logs that text ("Connection refused", "Name or service not known") and
    raises a generic "Connect failed"; the reason is what tells the user what to fix.
    """
    global _TRANSPORT_CLASS
    if _TRANSPORT_CLASS is None:
        import paramiko

        class _Transport(paramiko.Transport):
            last_open_failure: str = ""

            def _parse_channel_open_failure(self, m: paramiko.Message) -> None:
                start = m.packet.tell()
                m.get_int()
                m.get_int()
                self.last_open_failure = m.get_text()
                m.packet.seek(start)
                super()._parse_channel_open_failure(m)  # type: ignore[misc]

        _TRANSPORT_CLASS = _Transport
        # paramiko logs channel failures at ERROR; without a handler Python would print them
        # on stderr next to our own one-line message.
        logging.getLogger("paramiko").addHandler(logging.NullHandler())
    return _TRANSPORT_CLASS


_TRANSPORT_CLASS: type[paramiko.Transport] | None = None


def _default_resolver(ref: SecretRef, what: str) -> str:
    from labrunner.secrets import resolve

    return resolve(ref, what=what)


# --- host keys ------------------------------------------------------------------------


class HostKeyCheck:
    """Decides whether a server key is trusted; records it on first use when asked to."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        pinned: str | None,
        files: Sequence[Path],
        record_to: Path | None,
    ) -> None:
        import paramiko

        self.host = host
        self.port = port
        self.name = known_hosts_name(host, port)
        self.pinned = normalize_fingerprint(pinned) if pinned else None
        self.files = [f for f in files if f]
        self.record_to = record_to
        self.known = paramiko.HostKeys()
        self.revoked: set[bytes] = set()  # key blobs of `@revoked` lines: never accepted, pinned or not
        for f in self.files:
            if f.is_file():
                self._load(f)

    def _load(self, path: Path) -> None:
        """One known_hosts file, as OpenSSH reads it: `@revoked` lines name keys that are never
        accepted (for any host: stricter than OpenSSH's patterns, never weaker); `@cert-authority`
        lines (host certificates, which we do not use) are skipped, so they block nothing."""
        from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"{path}: cannot read this known_hosts file: {exc.strerror}") from exc
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = None
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                line = line.strip()
                if marker == "@cert-authority":
                    continue
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except (InvalidHostKey, ValueError) as exc:
                raise UsageError(f"{path}:{lineno}: cannot read this known_hosts line: not a valid entry",
                                 hint="fix or remove the bad line (ssh-keygen -R HOST -f FILE)") from exc
            if entry is None:
                continue  # a key type paramiko does not know, or too few fields: OpenSSH skips those too
            if marker == "@revoked":
                self.revoked.add(entry.key.asbytes())
            elif marker is None:
                for name in entry.hostnames:
                    self.known.add(name, entry.key.get_name(), entry.key)

    def known_types(self) -> list[str]:
        entry = self.known.lookup(self.name)
        return list(entry.keys()) if entry else []

    def preferred_algorithms(self, available: Sequence[str]) -> list[str]:
        """Ask the server for a key type we already know, as OpenSSH does."""
        first: list[str] = []
        for kt in self.known_types():
            first.extend(_RSA_ALGORITHMS if kt == "ssh-rsa" else (kt,))
        return [a for a in first if a in available] + [a for a in available if a not in first]

    def _where(self) -> str:
        return " or ".join(str(f) for f in self.files) or "~/.ssh/known_hosts"

    def verify(self, key: Any) -> None:
        fp = fingerprint(key)
        kind = key.get_name()
        if key.asbytes() in self.revoked:
            raise HostKeyError(
                f"host key of {self.name} is REVOKED: the server shows {kind} {fp}, which a `@revoked` line of "
                f"{self._where()} refuses",
                hint="do not connect: the key was withdrawn (stolen or replaced); ask the host's administrator "
                     "for its new key",
            )
        if self.pinned is not None:
            if fp == self.pinned:
                return
            raise HostKeyError(
                f"host key of {self.name} has CHANGED or is not the pinned one: the server shows "
                f"{kind} {fp}, target.host_key pins {self.pinned}",
                hint=("do not connect until you know why; if the host was reinstalled, read the new key "
                      "on its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and put it in "
                      "target.host_key"),
            )
        entry = self.known.lookup(self.name)
        if entry:
            known = entry.get(kind)
            if known is not None and known.asbytes() == key.asbytes():
                return
            old = ", ".join(f"{t} {fingerprint(k)}" for t, k in entry.items())
            raise HostKeyError(
                f"host key of {self.name} has CHANGED: the server shows {kind} {fp}, "
                f"{self._where()} has {old}",
                hint=("someone may be intercepting the connection, or the host was reinstalled; check the key "
                      "on its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then remove the old "
                      f"entry: ssh-keygen -R '{self.name}'" + (f" -f {self.files[-1]}" if self.files else "")),
            )
        if self.record_to is not None:
            self._record(key)
            return
        raise HostKeyError(
            f"host key of {self.name} is unknown: {kind} {fp}",
            hint=(f"compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host, then pin "
                  f'it in lab.yaml: target.host_key: "{fp}" (or set target.trust_on_first_use: true to '
                  f"record it in {self.record_path_text()})"),
        )

    def record_path_text(self) -> str:
        return str(self.files[-1]) if self.files else "~/.ssh/known_hosts"

    def _record(self, key: Any) -> None:
        assert self.record_to is not None
        path = self.record_to
        line = f"{self.name} {key.get_name()} {key.get_base64()}\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="ascii") as f:
                f.write(line)
        except OSError as exc:
            raise UsageError(f"{path}: cannot record the host key of {self.name}: {exc.strerror}") from exc
        self.known.add(self.name, key.get_name(), key)


# --- ~/.ssh/config ------------------------------------------------------------------------


_MATCH = re.compile(r"^\s*match(\s|=)", re.IGNORECASE)
NO_EXEC = "localuser __labrunner_never_runs_match_exec__"


def _without_match_exec(text: str) -> str:
    """The config with every `Match ... exec CMD` criterion made false without running CMD.

    paramiko, like OpenSSH, runs CMD to decide whether the block applies; labrunner runs no
    command from a config file (a file from elsewhere could carry one). A `localuser` that
    no user has is the same as an exec that failed (and `!exec` one that succeeded)."""
    lines = []
    for line in text.splitlines():
        if _MATCH.match(line):
            try:
                words = shlex.split(line.replace("=", " ", 1) if "=" in line.split()[0] else line)
            except ValueError:
                words = []
            if any(w.lower() in ("exec", "!exec") for w in words):
                out, i = [], 0
                while i < len(words):
                    w = words[i]
                    if w.lower() in ("exec", "!exec"):
                        out += [("!" if w.startswith("!") else "") + NO_EXEC.split()[0], NO_EXEC.split()[1]]
                        i += 2
                        continue
                    out.append(w)
                    i += 1
                line = shlex.join(out)
        lines.append(line)
    return "\n".join(lines) + "\n"


def ssh_config_lookup(alias: str, config_path: Path | None = None) -> dict[str, Any]:
    """The options ~/.ssh/config gives for ``alias``. labrunner uses HostName, User, Port,
    IdentityFile and ProxyJump; it refuses ProxyCommand (it runs no command from the file, and
    ignoring it would connect directly, bypassing the route the file asks for) and never runs
    `Match exec` (see _without_match_exec). docs/configuration.md says the same."""
    import paramiko

    path = config_path or Path(os.path.expanduser("~/.ssh/config"))
    if not path.is_file():
        return {}
    try:
        cfg = paramiko.SSHConfig.from_text(_without_match_exec(path.read_text(encoding="utf-8", errors="replace")))
        found = dict(cfg.lookup(alias))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise UsageError(f"{path}: cannot read this SSH config: {exc}") from exc
    proxy = found.get("proxycommand")
    if proxy and str(proxy).strip().lower() != "none":
        found["proxycommand-from"] = str(path)
    return found


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` of a ProxyJump entry (the first hop of a comma list)."""
    hop = spec.split(",")[0].strip()
    if hop.startswith("ssh://"):
        hop = hop[6:]
    user = None
    if "@" in hop:
        user, hop = hop.rsplit("@", 1)
    port: int | None = None
    if hop.startswith("["):
        host, _, rest = hop[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif hop.count(":") == 1:
        host, p = hop.split(":")
        port = int(p)
    else:
        host = hop
    return user, host, port


def split_jump(spec: str) -> tuple[str | None, str]:
    """A ProxyJump list ``a,b,c`` as (``a,b``, ``c``): the last hop reaches the target, and is
    itself reached through the hops before it (None: directly), as OpenSSH's ``-J`` does."""
    hops = [hop.strip() for hop in spec.split(",") if hop.strip()]
    if not hops:
        raise UsageError(f"ProxyJump {spec!r} names no host", hint="write [user@]host[:port], comma-separated")
    return (",".join(hops[:-1]) or None), hops[-1]


# --- processes ----------------------------------------------------------------------------


class SSHProcess:
    """A command started on the target whose output is read as it comes (tcpdump)."""

    def __init__(self, executor: SSHExecutor, channel: paramiko.Channel, command: str) -> None:
        self._ex = executor
        self._chan = channel
        self.command = command
        self._split = _wire.StderrSplitter()
        self._err_buf = b""
        self._err_lock = threading.Lock()
        self._killed = False

    @property
    def pgid(self) -> int | None:
        return self._split.pgid

    def read_stdout(self, n: int, timeout: float) -> bytes:
        from paramiko.buffered_pipe import PipeTimeout

        try:
            data = bytes(self._chan.in_buffer.read(n, timeout))
        except PipeTimeout as exc:
            raise TimeoutError(f"no output from `{_wire.short(self.command)}` within {timeout:g} s") from exc
        self._consumed(len(data))
        return data

    def _stderr_chunk(self, timeout: float) -> bytes | None:
        from paramiko.buffered_pipe import PipeTimeout

        try:
            data = bytes(self._chan.in_stderr_buffer.read(_CHUNK, timeout))
        except PipeTimeout as exc:
            raise TimeoutError("no error output in time") from exc
        if not data:
            return None
        self._consumed(len(data))
        return data

    def _consumed(self, n: int) -> None:
        """Give the window back for ``n`` bytes read, as Channel.recv does after reading the same
        buffers (which take a timeout per read, where recv takes the channel's, shared with
        sendall): without it the target stops sending once a window (_WINDOW) has come in."""
        import paramiko
        from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

        chan: Any = self._chan  # paramiko's own (private) window bookkeeping, as recv uses it
        ack = chan._check_add_window(n) if n else 0
        if ack > 0:
            m = paramiko.Message()
            m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
            m.add_int(chan.remote_chanid)
            m.add_int(ack)
            with contextlib.suppress(Exception):  # a connection gone: the reads say so
                chan.transport._send_user_message(m)

    def read_stderr(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        with self._err_lock:
            while not self._err_buf:
                chunk = self._stderr_chunk(max(deadline - time.monotonic(), 0))
                if chunk is None:
                    return self._split.flush()  # b"" once everything is handed on: EOF
                self._err_buf += self._split.feed(chunk)  # (b"" while the marker is incomplete)
            data, self._err_buf = self._err_buf[:n], self._err_buf[n:]
            return data

    def read_stderr_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._err_lock:
            while b"\n" not in self._err_buf:
                if len(self._err_buf) >= _CHUNK:  # an endless line: handed on in pieces
                    line, self._err_buf = self._err_buf[:_CHUNK], self._err_buf[_CHUNK:]
                    return line.decode("utf-8", "replace")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no error output in time")
                chunk = self._stderr_chunk(remaining)
                if chunk is None:
                    rest = self._split.flush()
                    self._err_buf += rest
                    if not self._err_buf:
                        return None
                    line, self._err_buf = self._err_buf, b""
                    return line.decode("utf-8", "replace")
                self._err_buf += self._split.feed(chunk)
            line, self._err_buf = self._err_buf.split(b"\n", 1)
            return line.decode("utf-8", "replace")

    def write_stdin(self, data: bytes) -> None:
        import paramiko

        try:
            self._chan.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(f"{self._ex.host_label}: cannot write to `{_wire.short(self.command)}`: "
                               f"{_exc_text(exc)}") from exc

    def close_stdin(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.shutdown_write()

    def wait(self, timeout: float) -> int:
        if not self._chan.status_event.wait(max(timeout, 0)):
            raise CommandTimeout(
                f"{self._ex.host_label}: `{_wire.short(self.command)}` did not end within {timeout:g} s",
                command=self.command,
            )
        return int(self._chan.exit_status)

    def kill(self) -> None:
        """Stop the command's process group on the target, then close the channel."""
        if self._killed:
            return
        self._killed = True
        try:
            if self.pgid is None:
                # The marker is the first thing the wrapper prints; give it a moment.
                with contextlib.suppress(TimeoutError):
                    self._peek_pgid(2.0)
            if self.pgid is not None and not self._chan.exit_status_ready():
                self._ex.kill_group(self.pgid)
        finally:
            with contextlib.suppress(Exception):
                self._chan.close()

    def _peek_pgid(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._err_lock:
            while self._split.pgid is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                chunk = self._stderr_chunk(remaining)
                if chunk is None:
                    return
                self._err_buf += self._split.feed(chunk)


# --- the executor ---------------------------------------------------------------------


class SSHExecutor(CommandRunner):
    """Run commands on a remote target over one SSH connection (see the module docstring)."""

    def __init__(
        self,
        target: TargetSpec,
        *,
        secret_resolver: SecretResolver | None = None,
        ssh_config: Path | None = None,
        user_known_hosts: Path | None = None,
    ) -> None:
        self.target = target
        self._resolve = secret_resolver or _default_resolver
        self._config_path = ssh_config
        cfg = ssh_config_lookup(target.host, ssh_config)
        self.hostname: str = cfg.get("hostname") or target.host
        self.port: int = int(target.port or cfg.get("port") or 22)
        self.user: str = target.user or cfg.get("user") or _local_user()
        self.host_label = f"{self.user}@{target.host}" + (f":{self.port}" if self.port != 22 else "")
        self._identity_files = [Path(os.path.expanduser(p)) for p in cfg.get("identityfile", [])]
        self._proxy_jump: str | None = target.proxy_jump or cfg.get("proxyjump")
        if cfg.get("proxycommand-from") and not self._proxy_jump:
            raise UsageError(
                f"{cfg['proxycommand-from']}: ProxyCommand is set for {target.host!r}; labrunner does not run "
                "proxy commands (and connecting directly instead would bypass the route it asks for)",
                hint="use ProxyJump there or target.proxy_jump in lab.yaml (a jump host, as ssh -J), or "
                     "`ProxyCommand none` in a `Host` block for this host to connect directly",
            )
        if self._proxy_jump and self._proxy_jump.lower() == "none":
            self._proxy_jump = None
        self._user_known_hosts = user_known_hosts or Path(os.path.expanduser("~/.ssh/known_hosts"))
        self._jump: SSHExecutor | None = None
        self._transport: paramiko.Transport | None = None
        self.facts = TargetFacts(self)
        self._connect()

    # -- connecting ---------------------------------------------------------------

    def _host_key_check(self) -> HostKeyCheck:
        files = [self._user_known_hosts]
        if self.target.known_hosts:
            files.append(Path(os.path.expanduser(self.target.known_hosts)))
        record_to = None
        if self.target.trust_on_first_use:
            record_to = files[-1]
        return HostKeyCheck(
            host=self.hostname, port=self.port, pinned=self.target.host_key, files=files, record_to=record_to
        )

    def _open_socket(self, deadline: float) -> Any:
        where = f"{self.hostname}:{self.port}"
        if self._proxy_jump:
            if self._jump is None:
                # The last hop opens the connection to us; it is reached through the others
                # (its own executor recurses), so an inline chain works as one in ~/.ssh/config.
                before, hop = split_jump(self._proxy_jump)
                juser, jhost, jport = parse_jump(hop)
                jump_target = TargetSpec(
                    host=jhost, user=juser, port=jport, known_hosts=self.target.known_hosts,
                    trust_on_first_use=self.target.trust_on_first_use,
                    connect_timeout=max(deadline - time.monotonic(), 0.1), proxy_jump=before,
                )
                self._jump = SSHExecutor(
                    jump_target, secret_resolver=self._resolve, ssh_config=self._config_path,
                    user_known_hosts=self._user_known_hosts,
                )
            return self._jump.open_connection(self.hostname, self.port, max(deadline - time.monotonic(), 0.1))
        try:
            infos = socket.getaddrinfo(self.hostname, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectError(
                f"cannot resolve the host name {self.hostname!r}: {exc.strerror}",
                hint="check target.host in lab.yaml (the ECS instance's public IP address works best)",
            ) from exc
        last: OSError | None = None
        for family, stype, proto, _, addr in infos:
            sock = socket.socket(family, stype, proto)
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                sock.connect(addr)
                _tcp_keepalive(sock)
                sock.settimeout(None)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        assert last is not None
        raise _connect_error(last, where, self.target.connect_timeout)

    def _connect(self) -> None:
        deadline = time.monotonic() + self.target.connect_timeout
        check = self._host_key_check()
        expired = threading.Event()
        live: list[Any] = []  # the transport being set up, for the watchdog to close

        def on_deadline() -> None:
            expired.set()
            for t in live:
                with contextlib.suppress(Exception):
                    t.close()

        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.01), on_deadline)
        watchdog.daemon = True
        watchdog.start()
        try:
            transport = self._handshake(deadline, expired, live, check.preferred_algorithms(_ALL_KEY_TYPES))
            key = transport.get_remote_server_key()
            try:
                check.verify(key)
            except HostKeyError:
                if check.pinned is None or key.asbytes() in check.revoked:
                    raise
                transport.close()
                transport = self._find_pinned(check, key, deadline, expired, live)
            self._transport = transport
            transport.auth_timeout = max(deadline - time.monotonic(), 0.1)
            self._authenticate(transport, expired)
        except BaseException:
            for t in live:
                with contextlib.suppress(Exception):
                    t.close()
            if self._jump is not None:
                self._jump.close()
            raise
        finally:
            watchdog.cancel()
        transport.set_keepalive(KEEPALIVE_SECONDS)

    def _handshake(
        self, deadline: float, expired: threading.Event, live: list[Any], key_types: Sequence[str]
    ) -> paramiko.Transport:
        import paramiko

        sock = self._open_socket(deadline)
        live.append(sock)  # Transport.close() does nothing before the handshake has begun
        transport = _transport_class()(sock, default_window_size=_WINDOW, default_max_packet_size=32768)
        live.append(transport)
        transport.get_security_options().key_types = list(key_types)
        failure: BaseException | None = None
        try:
            transport.start_client(timeout=max(deadline - time.monotonic(), 0.1))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            failure = exc
        # The watchdog may close the socket under a handshake that then "returns" with no
        # session at all: that is the deadline too, not a success.
        if failure is not None or expired.is_set() or not transport.is_active():
            transport.close()
            sock.close()
            if expired.is_set():
                raise ConnectError(
                    f"{self.hostname}:{self.port}: the SSH handshake did not finish within "
                    f"{self.target.connect_timeout:g} s",
                    hint="is this an SSH server? check target.port and the host's load",
                ) from failure
            why = _exc_text(failure) if failure is not None else "the connection closed"
            raise ConnectError(
                f"{self.hostname}:{self.port}: SSH handshake failed: {why}",
                hint="is this an SSH server? check target.host and target.port",
            ) from failure
        return transport

    def _find_pinned(
        self, check: HostKeyCheck, first: Any, deadline: float, expired: threading.Event, live: list[Any]
    ) -> paramiko.Transport:
        """The pin may be of another of the server's keys (ECDSA, RSA): ask for each in turn."""
        seen = [first]
        for family in _KEY_FAMILIES:
            if any(_family_of(k.get_name()) == family for k in seen):
                continue
            try:
                transport = self._handshake(deadline, expired, live, family)
            except ConnectError:
                if expired.is_set():
                    raise
                continue  # the server has no key of this type
            key = transport.get_remote_server_key()
            if fingerprint(key) == check.pinned:
                check.verify(key)  # a pinned key may still be revoked
                return transport
            transport.close()
            seen.append(key)
        shown = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in seen)
        raise HostKeyError(
            f"host key of {check.name} has CHANGED or is not the pinned one: the server shows {shown}, "
            f"target.host_key pins {check.pinned}",
            hint=("do not connect until you know why; if the host was reinstalled, read the new key on its "
                  "console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) and put it in target.host_key"),
        )

    def _authenticate(self, transport: paramiko.Transport, expired: threading.Event) -> None:
        import paramiko

        tried: list[str] = []
        allowed: list[str] | None = None

        def attempt(label: str, fn: Callable[[], Any]) -> bool:
            nonlocal allowed
            tried.append(label)
            try:
                fn()
            except paramiko.BadAuthenticationType as exc:
                allowed = list(exc.allowed_types)
                return False
            except paramiko.AuthenticationException:
                return False
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if expired.is_set():
                    raise ConnectError(
                        f"{self.host_label}: authentication did not finish within "
                        f"{self.target.connect_timeout:g} s",
                    ) from exc
                raise ConnectError(f"{self.host_label}: connection lost while authenticating: "
                                   f"{_exc_text(exc)}") from exc
            return transport.is_authenticated()

        keys, locked = self._keys()
        for label, key in keys:
            if attempt(label, lambda k=key: transport.auth_publickey(self.user, k)):  # type: ignore[misc]
                return
        if self.target.password is not None and (allowed is None or "password" in allowed):
            secret = self._resolve(self.target.password, f"SSH password for {self.host_label}")
            if attempt("password", lambda: transport.auth_password(self.user, secret, fallback=False)):
                return
        what = ", ".join(tried) if tried else "nothing: no key, agent or password was available"
        if locked:
            names = ", ".join(str(p) for p in locked)
            raise ConnectError(
                f"{self.host_label}: authentication refused (tried {what}); {names} is protected by a passphrase",
                hint=(f"set target.password: {{env: SSH_KEY_PASSPHRASE}} in lab.yaml, or load the key into "
                      f"ssh-agent (ssh-add {locked[0]})"),
            )
        raise ConnectError(
            f"{self.host_label}: authentication refused (tried {what})",
            hint=("check target.user and target.key in lab.yaml; the matching public key must be in "
                  f"~{self.user}/.ssh/authorized_keys on the host"
                  + (f"; the server accepts: {', '.join(allowed)}" if allowed else "")),
        )

    def _keys(self) -> tuple[list[tuple[str, Any]], list[Path]]:
        """Keys to offer, in OpenSSH's order, and the key files that need a passphrase we lack."""
        import paramiko

        keys: list[tuple[str, Any]] = []
        locked: list[Path] = []
        explicit = [Path(os.path.expanduser(self.target.key))] if self.target.key else []
        try:
            missing = bool(explicit) and not explicit[0].is_file()
        except PermissionError:  # a folder on the way the user may not enter (student-ta D7)
            raise UsageError(f"target.key: cannot read {explicit[0]}: a folder on its path is not open to "
                             f"this user ({getpass.getuser()})", hint=KEY_ACCESS_HINT) from None
        if missing:
            raise UsageError(
                f"target.key: {explicit[0]} does not exist",
                hint="give the path of the private key you log in with (e.g. ~/.ssh/id_ed25519)",
            )
        files = explicit or [p for p in self._identity_files if _is_file(p)]
        if not files:
            files = [p for p in (Path(os.path.expanduser(f"~/.ssh/{n}")) for n in ("id_ed25519", "id_ecdsa",
                     "id_rsa")) if _is_file(p)]
        for path in files:
            try:
                key = self._load_key(path)
            except UsageError:
                if path in explicit:
                    raise
                continue  # a default key file that is not usable is simply not offered
            if key is None:
                locked.append(path)
            else:
                keys.append((f"key {path}", key))
        # The agent matters when no key file could be used as it is (the usual case for a
        # passphrase-protected key); offering every agent key on top could hit MaxAuthTries.
        if not keys:
            with contextlib.suppress(Exception):
                for k in paramiko.Agent().get_keys():
                    keys.append((f"agent key {fingerprint(k)}", k))
        return keys, locked

    def _load_key(self, path: Path) -> Any | None:
        import paramiko

        try:
            return paramiko.PKey.from_path(str(path))
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            # paramiko raises PasswordRequiredException for PEM keys; for OpenSSH-format keys
            # the TypeError of `cryptography` ("Key is password-protected ...") comes through.
            if isinstance(exc, TypeError) and "password" not in str(exc).lower():
                raise UsageError(f"{path}: not a private key paramiko can read: {exc}") from exc
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise UsageError(f"{path}: not a private key paramiko can read: {_exc_text(exc)}") from exc
        if self.target.password is None:
            return None  # the agent may hold it; the caller reports it if nothing else works
        phrase = self._resolve(self.target.password, f"passphrase of {path}")
        try:
            # The stubs say str, but the OpenSSH-format loader of `cryptography` wants bytes.
            return paramiko.PKey.from_path(str(path), password=phrase.encode("utf-8"))  # type: ignore[arg-type]
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            raise UsageError(f"{path}: cannot unlock this key: wrong passphrase?",
                             hint="check the variable named in target.password") from exc

    # -- state ---------------------------------------------------------------------

    @property
    def transport(self) -> paramiko.Transport:
        t = self._transport
        if t is None or not t.is_active():
            raise self._lost()
        return t

    def _lost(self) -> ConnectError:
        return ConnectError(
            f"{self.host_label}: the SSH connection was lost",
            hint="check the network; a run can be repeated, finished scenarios are kept",
        )

    def link_lost(self, cause: BaseException | None = None, settle: float = 0.5) -> ConnectError | None:
        """The error to report if the SSH connection has died, else None.

        Called when a channel ended unexpectedly, with the exception it raised if any. paramiko
        closes a dead connection's channels a moment *before* it marks the transport inactive,
        so a channel can see EOF while ``is_active()`` still says True; its thread has already
        left its loop then, which ``_leaving`` sees. Our own send can also hit the dead socket
        before that thread has noticed anything: a channel raises EOFError only when the
        connection's socket failed. Otherwise wait up to ``settle`` seconds for that thread.
        """
        t = self._transport
        if t is not None and t.is_active():
            if _leaving(t) or isinstance(cause, EOFError):
                # The connection is gone; the join only lets later calls see it inactive too.
                t.join(5)
                return self._lost()
            t.join(settle)
        try:
            self.transport  # noqa: B018 - raises once the connection is gone
        except ConnectError as exc:
            return exc
        return None

    @property
    def is_root(self) -> bool:
        return self.user == "root"

    def session_tuple(self) -> tuple[str, int, str, int] | None:
        """Our own SSH connection as the target sees it: (client, port, server, port).

        Read from $SSH_CONNECTION on the target, because NAT (ECS public IPs) makes the local
        socket addresses differ from what the target's interface carries; asked once per
        connection, or learnt with the run's other questions (TargetFacts.ask).
        """
        parts = self.facts.ssh_connection().split()
        if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
            return (parts[0], int(parts[1]), parts[2], int(parts[3]))
        return None

    # -- commands --------------------------------------------------------------------

    def _exec(self, command: str, *, die_with_stdin: bool = False) -> paramiko.Channel:
        import paramiko

        try:
            chan = self.transport.open_session(timeout=self.target.connect_timeout)
            chan.exec_command(_wire.wrap(command, die_with_stdin=die_with_stdin))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(
                f"{self.host_label}: cannot start a command: {_exc_text(exc)}",
                hint="the SSH connection may have dropped; check the network and run again",
            ) from exc
        return chan

    def kill_group(self, pgid: int) -> None:
        """Stop a process group on the target (over a fresh channel of the same connection)."""
        import paramiko

        try:
            chan = self.transport.open_session(timeout=10)
            chan.exec_command(_wire.kill_command(pgid))
            chan.shutdown_write()
            chan.status_event.wait(10)
            chan.close()
        except (paramiko.SSHException, OSError, EOFError, ConnectError):
            # The connection is gone: sshd then closes the command's pipes, and our wrappers
            # stop their children on that EOF.
            pass

    def start(self, command: str | Sequence[str], *, lifeline: bool = False) -> SSHProcess:
        """Start a command whose output is read as it comes.

        Without ``lifeline`` its stdin is the channel's: a command that must not outlive a lost
        connection watches its own stdin (as the tcpdump wrapper does), and kill() stops its
        process group. With it, the wrapper holds the channel's stdin (see _wire.wrap).
        """
        cmd = to_shell(command)
        return SSHProcess(self, self._exec(cmd, die_with_stdin=lifeline), cmd)

    def _exit_status(self, command: str, code: int) -> int:
        if code == -1 and self.link_lost() is not None:  # no exit status: was it the connection?
            raise ConnectError(f"{self.host_label}: the SSH connection was lost while running "
                               f"`{_wire.short(command)}`")
        return code

    # -- connections from the target ------------------------------------------------

    def open_connection(self, host: str, port: int, timeout: float) -> Stream:
        """A TCP connection that leaves from the target: its sshd connects to host:port."""
        import paramiko

        where = f"{host}:{port}"
        try:
            chan = self.transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            reason = getattr(self._transport, "last_open_failure", "") or str(exc.text)
            raise _channel_error(exc.code, reason, where, self.host_label) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            text = _exc_text(exc)
            if "Timeout" in text:
                raise ConnectError(
                    f"{where}: no answer within {timeout:g} s (connecting from {self.host_label})",
                    hint=_port_hint(port, "check the address and the firewall / security group rules"),
                ) from exc
            raise ConnectError(f"{where}: cannot connect from {self.host_label}: {text}") from exc
        chan.settimeout(timeout)
        return chan

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
        if self._jump is not None:
            self._jump.close()

    def drop(self) -> None:
        """Cut the connection abruptly, as a network failure would (used by tests)."""
        t = self._transport
        if t is not None:
            sock = t.sock
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                sock.close()

    def __enter__(self) -> SSHExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- error wording -------------------------------------------------------------------


def _tcp_keepalive(sock: socket.socket) -> None:
    """Notice a silently dead network in about a minute, not the kernel's default two hours.

    paramiko's keepalive only sends; it is TCP's own probes that fail a connection whose peer
    has vanished, and with it every read waiting on it.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 20), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 4)):
        opt = getattr(socket, name, None)
        if opt is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root"


def _leaving(t: paramiko.Transport) -> bool:
    """Whether paramiko's transport thread has left its loop for good (the connection died).

    Its run() takes the transport off ``paramiko.transport._active_threads`` first, then closes
    the channels, and only then clears ``active``: a channel closed by a dead connection is never
    seen before this, while ``is_active()`` can lag behind on a busy machine.
    """
    import paramiko.transport

    threads = getattr(paramiko.transport, "_active_threads", None)
    return threads is not None and t not in threads


def _exc_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


KEY_ACCESS_HINT = ("copy the key to a folder of your own (cp KEY ~/.ssh/ && chmod 600 ~/.ssh/KEY) and point "
                   "target.key at the copy, or run labrunner as the key's owner")


def _is_file(path: Path) -> bool:
    """Path.is_file, False where a folder on the way may not be entered (not an error for a
    default key file that is merely not offered)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _port_hint(port: int, default: str) -> str:
    return PORT25_HINT if port == 25 else default


def _connect_error(exc: OSError, where: str, timeout: float) -> ConnectError:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return ConnectError(
            f"{where}: connection refused",
            hint="is sshd running there and is the port right (target.port)?",
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectError(
            f"{where}: no answer within {timeout:g} s",
            hint="check the host's public IP and that its security group allows inbound port 22",
        )
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ConnectError(
            f"{where}: host unreachable ({exc.strerror})",
            hint="check target.host and this machine's network connection",
        )
    return ConnectError(f"{where}: cannot connect: {exc.strerror or exc}")


def _channel_error(code: int, text: str, where: str, label: str) -> ConnectError:
    low = text.lower()
    if code == 1:  # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
        return ConnectError(
            f"{where}: {label}'s sshd refuses to open TCP connections for us (administratively prohibited)",
            hint="set `AllowTcpForwarding yes` in /etc/ssh/sshd_config on the host and restart sshd",
        )
    if "refused" in low:
        return ConnectError(
            f"{where}: connection refused (connecting from {label})",
            hint=_port_hint(int(where.rsplit(":", 1)[1]),
                            "no server listens there: check the server name and port in lab.yaml"),
        )
    if "name" in low or "resolve" in low or "getaddrinfo" in low or "not known" in low:
        return ConnectError(
            f"{where}: the host name cannot be resolved on {label} ({text})",
            hint="check the server host name in lab.yaml, and DNS on the target (/etc/resolv.conf)",
        )
    if "timed out" in low or "timeout" in low:
        return ConnectError(
            f"{where}: no answer (connecting from {label}: {text})",
            hint=_port_hint(int(where.rsplit(":", 1)[1]), "check the firewall / security group rules"),
        )
    return ConnectError(
        f"{where}: cannot connect from {label}: {text or 'channel open failed'}",
        hint=_port_hint(int(where.rsplit(":", 1)[1]), "check the server name and port in lab.yaml"),
    )
