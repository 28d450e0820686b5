"""The local executor: the executor interface over subprocess and plain sockets.

Used when the lab runs on the target machine itself (``target.local: true``). Commands get
the same wrapping as over SSH (a new session, so a deadline stops the whole process tree, and
the same lifeline on stdin), and the same ``run`` (command.py): deadline, output caps, errors.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence

from labrunner.config.model import TargetSpec
from labrunner.errors import CommandError, CommandTimeout, ConnectError
from labrunner.executor import _wire
from labrunner.executor.base import Stream, to_shell
from labrunner.executor.command import CommandRunner
from labrunner.executor.facts import TargetFacts

_CHUNK = 1 << 16


def _kill_group(pgid: int, *, leader: subprocess.Popen[bytes] | None = None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    for _ in range(20):
        if leader is not None:
            leader.poll()  # reap it, or it would count as alive below
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies (orphans a slow init has not reaped
    yet) do not count."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


class LocalProcess:
    def __init__(self, popen: subprocess.Popen[bytes], command: str, label: str) -> None:
        self._p = popen
        self.command = command
        self._label = label
        self._err_buf = b""
        self._err_eof = False
        self._lock = threading.Lock()
        self._waited = False  # its exit status was waited for: it ended by itself

    @property
    def pgid(self) -> int:
        return self._p.pid  # start_new_session: the child leads its own group

    def _wait_readable(self, fd: int, timeout: float) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            if not sel.select(max(timeout, 0)):
                raise TimeoutError(f"no output from `{_wire.short(self.command)}` within {timeout:g} s")

    def read_stdout(self, n: int, timeout: float) -> bytes:
        assert self._p.stdout is not None
        try:
            fd = self._p.stdout.fileno()
        except ValueError:  # closed by kill(): the end of the stream, as over SSH
            return b""
        self._wait_readable(fd, timeout)
        return os.read(fd, n)

    def read_stderr_line(self, timeout: float) -> str | None:
        assert self._p.stderr is not None
        try:
            fd = self._p.stderr.fileno()
        except ValueError:  # closed by kill()
            return None
        deadline = time.monotonic() + timeout
        with self._lock:
            while b"\n" not in self._err_buf and not self._err_eof:
                self._wait_readable(fd, deadline - time.monotonic())
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    self._err_eof = True
                self._err_buf += chunk
            if not self._err_buf:
                return None
            if b"\n" in self._err_buf:
                line, self._err_buf = self._err_buf.split(b"\n", 1)
            else:
                line, self._err_buf = self._err_buf, b""
            return line.decode("utf-8", "replace")

    def read_stderr(self, n: int, timeout: float) -> bytes:
        assert self._p.stderr is not None
        with self._lock:
            if self._err_buf:
                data, self._err_buf = self._err_buf[:n], self._err_buf[n:]
                return data
            if self._err_eof:
                return b""
            try:
                fd = self._p.stderr.fileno()
            except ValueError:  # closed by kill()
                return b""
            self._wait_readable(fd, timeout)
            return os.read(fd, n)

    def write_stdin(self, data: bytes) -> None:
        if self._p.stdin is None:
            return
        try:
            self._p.stdin.write(data)
            self._p.stdin.flush()
        except OSError as exc:
            raise CommandError(f"local: cannot write to `{_wire.short(self.command)}`: {exc.strerror}",
                               command=self.command) from exc

    def close_stdin(self) -> None:
        if self._p.stdin is not None:
            with contextlib.suppress(OSError):
                self._p.stdin.close()

    def wait(self, timeout: float) -> int:
        try:
            code = self._p.wait(timeout=max(timeout, 0))
            self._waited = True
            return code
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(
                f"{self._label}: `{_wire.short(self.command)}` did not end within {timeout:g} s",
                command=self.command,
            ) from exc

    def kill(self) -> None:
        # Its shell may have exited while a child it started in the background still holds the
        # output (the deadline passed waiting for EOF): the group goes too. After a normal end
        # (its exit status waited for), what it left running on purpose stays, as before.
        if self._p.poll() is None or (not self._waited and _group_alive(self.pgid)):
            _kill_group(self.pgid, leader=self._p)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._p.wait(timeout=5)
        for f in (self._p.stdin, self._p.stdout, self._p.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


class LocalExecutor(CommandRunner):
    """Commands and connections on this machine, with the same guarantees as SSHExecutor."""

    host_label = "local"

    def __init__(self, target: TargetSpec | None = None) -> None:
        self.target = target or TargetSpec(host="localhost", local=True)
        self.facts = TargetFacts(self)

    def session_tuple(self) -> tuple[str, int, str, int] | None:
        return None  # no SSH connection of ours to keep out of a capture

    def _popen(self, cmd: str, *, lifeline: bool = False) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["/bin/sh", "-c", _wire.wrap(cmd, die_with_stdin=lifeline, marker=False)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )

    def start(self, command: str | Sequence[str], *, lifeline: bool = False) -> LocalProcess:
        cmd = to_shell(command)
        return LocalProcess(self._popen(cmd, lifeline=lifeline), cmd, self.host_label)

    def _exit_status(self, command: str, code: int) -> int:
        return 128 - code if code < 0 else code  # as a shell reports a signal

    def open_connection(self, host: str, port: int, timeout: float) -> Stream:
        where = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.gaierror as exc:
            raise ConnectError(f"{where}: the host name cannot be resolved ({exc.strerror})",
                               hint="check the server host name in lab.yaml and DNS") from exc
        except ConnectionRefusedError as exc:
            raise ConnectError(
                f"{where}: connection refused",
                hint=_wire.PORT25_HINT if port == 25 else "no server listens there: check the server and port",
            ) from exc
        except TimeoutError as exc:
            raise ConnectError(
                f"{where}: no answer within {timeout:g} s",
                hint=_wire.PORT25_HINT if port == 25 else "check the address and the firewall rules",
            ) from exc
        except OSError as exc:
            raise ConnectError(f"{where}: cannot connect: {exc.strerror or exc}") from exc
        return sock

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
