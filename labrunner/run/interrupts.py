"""Ctrl-C during a run: noted at once, held while a result is settled, never raised inside paramiko."""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labrunner.run.outcome import RunOutcome


class Interrupts:
    """Ctrl-C during a run: never lost, never half-applied.

    While a run is active (``watch``, main thread only) every SIGINT sets
    ``outcome.interrupted`` first, whatever happens to the KeyboardInterrupt afterwards, so the
    exit status, the summary and the manifest can all say so. Inside ``shield()`` (settling a
    scenario: its status in the manifest, in the summary and its progress line; the final
    write of the manifest) the interrupt is held and raised at the end of the block, so those
    records are written together or not at all.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.held = False
        self.outcome: RunOutcome | None = None
        self.deferred_until = float("inf")

    @contextlib.contextmanager
    def watch(self, outcome: RunOutcome) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread() or self.outcome is not None:
            yield  # a class run's students (threads): their stop is the `cancel` event
            return

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            outcome.interrupted = True
            if self.depth:
                self.held = True
                return
            if inside_paramiko(frame) and time.monotonic() < self.deferred_until:
                # paramiko takes locks with acquire() ... try/finally release(): an exception
                # raised between the two leaves its transport's lock held, and every thread,
                # ours and paramiko's, then waits on it for ever (seen: a Ctrl-C in a
                # capture's write_stdin hung the run). Delivered again once we are out of it.
                threading.Timer(REDELIVER_S, _thread.interrupt_main, args=(signum,)).start()
                return
            raise KeyboardInterrupt

        self.outcome = outcome
        self.deferred_until = float("inf")
        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
            self.outcome = None
            self.held = False

    @contextlib.contextmanager
    def shield(self, *, hold: bool = False) -> Iterator[None]:
        """``hold``: an interrupt that came during the block is only noted (``outcome.interrupted``)
        and not raised after it: the caller goes on to finish what an interrupted run finishes."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.held:
                self.held = False
                if not hold:
                    raise KeyboardInterrupt


INTERRUPTS = Interrupts()
REDELIVER_S = 0.02
# how long a Ctrl-C waits for the main thread to leave paramiko (a blocking read there can
# last as long as its own time limit); after that it is raised wherever it lands
PARAMIKO_GRACE_S = 5.0


def inside_paramiko(frame: FrameType | None) -> bool:
    """Whether the interrupted code is paramiko's (any frame of the stack). The first time it is,
    the grace period starts."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("paramiko"):
            if INTERRUPTS.deferred_until == float("inf"):
                INTERRUPTS.deferred_until = time.monotonic() + PARAMIKO_GRACE_S
            return True
        frame = frame.f_back
    return False
