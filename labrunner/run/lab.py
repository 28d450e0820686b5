"""The pipeline: for each scenario capture, sessions, stop, download, analyse; then the report.

``run_lab`` is what ``labrunner run`` calls. Each stage writes its result into the run folder
before the next starts, so an interrupted or failed run keeps what it finished and the report
can always be rendered from the folder without the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from labrunner import runfolder
from labrunner.config.load import sandbox_account
from labrunner.config.model import CaptureSpec, Lab, Profile, Scenario
from labrunner.errors import LabError, UsageError
from labrunner.run.facts import local_tools, target_environment
from labrunner.run.interrupts import INTERRUPTS
from labrunner.run.manifest import carry_over, new_manifest, not_run, record_attempts
from labrunner.run.outcome import Progress, RunOptions, RunOutcome, TryLater, now, stderr_progress
from labrunner.run.scenario import RunContext, ScenarioRun, prepared_capture
from labrunner.run.schedule import Pipeline

if TYPE_CHECKING:
    from labrunner.capture import Capture
    from labrunner.executor.base import Executor, Process

_RENDER_LOCK = threading.Lock()
# A class run's student waiting for its host tries again this long after its first try, then
# twice as long after each (a new SSH connection each time), HOST_RETRY_MAX_S at most.
HOST_RETRY_S = 3.0
HOST_RETRY_MAX_S = 15.0


def select_scenarios(lab: Lab, names: Sequence[str], failed_only: bool) -> list[Scenario]:
    from labrunner.config.load import load_scenarios

    scenarios = load_scenarios(lab, list(names) or None)
    if failed_only:
        last = runfolder.latest_results(lab.output_dir)
        scenarios = [s for s in scenarios
                     if (e := last.get(s.name)) is not None and e.status in ("failed", "interrupted")]
    return scenarios


def account_secret(profile: Profile) -> str:
    """The account's secret, from the sandbox state, the environment or a prompt."""
    from labrunner.secrets import resolve

    # QQ Mail's "password" here is the authorization code (授权码), not the login password
    what = f"password of {profile.account.address}" if profile.from_sandbox else \
        f"password (for QQ Mail: the authorization code, 授权码) of {profile.account.address}"
    return resolve(profile.account.secret, what=what,
                   state=sandbox_account(profile))


def known_secret(profile: Profile, *, before_prompt: Callable[[], None] | None = None) -> str | None:
    """The account's secret where ``labrunner report`` can have it without surprising anyone:
    the environment, the sandbox state, or a prompt on a terminal (``before_prompt`` says why
    first; an empty answer skips it). None: nowhere, or not usable."""
    from labrunner import secrets

    try:
        where = secrets.source(profile.account.secret, sandbox_account(profile))
        if where is None:
            return None
        if where.startswith("a prompt") and before_prompt is not None:
            before_prompt()
        return account_secret(profile)
    except (LabError, EOFError):
        return None


def run_lab(lab: Lab, options: RunOptions, *, profile: Profile | None = None,
            secret: str | None = None) -> RunOutcome:
    """One run of the selected scenarios on one target, then its report.

    The secret is read and the target connected before anything is written: a wrong password
    variable or an unreachable host leaves ``output/`` (and ``output/latest``) as it was.
    """
    from labrunner.config.load import resolve_profile
    from labrunner.report.images import check_run_images

    progress = options.progress or stderr_progress
    profile = profile or resolve_profile(lab, options.profile)
    scenarios = select_scenarios(lab, options.scenarios, options.failed_only)
    if options.imports:  # `--import SCENARIO=FILE`: the student's capture instead of the sessions
        scenarios = [dataclasses.replace(sc, steps=(options.imports[sc.name],), capture=CaptureSpec(enabled=False))
                     if sc.name in options.imports else sc for sc in scenarios]
    if not scenarios:
        progress("nothing to run: no scenario failed last time" if options.failed_only else "no scenario selected")
        return RunOutcome(run_dir=None)
    check_run_images(lab, scenarios)  # a screenshot missing from the notes: before anything runs
    outcome = RunOutcome(run_dir=None)
    secret = account_secret(profile) if secret is None else secret
    outcome.redactor.add(secret, users={profile.account.login, profile.account.address})
    _LabRun(lab, options, profile, scenarios, secret, outcome, progress).go()
    return outcome


class _LabRun:
    """One ``run_lab`` from the connection to the report: its folder, manifest and helper threads."""

    run_id: str
    run_dir: Path
    manifest: runfolder.Manifest
    warm_report: threading.Thread
    probe: threading.Thread

    def __init__(self, lab: Lab, options: RunOptions, profile: Profile, scenarios: list[Scenario], secret: str,
                 outcome: RunOutcome, progress: Progress) -> None:
        self.lab, self.options, self.profile, self.scenarios = lab, options, profile, scenarios
        self.secret, self.outcome, self.progress = secret, outcome, progress
        self.lang = options.lang or lab.report.lang
        # `tshark --version` (0.3 s, for the manifest and the analysis) meanwhile we connect
        self.warm = threading.Thread(target=_warm_tshark, name="tshark-version", daemon=True)

    def go(self) -> None:
        lab, outcome = self.lab, self.outcome
        self.warm.start()
        with runfolder.run_lock(lab.output_dir), INTERRUPTS.watch(outcome):
            runfolder.check_latest(lab.output_dir)  # before anything runs, not after the report
            try:
                with self._target() as ex:
                    self._run(ex)
            except KeyboardInterrupt:
                outcome.interrupted = True
                if outcome.run_dir is None:
                    raise  # while connecting: nothing was written, output/ is as it was
            self._report()

    @contextlib.contextmanager
    def _target(self) -> Iterator[Executor | None]:
        """The connection to the target for the whole run, when a selected scenario runs there.
        None when every one is an imported capture: the target is not needed, so neither its
        password nor its host key nor the network is (`run --import`)."""
        from labrunner import executor as executors
        from labrunner import importer

        if all(importer.imported_step(sc) is not None for sc in self.scenarios):
            yield None
            return
        wait = self.options.host_wait
        if wait is None or wait.since is None:  # (not again on each try of a wait for the host)
            self.progress(f"connecting to {self.profile.target.host} ...")
        with executors.connect(self.profile.target) as ex, _target_held(ex, self.scenarios, self.options,
                                                                         self.progress):
            yield ex

    def _run(self, ex: Executor | None) -> None:
        # Held, not raised, until the folder, its manifest and the helpers exist, so that the
        # `finally` below always has them to finish.
        with INTERRUPTS.shield(hold=True):
            self._open(ex)
        try:
            if self.outcome.interrupted:
                raise KeyboardInterrupt
            if ex is not None:
                ex.facts.ask([s.host for s in self.profile.servers.values()])  # one round trip
            self._scenarios(ex)
        finally:
            # Whatever ended the scenarios, the manifest says it, and agrees with the summary.
            with INTERRUPTS.shield(hold=True):
                self._close()

    def _open(self, ex: Executor | None) -> None:
        """The run folder and its manifest; the report's imports and the descriptions start."""
        from labrunner.report.words import clean_record

        lab, outcome = self.lab, self.outcome
        self.run_id = runfolder.new_run_id(lab.output_dir)
        self.run_dir = lab.output_dir / self.run_id
        self.run_dir.mkdir(parents=True)
        self.manifest = new_manifest(lab, self.profile, self.run_id, self.lang)
        clean_record(self.manifest, outcome.redactor)  # the student's words, before any file holds them
        self.manifest.write(self.run_dir)
        outcome.run_dir = self.run_dir
        self.warm_report = threading.Thread(target=_warm_report, args=(self.options.pdf,),
                                            name="report-imports", daemon=True)
        self.warm_report.start()
        # The description of the target (tool versions: a few programs run there) and of this
        # machine (`tshark --version`) comes in while the facts the first capture needs are
        # asked and the scenarios start.
        self.probe = threading.Thread(target=_describe, args=(ex, self.manifest, self.warm), name="describe",
                                      daemon=True)
        self.probe.start()

    def _scenarios(self, ex: Executor | None) -> None:
        lab, profile, run_dir = self.lab, self.profile, self.run_dir
        ctx = RunContext(profile, ex, self.secret, self.outcome.redactor, run_dir,
                         lang=self.manifest.lang or "zh", show_credentials=lab.report.show_credentials)

        def start(sc: Scenario, entry: runfolder.ScenarioEntry, stage: Callable[[str], None],
                  prepared: Capture | None, prepare_next: Callable[[], None] | None) -> Callable[[], None]:
            return ScenarioRun(ctx, sc, entry, stage).on_target(prepared, prepare_next)

        def prepare(sc: Scenario) -> Capture:
            return prepared_capture(ctx.target(), sc, profile, run_dir)

        Pipeline(self.manifest, self.outcome, self.progress, start=start, prepare=prepare,
                 cancel=self.options.cancel).run(self.scenarios)

    def _close(self) -> None:
        """The manifest's last words: the end, results carried over or not run, the screenshots."""
        from labrunner.report.images import copy_run_images
        from labrunner.report.words import clean_record

        lab, manifest, scenarios = self.lab, self.manifest, self.scenarios
        self.probe.join(30)
        manifest.ended = now()
        carry_over(lab, manifest, self.run_dir, scenarios,
                   every=not self.options.scenarios and not self.options.failed_only)
        not_run(manifest, self.run_dir, scenarios, self.outcome)
        copy_run_images(lab, scenarios, manifest, self.run_dir)  # the notes' screenshots, into the run
        clean_record(manifest, self.outcome.redactor)  # the copy rewrote the notes from their raw text
        record_attempts(manifest, lab.output_dir)
        manifest.interrupted = self.outcome.interrupted
        manifest.write(self.run_dir)

    def _report(self) -> None:
        """The report of the run folder, then ``latest`` moved to it."""
        outcome, run_dir, progress = self.outcome, self.run_dir, self.progress
        if outcome.interrupted:
            progress("interrupted: finished scenarios are kept; rendering the report from them")
        try:
            self.warm_report.join()  # the render needs every one of them anyway
            _render(run_dir, outcome, self.options, progress, templates=self.lab.report.templates)
        except KeyboardInterrupt:
            # every result is in the run folder already: say how to get the report of it
            outcome.interrupted = True
            outcome.report_error = (f"interrupted while rendering the report; the results are kept: "
                                    f"labrunner report {run_dir}")
            progress(outcome.report_error)
        with INTERRUPTS.shield(hold=True):
            if outcome.interrupted and not self.manifest.interrupted:
                self.manifest.interrupted = True  # a Ctrl-C after the scenarios, while rendering
                self.manifest.write(run_dir)
            if (run_dir / runfolder.REPORT_HTML).is_file():
                # `latest` is the newest run a student can open: one that stopped before its
                # report (a full disk, a bug) leaves it on the run before.
                try:
                    runfolder.point_latest(self.lab.output_dir, self.run_id)
                except UsageError as err:  # `latest` made a folder during the run: the results stay
                    raise UsageError(f"{err}; this run's report is in {run_dir}", hint=err.hint) from None


@contextlib.contextmanager
def _target_held(ex: Executor, scenarios: list[Scenario], options: RunOptions, progress: Progress) -> Iterator[None]:
    """The target's capture lock for the run (capture.hold_target): two runs capturing on one
    host would each record the other's sessions. Refused before anything is written."""
    holder = _hold_target(ex, options, progress) if any(sc.capture.enabled for sc in scenarios) else None
    try:
        yield
    finally:
        if holder is not None:
            with contextlib.suppress(Exception):
                holder.close_stdin()  # it ends on EOF; kill() then costs no round trip
                holder.wait(2)
            with contextlib.suppress(Exception):
                holder.kill()


def _hold_target(ex: Executor, options: RunOptions, progress: Progress) -> Process | None:
    """capture.hold_target; a class run's student (``options.host_wait``) that finds its host
    held by another run (its class took turns by the host's addresses, but another TA's run or a
    name that did not resolve got there) waits for it instead of ending as an error row. Not
    here, with its ``--parallel`` place taken (two such students stalled a class of
    ``--parallel 2`` for up to 30 min): TryLater ends its run before anything is written, and
    the class run tries it again a few seconds later (run/turns.py), the students whose hosts
    are free going first meanwhile, until the host is free, the wait is over (then refused as a
    single run is), or Ctrl-C (the class run starts nobody any more)."""
    from labrunner import capture

    wait = options.host_wait
    try:
        holder = capture.hold_target(ex)
    except capture.TargetBusy as err:
        if wait is None:
            raise
        now = time.monotonic()
        since = now if wait.since is None else wait.since
        left = since + wait.bound - now
        if left <= 0:
            if wait.since is not None:
                waited = wait.bound
                raise capture.TargetBusy(f"{err} (waited {waited / 60:.0f} min for it)" if waited >= 60 else
                                         f"{err} (waited {waited:.0f} s for it)", hint=err.hint) from None
            raise
        if wait.since is None:
            wait.since = since
            progress(f"waiting for {ex.host_label}: another labrunner run is capturing there now; "
                     "this one starts when it ends")
        wait.tries += 1
        # Each try is a new connection: ever less often, HOST_RETRY_MAX_S apart at most.
        pause = min(HOST_RETRY_S * 2 ** (wait.tries - 1), HOST_RETRY_MAX_S, left)
        raise TryLater(now + pause) from None
    if wait is not None and wait.since is not None:
        progress(f"{ex.host_label} is free now")
    return holder


def _describe(ex: Executor | None, manifest: runfolder.Manifest, warm: threading.Thread) -> None:
    # Assignments of the manifest's attributes: safe while the main thread writes it out.
    # A lost connection is reported by the scenarios; after the run gave up waiting for this
    # thread, the executor is closed under it and paramiko raises what it likes: the report
    # then says the description is missing, and no traceback reaches the terminal.
    if ex is not None:  # None: imported captures only, the target was not connected
        with contextlib.suppress(Exception):
            manifest.target = target_environment(ex)
    warm.join(60)  # not a second `tshark --version`
    manifest.local_tools = local_tools()


def _warm_report(pdf: bool) -> None:
    """Import the report's modules (Jinja2, Markdown; WeasyPrint for the PDF: 0.5-1 s) and
    compile the built-in templates (~0.25 s) while the scenarios mostly wait on the network, instead
    of after the last one."""
    import importlib

    names = ["jinja2", "markdown_it", "labrunner.report.render", "labrunner.report.context",
             "labrunner.report.figures"]
    if pdf:
        names += ["labrunner.report.pdf", "weasyprint", "weasyprint.svg"]
    for name in names:
        with contextlib.suppress(Exception):  # a missing one is reported by the render itself
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # a broken template too, with its file and line
        from labrunner.report.render import warm

        warm()


def _warm_tshark() -> None:
    from labrunner.analysis import tshark_version

    with contextlib.suppress(LabError):
        tshark_version()  # cached: local_tools() and analyze() find it ready


def _render(run_dir: Path, outcome: RunOutcome, options: RunOptions, progress: Progress, *,
            templates: str | None = None) -> None:
    from labrunner.report import render_report

    progress("rendering the report ...")
    try:
        if options.renderer is not None:  # a class run: in one of its worker processes, side by side
            res = options.renderer(run_dir, pdf=options.pdf, lang=options.lang, redact=outcome.redactor,
                                   templates_dir=templates)
        else:
            # One report at a time in this process: WeasyPrint's Pango and fontconfig are not
            # documented as thread-safe, and rendering holds the GIL most of the time anyway.
            with _RENDER_LOCK:
                res = render_report(run_dir, pdf=options.pdf, lang=options.lang, redact=outcome.redactor,
                                    templates_dir=templates)
    except LabError as err:
        outcome.report_error = str(err)
        progress(f"report: failed: {err}")
        return
    outcome.report_html = res.get("html")
    outcome.report_pdf = res.get("pdf")
    outcome.verify = res.get("verify")
