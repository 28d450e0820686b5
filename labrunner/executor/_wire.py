"""Shell wrapping shared by the executors: process-group markers, error wording.

Every command runs as ``exec /bin/sh -c '<print $$ on stderr>; <command>'``. sshd (and our
LocalExecutor, with ``start_new_session``) puts the command in a new session, so that ``$$``
is also the process group of everything the command starts. Knowing it lets us stop the
whole tree on the target when a deadline passes or a capture is abandoned: closing an SSH
channel does not stop a command that is not writing (no pty, no SIGHUP).

Nothing is ever run through sudo: every command runs as the SSH user, who owns every process
it starts and so can stop them. Capturing needs no root either: tcpdump gets
``cap_net_raw,cap_net_admin`` for one group (``capture.setup_command``).
"""

from __future__ import annotations

import re
import shlex

from labrunner.errors import CommandError, ToolMissing

PGID_MARK = b"labrunner-pgid "
PORT25_HINT = ("cloud hosts such as Alibaba Cloud ECS block outbound port 25 by default: ask the provider to "
               "unblock it (阿里云: 25 端口解封) for a plain-text scenario, or use 465 or 587")
# Root's PATH has the sbin folders, a plain user's may not:
# tcpdump, ip and ss live there on Debian and CentOS-like images.
PATH_PREFIX = 'PATH="$PATH:/usr/sbin:/sbin"; export PATH; '


def wrap(command: str, *, die_with_stdin: bool = False, marker: bool = True) -> str:
    """The command line given to the remote login shell (any POSIX-ish shell).

    With ``die_with_stdin`` the command reads /dev/null and a watcher holds the channel's
    stdin: when it reaches EOF before the command ends (we gave up, or the connection
    dropped and sshd closed the pipe), the whole group gets SIGTERM. Without it, a command
    that neither reads nor writes would outlive a lost connection. Without ``marker`` the
    process group is not printed first (the local executor knows it: the child's pid).
    """
    body = PATH_PREFIX + command
    if die_with_stdin:
        body = (
            "exec 3<&0; (" + body + ") </dev/null 3<&- & c=$!; "
            '(read _ <&3; kill -TERM -"$G") >/dev/null 2>&1 & w=$!; exec 3<&-; '
            'wait "$c"; s=$?; kill "$w" 2>/dev/null; exit "$s"'
        )
    script = ("printf 'labrunner-pgid %s\\n' \"$$\" >&2; " if marker else "") + 'G="$$"; ' + body
    return "exec /bin/sh -c " + shlex.quote(script)


def kill_command(pgid: int) -> str:
    """Stop a whole process group: TERM first so tcpdump flushes, KILL for the stubborn."""
    g = int(pgid)
    # "Alive" ignores zombies: an orphan waiting for a slow init still answers kill -0. No `--`
    # after kill: dash's builtin rejects it, and reads "-TERM -123" as signal then group.
    alive = (
        f"alive() {{ if command -v ps >/dev/null 2>&1; then ps -e -o pgid=,stat= 2>/dev/null | "
        f"awk '$1 == {g} && $2 !~ /^Z/ {{ f = 1 }} END {{ exit !f }}'; "
        f"else kill -0 -{g} 2>/dev/null; fi; }}; "
    )
    script = (
        alive
        + f"kill -TERM -{g} 2>/dev/null || exit 0; "
        + "i=0; while alive && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; "
        + f"alive && kill -KILL -{g} 2>/dev/null; exit 0"
    )
    return "/bin/sh -c " + shlex.quote(script)


class StderrSplitter:
    """Takes the pgid marker off the front of stderr, passes everything else through."""

    def __init__(self) -> None:
        self.pgid: int | None = None
        self._head = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        self._head += data
        if b"\n" not in self._head:
            if len(self._head) > 64 or not PGID_MARK.startswith(self._head[: len(PGID_MARK)]):
                self._done = True  # not our marker (the shell failed early): pass it on
                out, self._head = self._head, b""
                return out
            return b""
        line, rest = self._head.split(b"\n", 1)
        self._done = True
        self._head = b""
        if line.startswith(PGID_MARK):
            try:
                self.pgid = int(line[len(PGID_MARK):])
            except ValueError:
                return line + b"\n" + rest
            return rest
        return line + b"\n" + rest

    def flush(self) -> bytes:
        out, self._head = self._head, b""
        self._done = True
        return out


_NOT_FOUND = re.compile(rb"(?:^|\n)(?:/bin/sh: \d+: |sh: \d*:? ?|.*: )?([\w./-]+): (?:command )?not found")


def short(command: str, limit: int = 80) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 1] + "…"


def check_missing(stderr: bytes, exit_code: int, *, host_label: str, command: str) -> None:
    if exit_code != 127:
        return
    m = _NOT_FOUND.search(stderr)
    tool = m.group(1).decode("utf-8", "replace") if m else command.split()[0]
    raise ToolMissing(
        f"{host_label}: {tool} is not installed (command not found)",
        hint=f"install it there: apt-get install {tool}  (or: yum install {tool})",
    )


def command_failed(
    *, host_label: str, command: str, exit_code: int, stderr: bytes
) -> CommandError:
    tail = stderr.decode("utf-8", "replace").strip()
    last = tail.splitlines()[-1] if tail else "no error output"
    return CommandError(
        f"{host_label}: `{short(command)}` failed with exit code {exit_code}: {last}",
        command=command,
        exit_code=exit_code,
        stderr_tail=tail[-2000:],
    )


def too_much_output(host_label: str, command: str, *, stdout: bool, limit: int) -> CommandError:
    """The command printed more than we read from a target (it was stopped)."""
    where = "output" if stdout else "error output"
    return CommandError(
        f"{host_label}: `{short(command)}` printed more than {limit >> 20} MiB of {where} and was stopped",
        command=command,
        hint="something on the target prints far too much: check the login shell's startup files "
             "(~/.bashrc, /etc/profile) there",
    )
