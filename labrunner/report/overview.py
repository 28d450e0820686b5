"""The teaching assistant's overview of a class run: one row per student, one column per scenario,
and for each report whether `labrunner verify` finds it matches its captures, whether the
template's placeholder text is still in it, and whether it mixes results of several runs."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from labrunner.errors import LabError
from labrunner.runfolder import write_bytes_atomic
from labrunner.runfolder.records import Manifest

TEMPLATE = "overview.html"
# the placeholder text of the shipped notes and reflections (as cli's reminder looks for it)
TEMPLATE_MARKS = ("（在此写下", "(Write your")


def render_overview(doc: dict[str, Any], out: Path, *, templates_dir: Path | str | None = None) -> Path:
    from labrunner.report.render import environment

    scenarios: list[str] = []
    for row in doc["students"]:
        for name in row["scenarios"]:
            if name not in scenarios:
                scenarios.append(name)
    html = environment(templates_dir).get_template(TEMPLATE).render(doc=doc, scenarios=scenarios)
    write_bytes_atomic(out, html.encode("utf-8"))
    return out


def review_rows(rows: list[dict[str, Any]], folder: Path) -> None:
    """Add ``verify``, ``template_text`` and ``mixed_runs`` to each row whose run has a folder
    (``run``/``report_pdf`` are relative to ``folder``, where the overview is written)."""
    todo = [row for row in rows if row.get("run")]
    for row in rows:
        row.setdefault("verify", None)
        row.setdefault("template_text", [])
        row.setdefault("mixed_runs", [])
    workers = max(1, min(4, os.cpu_count() or 1, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda row: _review(row, folder), todo))


def _review(row: dict[str, Any], folder: Path) -> None:
    run_dir = folder / row["run"]
    try:
        manifest = Manifest.read(run_dir)
    except LabError:
        manifest = None
    if manifest is not None:
        row["template_text"] = template_text(manifest)
        row["mixed_runs"] = mixed_runs(manifest)
    if row.get("verify") is None:  # a class run's report worker verified it right after rendering it
        row["verify"] = verify_summary(folder / row["report_pdf"] if row.get("report_pdf") else run_dir)


def template_text(manifest: Manifest) -> list[str]:
    """Where the report still holds the template's placeholder text: scenario names, "reflections"."""
    lang = manifest.lang or "zh"
    places = []
    if any(mark in manifest.reflections.pick(lang) for mark in TEMPLATE_MARKS):
        places.append("reflections")
    for entry in manifest.scenarios:
        if any(mark in entry.notes.pick(lang) for mark in TEMPLATE_MARKS):
            places.append(entry.name)
    return places


def mixed_runs(manifest: Manifest) -> list[str]:
    """The scenarios a report takes from another run, each with the lab it came from when that
    is not the report's own: "pop3: run 20261205-101010 (profile myecs, target 10.0.0.5)"."""
    out = []
    for entry in manifest.scenarios:
        if not entry.run_id or entry.run_id == manifest.run_id:
            continue
        text = f"{entry.name}: run {entry.run_id}"
        if entry.origin is not None and manifest.origin is not None and entry.origin.conflicts(manifest.origin):
            text += f" ({entry.origin.describe()}, not {manifest.origin.describe()})"
        elif entry.origin is not None and entry.origin.profile and entry.origin.profile != manifest.profile:
            text += f" (profile {entry.origin.profile}, not {manifest.profile})"
        out.append(text)
    return out


def verify_summary(target: Path) -> dict[str, Any]:
    """`labrunner verify` of one report, for a table cell: status ok | differs | unchecked."""
    from labrunner.evidence.verify import verify

    try:
        res = verify(target)
    except LabError as err:
        return {"status": "unchecked", "text": str(err), "differences": []}
    except Exception as err:  # one report's bug must not cost the overview
        return {"status": "unchecked", "text": f"internal error: {type(err).__name__}: {err}", "differences": []}
    if res.ok:
        return {"status": "ok", "text": f"{len(res.checked)} scenario(s) match their captures",
                "differences": []}
    return {"status": "differs", "text": f"{len(res.differences)} difference(s)", "differences": res.differences}
