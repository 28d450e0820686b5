"""The scheduler's contract (run/schedule.Pipeline), with real threads and fake work items.

This is a scheduling contract, not a server: the work items stand in for a scenario's capture
and sessions (``start``, in the main thread) and for its analysis (what ``start`` returns, run in
a worker); the manifest, the run folder, the thread pools and the Ctrl-C handling are the real
ones. The integration tests (test_run.py, test_faults.py, test_interrupts.py) run the same
Pipeline with real captures and sessions against the sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from labrunner import runfolder
from labrunner.config.model import CaptureSpec, Scenario, Text
from labrunner.errors import CaptureError, SessionError
from labrunner.run.interrupts import INTERRUPTS
from labrunner.run.outcome import RunOutcome
from labrunner.run.schedule import Pipeline

BOUND = 30  # seconds: a bound for a wait that ends at once when the code is right, never a measure


class FakeCapture:
    """A capture prepared ahead: waiting for "go" until discarded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.discarded = False

    @property
    def waiting(self) -> bool:
        return not self.discarded

    def discard(self) -> None:
        self.discarded = True


def _scenarios(*names: str) -> list[Scenario]:
    return [Scenario(name=n, path=Path(f"/nowhere/{n}.yaml"), title=Text(en=n), objective=Text(), steps=(),
                     capture=CaptureSpec(enabled=True)) for n in names]


class Run:
    """One pipeline over a real run folder; ``work[name]`` is the fake capture-and-sessions of a
    scenario: it gets the prepared capture and returns the analysis."""

    def __init__(self, tmp_path: Path, work: dict[str, Callable[[FakeCapture | None], Callable[[], None]]],
                 cancel: threading.Event | None = None) -> None:
        self.run_dir = tmp_path
        self.manifest = runfolder.Manifest(run_id="r1")
        self.outcome = RunOutcome(run_dir=tmp_path)
        self.outcome.redactor.add("s3cret-Pa55")
        self.lines: list[str] = []
        self.prepared: list[FakeCapture] = []
        self.got: dict[str, FakeCapture | None] = {}
        self.on_disk: dict[str, str] = {}  # each scenario's status in manifest.json when it started
        self.work = work
        self.pipeline = Pipeline(self.manifest, self.outcome, self.lines.append, start=self.start,
                                 prepare=self.prepare, cancel=cancel, workers=2)

    def prepare(self, sc: Scenario) -> FakeCapture:
        cap = FakeCapture(sc.name)
        self.prepared.append(cap)
        return cap

    def start(self, sc: Scenario, entry: runfolder.ScenarioEntry, stage: Callable[[str], None],
              prepared: FakeCapture | None, prepare_next: Callable[[], None] | None) -> Callable[[], None]:
        doc = json.loads((self.run_dir / runfolder.MANIFEST).read_text())
        self.on_disk[sc.name] = next(e["status"] for e in doc["scenarios"] if e["name"] == sc.name)
        self.got[sc.name] = prepared
        if prepare_next is not None:
            prepare_next()  # as ScenarioRun does once its capture runs
        stage("sessions")
        return self.work[sc.name](prepared)

    def statuses(self) -> list[tuple[str, str]]:
        doc = json.loads((self.run_dir / runfolder.MANIFEST).read_text())
        return [(e["name"], e["status"]) for e in doc["scenarios"]]

    def results(self) -> list[str]:
        """The progress lines that settle a scenario, without their durations."""
        return [line.split(" (")[0] for line in self.lines if ": sessions" not in line]


def _main_thread_waits_for_a_result() -> bool:
    """Whether the main thread is blocked in Future.result(): settling a scenario."""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "result" and "concurrent" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _passes(_prepared: FakeCapture | None) -> Callable[[], None]:
    return lambda: None


def test_results_are_settled_in_scenario_order_whatever_order_the_analyses_end_in(tmp_path: Path) -> None:
    first_may_end, second_ended = threading.Event(), threading.Event()

    def first(_: FakeCapture | None) -> Callable[[], None]:
        def analysis() -> None:
            assert first_may_end.wait(BOUND)
        return analysis

    def second(_: FakeCapture | None) -> Callable[[], None]:
        return second_ended.set

    def third(_: FakeCapture | None) -> Callable[[], None]:
        assert second_ended.wait(BOUND)  # b's analysis is over, a's is still running
        first_may_end.set()
        return lambda: None

    run = Run(tmp_path, {"a": first, "b": second, "c": third})
    run.pipeline.run(_scenarios("a", "b", "c"))
    assert run.results() == ["[1/3] a: passed", "[2/3] b: passed", "[3/3] c: passed"]
    assert [o.name for o in run.outcome.outcomes] == ["a", "b", "c"]
    assert run.statuses() == [("a", "passed"), ("b", "passed"), ("c", "passed")]
    # each scenario is on disk as "running" before its sessions (a run killed outright lists it)
    assert run.on_disk == {"a": "running", "b": "running", "c": "running"}
    # the next capture is prepared during a scenario and handed to it
    assert [run.got[n].name if run.got[n] else None for n in "abc"] == [None, "b", "c"]


def test_a_failed_scenario_does_not_stop_the_next(tmp_path: Path) -> None:
    def refused(_: FakeCapture | None) -> Callable[[], None]:
        raise SessionError("connection refused for s3cret-Pa55", hint="start the server")

    def partial(_: FakeCapture | None) -> Callable[[], None]:
        def analysis() -> None:
            raise CaptureError("the capture is incomplete")
        return analysis

    run = Run(tmp_path, {"a": refused, "b": partial, "c": _passes})
    run.pipeline.run(_scenarios("a", "b", "c"))
    assert run.statuses() == [("a", "failed"), ("b", "failed"), ("c", "passed")]
    assert run.results() == ["[1/3] a: failed", "[2/3] b: failed", "[3/3] c: passed"]
    a = run.outcome.outcomes[0]
    assert "connection refused" in (a.error or "") and "s3cret-Pa55" not in (a.error or "")
    assert a.hint == "start the server"
    assert "s3cret-Pa55" not in (run.run_dir / runfolder.MANIFEST).read_text()
    # the capture prepared for b while a failed is handed to b all the same
    assert run.got["b"] is not None and run.got["b"].name == "b"


@pytest.mark.parametrize("how", ["ctrl-c", "cancel"])
def test_ctrl_c_keeps_the_analyses_already_running_and_starts_nothing_more(tmp_path: Path, how: str) -> None:
    stopped = threading.Event()
    cancel = threading.Event()
    ended: list[str] = []

    def first(_: FakeCapture | None) -> Callable[[], None]:
        def analysis() -> None:
            assert stopped.wait(BOUND)  # still running when the run is stopped
            ended.append("a")
        return analysis

    def second(_: FakeCapture | None) -> Callable[[], None]:
        stopped.set()
        if how == "ctrl-c":  # a Ctrl-C during b's sessions
            raise KeyboardInterrupt
        cancel.set()  # a class run's stop: b ends, c does not start
        return lambda: None

    run = Run(tmp_path, {"a": first, "b": second, "c": _passes}, cancel=cancel)
    with pytest.raises(KeyboardInterrupt):
        run.pipeline.run(_scenarios("a", "b", "c"))
    assert ended == ["a"]
    b_status = "interrupted" if how == "ctrl-c" else "passed"
    assert run.statuses() == [("a", "passed"), ("b", b_status)]
    assert [(o.name, o.status) for o in run.outcome.outcomes] == [("a", "passed"), ("b", b_status)]
    assert "c" not in run.got
    # c's capture, prepared during b, is given up: its wrapper on the target goes
    assert [(c.name, c.discarded) for c in run.prepared] == [("b", False), ("c", True)]


@pytest.mark.parametrize("watched", [True, False], ids=["inside-run_lab", "no-handler"])
def test_a_ctrl_c_while_the_last_analysis_ends_keeps_its_result(tmp_path: Path, watched: bool) -> None:
    """A real SIGINT reaches the main thread while it waits for the analysis: with run_lab's
    handler it is held until the result is settled; without it, the KeyboardInterrupt raised in
    the wait is deferred until then. Either way the result is kept and the interrupt goes on."""

    def only(_: FakeCapture | None) -> Callable[[], None]:
        def analysis() -> None:
            bound = time.monotonic() + BOUND
            while not _main_thread_waits_for_a_result() and time.monotonic() < bound:
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the analysis is still running when the signal is handled
        return analysis

    run = Run(tmp_path, {"a": only})
    with pytest.raises(KeyboardInterrupt):
        if watched:
            with INTERRUPTS.watch(run.outcome):
                run.pipeline.run(_scenarios("a"))
        else:
            run.pipeline.run(_scenarios("a"))
    assert run.statuses() == [("a", "passed")]
    assert run.results() == ["[1/1] a: passed"]
    assert run.outcome.interrupted is watched  # run_lab's handler notes it at once
