"""What every room of the run shares: its options, its results, the progress callback."""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrunner.secrets import Redactor
from labrunner.textsafe import safe

Progress = Callable[[str], None]


@dataclass
class HostWait:
    """A class run's student whose host another labrunner run holds, from one try to the next.

    The student does not wait with its ``--parallel`` place taken: its run ends before anything
    is written (``TryLater``), the class run gives the place to the next student and tries this
    one again later (run/turns.py), until the host is free or ``bound`` seconds have passed
    since the first try that found it held (then it is refused as a single run is)."""

    bound: float  # seconds
    since: float | None = None  # time.monotonic() of the first try that found the host held
    tries: int = 0  # how many found it held


class TryLater(Exception):
    """Out of ``run_lab`` for a class run's student whose host is held (``HostWait``): nothing
    was written; start it again no sooner than ``at`` (time.monotonic())."""

    def __init__(self, at: float) -> None:
        super().__init__(f"try again at {at:.1f}")
        self.at = at


@dataclass
class RunOptions:
    profile: str | None = None
    scenarios: Sequence[str] = ()
    failed_only: bool = False
    pdf: bool = True
    lang: str | None = None
    progress: Progress | None = None
    cancel: threading.Event | None = None  # set: stop before the next scenario (Ctrl-C of a class run)
    # A class run's student: its wait for a host that another run holds (None: refused at once).
    host_wait: HostWait | None = None
    imports: Mapping[str, Any] = field(default_factory=dict)  # scenario -> ImportStep (--import)
    # A class run's report workers (report/workers.py): render_report in another process.
    renderer: Callable[..., dict[str, Any]] | None = None


@dataclass
class ScenarioOutcome:
    name: str
    status: str  # passed | failed | interrupted
    duration: float
    frames: int | None
    error: str | None = None
    hint: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path | None  # None: nothing was selected, nothing was done
    outcomes: list[ScenarioOutcome] = field(default_factory=list)
    report_html: Path | None = None
    report_pdf: Path | None = None
    report_error: str | None = None
    interrupted: bool = False
    redactor: Redactor = field(default_factory=Redactor)
    verify: dict[str, Any] | None = None  # a class run: the overview's verify cell, from the report's worker

    @property
    def ok(self) -> bool:
        return (not self.interrupted and self.report_error is None
                and all(o.status == "passed" for o in self.outcomes))


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def stage_line(progress: Progress, prefix: str, stage: str) -> None:
    progress(prefix + stage)


def stderr_progress(line: str) -> None:
    # One write: the analysis workers report too, and print() writes the line end apart.
    # Lines quote servers (an error's reply text): their control characters are escaped.
    sys.stderr.write(safe(line) + "\n")
    sys.stderr.flush()
