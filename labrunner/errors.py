"""The small exception tree of labrunner.

Every failure a user can cause or meet (bad YAML, an unreachable host, a refused password, a
missing tool) is a :class:`LabError`. The CLI prints ``str(error)`` as one line, followed by
the hint when there is one, and exits with ``error.exit_status``. Anything else is a bug and
gets a traceback only with ``--debug``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FAILED = 1  # the run finished, but a scenario or a check failed
    USAGE = 2  # bad input: command line, lab.yaml, a scenario file, a capture file
    ENVIRONMENT = 3  # something outside the project: a host, a server, a missing tool
    BUG = 4  # an unexpected exception: please report it
    INTERRUPTED = 130  # Ctrl-C


class LabError(Exception):
    """An expected failure, shown to the user as one line (plus an optional hint)."""

    exit_status: ExitStatus = ExitStatus.ENVIRONMENT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(LabError):
    """Bad input from the user: arguments, files, names."""

    exit_status = ExitStatus.USAGE


class ConfigError(UsageError):
    """One or more problems in lab.yaml or scenario files.

    ``problems`` holds one line per problem, already formatted as
    ``file:line:col: key.path: message``; all are printed.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        summary = self.problems[0] if count == 1 else f"{count} problems in the configuration"
        super().__init__(summary)


class ToolMissing(LabError):
    """A program labrunner needs is not installed (tshark, tcpdump, ...)."""


class ConnectError(LabError):
    """The target host could not be reached or refused us."""


class HostKeyError(ConnectError):
    """The target host's key is unknown or has changed."""


class CommandError(LabError):
    """A command on the target failed: carries the command, exit code and output tail."""

    def __init__(
        self,
        message: str,
        *,
        command: str = "",
        exit_code: int | None = None,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class CommandTimeout(CommandError):
    """A command ran past its deadline and was stopped."""


class CaptureError(LabError):
    """tcpdump could not start, was not permitted, or its output was lost."""


class SessionError(LabError):
    """A mail/web session did not go as the scenario expects (wrong reply, closed port, ...)."""

    exit_status = ExitStatus.FAILED


class AnalysisError(LabError):
    """A capture could not be analysed (corrupt file, unsupported format, tshark failure)."""


class ReportError(LabError):
    """The report could not be rendered."""


class SandboxError(LabError):
    """The local sandbox lab could not be set up, inspected or removed."""
