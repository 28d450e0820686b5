"""One command's life, written once for every executor: ``run()`` over ``start()``.

As Invoke's ``Runner`` does, the lifecycle is a template method: ``CommandRunner.run`` starts
the command (``start``, the executor's own), feeds its input, drains stdout and stderr together,
keeps the deadline and the output cap, stops the command's whole process group when either is
passed, and turns the exit status into a Result or an error. The executors give the primitives
only: ``start`` and the ``Process`` it returns (base.py), and ``_exit_status`` for what their
exit statuses mean (a lost SSH connection, a local signal).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from labrunner.errors import CommandError, CommandTimeout, LabError
from labrunner.executor import _wire
from labrunner.executor.base import Process, Result, to_shell

if TYPE_CHECKING:
    from labrunner.config.model import TargetSpec

CHUNK = 1 << 16
# What a command may print before it is stopped: our commands print a few KiB (a hostile or
# broken target printed 300 MB per command from its shell's rc file, and this process took 1.5 GB).
MAX_STDOUT = 32 << 20
MAX_STDERR = 32 << 20
_POLL = 0.2  # seconds between looks at the deadline while a stream is silent


class _Stderr(threading.Thread):
    """Drains the command's stderr while stdout is read (a full pipe or SSH window on one
    stream would stall the other), up to the cap."""

    def __init__(self, proc: Process) -> None:
        super().__init__(name="command-stderr", daemon=True)
        self.proc = proc
        self.data = bytearray()
        self.stop = threading.Event()
        self.ended = threading.Event()  # EOF, the cap passed, or the stream gone
        self.over = False

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    chunk = self.proc.read_stderr(CHUNK, _POLL)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                self.data += chunk
                if len(self.data) > MAX_STDERR:
                    self.over = True
                    return
        except (LabError, OSError, ValueError):
            return  # the process was stopped under us
        finally:
            self.ended.set()


def _feed(proc: Process, data: bytes) -> None:
    """Write the command's input, then close its stdin; a command that exits without reading
    it all is no error (as with a pipe)."""
    try:
        with contextlib.suppress(LabError, OSError):
            proc.write_stdin(data)
    finally:
        proc.close_stdin()


class CommandRunner:
    """``run`` for an executor that can ``start`` a command (see the module docstring)."""

    host_label: str
    target: TargetSpec

    def start(self, command: str | Sequence[str], *, lifeline: bool = False) -> Process:
        raise NotImplementedError

    def _exit_status(self, command: str, code: int) -> int:
        """The exit status to report for ``code`` as the process gave it (or raise: the
        connection was lost)."""
        return code

    def run(
        self,
        command: str | Sequence[str],
        *,
        timeout: float | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> Result:
        """Run to completion with a real wall-clock deadline; stdout and stderr fully drained
        (at most MAX_STDOUT / MAX_STDERR of each). See ``base.Executor.run``."""
        cmd = to_shell(command)
        limit = self.target.command_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        # Without input, stdin is a lifeline: if the connection drops, the command is stopped.
        proc = self.start(cmd, lifeline=not input)
        err = _Stderr(proc)
        err.start()
        if input:
            threading.Thread(target=_feed, args=(proc, input), name="command-stdin", daemon=True).start()
        try:
            out = self._stdout(proc, cmd, limit, deadline, err)
            err.ended.wait(max(deadline - time.monotonic(), 0))
            if err.over:
                raise _wire.too_much_output(self.host_label, cmd, stdout=False, limit=MAX_STDERR)
            if not err.ended.is_set():
                raise self._past_deadline(cmd, limit, err)
            try:
                # After EOF the exit status follows at once; a lost connection never sends one.
                code = proc.wait(max(deadline - time.monotonic(), 0.05))
            except CommandTimeout:
                raise CommandTimeout(
                    f"{self.host_label}: `{_wire.short(cmd)}` closed its output but did not exit within "
                    f"{limit:g} s", command=cmd,
                ) from None
        except BaseException:
            err.stop.set()
            proc.kill()  # its whole process group, wherever it runs
            err.join(1)
            raise
        proc.kill()  # it has ended: this only lets the executor forget it (an SSH channel closes)
        code = self._exit_status(cmd, code)
        result = Result(command=cmd, exit_code=code, stdout=bytes(out), stderr=bytes(err.data))
        if check and code != 0:
            _wire.check_missing(result.stderr, code, host_label=self.host_label, command=cmd)
            raise _wire.command_failed(host_label=self.host_label, command=cmd, exit_code=code,
                                       stderr=result.stderr)
        return result

    def _stdout(self, proc: Process, cmd: str, limit: float, deadline: float, err: _Stderr) -> bytearray:
        """All of stdout, until EOF; the deadline and both caps are kept while it comes."""
        out = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._past_deadline(cmd, limit, err)
            if err.over:
                raise _wire.too_much_output(self.host_label, cmd, stdout=False, limit=MAX_STDERR)
            try:
                chunk = proc.read_stdout(CHUNK, min(remaining, _POLL))
            except TimeoutError:
                continue
            if not chunk:
                return out
            out += chunk
            if len(out) > MAX_STDOUT:
                raise _wire.too_much_output(self.host_label, cmd, stdout=True, limit=MAX_STDOUT)

    def _past_deadline(self, cmd: str, limit: float, err: _Stderr) -> CommandError:
        return CommandTimeout(
            f"{self.host_label}: `{_wire.short(cmd)}` ran past its deadline of {limit:g} s and was stopped",
            command=cmd,
            stderr_tail=bytes(err.data).decode("utf-8", "replace")[-2000:],
            hint="raise the timeout if the command is slow but working",
        )
