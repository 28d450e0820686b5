"""How the scenarios of a run follow each other: capture and sessions in the main thread, the
next capture prepared meanwhile, analyses in workers, results settled in scenario order."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from labrunner import runfolder
from labrunner.config.model import Lab, Profile, Scenario
from labrunner.errors import LabError
from labrunner.run.interrupts import INTERRUPTS
from labrunner.run.manifest import scenario_entry
from labrunner.run.outcome import Progress, RunOutcome, ScenarioOutcome, stage_line
from labrunner.run.scenario import capture_and_sessions, prepared_capture

# Analyses of one run at a time: tshark is a process of its own, so two use both cores.
_ANALYSIS_WORKERS = max(1, min(2, os.cpu_count() or 1))


def run_scenarios(lab: Lab, profile: Profile, scenarios: list[Scenario], ex: Any, secret: str,
                   manifest: runfolder.Manifest, outcome: RunOutcome, progress: Progress,
                   cancel: threading.Event | None) -> None:
    run_dir = outcome.run_dir
    assert run_dir is not None
    redactor = outcome.redactor
    manifest.write(run_dir)
    total = len(scenarios)
    # The analysis of a scenario (a tshark pass: ~0.3 s of tshark start-up alone) runs in a
    # worker while the next scenarios capture and talk to the servers, which is mostly waiting
    # on the network. Two workers: one analysis takes longer than one scenario's capture and
    # sessions, so with one worker the main thread ended up waiting for the analyses in
    # turn (the run's critical path, measured), and tshark runs on the other core anyway.
    # Results are settled (status, manifest, progress line) in scenario order, as soon as
    # they are ready, never waiting for them before the last scenario is done.
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: list[tuple[int, Scenario, runfolder.ScenarioEntry, float, Future[float] | BaseException]] = []

    def ready() -> bool:
        job = pending[-1][4]
        return isinstance(job, BaseException) or job.done()

    def settle() -> None:
        # Shielded: a Ctrl-C meanwhile is raised once the status is in the manifest, the
        # summary and the progress line alike (never in one and not the others).
        with INTERRUPTS.shield():
            _settle()

    def _settle() -> None:
        i, sc, entry, spent, job = pending.pop()
        deferred = False
        try:
            if isinstance(job, BaseException):
                raise job
            while True:
                try:
                    spent += job.result()
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
            entry.error = redactor(str(err))
            entry.hint = redactor(err.hint) if err.hint else None
        finally:
            entry.duration = round(spent, 3)
            manifest.write(run_dir)
            outcome.outcomes.append(ScenarioOutcome(
                sc.name, entry.status, entry.duration, entry.frames, entry.error, entry.hint))
            line = f"[{i}/{total}] {sc.name}: {entry.status} ({entry.duration:.1f} s"
            line += f", {entry.frames} frames)" if entry.frames is not None else ")"
            progress(line + (f": {entry.error}" if entry.error else ""))
        if deferred:
            raise KeyboardInterrupt

    def timed(finish: Callable[[], None]) -> float:
        started = time.monotonic()
        finish()
        return time.monotonic() - started

    # The next scenario's capture is prepared (its wrapper started on the target, an SSH
    # round trip) in this thread while the current scenario's sessions run.
    prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-prep")
    ahead: list[Future[Any]] = []

    def prepare(sc: Scenario) -> None:
        if sc.capture.enabled:
            ahead.append(prep.submit(prepared_capture, ex, sc, profile, run_dir))

    def take() -> Any:
        """The capture prepared for this scenario, if that worked (else it is made anew)."""
        if not ahead:
            return None
        try:
            cap = ahead[-1].result()  # still in `ahead` if Ctrl-C comes meanwhile: discarded then
        except Exception:  # made again in the scenario, which then reports the failure
            cap = None
        ahead.pop()
        if cap is not None and not cap.waiting:  # its wrapper ended (the connection died, ...)
            cap.discard()
            cap = None
        return cap

    with ThreadPoolExecutor(max_workers=_ANALYSIS_WORKERS, thread_name_prefix="analysis") as worker:
        try:
            for i, sc in enumerate(scenarios, 1):
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
                entry = scenario_entry(sc, manifest, redactor)
                manifest.scenarios.append(entry)
                # On disk at once ("running"), and again once captured: a run killed outright
                # (kill -9, power) still lists what it did; runfolder reads such an entry as
                # interrupted.
                manifest.write(run_dir)
                started = time.monotonic()
                job: Future[float] | BaseException
                try:
                    finish = capture_and_sessions(
                        sc, profile, ex, secret, redactor, run_dir, entry,
                        functools.partial(stage_line, progress, f"[{i}/{total}] {sc.name}: "),
                        lang=manifest.lang or "zh", show_credentials=lab.report.show_credentials,
                        prepared=take(),
                        prepare_next=functools.partial(prepare, scenarios[i]) if i < total else None)
                except BaseException as exc:  # Ctrl-C, LabError or a bug: settled (and raised) below
                    job = exc
                else:
                    job = worker.submit(timed, finish)
                pending.insert(0, (i, sc, entry, time.monotonic() - started, job))
                if not isinstance(job, BaseException):
                    manifest.write(run_dir)
                if isinstance(job, BaseException):
                    while pending:  # the earlier ones first, in order; then this one (raises)
                        settle()
                while pending and ready():
                    settle()
        finally:
            # A capture prepared for a scenario that will not run: its wrapper goes.
            while ahead:
                with contextlib.suppress(Exception):
                    ahead.pop().result().discard()
            prep.shutdown(wait=True)
            # The end, Ctrl-C or a bug: every scenario whose analysis is running gets its
            # result; a Ctrl-C meanwhile is raised after the last one, never dropped.
            interrupted = False
            while pending:
                try:
                    settle()
                except KeyboardInterrupt:
                    interrupted = True
            if interrupted:
                raise KeyboardInterrupt
