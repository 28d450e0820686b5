"""The executor interface: run commands on the target host and open TCP connections from it.

Two implementations share it: ``ssh.SSHExecutor`` (paramiko) for a remote target such as an
ECS instance, and ``local.LocalExecutor`` (subprocess and sockets) for this machine. Sessions
and capture code use only this interface, so they run unchanged over either.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from labrunner.executor.facts import TargetFacts


@dataclass
class Result:
    command: str
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


class Stream(Protocol):
    """A bidirectional byte stream: a socket, or a paramiko Channel (direct-tcpip)."""

    def sendall(self, data: bytes) -> None: ...
    def recv(self, n: int) -> bytes: ...  # b"" at EOF; raises TimeoutError (socket.timeout)
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


class Process(Protocol):
    """A command started on the target whose output is read as it comes (tcpdump)."""

    command: str

    def read_stdout(self, n: int, timeout: float) -> bytes:
        """Up to n bytes; b"" at EOF; raises TimeoutError when nothing came in time."""
        ...

    def read_stderr_line(self, timeout: float) -> str | None:
        """One line of stderr, None at EOF; raises TimeoutError when nothing came in time."""
        ...

    def read_stderr(self, n: int, timeout: float) -> bytes:
        """Up to n bytes of stderr; b"" at EOF; raises TimeoutError when nothing came in time."""
        ...

    def write_stdin(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def wait(self, timeout: float) -> int: ...  # exit status; raises CommandTimeout
    def kill(self) -> None: ...  # stop it on the target, whatever state it is in


class Executor(Protocol):
    host_label: str  # what to show: "root@203.0.113.7" or "local"
    facts: TargetFacts  # the target's answers (names, routes), for the connection's lifetime

    def run(
        self,
        command: str | Sequence[str],
        *,
        timeout: float | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> Result:
        """Run to completion with a real wall-clock deadline; stdout and stderr fully drained.

        A list is quoted with shlex; a string is given to the shell as it is. With
        ``check``, a non-zero exit raises CommandError carrying the tail of stderr; past the
        deadline the command is stopped on the target and CommandTimeout is raised. Every
        command runs as the target's user: there is no sudo (capturing needs none, see
        ``capture.setup_command``).
        """
        ...

    def start(self, command: str | Sequence[str], *, lifeline: bool = False) -> Process:
        """Start a command whose output is read as it comes. With ``lifeline`` the command
        reads nothing (/dev/null), and it is stopped when our end of its stdin closes: we
        close it, or the connection drops. ``run`` is written once over this (command.py)."""
        ...

    def open_connection(self, host: str, port: int, timeout: float) -> Stream:
        """A TCP connection that leaves from the target host towards host:port."""
        ...

    def session_tuple(self) -> tuple[str, int, str, int] | None:
        """Our own control connection as the target sees it (client, port, server, port), to
        keep it out of captures; None when there is none (local)."""
        ...

    def close(self) -> None: ...
    def __enter__(self) -> Executor: ...
    def __exit__(self, *exc: object) -> None: ...


def to_shell(command: str | Sequence[str]) -> str:
    if isinstance(command, str):
        return command
    return shlex.join(command)
