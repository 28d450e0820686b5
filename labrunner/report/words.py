"""The student's own words in a report: cover data, objectives, reflections, each scenario's notes.

They come from the project (lab.yaml's ``report:`` and each scenario file) through the loaded
config model, and are cleaned before anything keeps them: every form of the account secret the
caller knows (``redact``, a :class:`labrunner.secrets.Redactor`) and every credential-shaped
part (:func:`labrunner.report.scrub.scrub_text`) become «redacted». A run writes them into
manifest.json; ``labrunner report`` reads them again from the project, so notes edited after a
run reach the report, and lays them over the manifest's copies (:func:`overlay`). A handed-in
folder without its project renders the manifest's copies, cleaned again (:func:`from_manifest`).

The words are the manifest's own shape: ``{"report": {...}, "objectives": {lang: [lines]},
"reflections": {lang: text}, "scenarios": {name: {"title", "objective", "notes"}}}``. Every
field of :class:`ReportMeta` comes through (a field added there is in the manifest with no
change here): a :class:`Text` as ``{"zh", "en"}``, the student as ``{"name", "id", "class"}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from labrunner.config.model import ReportMeta, Scenario, Student, Text
from labrunner.report.scrub import scrub_text

Redact = Callable[[str], str]
# ReportMeta fields that are settings, not words: the manifest keeps what the run wrote.
_SETTINGS = ("lang", "templates", "show_credentials")
# The cover data are under "report" in the manifest; every other text of ReportMeta is a section
# the student writes (objectives, reflections, problems ...), a top-level key of the manifest.
COVER = ("school", "course", "lab", "student", "date")
SECTIONS = tuple(f.name for f in dataclasses.fields(ReportMeta)
                 if f.name not in COVER and isinstance(getattr(ReportMeta(), f.name), Text))
SCENARIO_KEYS = ("title", "objective", "notes")


def cleaner(redact: Redact | None) -> Redact:
    """Known secret forms first (a secret may look like anything), then credential shapes."""
    def clean(text: str) -> str:
        return scrub_text(redact(text) if redact is not None else text)
    return clean


def _value(value: Any, clean: Redact) -> Any:
    if isinstance(value, Text):
        return {"zh": clean(value.zh), "en": clean(value.en)}
    if isinstance(value, Student):
        return {"name": _value(value.name, clean), "id": _value(value.id, clean), "class": _value(value.klass, clean)}
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, tuple | list):
        return [_value(v, clean) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name), clean) for f in dataclasses.fields(value)}
    return value


def objective_lines(text: str) -> list[str]:
    return [line.strip().lstrip("-*· ").strip() for line in text.splitlines() if line.strip()]


def meta_words(meta: ReportMeta, redact: Redact | None) -> dict[str, Any]:
    """The ``report`` part of the words (cover data) and each section (``objectives`` as a list
    of lines per language, ``reflections``, ``problems`` ... as {zh, en}), cleaned."""
    clean = cleaner(redact)
    words: dict[str, Any] = {"report": {
        f.name: _value(getattr(meta, f.name), clean) for f in dataclasses.fields(meta)
        if f.name not in _SETTINGS and f.name not in SECTIONS}}
    for name in SECTIONS:
        words[name] = _value(getattr(meta, name), clean)
    words["objectives"] = {lang: [clean(x) for x in objective_lines(meta.objectives.get(lang))]
                           for lang in ("zh", "en")}
    return words


def scenario_words(sc: Scenario, redact: Redact | None) -> dict[str, Any]:
    """A scenario's title, objective and notes, cleaned: the words of its manifest entry."""
    clean = cleaner(redact)
    return {key: _value(getattr(sc, key), clean) for key in SCENARIO_KEYS}


def project_words(meta: ReportMeta, scenarios: Iterable[Scenario], redact: Redact | None) -> dict[str, Any]:
    return {**meta_words(meta, redact), "scenarios": {sc.name: scenario_words(sc, redact) for sc in scenarios}}


def _clean_tree(value: Any, clean: Redact) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_clean_tree(v, clean) for v in value]
    if isinstance(value, dict):
        return {k: _clean_tree(v, clean) for k, v in value.items()}
    return value


def from_manifest(manifest: dict[str, Any], redact: Redact | None) -> dict[str, Any]:
    """The words a manifest holds, cleaned again (an older labrunner wrote them as typed)."""
    clean = cleaner(redact)
    report = manifest.get("report")
    words: dict[str, Any] = {
        "report": {k: _clean_tree(v, clean) for k, v in report.items() if k not in _SETTINGS}
        if isinstance(report, dict) else {},
        "scenarios": {},
    }
    for key in SECTIONS:
        if key in manifest:
            words[key] = _clean_tree(manifest[key], clean)
    entries = manifest.get("scenarios")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            words["scenarios"][entry["name"]] = {k: _clean_tree(entry[k], clean) for k in SCENARIO_KEYS if k in entry}
    return words


def overlay(manifest: dict[str, Any], words: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``manifest`` with ``words`` laid over its copies (the manifest is not changed).

    An empty ``date`` keeps the run's date; a scenario the words do not name keeps its own."""
    if not words:
        return manifest
    out = dict(manifest)
    # A part of the manifest that is not what a run writes (hand-edited) stays as it is: the
    # reader reports it, it is not papered over here.
    if isinstance(out.get("report", {}), dict):
        report = dict(out.get("report") or {})
        for key, value in (words.get("report") or {}).items():
            if key == "date" and not value:
                continue
            report[key] = value
        out["report"] = report
    for key in SECTIONS:
        if key in words and isinstance(out.get(key, {}), dict | str):  # {zh, en} or one text for both
            out[key] = words[key]
    by_name = words.get("scenarios") or {}
    if isinstance(out.get("scenarios"), list):  # a damaged manifest is the reader's to report
        out["scenarios"] = [
            {**entry, **by_name[entry["name"]]}
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"] in by_name else entry
            for entry in out["scenarios"]]
    return out


def clean_manifest(manifest: dict[str, Any], redact: Redact | None) -> None:
    """Clean the manifest's words again in place (after something rewrote them from the
    project's raw text, such as the copy of the notes' images)."""
    clean = cleaner(redact)
    for key in SECTIONS:
        if key in manifest:
            manifest[key] = _clean_tree(manifest[key], clean)
    entries = manifest.get("scenarios")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            entry.update({k: _clean_tree(entry[k], clean) for k in SCENARIO_KEYS if k in entry})


def clean_record(manifest: Any, redact: Redact | None) -> None:
    """Clean, in place, the student's words of a typed manifest (runfolder.Manifest): the cover,
    objectives, reflections, problems and each scenario's title, objective and notes."""
    clean = cleaner(redact)

    def text(value: Any) -> Any:
        return dataclasses.replace(value, zh=clean(value.zh), en=clean(value.en))

    report = manifest.report
    student = report.student
    manifest.report = dataclasses.replace(
        report, school=text(report.school), course=text(report.course), lab=text(report.lab),
        student=dataclasses.replace(student, name=text(student.name), id=text(student.id),
                                    klass=text(student.klass)))
    manifest.objectives = {lang: [clean(x) for x in lines] for lang, lines in manifest.objectives.items()}
    manifest.reflections, manifest.problems = text(manifest.reflections), text(manifest.problems)
    for entry in manifest.scenarios:
        clean_entry(entry, redact)


def clean_entry(entry: Any, redact: Redact | None) -> None:
    """Clean, in place, a typed scenario entry's title, objective and notes."""
    clean = cleaner(redact)
    for key in SCENARIO_KEYS:
        value = getattr(entry, key)
        setattr(entry, key, dataclasses.replace(value, zh=clean(value.zh), en=clean(value.en)))
