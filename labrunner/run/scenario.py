"""One scenario on the target: its capture, its sessions, then (in another thread) its analysis."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labrunner import runfolder
from labrunner.config.model import Profile, Scenario
from labrunner.secrets import Redactor


def scenario_endpoints(sc: Scenario, profile: Profile) -> list[tuple[str, str, int]]:
    """(server name, host, port) of every connection the scenario's steps make, once each."""
    from labrunner.sessions.core import step_endpoint

    seen: list[tuple[str, str, int]] = []
    for step in sc.steps:
        if step.kind == "import":  # a capture made elsewhere: nothing is connected to
            continue
        host, port, _security = step_endpoint(step, profile)
        if (step.server, host, port) not in seen:
            seen.append((step.server, host, port))
    return seen


def new_capture(ex: Any, sc: Scenario, profile: Profile, out: Path, keylog: Path) -> Any:
    """The capture of this scenario's servers and ports, not started yet."""
    from labrunner import capture

    endpoints = scenario_endpoints(sc, profile)
    if sc.capture.filter:
        bpf = sc.capture.filter
    else:
        pairs = [(addr, port) for _, host, port in endpoints
                 for addr in capture.resolve_on_target(ex, host)]
        bpf = capture.derive_filter(pairs)
    interface = sc.capture.interface or (
        capture.choose_interface(ex, endpoints[0][1]) if endpoints else None)
    return capture.Capture(ex, out, interface=interface, bpf=bpf, snaplen=sc.capture.snaplen, keylog=keylog)


def prepared_capture(ex: Any, sc: Scenario, profile: Profile, run_dir: Path) -> Any:
    """The scenario's capture with its wrapper already waiting on the target (Capture.prepare)."""
    out = runfolder.scenario_dir(run_dir, sc.name)
    cap = new_capture(ex, sc, profile, out, out / runfolder.KEYLOG)
    cap.prepare()
    return cap


def capture_and_sessions(sc: Scenario, profile: Profile, ex: Any, secret: str, redactor: Redactor,
                          run_dir: Path, entry: runfolder.ScenarioEntry, stage: Callable[[str], None], *,
                          lang: str = "zh", show_credentials: bool = False, prepared: Any = None,
                          prepare_next: Callable[[], None] | None = None) -> Callable[[], None]:
    """The part of a scenario that needs the target; returns the rest (analysis, then its
    failure if any), which needs only the files and may run in another thread.

    ``prepared``: this scenario's capture, prepared ahead (else it is made here);
    ``prepare_next`` is called once this scenario's capture runs."""
    from labrunner import importer, sessions

    imported = importer.imported_step(sc)
    if imported is not None:  # the student's own capture: no capture here, no sessions
        if prepared is not None:
            prepared.discard()
        if prepare_next is not None:
            prepare_next()
        return importer.run(sc, imported, run_dir, entry, stage, lang=lang, show_credentials=show_credentials,
                            redactor=redactor)
    cap = None
    try:
        out = runfolder.scenario_dir(run_dir, sc.name)
        out.mkdir(parents=True, exist_ok=True)
        keylog = out / runfolder.KEYLOG
        fd = os.open(keylog, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
        ctx = sessions.SessionContext(
            executor=ex, profile=profile, secret=secret, keylog=keylog, redactor=redactor,
            scenario_dir=sc.path.parent, deadline=time.monotonic() + sc.timeout, lang=lang,
        )
        if sc.capture.enabled:
            stage("starting capture")
            cap, prepared = prepared or new_capture(ex, sc, profile, out, keylog), None
            cap.start()
    finally:
        if prepared is not None:  # not used: something failed before
            prepared.discard()
    results: list[Any] = []
    try:
        if prepare_next is not None:  # inside: a Ctrl-C here must still stop this capture
            prepare_next()
        stage("sessions")
        results = sessions.run_steps(list(sc.steps), ctx)
        write_transcript(out, sc.name, results)
        if cap is not None:
            stage("stopping capture")
            # Once the capture holds every connection of the sessions whole, tcpdump is told to
            # stop; its exit and the pcapng are left to the analysis worker, and the next
            # scenario starts meanwhile. After a failed step the count of connections may miss
            # one (a probe, a refused one), and a scenario's own filter may leave some out:
            # then wait for tcpdump's counters, as stop() does.
            counted = all(r.ok for r in results) and not sc.capture.filter
            cap.drain(connections=sum(len(r.connections) for r in results) if counted else 0)
    except BaseException:
        # Ctrl-C, a broken connection, a bug: the transcript so far, and the capture stopped
        # here, before anything else happens.
        write_transcript(out, sc.name, results)
        if cap is not None:
            _stopped(cap, entry)
        raise

    def finish() -> None:
        if cap is not None and cap.result is None:
            _stopped(cap, entry)
        pcap = out / runfolder.CAPTURE
        if pcap.exists():
            from labrunner import analysis

            stage("analysing")
            doc = analysis.analyze(pcap, lang=lang, show_credentials=show_credentials, redactor=redactor)
            runfolder.write_json(out / runfolder.ANALYSIS, doc)
            from labrunner.evidence.sanitize import SANITIZED, write_sanitized  # the copy a TA may have (issue 16)

            problem = write_sanitized(out, doc, secret, (profile.account.login, profile.account.address))
            if problem:
                stage(problem)
        # One assignment, never keys added one by one: the main thread may be writing the
        # manifest (json.dumps walks this entry) while this runs in an analysis worker.
        entry.files = {**entry.files, **{
            name: runfolder.FileEntry(**runfolder.file_entry(out / name))
            for name in (runfolder.CAPTURE, runfolder.TRANSCRIPT, runfolder.ANALYSIS, SANITIZED)
            if (out / name).exists()}}
        failure = sessions.first_failure(results)
        if failure is not None:
            raise failure
        capture = entry.capture
        if capture and capture.partial:
            # The sessions worked, but the report would rest on part of the traffic: say so,
            # keep what arrived, and let `run --failed` take the scenario again.
            from labrunner.errors import CaptureError

            raise CaptureError(f"the capture is incomplete: {capture.problem}",
                               hint="what arrived is kept; run the scenario again: labrunner run --failed")

    return finish


def write_transcript(out: Path, name: str, results: list[Any]) -> None:
    """transcript.json: every step as it went, but never a sent message's text (an attachment may
    hold anything, a secret or a file a shared scenario names): its summary (size, sha256,
    content types, redacted headers) is in ``message``; ``body`` stays in memory."""
    steps = [{k: v for k, v in r.to_dict().items() if k != "body"} for r in results]
    runfolder.write_json(out / runfolder.TRANSCRIPT, {"scenario": name, "steps": steps})


def _stopped(cap: Any, entry: runfolder.ScenarioEntry) -> None:
    """Stop the capture (if it is not yet) and note in the scenario's entry what it holds."""
    from labrunner import capture

    cap_result: capture.CaptureResult = cap.stop()
    entry.capture = runfolder.CaptureInfo(
        interface=cap_result.interface, filter=cap_result.filter, packets=cap_result.packets,
        partial=cap_result.partial, problem=cap_result.problem, settled=cap.settled)
    entry.frames = cap_result.packets
