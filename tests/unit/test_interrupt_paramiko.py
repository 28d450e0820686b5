"""A Ctrl-C that lands in paramiko's code is delivered once the main thread has left it.

paramiko takes its transport's locks with ``acquire()`` and releases them in a ``finally`` that
begins a few bytecodes later: a KeyboardInterrupt raised in between leaves the lock held, and
every thread (ours and paramiko's) then waits on it for ever. A run once hung so in a capture's
``write_stdin``. The race itself cannot be hit on demand, so a function living in a module
named like paramiko's stands for it here; the integration tests (test_interrupts.py) send real
Ctrl-Cs to real runs.
"""

from __future__ import annotations

import os
import signal
import time
import types

import pytest

from labrunner.run.interrupts import INTERRUPTS

_SEND = """
def send():
    os.kill(os.getpid(), signal.SIGINT)
    start = time.monotonic()
    while time.monotonic() - start < 0.3:   # bytecode boundaries where a handler could raise
        pass
    return "sent"
"""


def test_a_ctrl_c_inside_paramiko_waits_until_its_code_is_left() -> None:
    namespace = {"__name__": "paramiko.transport", "os": os, "signal": signal, "time": time}
    exec(_SEND, namespace)
    outcome = types.SimpleNamespace(interrupted=False)
    got = []
    with INTERRUPTS.watch(outcome), pytest.raises(KeyboardInterrupt):  # type: ignore[arg-type]
        got.append(namespace["send"]())
        bound = time.monotonic() + 30  # a bound, not a measure: the interrupt comes right after
        while time.monotonic() < bound:
            time.sleep(0.01)
    assert got == ["sent"] and outcome.interrupted


def test_a_ctrl_c_elsewhere_is_raised_at_once() -> None:
    outcome = types.SimpleNamespace(interrupted=False)
    reached = []
    with INTERRUPTS.watch(outcome), pytest.raises(KeyboardInterrupt):  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGINT)
        start = time.monotonic()
        while time.monotonic() - start < 5:
            pass
        reached.append("end")
    assert reached == [] and outcome.interrupted
