"""Reports rendered in worker processes, for a class run (`labrunner run --inventory`).

A class run drives its students from threads of one process. Rendering a report (Jinja, then
WeasyPrint for the PDF: ~3 s of CPU for the six default scenarios) is Python holding the GIL
nearly all the time, and WeasyPrint's Pango and fontconfig are not documented as thread-safe,
so in-process renders go one at a time (a lock): the class then rendered its reports one after
the other on one core while the others idled, and each waiting student kept its slot of
``--parallel`` (bench/class: 10 students, ``--parallel 4``, 11x one student's run x 10 / 4).

Here each report is rendered by a process of a small pool (``spawn``: the class run's threads,
paramiko's among them, are never forked), as many as the machine has cores and no more than
students run at once. Each worker then verifies the report it made (`labrunner verify`: the
captures analysed again, ~2.5 s of CPU a student) for the class overview: done at the end in
the class's process, the 30 students' checks were a tail of minutes on one core. The run folder,
the options and the run's redactor (the secrets' forms, which the report must never hold) go to
the worker over its pipe, never through a file. Workers ignore SIGINT: a Ctrl-C of the class run
stops the students after their current scenario and still renders their reports from what
finished, as a single run does.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from labrunner.errors import LabError


def worker_count(parallel: int) -> int:
    """Processes for ``parallel`` students at once: one per core, at most one per student."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(parallel, cores))


def _quiet() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the class run's Ctrl-C is its main thread's


def _render(run_dir: Path, options: dict[str, Any], verify: bool) -> dict[str, Any]:
    from labrunner.report import render_report

    try:
        res = render_report(run_dir, **options)
    except LabError as err:  # crosses back as text: an exception's own pickling may lose its hint
        return {"error": str(err), "hint": err.hint}
    if verify:
        from labrunner.report.overview import verify_summary

        res["verify"] = verify_summary(res["pdf"] or run_dir)
    res["pid"] = os.getpid()
    return res


class ReportWorkers:
    """A pool of report renderers; ``render`` blocks the calling thread until its report is done.

    Use as a context manager: leaving it waits for the renders under way and ends the workers.
    """

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """A pool whose workers all start now, with SIGINT ignored from their first instruction.

        A spawned Python keeps an ignored SIGINT it inherits, while the initializer runs only once
        the worker has imported what it needs: a Ctrl-C in between (the pool starts a worker when
        a report is submitted, mid-run) killed it with a traceback and broke the pool for every
        later student. So, from the main thread, SIGINT is ignored here for the moment the
        workers take to be created (``submit`` starts one per call while none is idle)."""
        pool = ProcessPoolExecutor(max_workers=self._processes, mp_context=get_context("spawn"),
                                   initializer=_quiet)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for _ in range(self._processes):
                pool.submit(os.getpid)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return pool

    def render(self, run_dir: Path, *, verify: bool = False, **options: Any) -> dict[str, Any]:
        """``render_report(run_dir, **options)`` in a worker; its result, with the worker's ``pid``
        and, with ``verify``, the class overview's `labrunner verify` cell of the report (``verify``)."""
        for attempt in (1, 2):
            pool = self._pool
            try:
                res = pool.submit(_render, run_dir, options, verify).result()
                break
            except BrokenProcessPool:
                # a worker died (killed, out of memory): a new pool for this and later students
                with self._lock:
                    if self._pool is pool:
                        pool.shutdown(wait=False)
                        self._pool = self._start()
                if attempt == 2:
                    raise LabError("the report's worker process died (out of memory?)",
                                   hint=f"render it again with `labrunner report {run_dir}`") from None
        if "error" in res:
            raise LabError(res["error"], hint=res["hint"])
        return res

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ReportWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
