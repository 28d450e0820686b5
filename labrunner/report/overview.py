"""The teaching assistant's overview of a class run: one row per student, one column per scenario,
and for each report whether `labrunner verify` finds it matches its captures, whether the
template's placeholder text is still in it, and whether it mixes results of several runs."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from labrunner.runfolder import MANIFEST, read_json, write_bytes_atomic

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
        manifest = read_json(run_dir / MANIFEST)
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict):
        row["template_text"] = template_text(manifest)
        row["mixed_runs"] = mixed_runs(manifest, run_dir.parent)
    row["verify"] = verify_summary(folder / row["report_pdf"] if row.get("report_pdf") else run_dir)


def template_text(manifest: dict[str, Any]) -> list[str]:
    """Where the report still holds the template's placeholder text: scenario names, "reflections"."""
    lang = str(manifest.get("lang") or "zh")
    places = []
    reflections = manifest.get("reflections") or {}
    text = reflections.get(lang) if isinstance(reflections, dict) else reflections
    if any(mark in str(text or "") for mark in TEMPLATE_MARKS):
        places.append("reflections")
    for entry in manifest.get("scenarios") or []:
        notes = (entry.get("notes") or {}).get(lang) if isinstance(entry, dict) else None
        if any(mark in str(notes or "") for mark in TEMPLATE_MARKS):
            places.append(str(entry.get("name")))
    return places


def mixed_runs(manifest: dict[str, Any], output_dir: Path) -> list[str]:
    """The scenarios a report takes from another run, each with that run and its profile when it
    differs from the report's: "pop3: run 20261205-101010 (profile myecs)"."""
    own, profile = str(manifest.get("run_id") or ""), manifest.get("profile")
    out = []
    for entry in manifest.get("scenarios") or []:
        run_id = str(entry.get("run_id") or own) if isinstance(entry, dict) else own
        if run_id == own:
            continue
        text = f"{entry.get('name')}: run {run_id}"
        try:
            other = read_json(output_dir / run_id / MANIFEST).get("profile")
        except (OSError, ValueError, AttributeError):
            other = None
        if other and other != profile:
            text += f" (profile {other}, not {profile})"
        out.append(text)
    return out


def verify_summary(target: Path) -> dict[str, Any]:
    """`labrunner verify` of one report, for a table cell: status ok | differs | unchecked."""
    from labrunner.errors import LabError
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
