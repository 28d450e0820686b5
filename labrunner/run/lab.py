"""The pipeline: for each scenario capture, sessions, stop, download, analyse; then the report.

``run_lab`` is what ``labrunner run`` calls. Each stage writes its result into the run folder
before the next starts, so an interrupted or failed run keeps what it finished and the report
can always be rendered from the folder without the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labrunner import runfolder
from labrunner.config.model import CaptureSpec, Lab, Profile, Scenario
from labrunner.errors import LabError, UsageError
from labrunner.run.facts import local_tools, target_environment, target_facts
from labrunner.run.interrupts import INTERRUPTS
from labrunner.run.manifest import carry_over, new_manifest, not_run, record_attempts
from labrunner.run.outcome import Progress, RunOptions, RunOutcome, now, stderr_progress
from labrunner.run.schedule import run_scenarios

_RENDER_LOCK = threading.Lock()


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
                   state=sandbox_state(profile))


def known_secret(profile: Profile, *, before_prompt: Callable[[], None] | None = None) -> str | None:
    """The account's secret where ``labrunner report`` can have it without surprising anyone:
    the environment, the sandbox state, or a prompt on a terminal (``before_prompt`` says why
    first; an empty answer skips it). None: nowhere, or not usable."""
    from labrunner import secrets

    try:
        where = secrets.source(profile.account.secret, sandbox_state(profile))
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
    from labrunner import executor as executors
    from labrunner.config.load import resolve_profile

    progress = options.progress or stderr_progress
    profile = profile or resolve_profile(lab, options.profile)
    scenarios = select_scenarios(lab, options.scenarios, options.failed_only)
    if options.imports:  # `--import SCENARIO=FILE`: the student's capture instead of the sessions
        scenarios = [dataclasses.replace(sc, steps=(options.imports[sc.name],), capture=CaptureSpec(enabled=False))
                     if sc.name in options.imports else sc for sc in scenarios]
    if not scenarios:
        progress("nothing to run: no scenario failed last time" if options.failed_only else "no scenario selected")
        return RunOutcome(run_dir=None)
    lang = options.lang or lab.report.lang
    from labrunner.report.images import check_run_images, copy_run_images
    from labrunner.report.words import clean_record

    check_run_images(lab, scenarios)  # a screenshot missing from the notes: before anything runs
    outcome = RunOutcome(run_dir=None)
    secret = account_secret(profile) if secret is None else secret
    outcome.redactor.add(secret, users={profile.account.login, profile.account.address})
    # `tshark --version` (0.3 s, for the manifest and the analysis) meanwhile we connect
    warm = threading.Thread(target=_warm_tshark, name="tshark-version", daemon=True)
    warm.start()
    with runfolder.run_lock(lab.output_dir), INTERRUPTS.watch(outcome):
        runfolder.check_latest(lab.output_dir)  # before anything runs, not after the report
        progress(f"connecting to {profile.target.host} ...")
        try:
            with executors.connect(profile.target) as ex, _target_held(ex, scenarios):
                # Held, not raised, until the folder, its manifest and the helpers exist, so
                # that the `finally` below always has them to finish.
                with INTERRUPTS.shield(hold=True):
                    run_id = runfolder.new_run_id(lab.output_dir)
                    run_dir = lab.output_dir / run_id
                    run_dir.mkdir(parents=True)
                    manifest = new_manifest(lab, profile, run_id, lang)
                    clean_record(manifest, outcome.redactor)  # the student's words, before any file holds them
                    manifest.write(run_dir)
                    outcome.run_dir = run_dir
                    warm_report = threading.Thread(target=_warm_report, args=(options.pdf,),
                                                   name="report-imports", daemon=True)
                    warm_report.start()
                    # The description of the target (tool versions: a few programs run there) and
                    # of this machine (`tshark --version`) comes in while the facts the first
                    # capture needs are asked and the scenarios start.
                    probe = threading.Thread(target=_describe, args=(ex, manifest, warm), name="describe",
                                             daemon=True)
                    probe.start()
                try:
                    if outcome.interrupted:
                        raise KeyboardInterrupt
                    target_facts(ex, [s.host for s in profile.servers.values()])
                    run_scenarios(lab, profile, scenarios, ex, secret, manifest, outcome, progress, options.cancel)
                finally:
                    # Whatever ended the scenarios, the manifest says it, and agrees with the summary.
                    with INTERRUPTS.shield(hold=True):
                        probe.join(30)
                        manifest.ended = now()
                        carry_over(lab, manifest, run_dir, scenarios,
                                    every=not options.scenarios and not options.failed_only)
                        not_run(manifest, run_dir, scenarios, outcome)
                        copy_run_images(lab, scenarios, manifest, run_dir)  # the notes' screenshots, into the run
                        clean_record(manifest, outcome.redactor)  # the copy rewrote the notes from their raw text
                        record_attempts(manifest, lab.output_dir)
                        manifest.interrupted = outcome.interrupted
                        manifest.write(run_dir)
        except KeyboardInterrupt:
            outcome.interrupted = True
            if outcome.run_dir is None:
                raise  # while connecting: nothing was written, output/ is as it was
        if outcome.interrupted:
            progress("interrupted: finished scenarios are kept; rendering the report from them")
        try:
            warm_report.join()  # the render needs every one of them anyway
            _render(run_dir, outcome, options, progress, templates=lab.report.templates)
        except KeyboardInterrupt:
            # every result is in the run folder already: say how to get the report of it
            outcome.interrupted = True
            outcome.report_error = (f"interrupted while rendering the report; the results are kept: "
                                    f"labrunner report {run_dir}")
            progress(outcome.report_error)
        with INTERRUPTS.shield(hold=True):
            if outcome.interrupted and not manifest.interrupted:
                manifest.interrupted = True  # a Ctrl-C after the scenarios, while rendering
                manifest.write(run_dir)
            if (run_dir / runfolder.REPORT_HTML).is_file():
                # `latest` is the newest run a student can open: one that stopped before its
                # report (a full disk, a bug) leaves it on the run before.
                try:
                    runfolder.point_latest(lab.output_dir, run_id)
                except UsageError as err:  # `latest` made a folder during the run: the results stay
                    raise UsageError(f"{err}; this run's report is in {run_dir}", hint=err.hint) from None
    return outcome


@contextlib.contextmanager
def _target_held(ex: Any, scenarios: list[Scenario]) -> Any:
    """The target's capture lock for the run (capture.hold_target): two runs capturing on one
    host would each record the other's sessions. Refused before anything is written."""
    from labrunner import capture

    holder = capture.hold_target(ex) if any(sc.capture.enabled for sc in scenarios) else None
    try:
        yield
    finally:
        if holder is not None:
            with contextlib.suppress(Exception):
                holder.close_stdin()  # it ends on EOF; kill() then costs no round trip
                holder.wait(2)
            with contextlib.suppress(Exception):
                holder.kill()


def _describe(ex: Any, manifest: runfolder.Manifest, warm: threading.Thread) -> None:
    # Assignments of the manifest's attributes: safe while the main thread writes it out.
    # A lost connection is reported by the scenarios; after the run gave up waiting for this
    # thread, the executor is closed under it and paramiko raises what it likes: the report
    # then says the description is missing, and no traceback reaches the terminal.
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


def sandbox_state(profile: Profile) -> dict[str, Any] | None:
    """The account part of the sandbox state, where a sandbox profile's secret lives."""
    if not profile.from_sandbox:
        return None
    from labrunner import sandbox

    state = sandbox.load_state(profile.sandbox_instance)
    number = profile.account.secret.sandbox
    if number is not None:
        # An inventory student's account N of a class (`sandbox up --targets N`).
        accounts = state.get("accounts") if isinstance(state, dict) else None
        if not isinstance(accounts, list) or len(accounts) < number:
            raise UsageError(f"password of {profile.account.address}: the sandbox has no account {number}",
                             hint=f"start a class: `labrunner sandbox up --targets {number}`")
        account = accounts[number - 1]
    else:
        account = state.get("account") if isinstance(state, dict) else None
    return account if isinstance(account, dict) else None


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
