"""Executors: run commands on the target host and open TCP connections from it.

``connect(target)`` gives an :class:`~labrunner.executor.ssh.SSHExecutor` for a remote host
or a :class:`~labrunner.executor.local.LocalExecutor` when ``target.local`` is set; both are
context managers and share the interface of ``executor/base.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labrunner.config.model import TargetSpec
from labrunner.executor.base import Executor, Process, Result, Stream

if TYPE_CHECKING:
    from labrunner.executor.ssh import SecretResolver

__all__ = ["Executor", "Process", "Result", "Stream", "connect"]


def connect(target: TargetSpec, *, secret_resolver: SecretResolver | None = None) -> Executor:
    """Open the executor for ``target``; paramiko is imported only for a remote target."""
    if target.local:
        from labrunner.executor.local import LocalExecutor

        return LocalExecutor(target)
    from labrunner.executor.ssh import SSHExecutor

    return SSHExecutor(target, secret_resolver=secret_resolver)
