"""The run folder's manifest.json as the run builds it (records of ``runfolder/records.py``):
the new manifest, one entry per scenario, the results carried over from earlier runs, the
scenarios a Ctrl-C left out, and each scenario's attempts."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labrunner import runfolder
from labrunner.config.model import Lab, Profile, Scenario
from labrunner.errors import LabError
from labrunner.run.outcome import RunOutcome, ScenarioOutcome, now


def new_manifest(lab: Lab, profile: Profile, run_id: str, lang: str) -> runfolder.Manifest:
    meta = lab.report
    text = runfolder.Text.of

    def both(value: Any) -> runfolder.Text:
        return runfolder.Text(zh=value.zh, en=value.en)

    return runfolder.Manifest(
        run_id=run_id, started=now(), ended=None, profile=profile.name, lang=lang,
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
            built = sb.load_state(instance).created
    return runfolder.Origin(profile=profile.name, target=profile.target.host, sandbox=instance, built=built)


def _lines(text: str) -> list[str]:
    return [line.strip().lstrip("-*· ").strip() for line in text.splitlines() if line.strip()]


def carry_over(lab: Lab, manifest: runfolder.Manifest, run_dir: Path, ran: list[Scenario], *,
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


def record_attempts(manifest: runfolder.Manifest, output_dir: Path) -> None:
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


def not_run(manifest: runfolder.Manifest, run_dir: Path, selected: list[Scenario], outcome: RunOutcome) -> None:
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
        entry = scenario_entry(sc, manifest, outcome.redactor)
        entry.status, entry.duration = "interrupted", 0.0
        # in its place: before the first entry of a scenario selected after it
        at = next((k for k, e in enumerate(entries) if later.get(e.name, -1) > i), len(entries))
        entries.insert(at, entry)


def scenario_entry(sc: Scenario, manifest: runfolder.Manifest,
                    redact: Callable[[str], str] | None = None) -> runfolder.ScenarioEntry:
    from labrunner.report.words import clean_entry

    text = runfolder.Text
    entry = runfolder.ScenarioEntry(
        name=sc.name, section=sc.section,
        title=text(zh=sc.title.zh, en=sc.title.en),
        objective=text(zh=sc.objective.zh, en=sc.objective.en),
        notes=text(zh=sc.notes.zh, en=sc.notes.en),
        status="running", run_id=manifest.run_id, dir=sc.name, started=now(), origin=manifest.origin,
    )
    clean_entry(entry, redact)  # title, objective, notes: redacted before any file holds them
    return entry
