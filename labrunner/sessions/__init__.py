"""Scripted mail and web sessions whose traffic leaves from the target host.

Each step opens connections through ``Executor.open_connection`` (a direct-tcpip channel of
the target's sshd, or a local socket), so the capture on the target sees the traffic. The
protocol clients run here in Python; TLS runs over the stream with ``ssl.MemoryBIO`` and
writes its secrets to the scenario's key log.

``run_steps`` stops at the first failing step: later steps depend on earlier ones (a POP3
step looks for the message an SMTP step sent), and one broken session usually means the next
breaks the same way. The failing step's result holds its transcript up to the failure and
the error; steps not run are not in the list.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from labrunner.config.model import HttpsStep, ImapStep, LinesStep, Pop3Step, SmtpStep, Step, WebmailStep
from labrunner.errors import LabError, SessionError
from labrunner.sessions.context import (
    ConnectionInfo,
    SentMessage,
    SessionContext,
    StepResult,
    TlsInfo,
    step_endpoint,
)

__all__ = [
    "ConnectionInfo",
    "SentMessage",
    "SessionContext",
    "StepResult",
    "TlsInfo",
    "first_failure",
    "run_step",
    "run_steps",
]


def run_step(step: Step, ctx: SessionContext) -> StepResult:
    """Run one step; an expected failure (LabError) is recorded in the result, not raised."""
    started = ctx.now()
    result = StepResult(kind=step.kind, id=step.id, server=step.server, host="", port=0, security="",
                        started=started, started_wall=time.time())
    try:
        result.host, result.port, result.security = step_endpoint(step, ctx.profile)
        if time.monotonic() >= ctx.deadline:
            raise SessionError("the scenario's time limit was reached before this step",
                               hint="raise timeout: in the scenario, or check for slow servers")
        step_deadline = min(ctx.deadline, time.monotonic() + ctx.step_timeout)
        if isinstance(step, SmtpStep):
            from labrunner.sessions import smtp

            smtp.run(step, ctx, result, step_deadline)
        elif isinstance(step, Pop3Step):
            from labrunner.sessions import pop3

            pop3.run(step, ctx, result, step_deadline)
        elif isinstance(step, ImapStep):
            from labrunner.sessions import imap

            imap.run(step, ctx, result, step_deadline)
        elif isinstance(step, LinesStep):
            from labrunner.sessions import lines

            lines.run(step, ctx, result, step_deadline)
        elif isinstance(step, HttpsStep):
            from labrunner.sessions import https

            https.run(step, ctx, result, step_deadline)
        elif isinstance(step, WebmailStep):
            from labrunner.sessions import webmail

            webmail.run(step, ctx, result, step_deadline)
        else:  # pragma: no cover - the model's Step union is closed
            raise TypeError(f"unknown step {step!r}")
        result.ok = True
    except LabError as exc:
        result.ok = False
        result.error = ctx.redactor(exc.message)
        result.hint = ctx.redactor(exc.hint) if exc.hint else None
        result.error_type = type(exc).__name__
        result.exception = exc
        ctx.note(result, 0, "step_failed", error=result.error)
    finally:
        result.ended = ctx.now()
    return result


def run_steps(steps: Iterable[Step], ctx: SessionContext) -> list[StepResult]:
    """Run the steps in order, stopping after the first that fails."""
    results: list[StepResult] = []
    for step in steps:
        result = run_step(step, ctx)
        results.append(result)
        if not result.ok:
            break
    return results


def first_failure(results: Iterable[StepResult]) -> LabError | None:
    """The error of the first failed step, to raise or map to an exit status."""
    for result in results:
        if not result.ok:
            return result.exception or SessionError(result.error or "a step failed", hint=result.hint)
    return None
