"""A class run: the lab on every target of the inventory, a few at a time, one report each,
and the overview table for the teaching assistant."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner import runfolder
from labrunner.config.model import InventoryEntry, Lab, Profile
from labrunner.errors import LabError, UsageError
from labrunner.run.lab import account_secret, run_lab
from labrunner.run.outcome import HostWait, Progress, RunOptions, RunOutcome, TryLater, now, stderr_progress

# How long a student of a class run waits for a host that another labrunner run holds (another
# TA's class, a student's own run): a few students' runs there; then an error row as before.
# It waits in the queue, its --parallel place given to the others meanwhile (run/turns.py).
HOST_WAIT_S = 30 * 60.0


@dataclass
class StudentRun:
    """One student's part of a class run: the run, or why there is none."""

    name: str
    target: str  # the host it ran on ("" when even the profile could not be made)
    outcome: RunOutcome | None = None
    error: str | None = None
    hint: str | None = None
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok


@dataclass
class ClassOutcome:
    overview_dir: Path
    students: list[StudentRun]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(s.ok for s in self.students)


def run_inventory(lab: Lab, options: RunOptions, *, parallel: int = 4) -> ClassOutcome:
    """Run the lab on every target of the inventory, ``parallel`` at a time; one report each.

    Each student's runs go to ``output/students/<name>/`` (with its own ``latest``), and an
    overview table for the teaching assistant to ``output/class/<run-id>/overview.{json,html}``.
    Ctrl-C stops every running student once its current scenario is over (captures stopped,
    finished scenarios kept, reports rendered from them); students not started yet are not.

    The students' threads are asked to stop (``RunOptions.cancel``), never interrupted: a
    KeyboardInterrupt raised into another thread (PyThreadState_SetAsyncExc, used before)
    lands anywhere, also between a lock's acquire and its ``try``, in paramiko's send path or
    the import machinery, and leaves that lock held: the whole class run then hung (seen 2
    Ctrl-C in 21 under load).
    """

    from labrunner.config.load import inventory_profile
    from labrunner.report.workers import ReportWorkers, worker_count
    from labrunner.run.turns import host_needs, take_turns

    if not lab.inventory:
        raise UsageError(f"{lab.path} has no inventory", hint="add an `inventory:` list (see docs/configuration.md)")
    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: give how many targets run at once, 1 or more")
    progress = options.progress or stderr_progress
    lock = threading.Lock()
    stop = threading.Event()  # Ctrl-C: each student ends after its current scenario
    options = dataclasses.replace(options, cancel=stop)
    results: dict[int, StudentRun] = {}
    # A student whose host another run holds waits for it (run/lab.py), as for a turn in the
    # class: back in the queue, tried again later, HOST_WAIT_S from its first try at most.
    waits = [HostWait(HOST_WAIT_S) for _ in lab.inventory]

    # Profiles and secrets here, in the main thread, one student after the other: a password
    # prompt (secret unset in the environment, a terminal) never races another student's.
    prepared: dict[int, tuple[Profile, str] | LabError] = {}
    for index, entry in enumerate(lab.inventory):
        try:
            runfolder.scenario_dir(lab.output_dir / "students", entry.name)  # a safe folder name
            profile = inventory_profile(lab, entry)
            prepared[index] = (profile, account_secret(profile))
        except LabError as err:
            prepared[index] = err

    def one(index: int) -> float | None:
        try:
            student = dataclasses.replace(options, host_wait=waits[index])
            results[index] = _run_student(lab, lab.inventory[index], student, progress, lock, prepared[index])
        except TryLater as later:  # its host is held: its place goes to the next student meanwhile
            return later.at
        return None

    interrupted = False
    # Students sharing a host or an account take turns on it; the others run side by side.
    # A host is the machine, whatever names it: its addresses, resolved here once for all.
    ready = [prepared[i] for i in range(len(lab.inventory))]
    hosts = host_needs([p[0].target if not isinstance(p, LabError) else None for p in ready])
    needs = [_needs(i, p, host) for i, (p, host) in enumerate(zip(ready, hosts, strict=True))]
    # Reports in worker processes, side by side on the cores (in-process they went one at a time).
    renderers = ReportWorkers(worker_count(parallel))
    # Each verified by its worker too, right after its render, for the overview.
    options = dataclasses.replace(options, renderer=functools.partial(renderers.render, verify=True))
    threads = take_turns(needs, parallel, one, stop)
    try:
        # join() with a timeout, so the main thread gets Ctrl-C at once (KeyboardInterrupt only
        # ever reaches the main thread; the students run in their own threads).
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
    except KeyboardInterrupt:
        interrupted = True
        with lock:
            progress("interrupted: stopping every student's run after its current scenario "
                     "(captures stopped, finished scenarios kept)")
            stop.set()  # those not started yet never start
    finally:
        # Even after a second Ctrl-C the threads finish their cleanup: the interpreter joins them.
        for t in threads:
            t.join()
        renderers.close()
    students = []
    for i, entry in enumerate(lab.inventory):
        student = results.get(i)
        if student is None:  # never started, or stopped before it had a result
            student = StudentRun(entry.name, _entry_target(entry), error="interrupted before it ran",
                                 interrupted=True)
        students.append(student)
    overview = _write_overview(lab, students)
    return ClassOutcome(overview, students, interrupted=interrupted)


def _needs(index: int, prepared: tuple[Profile, str] | LabError, host: frozenset[Hashable]) -> frozenset[Hashable]:
    """What a student uses that no other may use at the same time: its host (``host``: every
    address of it, turns.host_needs) and its account."""
    if isinstance(prepared, LabError):
        return frozenset({("entry", index)})
    return host | {("account", prepared[0].account.address.strip().lower())}


def _entry_target(entry: InventoryEntry) -> str:
    return entry.target.host or (f"sandbox target {entry.sandbox}" if entry.sandbox else "")


def _run_student(lab: Lab, entry: InventoryEntry, options: RunOptions, progress: Progress, lock: threading.Lock,
                 prepared: tuple[Profile, str] | LabError) -> StudentRun:

    def said(line: str) -> None:
        with lock:
            progress(f"{entry.name}: {line}")

    student = StudentRun(entry.name, _entry_target(entry))
    try:
        if isinstance(prepared, LabError):
            raise prepared
        profile, secret = prepared
        student.target = profile.target.host
        student_lab = dataclasses.replace(
            lab, report=entry.report, output_dir=lab.output_dir / "students" / entry.name, inventory=[])
        student.outcome = run_lab(student_lab, dataclasses.replace(options, progress=said), profile=profile,
                                  secret=secret)
        student.interrupted = student.outcome.interrupted
    except TryLater:  # its host is held by another run: tried again later (run_inventory)
        raise
    except KeyboardInterrupt:
        student.error, student.interrupted = "interrupted", True
        said("interrupted")
    except LabError as err:
        student.error, student.hint = str(err), err.hint
        said(f"failed: {err}")
    except Exception as err:  # one student's bug must not cost the others their rows
        student.error = f"internal error: {type(err).__name__}: {err}"
        said(f"failed: {student.error}")
    return student


def _write_overview(lab: Lab, students: list[StudentRun]) -> Path:
    from labrunner.report.overview import render_overview

    class_dir = lab.output_dir / "class"
    with runfolder.run_lock(class_dir):
        folder = class_dir / runfolder.new_run_id(class_dir)
        folder.mkdir(parents=True)
    rows = []
    for student, entry in zip(students, lab.inventory, strict=True):
        row: dict[str, Any] = {
            "name": student.name, "student": {"name": entry.report.student.name.get(entry.report.lang),
                                              "id": entry.report.student.id,
                                              "class": entry.report.student.klass},
            "target": student.target, "error": student.error, "hint": student.hint,
            "interrupted": student.interrupted, "scenarios": {}, "errors": {},
            "report_pdf": None, "report_html": None, "run": None,
        }
        outcome = student.outcome
        if outcome is not None:
            row["scenarios"] = {o.name: o.status for o in outcome.outcomes}
            row["errors"] = {o.name: o.error for o in outcome.outcomes if o.error}
            if outcome.report_error:
                row["error"] = f"report: {outcome.report_error}"
            row["verify"] = outcome.verify
            # Relative to the overview, so the output folder can be zipped or moved as a whole.
            for key, path in (("report_pdf", outcome.report_pdf), ("report_html", outcome.report_html),
                              ("run", outcome.run_dir)):
                row[key] = os.path.relpath(path, folder) if path else None
        rows.append(row)
    from labrunner.report.overview import review_rows

    review_rows(rows, folder)  # verify each report, flag template text and results of other runs
    doc = {"created": now(), "lab": str(lab.path), "students": rows}
    runfolder.write_json(folder / "overview.json", doc)
    render_overview(doc, folder / "overview.html")
    runfolder.point_latest(class_dir, folder.name)
    return folder
