"""The report context: everything the templates print, built by one function from a run folder.

The templates hold layout only; every sentence comes from the i18n catalogue, and every fact
from the run folder (manifest.json and each scenario's transcript.json and analysis.json).
Where the run did not record something, the context says so ("not captured") instead of
guessing, and a scenario without an analysis (it failed before the capture was analysed)
still gets its section with the error the run recorded.

Passwords: the writers of these files already redact them, and the report redacts again by
shape (the line after "334 UGFzc3dvcmQ6", ``PASS``, ``AUTH PLAIN``, IMAP ``LOGIN`` ...), so a
report cannot leak a password even from a folder written by an older or buggy version.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from labrunner import __version__
from labrunner.errors import UsageError
from labrunner.evidence.attach import evidence_files
from labrunner.evidence.sanitize import SANITIZED
from labrunner.report.connections import (
    APPENDIX_LINES,
    EVENT_CHARS,
    Counter,
    Num,
    as_dict,
    build_stream,
    cut,
    join,
    num,
    scenario_timings,
)
from labrunner.report.i18n import LANGS, catalogue, event_text, fmt, localize
from labrunner.report.images import embed_images
from labrunner.report.pdf import visible
from labrunner.report.scrub import scrub_lines
from labrunner.report.transcript import Step, Transcript
from labrunner.report.words import overlay
from labrunner.runfolder import (
    ANALYSIS,
    CAPTURE,
    KEYLOG,
    MANIFEST,
    TRANSCRIPT,
    Imported,
    Manifest,
    Origin,
    ScenarioEntry,
    Text,
    sha256_file,
)
from labrunner.secrets import Redactor
from labrunner.text import in_language

# --- small helpers ----------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (symlinks resolved) is inside ``root``: a run folder's files only (F13)."""
    return path.resolve().is_relative_to(root.resolve())


def _load_json(path: Path, root: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, reason) when the file is missing, unreadable or outside ``root``."""
    if path.is_symlink() and not _inside(path, root):
        return None, f"{path.name}: a link to a file outside the run folder, not read"
    if path.exists() and not path.is_file():  # a FIFO would block the report for ever
        return None, f"{path.name}: not a file"
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"{path.name}: {type(exc).__name__ if isinstance(exc, RecursionError) else exc}"


def _markdown(text: str) -> Markup:
    from markdown_it import MarkdownIt

    # html=False: the student's raw HTML is shown as text, never interpreted
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return Markup(md.render(text))


# --- the builder ----------------------------------------------------------------------------


def build_context(
    run_dir: Path, *, lang: str | None = None, redact: Callable[[str], str] | None = None,
    allow_mixed: bool = False, words: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the templates need, from one finished run folder (no network).

    A report whose sections came from different labs (profiles, targets or sandbox instances) is
    refused unless ``allow_mixed``: each section then says which run and profile produced it."""
    run_dir = Path(run_dir)
    manifest = Manifest.read(run_dir)
    if words:  # the student's current words (report/words.py), laid over the manifest's copies
        manifest = Manifest.from_json(overlay(manifest.to_json(), words), run_dir / MANIFEST)
    if not allow_mixed:
        _refuse_mixed(manifest)

    lang = lang or manifest.lang or "zh"
    if lang not in LANGS:
        raise UsageError(f"unknown report language {lang!r}", hint="use --lang zh or --lang en")
    t = catalogue(lang)
    counter = Counter()

    def text(value: Text | str | None) -> str:
        s = value.pick(lang) if isinstance(value, Text) else (value or "")
        return redact(s) if redact is not None and s else s

    meta = _meta(manifest, run_dir, text)
    environment = _environment(manifest, t, counter)
    scenarios, sections, walkthrough = _scenarios(manifest, _Render(run_dir, meta["run_id"], lang, t, counter, text,
                                                                    redact))
    other = "en" if lang == "zh" else "zh"
    objectives = [text(o) for o in manifest.objectives.get(lang) or manifest.objectives.get(other) or []]
    summary_table = counter.next_table()
    own_problems = text(manifest.problems)
    reflections = text(manifest.reflections)  # the report's language, else the other
    return {
        "lang": lang,
        "run_lang": manifest.lang or "zh",  # the run's: its report is report.html
        "t": t,
        "meta": meta,
        "title": meta["lab"] or t["report_title"],
        "objectives": objectives,
        "environment": environment,
        "scenarios": scenarios,
        "sections": sections,
        "tls_walkthrough": walkthrough,
        "tls_connections": [st for sc in scenarios for st in sc["streams"] if st["tls"]],
        "mail_tables": [sc for sc in scenarios if any(st["mails"] for st in sc["streams"])],
        "problems": _problems(scenarios, t),
        "problems_html": embed_images(_markdown(own_problems), run_dir) if own_problems else None,
        "summary_table": summary_table,
        "reflections_html": embed_images(_markdown(reflections), run_dir) if reflections else None,
        "tools": _tools(manifest, t),
        "captures": [f"{sc['folder']}/{f['name']}" for sc in scenarios for f in sc["files"]
                     if f["name"].endswith(".pcapng") and f["mode"] is not None],
        "evidence": [{"name": e.name, "size": e.size, "sha256": e.sha256, "kind": t[f"evidence_{e.kind}"]}
                     for e in evidence_files(run_dir)],
        **_appendix_tables(scenarios),
        "generated_by": fmt(t["generated_by"], version=__version__, run=meta["run_id"]),
        "fonts": {"serif": "Noto Serif CJK SC", "sans": "Noto Sans CJK SC", "mono": "Noto Sans Mono CJK SC"},
    }


def _meta(manifest: Manifest, run_dir: Path, text: Callable[[Text | str | None], str]) -> dict[str, str]:
    """The cover's fields: school, course, lab, the student, the date and the run."""
    report = manifest.report
    return {
        "school": text(report.school),
        "course": text(report.course),
        "lab": text(report.lab),
        "student": text(report.student.name),
        "student_id": text(report.student.id),
        "class": text(report.student.klass),
        "date": text(report.date) or (manifest.started or "")[:10],
        "run_id": manifest.run_id or run_dir.name,
        "profile": text(manifest.profile),
    }


def _scenarios(manifest: Manifest, r: _Render) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                         dict[str, Any] | None]:
    """Each scenario's section in the handout's order, the handout's sections 3/4 that group
    them, and the TLS 1.2 walk-through (None without a TLS 1.2 handshake)."""
    entries = _in_handout_order(manifest.scenarios)
    scenarios = [_scenario(e, i, r) for i, e in enumerate(entries, 1)]
    sections = _sections(scenarios, entries, r.t)
    walkthrough = _tls_walkthrough(scenarios, r.t)
    # The earlier runs of each scenario: recorded in the manifest by this version; an older run folder
    # has them only in the manifests of its neighbours in the output folder.
    legacy = manifest.origin is None and not all(e.attempts for e in entries)
    history = _history(r.run_dir.parent, r.run_dir.name) if legacy else {}
    for sc, entry in zip(scenarios, entries, strict=True):
        sc["produced_by"] = fmt(r.t["produced_by"], run=sc["run_id"],
                                profile=_describe(_origin_of(entry, manifest), r.t))
        sc["attempts"] = ([a.to_json() for a in entry.attempts] if entry.attempts
                          else _attempts(history.get(sc["name"], []), sc["run_id"], r.redact))
    _localize_errors(scenarios, r.lang)
    for sc in scenarios:  # the screenshots of the notes, copied into the scenario's folder by the run
        sc["notes_html"] = embed_images(sc["notes_html"], sc["dir_path"])
    return scenarios, sections, walkthrough


def _appendix_tables(scenarios: list[dict[str, Any]]) -> dict[str, Num | None]:
    """The numbers of appendix E's tables (files; capture filters, when a scenario captured),
    F's (tools) and G's (the files this PDF carries)."""
    files_counter = Counter("E")
    captures_table = files_counter.next_table()
    return {
        "captures_table": captures_table,
        "filters_table": files_counter.next_table() if any(sc["capture"] for sc in scenarios) else None,
        "tools_table": Counter("F").next_table(),
        "evidence_table": Counter("G").next_table(),
    }


def _origin_of(entry: ScenarioEntry, manifest: Manifest) -> Origin | None:
    """Which lab produced a section's result (an older manifest knows it only for its own run)."""
    if entry.origin is not None:
        return entry.origin
    if entry.run_id in ("", manifest.run_id):
        return manifest.origin or Origin(profile=manifest.profile)
    return None


def _describe(origin: Origin | None, t: dict[str, str]) -> str:
    if origin is None or not origin.profile:
        return t["not_captured"]
    if not origin.sandbox:
        return origin.profile
    sandbox = fmt(t["produced_built"], sandbox=origin.sandbox, built=origin.built) if origin.built \
        else origin.sandbox
    return fmt(t["produced_sandbox"], profile=origin.profile, sandbox=sandbox)


def _refuse_mixed(manifest: Manifest) -> None:
    """One report, one lab: sections from two profiles, targets or sandbox instances are refused."""
    origins = [(e.name, _origin_of(e, manifest)) for e in manifest.scenarios]
    known = [(name, o) for name, o in origins if o is not None]
    if not any(a.conflicts(b) for _, a in known for _, b in known):
        return
    groups: dict[str, list[str]] = {}
    for name, origin in known:
        groups.setdefault(origin.describe(), []).append(name)
    parts = "; ".join(f"{', '.join(names)} ({where})" for where, names in groups.items())
    raise UsageError(f"this report would mix results of different labs: {parts}",
                     hint="run those scenarios again on one profile (labrunner run -p PROFILE NAME...), "
                          "or render it anyway with --allow-mixed (each section then says where it came from)")


def _environment(manifest: Manifest, t: dict[str, str], counter: Counter) -> dict[str, Any]:
    target = manifest.target
    missing = t["not_captured"]
    rows = [
        (t["env_host"], target.label or missing),
        (t["env_hostname"], target.hostname or missing),
        (t["env_os"], target.os or missing),
        (t["env_kernel"], target.kernel or missing),
        (t["env_addresses"], join(list(target.addresses)) or missing),
    ]
    rows += [(name, version or missing) for name, version in sorted(target.tools.items())]
    rows = [(label, visible(str(value))) for label, value in rows]
    local = sorted(manifest.local_tools.items())
    target_table = counter.next_table()
    local_table = None  # the local tools are listed once, in appendix F
    return {
        "captured": bool(target),
        "target_rows": rows,
        "local_rows": [(name, version or missing) for name, version in local],
        "target_table": target_table,
        "local_table": local_table,
        "intro": fmt(t["env_intro"], ref=fmt(t["tab_ref"], n=target_table)),
    }


def _tools(manifest: Manifest, t: dict[str, str]) -> list[tuple[str, str, str]]:
    rows = [(name, t["where_target"], visible(str(v))) for name, v in sorted(manifest.target.tools.items())]
    rows += [(name, t["where_local"], str(v)) for name, v in sorted(manifest.local_tools.items())]
    return rows


def _steps(transcript: Transcript | None, t: dict[str, str]) -> list[str]:
    """One line per step of the scenario, in the student's words: what kind of session, with
    which server, and how it was protected, with the TLS version and suite it negotiated (what
    tells two HTTPS steps apart)."""
    out = []
    for step in transcript.steps if transcript else []:
        server = step.host or step.server or t["not_captured"]
        if step.host and step.server:
            server = f"{step.server} ({step.host})"
        kind = step.kind
        out.append(fmt(t["step_line"], kind=t.get(f"step_kind_{kind}") or fmt(t["step_kind_other"], kind=kind.upper()),
                       server=server, port=step.port or t["not_captured"],
                       security=t.get(f"security_{step.security}") or step.security or t["not_captured"],
                       negotiated=_negotiated(step, t)))
    return out


def _negotiated(step: Step, t: dict[str, str]) -> str:
    """"(TLS 1.2, ECDHE-RSA-AES128-GCM-SHA256)" as the client recorded its connections, or ""."""
    found: list[str] = []
    for conn in step.connections:
        if not conn.tls_version:
            continue
        version = conn.tls_version.replace("TLSv", "TLS ")  # Python's ssl says "TLSv1.3"
        params = fmt(t["step_negotiated_params"], version=version, cipher=conn.tls_cipher) if conn.tls_cipher \
            else version
        if params not in found:  # redirects open more connections with the same parameters
            found.append(params)
    return fmt(t["step_negotiated"], params=t["step_negotiated_sep"].join(found)) if found else ""


def _transcript_lines(transcript: Transcript, redact: Callable[[str], str] | None,
                      t: dict[str, str]) -> list[dict[str, Any]]:
    """The client-side record (docs/transcript.md: steps[].events) as {step, dir, text, time} rows.

    Capped (APPENDIX_LINES rows, EVENT_CHARS per row): a real mailbox can make this huge, and
    WeasyPrint's time grows with every line.
    """
    rows: list[dict[str, Any]] = []
    for step in transcript.steps:
        raw = [{"dir": x.dir, "text": event_text(x, t["lang"]), "time": x.time} for x in step.events]
        for line, event in zip(scrub_lines(raw, redact), step.events, strict=True):
            line["step"] = step.number
            line["conn"] = event.conn
            line["text"] = visible(cut(line["text"], EVENT_CHARS, t))
            rows.append(line)
        if step.error:
            err = localize(step.error, t["lang"]) or step.error
            rows.append({"step": step.number, "conn": None, "dir": "!", "text": visible(redact(err) if redact else err),
                         "time": None})
    if len(rows) > APPENDIX_LINES:
        total = len(rows)
        rows = rows[:APPENDIX_LINES]
        rows.append({"step": "…", "conn": None, "dir": "", "text": fmt(t["rows_left_out"], n=total - APPENDIX_LINES),
                     "time": None})
    return rows


def _in_language(analysis: Any, folder: Path, lang: str, redact: Callable[[str], str] | None) -> Any:
    """The analysis with what it says (explanations, notes, its own wording) in ``lang``.

    analysis.json holds all of that in both languages (``{"zh", "en"}``, docs/analysis.md): the
    report picks its own, without tshark. A document written before that (schema 1) holds one
    language, the run's; for a report in the other one its capture is analysed again, locally
    and in memory; if that is not possible the stored document is used as it is.
    """
    if not isinstance(analysis, dict):
        return analysis
    if analysis.get("schema") != 1:
        return in_language(analysis, lang)
    if analysis.get("lang") in (None, lang):
        return analysis
    capture = folder / CAPTURE
    if not capture.is_file() or not _inside(capture, folder):
        return analysis
    try:
        from labrunner.analysis import analyze
    except ImportError:
        return analysis
    from labrunner.errors import LabError

    try:
        again = analyze(capture, lang=lang, redactor=redact if isinstance(redact, Redactor) else None)
    except (LabError, OSError):
        return analysis
    return in_language(again, lang)


def _client_certificates(transcript: Transcript | None) -> dict[int, list[dict[str, Any] | None]]:
    """Server port → the certificate the client received on each connection there, in order.

    TLS 1.3 hides the certificate from a capture; the client saw it. The n-th connection to a
    port in the transcript is the n-th stream to that port in the capture (both in the order
    the connections were opened).
    """
    found: dict[int, list[dict[str, Any] | None]] = {}
    for conn in transcript.connections() if transcript else []:
        if conn.port is not None:
            found.setdefault(conn.port, []).append(conn.certificate)
    return found


def _stream_certificates(streams: list[dict[str, Any]],
                         certs: dict[int, list[dict[str, Any] | None]]) -> list[dict[int, dict[str, Any]]]:
    """For each stream (in capture order), {server port: the certificate of its own connection}."""
    seen: dict[int, int] = {}
    out: list[dict[int, dict[str, Any]]] = []
    for stream in streams:
        server = stream.get("server")
        port = server.get("port") if isinstance(server, dict) else None
        mine: dict[int, dict[str, Any]] = {}
        if isinstance(port, int):
            n = seen.get(port, 0)
            seen[port] = n + 1
            listed = certs.get(port) or []
            if n < len(listed) and listed[n] is not None:
                mine[port] = listed[n]  # type: ignore[assignment]
        out.append(mine)
    return out


def _files(entry: ScenarioEntry, folder: Path, run_dir: Path, t: dict[str, str]) -> list[dict[str, Any]]:
    recorded = entry.files
    names = list(recorded)
    # The TLS key log stays beside the capture (which embeds a copy) but the manifest does not
    # list it: a student who deletes the captures before sharing the folder must see it here.
    keylog = KEYLOG not in names and (folder / KEYLOG).is_file()
    if keylog:
        names.append(KEYLOG)
    rows = []
    for name in names:
        path = folder / name
        info = recorded.get(name)
        row: dict[str, Any] = {"name": name, "path": path, "sha256": info.sha256 if info else None,
                               "size": info.size if info else None, "mode": None, "secret": None}
        if path.exists() and not _inside(path, run_dir):
            # a link out of the run folder: never hashed, sized or shown (F13)
            row["check"], row["ok"] = t["check_outside"], False
            rows.append(row)
            continue
        if not path.is_file():
            row["check"], row["ok"] = t["check_missing"], False
        else:
            row["mode"] = f"{stat.S_IMODE(path.stat().st_mode):04o}"
            if not row["sha256"]:
                row["sha256"] = sha256_file(path)
                row["check"], row["ok"] = t["check_private" if name == KEYLOG else "check_unknown"], True
            elif sha256_file(path) == row["sha256"]:
                row["check"], row["ok"] = t["check_ok"], True
            else:
                row["check"], row["ok"] = t["check_bad"], False
            if row["size"] is None:
                row["size"] = path.stat().st_size
            if name.endswith((".pcapng", ".pcap", ".txt")) and row["mode"] != "0600" and name != SANITIZED:
                # a capture holds the plaintext AUTH exchange: it must stay private
                row["check"], row["ok"] = fmt(t["check_mode"], mode=row["mode"]), False
        if name == KEYLOG:
            row["secret"] = t["keylog_note"] if _holds_keys(path) else t["keylog_empty"]
        rows.append(row)
    return rows


def _holds_keys(path: Path) -> bool:
    """Whether a key log has a key line: OpenSSL writes a comment header even when no TLS
    connection follows."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return any(line.strip() and not line.startswith("#") for line in fh)
    except OSError:
        return True  # unreadable: assume the worst


@dataclass(frozen=True)
class _Render:
    """What every scenario's part of the context is built with: the run folder and its run id,
    the report's language and catalogue, the numbering, and the text and redaction functions."""

    run_dir: Path
    run_id: str
    lang: str
    t: dict[str, str]
    counter: Counter
    text: Callable[[Text | str | None], str]
    redact: Callable[[str], str] | None


def _scenario(entry: ScenarioEntry, index: int, r: _Render) -> dict[str, Any]:
    folder, outside = entry.folder(r.run_dir)
    if outside is None:
        transcript = Transcript.from_json(_load_json(folder / TRANSCRIPT, r.run_dir)[0])
        analysis, problem = _load_json(folder / ANALYSIS, r.run_dir)
        analysis = _in_language(analysis, folder, r.lang, r.redact)
    else:  # never read outside the run folder (F13): the section says where the result is
        transcript, analysis, problem = None, None, fmt(r.t["outside_run"], where=outside)
    sc = _scenario_facts(entry, index, folder, outside, transcript, r)
    streams = analysis.get("streams") if isinstance(analysis, dict) else None
    if analysis is None or not isinstance(streams, list):
        t = r.t
        sc["analysis_note"] = (fmt(t["bad_analysis"], err="analysis.json has no list of streams")
                               if analysis is not None else t["no_analysis"] if problem == "missing"
                               else fmt(t["bad_analysis"], err=problem))
        sc["appendix"] = _appendix_blocks(sc, [], [], t)
        return sc
    _add_analysis(sc, analysis, streams, transcript, r)
    return sc


def _scenario_facts(entry: ScenarioEntry, index: int, folder: Path, outside: str | None,
                    transcript: Transcript | None, r: _Render) -> dict[str, Any]:
    """A scenario's section before its analysis: title, status, run, capture, steps, notes,
    files and the client's record."""
    t, text = r.t, r.text
    run_id = entry.run_id or r.run_id
    capture = entry.capture
    notes = text(entry.notes)
    return {
        "name": entry.name,
        "index": index,
        "anchor": f"sc-{index}",
        "title": text(entry.title) or entry.name,
        "objective": text(entry.objective),
        "section": fmt(t["lab_section"], s=entry.section) if entry.section else "",
        "status": entry.status,
        "status_text": t[f"status_{entry.status}"],
        # an error quotes what the server replied: captured text
        "error": visible(text(entry.error)) or None,
        "hint": visible(text(entry.hint)) or None,
        # (by the manifest's run id: the folder may be output/latest, or a renamed copy)
        "reused": fmt(t["reused"], run=run_id) if entry.reused or run_id != r.run_id else "",
        "imported": _imported(entry.imported, t),
        "run_id": run_id,
        "duration": num(entry.duration, 2) or t["not_captured"],
        "frames": entry.frames if entry.frames is not None else t["not_captured"],
        "capture": {
            "interface": capture.interface or t["not_captured"],
            "filter": capture.filter or t["not_captured"],
            "packets": capture.packets if capture.packets is not None else t["not_captured"],
        } if capture else None,
        "steps": _steps(transcript, t),
        "notes_html": _markdown(notes) if notes else None,
        "dir_path": folder,  # where the scenario's files (and its notes' images) are
        "attempts": [],
        "files": _files(entry, folder, r.run_dir, t) if outside is None else [],
        # relative to the run folder, so a copied or renamed folder shows the same
        "folder": folder.name if outside is None else entry.dir,
        "transcript": _transcript_lines(transcript, r.redact, t) if transcript is not None else None,
        "analysis_note": None,
        "capture_info": None,
        "streams": [],
        "timings": None,
        "appendix": [],
    }


def _add_analysis(sc: dict[str, Any], analysis: dict[str, Any], streams: list[Any], transcript: Transcript | None,
                  r: _Render) -> None:
    """The scenario's streams (section 4 and appendices A-D) from its analysis.json."""
    t, index = r.t, sc["index"]
    if not streams:
        sc["analysis_note"] = t["no_streams"]
    decryption = str(as_dict(analysis.get("capture")).get("decryption") or "")
    sc["capture_info"] = {
        "decryption": t.get(f"decryption_{decryption}", decryption or t["not_captured"]),
        "notes": [r.text(n) for n in analysis.get("notes") or [] if n],
    }
    shown = [s for s in streams if isinstance(s, dict)]
    certs = _stream_certificates(shown, _client_certificates(transcript))
    plan = _body_plan(shown, r.counter, sc["title"])
    annex = _annexes(r.counter)
    sc["streams"] = [build_stream(s, t, r.counter, r.text, r.redact, c, number=f"A.{index}.{k}",
                                  appendix=f"A.{index}.{k}", visible=visible, annex=annex["tls"],
                                  mail_annex=annex["mail"], in_body=in_body, featured=featured)
                     for k, (s, c, (in_body, featured, _)) in enumerate(zip(shown, certs, plan, strict=True), 1)]
    for st, (in_body, _, where) in zip(sc["streams"], plan, strict=True):
        st["same_kind"] = "" if in_body else fmt(t["stream_same_kind"], where=where, protocol=st["protocol"],
                                                  ref=st["number"])
    sc["timings"] = scenario_timings(sc["streams"], t, annex["stats"])
    if sc["timings"] and sc["timings"]["stats"]:
        stats = sc["timings"]["stats"]
        stats["intro"] = fmt(t["stats_intro"], ref=fmt(t["tab_ref"], n=stats["table"]))
    sc["appendix"] = _appendix_blocks(sc, shown, _stream_connections(shown, transcript), t)
    for st in sc["streams"]:
        st["full_record"] = fmt(t["full_record"], ref=st["number"]) if st["appendix_anchor"] else ""


def _localize_errors(scenarios: list[dict[str, Any]], lang: str) -> None:
    """The errors and hints the runs recorded, in the report's language (i18n.localize)."""
    for sc in scenarios:
        sc["error"], sc["hint"] = localize(sc["error"], lang), localize(sc["hint"], lang)
        for attempt in sc["attempts"]:
            if isinstance(attempt, dict):
                attempt["error"] = localize(attempt.get("error"), lang)
                attempt["hint"] = localize(attempt.get("hint"), lang)


def _imported(imported: Imported | None, t: dict[str, str]) -> str | None:
    """The line that marks a scenario made of the student's own capture."""
    if imported is None:
        return None
    keylog = imported.keylog
    return visible(fmt(t["imported"], file=imported.capture or "?", sha=str(imported.sha256)[:16],
                       keylog=fmt(t["imported_keylog"], file=keylog) if keylog else ""))


# --- the body/appendix split (issue 15) ---------------------------------------------------------
#
# Section 4 follows the lab handout (4.1 mail client, 4.2 local send/receive, 4.3 web mail,
# 4.4 telnet), each exercise with its dialogues, one sequence diagram per protocol and the
# student's analysis; what repeats per connection (TLS parameters, mail summaries, statistics,
# reply times, capture filters) is in the appendix, numbered there (Table B1, C1, D1 ...).

HANDOUT_SECTIONS = ("4.1", "4.2", "4.3", "4.4")


def _handout_section(entry: ScenarioEntry) -> str:
    """The handout's section 4.x a scenario reproduces ("3.2", its task, counts as 4.2), or ""."""
    label = (entry.section or "").strip()
    head, _, rest = label.partition(".")
    number = f"4.{rest.split('.')[0]}" if head in ("3", "4") and rest else ""
    return number if number in HANDOUT_SECTIONS else ""


def _in_handout_order(entries: list[ScenarioEntry]) -> list[ScenarioEntry]:
    """The scenarios in the order of the handout's sections (stable; beyond the handout last)."""
    def key(entry: ScenarioEntry) -> int:
        section = _handout_section(entry)
        return HANDOUT_SECTIONS.index(section) if section else len(HANDOUT_SECTIONS)
    return sorted(entries, key=key)


def _annexes(counter: Counter) -> dict[str, Counter]:
    """The appendices' own counters (B: TLS, C: mails, D: statistics), kept on the body's."""
    found = getattr(counter, "annexes", None)
    if found is None:
        found = {"tls": Counter("B"), "mail": Counter("C"), "stats": Counter("D")}
        counter.annexes = found  # type: ignore[attr-defined]
    return found


def _stream_kind(stream: dict[str, Any]) -> tuple[str, Any, str, str]:
    tls = as_dict(stream.get("tls"))
    return (str(stream.get("protocol") or "").upper(), as_dict(stream.get("server")).get("port"),
            str(stream.get("security") or ""), str(tls.get("version") or ""))


def _body_plan(streams: list[dict[str, Any]], counter: Counter, title: str) -> list[tuple[bool, bool, str]]:
    """For each stream: whether section 4 shows its dialogue, whether it gets a sequence
    diagram, and (when not shown) the section that showed the same kind of connection.

    A connection of a kind an earlier exercise already showed (the SMTP submission that the
    POP3 and IMAP exercises start with) is left to the appendix, unless it is the exercise's
    only one; the first connection shown gets the exercise's one sequence diagram, the others
    an excerpt of their dialogue."""
    seen: dict[tuple[str, Any, str, str], str] = getattr(counter, "shown_kinds", None) or {}
    counter.shown_kinds = seen  # type: ignore[attr-defined]
    drawn: set[tuple[str, str]] = set()
    plan = []
    mine: dict[tuple[str, Any, str, str], str] = {}
    for stream in streams:
        kind = _stream_kind(stream)
        where = seen.get(kind) or mine.get(kind) or ""
        in_body = not where or len(streams) == 1
        featured = in_body and not drawn
        if featured:
            drawn.add((kind[0], kind[3]))
        if in_body:
            mine.setdefault(kind, title)
        plan.append((in_body, featured, where))
    for kind, where in mine.items():
        seen.setdefault(kind, where)
    return plan


def _sections(scenarios: list[dict[str, Any]], entries: list[ScenarioEntry],
              t: dict[str, str]) -> list[dict[str, Any]]:
    """Sections 3 and 4 as the handout has them: {number, key, title, task, scenarios}; each
    scenario gets its number in the section ("4.1.2") as ``number``."""
    out: list[dict[str, Any]] = []
    for sc, entry in zip(scenarios, entries, strict=True):
        section = _handout_section(entry)
        key = f"handout_{section[2:]}" if section else "handout_extra"
        if not out or out[-1]["key"] != key:
            # the handout's own number, gaps and all, so that 4.3 is the web mail in every report
            number = section[2:] if section else str(len(HANDOUT_SECTIONS) + 1)
            out.append({"number": number, "key": key, "title": t[key], "task": t[key + "_task"],
                        "scenarios": []})
        group = out[-1]
        group["scenarios"].append(sc)
        sc["tls_walkthrough"] = None  # set by _tls_walkthrough for the scenario that has one
        sc["number"] = f"4.{group['number']}.{len(group['scenarios'])}"
        sc["content_number"] = f"3.{group['number']}.{len(group['scenarios'])}"
    return out


def _walk_value(value: Any, t: dict[str, str]) -> str:
    return join(value) if value not in (None, "", []) else t["tls_walk_not_recorded"]


def _tls_walkthrough(scenarios: list[dict[str, Any]], t: dict[str, str]) -> dict[str, Any] | None:
    """The TLS 1.2 handshake message by message (what each carries, from the capture where the
    analysis has it, and why it is sent), then what TLS 1.3 leaves out; for the first TLS 1.2
    connection with a Server Key Exchange (ECDHE), in the scenario that made it."""
    for sc in scenarios:
        st = next((x for x in sc["streams"] if "1.2" in str(as_dict(x.get("tls_raw")).get("version"))
                   and as_dict(x["tls_raw"]).get("server_key_exchange")), None)
        if st is None:
            continue
        tls = as_dict(st["tls_raw"])
        other = [x for s in [sc, *scenarios] for x in s["streams"]
                 if "1.3" in str(as_dict(x.get("tls_raw")).get("version"))]
        sc["tls_walkthrough"] = {"messages": _walk_messages(st, tls, t),
                                 "intro": fmt(t["tls_walk_intro"], stream=st["title"], ref=st["number"]),
                                 "tls13": _walk_tls13(tls, as_dict(other[0]["tls_raw"]) if other else None, t)}
        return sc["tls_walkthrough"]
    return None


def _walk_frames(tls: dict[str, Any], name: str, direction: str | None = None) -> str:
    frames = [str(m.get("frame")) for m in tls.get("messages") or [] if isinstance(m, dict)
              and str(m.get("message")) == name and (direction is None or m.get("dir") == direction)]
    return ", ".join(dict.fromkeys(frames))


def _walk_messages(st: dict[str, Any], tls: dict[str, Any], t: dict[str, str]) -> list[dict[str, Any]]:
    hello = as_dict(tls.get("client_hello"))
    server_hello = as_dict(tls.get("server_hello"))
    ske = as_dict(tls.get("server_key_exchange"))
    cert = as_dict(tls.get("certificate"))
    suites = [str(x) for x in hello.get("cipher_suites") or []]
    sigalgs = [str(x) for x in hello.get("signature_algorithms") or []]
    present = (("server_name", hello.get("sni")), ("supported_groups", hello.get("supported_groups")),
               ("signature_algorithms", sigalgs), ("supported_versions", hello.get("supported_versions")),
               ("application_layer_protocol_negotiation", hello.get("alpn")))
    extensions = [name for name, value in present if value]
    key = " ".join(str(x) for x in (cert.get("key_type"), cert.get("key_size") or cert.get("key_bits")) if x)
    app = [x for x in st["lines"] if x["kind"] not in ("tls", "gap", "note") and x["dir"] in ("C", "S")]
    fields = {
        "suites": _walk_value(suites, t), "n_suites": str(len(suites)),
        "sni": _walk_value(hello.get("sni"), t), "groups": _walk_value(hello.get("supported_groups"), t),
        "n_sigalgs": str(len(sigalgs)), "extensions": _walk_value(extensions, t),
        "version": _walk_value(server_hello.get("version") or tls.get("version"), t),
        "suite": _walk_value(tls.get("cipher_suite"), t), "suite_id": str(tls.get("cipher_suite_id") or ""),
        "subject": _walk_value(cert.get("subject"), t), "issuer": _walk_value(cert.get("issuer"), t),
        "key": key or t["tls_walk_not_recorded"], "not_after": _walk_value(cert.get("not_after"), t),
        "curve": _walk_value(ske.get("curve"), t),
        "sigalg": _walk_value(ske.get("signature_algorithm") or ske.get("sig_alg"), t),
        "request": app[0]["text"].split("\n", 1)[0] if app else t["tls_walk_not_recorded"],
        "response": app[1]["text"].split("\n", 1)[0] if len(app) > 1 else t["tls_walk_not_recorded"],
        "decrypted": t["yes"] if tls.get("decrypted") else t["no"],
    }
    # the values in hex the analysis recorded (an analysis made before them has none: not shown;
    # the curve and the signature algorithm are in the Server Key Exchange's own sentence)
    values = {"Client Hello": [("tls_walk_client_random", hello.get("random"))],
              "Server Hello": [("tls_walk_server_random", server_hello.get("random"))],
              "Server Key Exchange": [("tls_walk_ske_key", ske.get("public_key"))]}
    steps = (
        ("Client Hello", "C", "tls_walk_client_hello"),
        ("Server Hello", "S", "tls_walk_server_hello"),
        ("Certificate", "S", "tls_walk_certificate"),
        ("Server Key Exchange", "S", "tls_walk_ske"),
        ("Server Hello Done", "S", "tls_walk_shd"),
        ("Client Key Exchange", "C", "tls_walk_cke"),
        ("Change Cipher Spec", None, "tls_walk_ccs"),
        ("Finished", None, "tls_walk_finished"),
        ("New Session Ticket", "S", "tls_walk_ticket"),
    )
    out = []
    for name, direction, key_ in steps:
        frames = _walk_frames(tls, name, direction)
        if name == "New Session Ticket" and not frames:
            continue  # optional: the server sends it only when it offers session resumption
        out.append({"name": name, "where": fmt(t["tls_walk_where"], dir=t[f"tls_walk_dir_{direction or 'both'}"],
                                                frames=fmt(t["tls_walk_frames"], frames=frames) if frames
                                                else t["tls_walk_not_seen"]),
                    "carries": fmt(t[key_ + "_carries"], **fields), "why": fmt(t[key_ + "_why"], **fields),
                    "recorded": [{"label": t[k], "value": str(v)} for k, v in values.get(name, ()) if v]})
    data_frames = ", ".join(str(x["frame"]) for x in app[:2] if x["frame"])
    out.append({"name": "Application Data",
                "where": fmt(t["tls_walk_where"], dir=t["tls_walk_dir_both"],
                             frames=fmt(t["tls_walk_frames"], frames=data_frames) if data_frames
                             else t["tls_walk_not_seen"]),
                "carries": fmt(t["tls_walk_app_carries"], **fields), "why": fmt(t["tls_walk_app_why"], **fields),
                "recorded": []})
    return out


def _walk_tls13(tls12: dict[str, Any], tls13: dict[str, Any] | None, t: dict[str, str]) -> dict[str, Any]:
    """What TLS 1.3 leaves out or changes, with the two captured handshakes side by side."""
    def names(tls: dict[str, Any]) -> str:
        seen = [str(m.get("message")) for m in tls.get("messages") or [] if isinstance(m, dict)
                and not str(m.get("message")).startswith("Alert")]
        return " → ".join(seen)
    rows = [t[f"tls_walk_13_{k}"] for k in ("ske", "cke", "ccs", "encrypted", "rtt", "suites")]
    observed = []
    if tls13:
        observed = [fmt(t["tls_walk_13_seen"], version="TLS 1.2", messages=names(tls12),
                        rtt=tls12.get("round_trips") or "?"),
                    fmt(t["tls_walk_13_seen"], version="TLS 1.3", messages=names(tls13),
                        rtt=tls13.get("round_trips") or "?")]
    return {"points": rows, "observed": observed}


def _stream_connections(streams: list[dict[str, Any]], transcript: Transcript | None) -> list[int | None]:
    """For each stream (in capture order), the transcript's connection id of the same TCP
    connection: the n-th connection to a port is the n-th stream to that port (docs/transcript.md)."""
    by_port: dict[int, list[int]] = {}
    for c in transcript.connections() if transcript else []:
        if c.port is not None and c.conn is not None:
            by_port.setdefault(c.port, []).append(c.conn)
    seen: dict[int, int] = {}
    out: list[int | None] = []
    for stream in streams:
        port = as_dict(stream.get("server")).get("port")
        conn = None
        if isinstance(port, int):
            n = seen.get(port, 0)
            seen[port] = n + 1
            listed = by_port.get(port) or []
            conn = listed[n] if n < len(listed) else None
        out.append(conn)
    return out


def _appendix_blocks(sc: dict[str, Any], streams: list[dict[str, Any]], conns: list[int | None],
                     t: dict[str, str]) -> list[dict[str, Any]]:
    """Appendix A.x: the client's transcript, with a heading A.x.k where connection k starts,
    so that section 4 can point at the full record of each connection. A connection section 4
    cut and the transcript does not hold gets the capture's full dialogue instead."""
    blocks = _transcript_blocks(sc, conns)
    headed = {b["k"] for b in blocks if b["k"] is not None}
    for k, st in enumerate(sc["streams"], 1):
        if k in headed and st["left_out"] and st["in_body"]:
            # the client's record holds the same exchanges without frame numbers; the lines
            # section 4 left out follow it as the capture shows them, so each can be found (a
            # connection section 4 does not show at all has its whole record here, nothing more)
            block = next(b for b in blocks if b["anchor"] == st["appendix_anchor"])
            block["extra_note"] = fmt(t["app_left_out"], n=st["left_out"],
                                      ref=fmt(t["tab_ref"], n=st["dialogue_table"]))
            block["extra"] = "\n".join(_capture_line(x) for x in st["omitted_lines"])
        if k in headed or not st["in_appendix"]:
            continue
        st["appendix_anchor"] = f"app-{sc['anchor']}-{k}"
        lines = [_capture_line(x) for x in st["appendix_lines"]]
        if st["appendix_truncated"]:
            lines.append(st["appendix_truncated"])
        blocks.append({"anchor": st["appendix_anchor"], "heading": f"A.{sc['index']}.{k} {st['title']}",
                       "note": fmt(t["app_dialogue_of"], title=st["title"]), "lines": lines})
    for block in blocks:
        block.pop("k", None)
        block["text"] = "\n".join(block.pop("lines"))
        for key in ("note", "extra", "extra_note"):
            block.setdefault(key, "")
    return blocks


def _transcript_blocks(sc: dict[str, Any], conns: list[int | None]) -> list[dict[str, Any]]:
    """The client's record cut where each connection k of the capture starts (``conns``: the
    record's connection id of each stream), with the heading A.x.k; the stream gets its anchor."""
    blocks: list[dict[str, Any]] = []
    number_of = {conn: k for k, conn in enumerate(conns, 1) if conn is not None}
    current: dict[str, Any] | None = None
    for row in sc["transcript"] or []:
        k = number_of.get(row["conn"]) if row["conn"] is not None else None
        if k is not None and all(b["k"] != k for b in blocks):
            st = sc["streams"][k - 1]
            st["appendix_anchor"] = f"app-{sc['anchor']}-{k}"
            current = {"k": k, "anchor": st["appendix_anchor"], "heading": f"A.{sc['index']}.{k} {st['title']}",
                       "lines": []}
            blocks.append(current)
        elif current is None:
            current = {"k": None, "anchor": None, "heading": None, "lines": []}
            blocks.append(current)
        time = f"{row['time']:8.3f}" if isinstance(row["time"], int | float) else " " * 8
        current["lines"].append(f"[{row['step']}] {time} {row['dir']}: {row['text']}")
    return blocks


def _capture_line(x: dict[str, Any]) -> str:
    return f"{x['frame']!s:<6} {x['time']:>8} {x['dir']}: {x['text']}"


def _history(output_dir: Path, upto: str) -> dict[str, list[dict[str, Any]]]:
    """Each scenario's results in the earlier runs of this output folder, oldest first.

    A result counts in the run that produced it (its run_id), not in runs that reused it.
    """
    from labrunner.runfolder import own_results

    found: dict[str, list[dict[str, Any]]] = {}
    for run_id, e in own_results(output_dir, upto=upto):
        found.setdefault(e.name, []).append({"run_id": run_id, "status": e.status, "error": e.error, "hint": e.hint})
    return found


def _attempts(history: list[dict[str, Any]], result_run: str,
              redact: Callable[[str], str] | None) -> list[dict[str, Any]]:
    """The runs of one scenario up to the one whose result the report shows."""
    upto = [h for h in history if h["run_id"] <= result_run]
    if not any(h["status"] in ("failed", "interrupted") for h in upto):
        return []
    for h in upto:
        if h.get("error"):
            # an error quotes the server's reply: captured text
            h["error"] = visible(redact(str(h["error"])) if redact is not None else str(h["error"]))
    return upto


def _problems(scenarios: Iterable[dict[str, Any]], t: dict[str, str]) -> list[dict[str, Any]]:
    """Failures and retries, as the manifests recorded them: nothing here is guessed."""
    problems = []
    for sc in scenarios:
        items: list[str] = []
        solved: str | None = None
        attempts = [a for a in sc["attempts"] if isinstance(a, dict)]
        for i, att in enumerate(attempts):
            if att.get("status") in ("failed", "interrupted"):
                items.append(fmt(t["problem_failed_attempt"], run=att.get("run_id", "?"),
                                 error=att.get("error") or att.get("status")))
                later = [a for a in attempts[i + 1:] if a.get("status") == "passed"]
                if later:
                    solved = fmt(t["problem_solved_by_retry"], run=later[0].get("run_id", "?"))
        if sc["status"] in ("failed", "interrupted") and sc["error"]:
            line = fmt(t["problem_failed_attempt"], run=sc["run_id"], error=sc["error"])
            if line not in items:
                items.append(line)
        elif sc["status"] in ("failed", "interrupted") and not items:
            items.append(fmt(t["problem_failed_attempt"], run=sc["run_id"], error=sc["status_text"]))
        if not items:
            continue
        if sc["status"] != "passed":
            solved = t["problem_unsolved"]
        problems.append({"title": sc["title"], "anchor": sc["anchor"], "lines": items,
                         "hint": sc["hint"], "outcome": solved})
    return problems
