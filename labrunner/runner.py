"""The pipeline: for each scenario capture, sessions, stop, download, analyse; then the report.

``run_lab`` is what ``labrunner run`` calls. Each stage writes its result into the run folder
before the next starts, so an interrupted or failed run keeps what it finished and the report
can always be rendered from the folder without the network.
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import datetime as dt
import functools
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrunner import __version__, runfolder
from labrunner.config.model import CaptureSpec, Lab, Profile, Scenario
from labrunner.errors import LabError, UsageError
from labrunner.secrets import Redactor
from labrunner.textsafe import safe

Progress = Callable[[str], None]
_RENDER_LOCK = threading.Lock()
# Analyses of one run at a time: tshark is a process of its own, so two use both cores.
_ANALYSIS_WORKERS = max(1, min(2, os.cpu_count() or 1))


@dataclass
class RunOptions:
    profile: str | None = None
    scenarios: Sequence[str] = ()
    failed_only: bool = False
    pdf: bool = True
    lang: str | None = None
    progress: Progress | None = None
    cancel: threading.Event | None = None  # set: stop before the next scenario (Ctrl-C of a class run)
    imports: Mapping[str, Any] = field(default_factory=dict)  # scenario -> ImportStep (--import)


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

    @property
    def ok(self) -> bool:
        return (not self.interrupted and self.report_error is None
                and all(o.status == "passed" for o in self.outcomes))


class _Interrupts:
    """Ctrl-C during a run: never lost, never half-applied.

    While a run is active (``watch``, main thread only) every SIGINT sets
    ``outcome.interrupted`` first, whatever happens to the KeyboardInterrupt afterwards, so the
    exit status, the summary and the manifest can all say so. Inside ``shield()`` (settling a
    scenario: its status in the manifest, in the summary and its progress line; the final
    write of the manifest) the interrupt is held and raised at the end of the block, so those
    records are written together or not at all.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.held = False
        self.outcome: RunOutcome | None = None
        self.deferred_until = float("inf")

    @contextlib.contextmanager
    def watch(self, outcome: RunOutcome) -> Any:
        if threading.current_thread() is not threading.main_thread() or self.outcome is not None:
            yield  # a class run's students (threads): their stop is the `cancel` event
            return

        def on_sigint(signum: int, frame: Any) -> None:
            outcome.interrupted = True
            if self.depth:
                self.held = True
                return
            if _inside_paramiko(frame) and time.monotonic() < self.deferred_until:
                # paramiko takes locks with acquire() ... try/finally release(): an exception
                # raised between the two leaves its transport's lock held, and every thread,
                # ours and paramiko's, then waits on it for ever (seen: a Ctrl-C in a
                # capture's write_stdin hung the run). Delivered again once we are out of it.
                threading.Timer(_REDELIVER_S, _thread.interrupt_main, args=(signum,)).start()
                return
            raise KeyboardInterrupt

        self.outcome = outcome
        self.deferred_until = float("inf")
        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
            self.outcome = None
            self.held = False

    @contextlib.contextmanager
    def shield(self, *, hold: bool = False) -> Any:
        """``hold``: an interrupt that came during the block is only noted (``outcome.interrupted``)
        and not raised after it: the caller goes on to finish what an interrupted run finishes."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.held:
                self.held = False
                if not hold:
                    raise KeyboardInterrupt


_INTERRUPTS = _Interrupts()
_REDELIVER_S = 0.02
# how long a Ctrl-C waits for the main thread to leave paramiko (a blocking read there can
# last as long as its own time limit); after that it is raised wherever it lands
_PARAMIKO_GRACE_S = 5.0


def _inside_paramiko(frame: Any) -> bool:
    """Whether the interrupted code is paramiko's (any frame of the stack). The first time it is,
    the grace period starts."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("paramiko"):
            if _INTERRUPTS.deferred_until == float("inf"):
                _INTERRUPTS.deferred_until = time.monotonic() + _PARAMIKO_GRACE_S
            return True
        frame = frame.f_back
    return False


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _stage(progress: Progress, prefix: str, stage: str) -> None:
    progress(prefix + stage)


def _stderr_progress(line: str) -> None:
    # One write: the analysis workers report too, and print() writes the line end apart.
    # Lines quote servers (an error's reply text): their control characters are escaped.
    sys.stderr.write(safe(line) + "\n")
    sys.stderr.flush()


def local_tools() -> dict[str, str]:
    from labrunner.analysis import tshark_version

    tools = {"labrunner": __version__, "python": platform.python_version()}
    with contextlib.suppress(LabError):
        tools["tshark"] = ".".join(str(p) for p in tshark_version())
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        tools["weasyprint"] = version("weasyprint")
        tools["paramiko"] = version("paramiko")
    return tools


_ENV_SCRIPT = r"""
. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname)"
echo "tcpdump=$(tcpdump --version 2>&1 | head -n1 | sed 's/^tcpdump version //')"
echo "python3=$(python3 --version 2>&1 | sed 's/^Python //')"
echo "openssh=$(ssh -V 2>&1 | head -n1)"
ip -o -4 addr show scope global 2>/dev/null | awk '{print "addr=" $2 " " $4}'
ip -o -6 addr show scope global 2>/dev/null | awk '{print "addr=" $2 " " $4}'
"""


def target_environment(executor: Any) -> runfolder.TargetInfo:
    """OS, kernel, tool versions and addresses of the target, for the report's section 2."""
    res = executor.run(_ENV_SCRIPT, timeout=20, check=False)
    facts: dict[str, str] = {}
    addresses: list[str] = []
    tools: dict[str, str] = {}
    for line in res.text().splitlines():
        key, _, value = line.partition("=")
        if key == "addr":
            addresses.append(value)
        elif key in ("tcpdump", "python3", "openssh"):
            tools[key] = value
        elif key in ("os", "kernel", "hostname"):
            facts[key] = value
    return runfolder.TargetInfo(label=executor.host_label, addresses=tuple(addresses), tools=tools,
                                os=facts.get("os"), kernel=facts.get("kernel"), hostname=facts.get("hostname"))


def target_facts(executor: Any, hosts: Sequence[str]) -> None:
    """Ask in one round trip what the captures will ask (our SSH connection, the addresses of
    ``hosts``, the routes to them): each question alone is an SSH round trip."""
    from labrunner import capture

    res = executor.run('echo "ssh_connection=$SSH_CONNECTION"\n' + capture.facts_script(hosts),
                       timeout=20, check=False)
    capture.learn_facts(executor, res.text())
    learn = getattr(executor, "learn_ssh_connection", None)
    for line in res.text().splitlines():
        if line.startswith("ssh_connection=") and learn is not None:
            learn(line.partition("=")[2])


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
                   state=_sandbox_state(profile))


def known_secret(profile: Profile, *, before_prompt: Callable[[], None] | None = None) -> str | None:
    """The account's secret where ``labrunner report`` can have it without surprising anyone:
    the environment, the sandbox state, or a prompt on a terminal (``before_prompt`` says why
    first; an empty answer skips it). None: nowhere, or not usable."""
    from labrunner import secrets

    try:
        where = secrets.source(profile.account.secret, _sandbox_state(profile))
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

    progress = options.progress or _stderr_progress
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
    with runfolder.run_lock(lab.output_dir), _INTERRUPTS.watch(outcome):
        runfolder.check_latest(lab.output_dir)  # before anything runs, not after the report
        progress(f"connecting to {profile.target.host} ...")
        try:
            with executors.connect(profile.target) as ex, _target_held(ex, scenarios):
                # Held, not raised, until the folder, its manifest and the helpers exist, so
                # that the `finally` below always has them to finish.
                with _INTERRUPTS.shield(hold=True):
                    run_id = runfolder.new_run_id(lab.output_dir)
                    run_dir = lab.output_dir / run_id
                    run_dir.mkdir(parents=True)
                    manifest = _new_manifest(lab, profile, run_id, lang)
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
                    _run_scenarios(lab, profile, scenarios, ex, secret, manifest, outcome, progress, options.cancel)
                finally:
                    # Whatever ended the scenarios, the manifest says it, and agrees with the summary.
                    with _INTERRUPTS.shield(hold=True):
                        probe.join(30)
                        manifest.ended = _now()
                        _carry_over(lab, manifest, run_dir, scenarios,
                                    every=not options.scenarios and not options.failed_only)
                        _not_run(manifest, run_dir, scenarios, outcome)
                        copy_run_images(lab, scenarios, manifest, run_dir)  # the notes' screenshots, into the run
                        clean_record(manifest, outcome.redactor)  # the copy rewrote the notes from their raw text
                        _record_attempts(manifest, lab.output_dir)
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
        with _INTERRUPTS.shield(hold=True):
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


def _new_manifest(lab: Lab, profile: Profile, run_id: str, lang: str) -> runfolder.Manifest:
    meta = lab.report
    text = runfolder.Text.of

    def both(value: Any) -> runfolder.Text:
        return runfolder.Text(zh=value.zh, en=value.en)

    return runfolder.Manifest(
        run_id=run_id, started=_now(), ended=None, profile=profile.name, lang=lang,
        report=runfolder.ReportInfo(
            # the cover's texts in both languages: `report --lang` picks one
            school=both(meta.school), course=both(meta.course), lab=both(meta.lab),
            student=runfolder.StudentInfo(name=both(meta.student.name), id=text(meta.student.id),
                                          klass=text(meta.student.klass)),
            date=meta.date or dt.date.today().isoformat(), show_credentials=meta.show_credentials),
        objectives={lang_: _lines(meta.objectives.get(lang_)) for lang_ in ("zh", "en")},
        reflections=runfolder.Text(zh=meta.reflections.zh, en=meta.reflections.en),
        problems=runfolder.Text(zh=meta.problems.zh, en=meta.problems.en),  # section 5.1, the student's own
        origin=_origin(profile),
    )


def _origin(profile: Profile) -> runfolder.Origin:
    """Which lab this run is on: the report refuses to mix results of two (issue 15)."""
    instance = built = None
    if profile.from_sandbox:
        from labrunner import sandbox as sb

        instance = profile.sandbox_instance or sb.default_instance()
        with contextlib.suppress(LabError):
            created = sb.load_state(instance).get("created")
            built = created if isinstance(created, str) else None
    return runfolder.Origin(profile=profile.name, target=profile.target.host, sandbox=instance, built=built)


def _lines(text: str) -> list[str]:
    return [line.strip().lstrip("-*· ").strip() for line in text.splitlines() if line.strip()]


def _carry_over(lab: Lab, manifest: runfolder.Manifest, run_dir: Path, ran: list[Scenario], *,
                every: bool = False) -> None:
    """Scenarios not run this time keep their latest result (a success if there is one) in the report.

    Only results of the same lab (profile, target, sandbox instance) are carried over: a report
    never mixes two silently. ``every``: all scenarios were selected, so none is left to look for
    (reading them all again costs ~0.1 s at the end of the run)."""
    from labrunner.config.load import load_scenarios

    done = {e.name for e in manifest.scenarios}
    if every and all(sc.name in done for sc in ran):
        return  # nothing to carry over, no earlier manifest to read (one per run, they add up)
    try:
        everything = ran if every else load_scenarios(lab, None)
    except LabError:
        everything = ran
    # the latest success, else the latest result of any kind: a scenario that never passed
    # still shows in the report, as failed, instead of vanishing from it
    mine = manifest.origin or runfolder.Origin()

    def same_lab(results: dict[str, runfolder.ScenarioEntry]) -> dict[str, runfolder.ScenarioEntry]:
        return {k: e for k, e in results.items() if e.origin is None or not e.origin.conflicts(mine)}

    previous = {**same_lab(runfolder.latest_results(lab.output_dir)),
                **same_lab(runfolder.latest_successes(lab.output_dir))}
    order = {s.name: i for i, s in enumerate(everything)}
    for sc in everything:
        if sc.name in done or sc.name not in previous:
            continue
        manifest.scenarios.append(_reused(previous[sc.name], lab.output_dir, run_dir))
    manifest.scenarios.sort(key=lambda e: order.get(e.name, len(order)))


def _record_attempts(manifest: runfolder.Manifest, output_dir: Path) -> None:
    """Each scenario's runs up to the result the report shows, when one of them failed: the
    report's problems and solutions, kept in the manifest so the run folder needs no neighbour."""
    history: dict[str, list[runfolder.Attempt]] = {}
    for run_id, e in runfolder.own_results(output_dir, upto=manifest.run_id):
        if run_id != manifest.run_id:
            history.setdefault(e.name, []).append(runfolder.Attempt(run_id, e.status, e.error, e.hint))
    for entry in manifest.scenarios:
        runs = [a for a in history.get(entry.name, []) if a.run_id <= entry.run_id]
        if entry.run_id == manifest.run_id:
            runs.append(runfolder.Attempt(entry.run_id, entry.status, entry.error, entry.hint))
        entry.attempts = runs if any(a.status in ("failed", "interrupted") for a in runs) else []


def _reused(entry: runfolder.ScenarioEntry, output_dir: Path, run_dir: Path) -> runfolder.ScenarioEntry:
    """An earlier run's result of a scenario, for this run's manifest, with its folder linked
    into this run folder (hard links, else copies): the run folder holds every result its
    report uses, so output/latest can be zipped and handed in (issue 15)."""
    source, outside = entry.folder(output_dir / entry.run_id)
    dest = runfolder.scenario_dir(run_dir, entry.name)
    if outside is None and source.is_dir() and not source.is_symlink() and not dest.exists():
        with contextlib.suppress(OSError):  # a full disk: the report says which files are missing
            runfolder.link_tree(source, dest)
    return dataclasses.replace(entry, reused=True, dir=entry.name)


def _not_run(manifest: runfolder.Manifest, run_dir: Path, selected: list[Scenario], outcome: RunOutcome) -> None:
    """A run stopped (Ctrl-C) before some of its scenarios: each shows as interrupted, in the
    summary and in the report (unless an earlier result of it was carried over), instead of
    vanishing; `run --failed` runs it next."""
    entries = manifest.scenarios
    settled = {o.name for o in outcome.outcomes}
    later = {s.name: i for i, s in enumerate(selected)}
    for i, sc in enumerate(selected):
        if sc.name in settled:
            continue
        outcome.outcomes.append(ScenarioOutcome(sc.name, "interrupted", 0.0, None))
        mine = [e for e in entries if e.name == sc.name and e.run_id == manifest.run_id]
        for e in mine:  # started, and stopped before it was settled
            e.status, e.duration = "interrupted", e.duration or 0.0
        if mine or any(e.name == sc.name for e in entries):
            continue  # ... or an earlier result of it was carried over
        entry = _scenario_entry(sc, manifest, outcome.redactor)
        entry.status, entry.duration = "interrupted", 0.0
        # in its place: before the first entry of a scenario selected after it
        at = next((k for k, e in enumerate(entries) if later.get(e.name, -1) > i), len(entries))
        entries.insert(at, entry)


def _scenario_entry(sc: Scenario, manifest: runfolder.Manifest,
                    redact: Callable[[str], str] | None = None) -> runfolder.ScenarioEntry:
    from labrunner.report.words import clean_entry

    text = runfolder.Text
    entry = runfolder.ScenarioEntry(
        name=sc.name, section=sc.section,
        title=text(zh=sc.title.zh, en=sc.title.en),
        objective=text(zh=sc.objective.zh, en=sc.objective.en),
        notes=text(zh=sc.notes.zh, en=sc.notes.en),
        status="running", run_id=manifest.run_id, dir=sc.name, started=_now(), origin=manifest.origin,
    )
    clean_entry(entry, redact)  # title, objective, notes: redacted before any file holds them
    return entry


def _run_scenarios(lab: Lab, profile: Profile, scenarios: list[Scenario], ex: Any, secret: str,
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
        with _INTERRUPTS.shield():
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
            ahead.append(prep.submit(_prepared_capture, ex, sc, profile, run_dir))

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
                entry = _scenario_entry(sc, manifest, redactor)
                manifest.scenarios.append(entry)
                # On disk at once ("running"), and again once captured: a run killed outright
                # (kill -9, power) still lists what it did; runfolder reads such an entry as
                # interrupted.
                manifest.write(run_dir)
                started = time.monotonic()
                job: Future[float] | BaseException
                try:
                    finish = _capture_and_sessions(
                        sc, profile, ex, secret, redactor, run_dir, entry,
                        functools.partial(_stage, progress, f"[{i}/{total}] {sc.name}: "),
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


def _sandbox_state(profile: Profile) -> dict[str, Any] | None:
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


def start_capture(ex: Any, sc: Scenario, profile: Profile, out: Path, keylog: Path) -> Any:
    """tcpdump on the target for the servers and ports of this scenario's steps."""
    cap = new_capture(ex, sc, profile, out, keylog)
    cap.start()
    return cap


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


def _prepared_capture(ex: Any, sc: Scenario, profile: Profile, run_dir: Path) -> Any:
    """The scenario's capture with its wrapper already waiting on the target (Capture.prepare)."""
    out = runfolder.scenario_dir(run_dir, sc.name)
    cap = new_capture(ex, sc, profile, out, out / runfolder.KEYLOG)
    cap.prepare()
    return cap


def _run_one(sc: Scenario, profile: Profile, ex: Any, secret: str, redactor: Redactor,
             run_dir: Path, entry: runfolder.ScenarioEntry, stage: Callable[[str], None], *,
             lang: str = "zh", show_credentials: bool = False) -> None:
    """One scenario from start to end: capture, sessions, analysis; raises its failure."""
    _capture_and_sessions(sc, profile, ex, secret, redactor, run_dir, entry, stage,
                          lang=lang, show_credentials=show_credentials)()


def _capture_and_sessions(sc: Scenario, profile: Profile, ex: Any, secret: str, redactor: Redactor,
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
        _write_transcript(out, sc.name, results)
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
        _write_transcript(out, sc.name, results)
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


def _write_transcript(out: Path, name: str, results: list[Any]) -> None:
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


def _render(run_dir: Path, outcome: RunOutcome, options: RunOptions, progress: Progress, *,
            templates: str | None = None) -> None:
    from labrunner.report import render_report

    progress("rendering the report ...")
    try:
        # One report at a time: a class run renders from several threads, and WeasyPrint's
        # Pango and fontconfig are not documented as thread-safe. Rendering holds the GIL
        # most of the time anyway, so nothing is lost.
        with _RENDER_LOCK:
            res = render_report(run_dir, pdf=options.pdf, lang=options.lang, redact=outcome.redactor,
                                templates_dir=templates)
    except LabError as err:
        outcome.report_error = str(err)
        progress(f"report: failed: {err}")
        return
    outcome.report_html = res.get("html")
    outcome.report_pdf = res.get("pdf")


# --- a class of hosts ----------------------------------------------------------------------


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
    import threading
    from concurrent.futures import ThreadPoolExecutor, wait

    from labrunner.config.load import inventory_profile

    if not lab.inventory:
        raise UsageError(f"{lab.path} has no inventory", hint="add an `inventory:` list (see docs/configuration.md)")
    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: give how many targets run at once, 1 or more")
    progress = options.progress or _stderr_progress
    lock = threading.Lock()
    stop = threading.Event()  # Ctrl-C: each student ends after its current scenario
    options = dataclasses.replace(options, cancel=stop)
    results: dict[int, StudentRun] = {}

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

    def one(index: int, entry: Any) -> None:
        results[index] = _run_student(lab, entry, options, progress, lock, prepared[index])

    interrupted = False
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="student")
    futures = [pool.submit(one, i, e) for i, e in enumerate(lab.inventory)]
    try:
        # wait() with a timeout, so the main thread gets Ctrl-C at once (KeyboardInterrupt only
        # ever reaches the main thread; the students run in the pool's threads).
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.5)
    except KeyboardInterrupt:
        interrupted = True
        with lock:
            progress("interrupted: stopping every student's run after its current scenario "
                     "(captures stopped, finished scenarios kept)")
            for f in futures:
                f.cancel()  # those not started yet never start
            stop.set()
    finally:
        # Even after a second Ctrl-C the threads finish their cleanup: the interpreter joins them.
        pool.shutdown(wait=True, cancel_futures=True)
    students = []
    for i, entry in enumerate(lab.inventory):
        student = results.get(i)
        if student is None:  # never started, or stopped before it had a result
            student = StudentRun(entry.name, _entry_target(entry), error="interrupted before it ran",
                                 interrupted=True)
        students.append(student)
    overview = _write_overview(lab, students)
    return ClassOutcome(overview, students, interrupted=interrupted)


def _entry_target(entry: Any) -> str:
    return entry.target.host or (f"sandbox target {entry.sandbox}" if entry.sandbox else "")


def _run_student(lab: Lab, entry: Any, options: RunOptions, progress: Progress, lock: Any,
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
            # Relative to the overview, so the output folder can be zipped or moved as a whole.
            for key, path in (("report_pdf", outcome.report_pdf), ("report_html", outcome.report_html),
                              ("run", outcome.run_dir)):
                row[key] = os.path.relpath(path, folder) if path else None
        rows.append(row)
    from labrunner.report.overview import review_rows

    review_rows(rows, folder)  # verify each report, flag template text and results of other runs
    doc = {"created": _now(), "lab": str(lab.path), "students": rows}
    runfolder.write_json(folder / "overview.json", doc)
    render_overview(doc, folder / "overview.html")
    runfolder.point_latest(class_dir, folder.name)
    return folder
