"""How the scenarios of a run follow each other: capture and sessions in the main thread, the
next capture prepared meanwhile, analyses in workers, results settled in scenario order.

The analysis of a scenario (a tshark pass: ~0.3 s of tshark start-up alone) runs in a worker
while the next scenarios capture and talk to the servers, which is mostly waiting on the
network. Two workers: one analysis takes longer than one scenario's capture and sessions, so
with one worker the main thread ended up waiting for the analyses in turn (the run's critical
path, measured), and tshark runs on the other core anyway.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from labrunner import runfolder
from labrunner.config.model import Scenario
from labrunner.errors import LabError
from labrunner.run.interrupts import INTERRUPTS
from labrunner.run.manifest import scenario_entry
from labrunner.run.outcome import Progress, RunOutcome, ScenarioOutcome, stage_line

# Analyses of one run at a time: tshark is a process of its own, so two use both cores.
ANALYSIS_WORKERS = max(1, min(2, os.cpu_count() or 1))


class Prepared(Protocol):
    """A capture prepared ahead (``capture.Capture`` after ``prepare()``)."""

    @property
    def waiting(self) -> bool: ...  # its wrapper is still there waiting for "go"
    def discard(self) -> None: ...


P = TypeVar("P", bound=Prepared)
Stage = Callable[[str], None]
Analysis = Callable[[], None]


@dataclass
class _Pending:
    """A scenario whose sessions are over, until its result is settled."""

    index: int  # 1-based, for the progress line
    sc: Scenario
    entry: runfolder.ScenarioEntry
    spent: float  # seconds of capture and sessions
    job: Future[float] | BaseException  # its analysis, or what stopped it before the analysis

    def ready(self) -> bool:
        return isinstance(self.job, BaseException) or self.job.done()


def _timed(finish: Analysis) -> float:
    started = time.monotonic()
    finish()
    return time.monotonic() - started


class Pipeline(Generic[P]):
    """The scenarios of a run, one after the other on the target, their analyses in workers.

    Injected: ``start(sc, entry, stage, prepared, prepare_next)``, the part of a scenario that
    needs the target (main thread), which returns its analysis (run in a worker; it raises the
    scenario's failure); ``prepare(sc)``, a capture made ready ahead, in a thread of its own,
    while the scenario before runs (``start`` calls ``prepare_next`` once its capture runs).

    What it promises (tests/unit/test_run_pipeline.py):
    - results are settled (the status in the manifest, the summary and the progress line) in
      scenario order, as soon as they are ready, never waiting for one before the last scenario;
    - a failed scenario (a LabError, before or in its analysis) is recorded and the next one runs;
    - Ctrl-C (or ``cancel``, checked before each scenario) stops the scenarios; every analysis
      already running still ends and keeps its result, then the KeyboardInterrupt goes on;
    - a capture prepared for a scenario that does not run is discarded.
    """

    def __init__(self, manifest: runfolder.Manifest, outcome: RunOutcome, progress: Progress, *,
                 start: Callable[[Scenario, runfolder.ScenarioEntry, Stage, P | None, Callable[[], None] | None],
                                 Analysis],
                 prepare: Callable[[Scenario], P], cancel: threading.Event | None = None,
                 workers: int = ANALYSIS_WORKERS) -> None:
        assert outcome.run_dir is not None
        self.run_dir = outcome.run_dir
        self.manifest, self.outcome, self.progress = manifest, outcome, progress
        self.start, self.prepare = start, prepare
        self.cancel, self.workers = cancel, workers
        self.total = 0
        self.pending: list[_Pending] = []  # the newest first
        self.ahead: list[Future[P]] = []  # the next scenario's capture, being prepared
        self.prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-prep")

    def run(self, scenarios: Sequence[Scenario]) -> None:
        self.manifest.write(self.run_dir)
        self.total = len(scenarios)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="analysis") as worker:
            try:
                for i, sc in enumerate(scenarios, 1):
                    self._one(worker, i, sc, scenarios[i] if i < self.total else None)
            finally:
                self._wind_down()

    def _one(self, worker: ThreadPoolExecutor, i: int, sc: Scenario, following: Scenario | None) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt
        entry = scenario_entry(sc, self.manifest, self.outcome.redactor)
        self.manifest.scenarios.append(entry)
        # On disk at once ("running"), and again once captured: a run killed outright
        # (kill -9, power) still lists what it did; runfolder reads such an entry as interrupted.
        self.manifest.write(self.run_dir)
        started = time.monotonic()
        job: Future[float] | BaseException
        try:
            stage = functools.partial(stage_line, self.progress, f"[{i}/{self.total}] {sc.name}: ")
            finish = self.start(sc, entry, stage, self._take(),
                                functools.partial(self._prepare, following) if following else None)
        except BaseException as exc:  # Ctrl-C, LabError or a bug: settled (and raised) below
            job = exc
        else:
            job = worker.submit(_timed, finish)
        self.pending.insert(0, _Pending(i, sc, entry, time.monotonic() - started, job))
        if isinstance(job, BaseException):
            while self.pending:  # the earlier ones first, in order; then this one (raises)
                self._settle()
        else:
            self.manifest.write(self.run_dir)
        while self.pending and self.pending[-1].ready():
            self._settle()

    def _prepare(self, sc: Scenario) -> None:
        if sc.capture.enabled:
            self.ahead.append(self.prep.submit(self.prepare, sc))

    def _take(self) -> P | None:
        """The capture prepared for this scenario, if that worked (else it is made anew)."""
        if not self.ahead:
            return None
        try:
            cap: P | None = self.ahead[-1].result()  # still in `ahead` if Ctrl-C comes meanwhile: discarded then
        except Exception:  # made again in the scenario, which then reports the failure
            cap = None
        self.ahead.pop()
        if cap is not None and not cap.waiting:  # its wrapper ended (the connection died, ...)
            cap.discard()
            cap = None
        return cap

    def _settle(self) -> None:
        # Shielded: a Ctrl-C meanwhile is raised once the status is in the manifest, the
        # summary and the progress line alike (never in one and not the others).
        with INTERRUPTS.shield():
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        p = self.pending.pop()
        entry, spent, deferred = p.entry, p.spent, False
        try:
            if isinstance(p.job, BaseException):
                raise p.job
            while True:
                try:
                    spent += p.job.result()
                    break
                except KeyboardInterrupt:
                    # Ctrl-C (or a class run's stop) while this scenario's analysis ends: its
                    # sessions are over, so its result is kept; the interrupt goes on after.
                    deferred = True
            entry.status = "passed"
        except KeyboardInterrupt:
            entry.status = "interrupted"
            raise
        except LabError as err:
            entry.status = "failed"
            entry.error = self.outcome.redactor(str(err))
            entry.hint = self.outcome.redactor(err.hint) if err.hint else None
        finally:
            self._record(p, spent)
        if deferred:
            raise KeyboardInterrupt

    def _record(self, p: _Pending, spent: float) -> None:
        """The scenario's result in the manifest, the summary and a progress line."""
        entry = p.entry
        entry.duration = duration = round(spent, 3)
        self.manifest.write(self.run_dir)
        self.outcome.outcomes.append(ScenarioOutcome(
            p.sc.name, entry.status, duration, entry.frames, entry.error, entry.hint))
        line = f"[{p.index}/{self.total}] {p.sc.name}: {entry.status} ({duration:.1f} s"
        line += f", {entry.frames} frames)" if entry.frames is not None else ")"
        self.progress(line + (f": {entry.error}" if entry.error else ""))

    def _wind_down(self) -> None:
        # A capture prepared for a scenario that will not run: its wrapper goes.
        while self.ahead:
            with contextlib.suppress(Exception):
                self.ahead.pop().result().discard()
        self.prep.shutdown(wait=True)
        # The end, Ctrl-C or a bug: every scenario whose analysis is running gets its
        # result; a Ctrl-C meanwhile is raised after the last one, never dropped.
        interrupted = False
        while self.pending:
            try:
                self._settle()
            except KeyboardInterrupt:
                interrupted = True
        if interrupted:
            raise KeyboardInterrupt
