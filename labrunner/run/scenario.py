"""One scenario on the target: its capture, its sessions, then (in another thread) its analysis.

``ScenarioRun`` is one scenario of a run: ``start()`` its capture, ``sessions()`` against the
servers, then ``finish()`` (stop, analysis, the scenario's failure if any), which needs only the
files and runs in an analysis worker while the next scenario talks to the target.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labrunner import runfolder
from labrunner.config.model import Profile, Scenario
from labrunner.secrets import Redactor

if TYPE_CHECKING:
    from labrunner.capture import Capture
    from labrunner.executor.base import Executor
    from labrunner.sessions.context import SessionContext, StepResult


def new_capture(ex: Executor, sc: Scenario, profile: Profile, out: Path, keylog: Path) -> Capture:
    """The capture of this scenario's servers and ports, not started yet."""
    from labrunner import capture
    from labrunner.sessions.context import scenario_endpoints

    endpoints = scenario_endpoints(sc, profile)
    if sc.capture.filter:
        bpf = sc.capture.filter
    else:
        pairs = [(addr, port) for _, host, port in endpoints
                 for addr in ex.facts.resolve(host)]
        bpf = capture.derive_filter(pairs)
    interface = sc.capture.interface or (
        ex.facts.route_interface(endpoints[0][1]) if endpoints else None)
    return capture.Capture(ex, out, interface=interface, bpf=bpf, snaplen=sc.capture.snaplen, keylog=keylog)


def prepared_capture(ex: Executor, sc: Scenario, profile: Profile, run_dir: Path) -> Capture:
    """The scenario's capture with its wrapper already waiting on the target (Capture.prepare)."""
    out = runfolder.scenario_dir(run_dir, sc.name)
    cap = new_capture(ex, sc, profile, out, out / runfolder.KEYLOG)
    cap.prepare()
    return cap


@dataclass(frozen=True)
class RunContext:
    """What every scenario of one run shares."""

    profile: Profile
    executor: Executor | None  # None: not connected, only imported captures run
    secret: str
    redactor: Redactor
    run_dir: Path
    lang: str = "zh"
    show_credentials: bool = False

    def target(self) -> Executor:
        """The connection, for what runs on the target (never asked when it was not connected)."""
        if self.executor is None:
            raise RuntimeError("a scenario that runs on the target, in a run that did not connect to it")
        return self.executor


class ScenarioRun:
    """One scenario of a run. ``on_target()`` is the part that needs the target (``start()`` then
    ``sessions()``) and returns ``finish``: the analysis, then the scenario's failure if any."""

    def __init__(self, run: RunContext, sc: Scenario, entry: runfolder.ScenarioEntry,
                 stage: Callable[[str], None]) -> None:
        self.run = run
        self.sc = sc
        self.entry = entry
        self.stage = stage
        self.out = runfolder.scenario_dir(run.run_dir, sc.name)
        self.cap: Capture | None = None
        self.results: list[StepResult] = []

    def on_target(self, prepared: Capture | None = None,
                  prepare_next: Callable[[], None] | None = None) -> Callable[[], None]:
        """``prepared``: this scenario's capture, prepared ahead (else it is made here);
        ``prepare_next`` is called once this scenario's capture runs."""
        from labrunner import importer

        imported = importer.imported_step(self.sc)
        if imported is not None:  # the student's own capture: no capture here, no sessions
            if prepared is not None:
                prepared.discard()
            if prepare_next is not None:
                prepare_next()
            run = self.run
            return importer.run(self.sc, imported, run.run_dir, self.entry, self.stage, lang=run.lang,
                                show_credentials=run.show_credentials, redactor=run.redactor)
        ctx = self.start(prepared)
        self.sessions(ctx, prepare_next)
        return self.finish

    def start(self, prepared: Capture | None = None) -> SessionContext:
        """The scenario's folder and key log, then its capture (``prepared`` if there is one)."""
        from labrunner import sessions

        run, sc = self.run, self.sc
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            keylog = self.out / runfolder.KEYLOG
            fd = os.open(keylog, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
            ctx = sessions.SessionContext(
                executor=run.target(), profile=run.profile, secret=run.secret, keylog=keylog,
                redactor=run.redactor, scenario_dir=sc.path.parent, deadline=time.monotonic() + sc.timeout,
                lang=run.lang,
            )
            if sc.capture.enabled:
                self.stage("starting capture")
                cap, prepared = prepared or new_capture(run.target(), sc, run.profile, self.out, keylog), None
                self.cap = cap
                cap.start()
        finally:
            if prepared is not None:  # not used: something failed before
                prepared.discard()
        return ctx

    def sessions(self, ctx: SessionContext, prepare_next: Callable[[], None] | None = None) -> None:
        """The scenario's steps, its transcript, then its capture told to stop."""
        from labrunner import sessions

        sc, cap = self.sc, self.cap
        try:
            if prepare_next is not None:  # inside: a Ctrl-C here must still stop this capture
                prepare_next()
            self.stage("sessions")
            self.results = sessions.run_steps(list(sc.steps), ctx)
            write_transcript(self.out, sc.name, self.results)
            if cap is not None:
                self.stage("stopping capture")
                # Once the capture holds every connection of the sessions whole, tcpdump is told to
                # stop; its exit and the pcapng are left to the analysis worker, and the next
                # scenario starts meanwhile. After a failed step the count of connections may miss
                # one (a probe, a refused one), and a scenario's own filter may leave some out:
                # then wait for tcpdump's counters, as stop() does.
                counted = all(r.ok for r in self.results) and not sc.capture.filter
                cap.drain(connections=sum(len(r.connections) for r in self.results) if counted else 0)
        except BaseException:
            # Ctrl-C, a broken connection, a bug: the transcript so far, and the capture stopped
            # here, before anything else happens.
            write_transcript(self.out, sc.name, self.results)
            if cap is not None:
                _stopped(cap, self.entry)
            raise

    def finish(self) -> None:
        """Stop the capture (if the sessions did not), analyse it, list the files; then raise the
        scenario's failure, if any. Runs in an analysis worker."""
        from labrunner import sessions

        cap, entry, out = self.cap, self.entry, self.out
        if cap is not None and cap.result is None:
            _stopped(cap, entry)
        self._analyse()
        # One assignment, never keys added one by one: the main thread may be writing the
        # manifest (json.dumps walks this entry) while this runs in an analysis worker.
        from labrunner.evidence.sanitize import SANITIZED

        entry.files = {**entry.files, **{
            name: runfolder.FileEntry(**runfolder.file_entry(out / name))
            for name in (runfolder.CAPTURE, runfolder.TRANSCRIPT, runfolder.ANALYSIS, SANITIZED)
            if (out / name).exists()}}
        failure = sessions.first_failure(self.results)
        if failure is not None:
            raise failure
        capture = entry.capture
        if capture and capture.partial:
            # The sessions worked, but the report would rest on part of the traffic: say so,
            # keep what arrived, and let `run --failed` take the scenario again.
            from labrunner.errors import CaptureError

            raise CaptureError(f"the capture is incomplete: {capture.problem}",
                               hint="what arrived is kept; run the scenario again: labrunner run --failed")

    def _analyse(self) -> None:
        pcap = self.out / runfolder.CAPTURE
        if not pcap.exists():
            return
        from labrunner import analysis

        run = self.run
        self.stage("analysing")
        doc = analysis.analyze(pcap, lang=run.lang, show_credentials=run.show_credentials, redactor=run.redactor)
        runfolder.write_json(self.out / runfolder.ANALYSIS, doc)
        from labrunner.evidence.sanitize import write_sanitized  # the copy a TA may have (issue 16)

        account = run.profile.account
        problem = write_sanitized(self.out, doc, run.secret, (account.login, account.address))
        if problem:
            self.stage(problem)


def write_transcript(out: Path, name: str, results: Sequence[StepResult]) -> None:
    """transcript.json: every step as it went, but never a sent message's text (an attachment may
    hold anything, a secret or a file a shared scenario names): its summary (size, sha256,
    content types, redacted headers) is in ``message``; ``body`` stays in memory."""
    steps = [{k: v for k, v in r.to_dict().items() if k != "body"} for r in results]
    runfolder.write_json(out / runfolder.TRANSCRIPT, {"scenario": name, "steps": steps})


def _stopped(cap: Capture, entry: runfolder.ScenarioEntry) -> None:
    """Stop the capture (if it is not yet) and note in the scenario's entry what it holds."""
    from labrunner import capture

    cap_result: capture.CaptureResult = cap.stop()
    entry.capture = runfolder.CaptureInfo(
        interface=cap_result.interface, filter=cap_result.filter, packets=cap_result.packets,
        partial=cap_result.partial, problem=cap_result.problem, settled=cap.settled)
    entry.frames = cap_result.packets
