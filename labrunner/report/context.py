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
from pathlib import Path
from typing import Any

from markupsafe import Markup

from labrunner import __version__
from labrunner.errors import ReportError, UsageError
from labrunner.report.i18n import LANGS, catalogue, fmt
from labrunner.report.scrub import scrub_lines
from labrunner.report.streams import APPENDIX_LINES, EVENT_CHARS, Counter, as_dict, build_stream, cut, join, num
from labrunner.runfolder import sha256_file
from labrunner.secrets import Redactor

STATUS_KEYS = {"passed", "failed", "interrupted", "skipped", "running"}


# --- small helpers ----------------------------------------------------------------------


def _pick(value: Any, lang: str) -> str:
    """A text that is either a plain string or {"zh": ..., "en": ...}; other language as fallback."""
    if value is None:
        return ""
    if isinstance(value, dict):
        other = "en" if lang == "zh" else "zh"
        return str(value.get(lang) or value.get(other) or "")
    return str(value)


def _load_json(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, reason) when the file is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: {exc}"


def _markdown(text: str) -> Markup:
    from markdown_it import MarkdownIt

    # html=False: the student's raw HTML is shown as text, never interpreted
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return Markup(md.render(text))


# --- the builder ----------------------------------------------------------------------------


def build_context(
    run_dir: Path, *, lang: str | None = None, redact: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Everything the templates need, from one finished run folder (no network)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    manifest, problem = _load_json(manifest_path)
    if manifest is None:
        if problem == "missing":
            raise UsageError(f"{run_dir} is not a run folder: it has no manifest.json",
                             hint="give a run id or folder from `ls output/`")
        raise ReportError(f"cannot read {manifest_path}: {problem}",
                          hint="the run did not finish writing it; run the experiment again")
    if not isinstance(manifest, dict):
        raise ReportError(f"{manifest_path}: expected a JSON object")

    lang = lang or str(manifest.get("lang") or "zh")
    if lang not in LANGS:
        raise UsageError(f"unknown report language {lang!r}", hint="use --lang zh or --lang en")
    t = catalogue(lang)
    counter = Counter()
    output_dir = run_dir.parent

    def text(value: Any) -> str:
        s = _pick(value, lang)
        return redact(s) if redact is not None and s else s

    report = manifest.get("report") or {}
    student = report.get("student") or {}
    meta = {
        "school": text(report.get("school")),
        "course": text(report.get("course")),
        "lab": text(report.get("lab")),
        "student": text(student.get("name")),
        "student_id": text(student.get("id")),
        "class": text(student.get("class")),
        "date": text(report.get("date")) or str(manifest.get("started") or "")[:10],
        "run_id": str(manifest.get("run_id") or run_dir.name),
        "profile": text(manifest.get("profile")),
    }

    entries = [e for e in manifest.get("scenarios") or [] if isinstance(e, dict)]
    environment = _environment(manifest, t, counter)
    scenarios = [_scenario(e, i, output_dir, run_dir, lang, t, counter, text, redact)
                 for i, e in enumerate(entries, 1)]
    history = _history(output_dir, run_dir.name)
    for sc in scenarios:
        if not sc["attempts"]:
            sc["attempts"] = _attempts(history.get(sc["name"], []), sc["run_id"], redact)

    objectives = [text(o) for o in (manifest.get("objectives") or {}).get(lang, []) or []]
    if not objectives:
        other = (manifest.get("objectives") or {}).get("en" if lang == "zh" else "zh") or []
        objectives = [text(o) for o in other]

    summary_table = counter.next_table()
    reflections_by_lang = manifest.get("reflections")
    if isinstance(reflections_by_lang, dict):  # {zh, en}: the report's language, else the other
        reflections = text(reflections_by_lang.get(lang) or reflections_by_lang.get("en" if lang == "zh" else "zh"))
    else:
        reflections = text(reflections_by_lang)
    captures_table = counter.next_table()  # appendix B comes before C
    tools_table = counter.next_table()
    return {
        "lang": lang,
        "t": t,
        "meta": meta,
        "title": meta["lab"] or t["report_title"],
        "objectives": objectives,
        "environment": environment,
        "scenarios": scenarios,
        "problems": _problems(scenarios, t),
        "summary_table": summary_table,
        "reflections_html": _markdown(reflections) if reflections else None,
        "tools": _tools(manifest, t),
        "captures": [f"{sc['folder']}/{f['name']}" for sc in scenarios for f in sc["files"]
                     if f["name"].endswith(".pcapng") and f["mode"] is not None],
        "tools_table": tools_table,
        "captures_table": captures_table,
        "generated_by": fmt(t["generated_by"], version=__version__, run=meta["run_id"]),
        "fonts": {"serif": "Noto Serif CJK SC", "sans": "Noto Sans CJK SC", "mono": "Noto Sans Mono CJK SC"},
    }


def _environment(manifest: dict[str, Any], t: dict[str, str], counter: Counter) -> dict[str, Any]:
    target = manifest.get("target") or {}
    missing = t["not_captured"]
    addresses = target.get("addresses") or []
    rows = [
        (t["env_host"], target.get("label") or missing),
        (t["env_hostname"], target.get("hostname") or missing),
        (t["env_os"], target.get("os") or missing),
        (t["env_kernel"], target.get("kernel") or missing),
        (t["env_addresses"], join(addresses) or missing),
    ]
    tools = target.get("tools") or {}
    rows += [(name, version or missing) for name, version in sorted(tools.items())]
    local = sorted(((manifest.get("local") or {}).get("tools") or {}).items())
    target_table = counter.next_table()
    local_table = counter.next_table()
    return {
        "captured": bool(target),
        "target_rows": rows,
        "local_rows": [(name, version or missing) for name, version in local],
        "target_table": target_table,
        "local_table": local_table,
        "intro": fmt(t["env_intro"], ref=fmt(t["tab_ref"], n=target_table),
                     ref2=fmt(t["tab_ref"], n=local_table)),
    }


def _tools(manifest: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str, str]]:
    rows = [(name, t["where_target"], str(v)) for name, v in
            sorted(((manifest.get("target") or {}).get("tools") or {}).items())]
    rows += [(name, t["where_local"], str(v)) for name, v in
             sorted(((manifest.get("local") or {}).get("tools") or {}).items())]
    return rows


def _status(entry: dict[str, Any], t: dict[str, str]) -> tuple[str, str]:
    status = str(entry.get("status") or "unknown")
    key = status if status in STATUS_KEYS else "unknown"
    return key, t[f"status_{key}"]


def _steps(transcript: Any, t: dict[str, str]) -> list[str]:
    steps = transcript.get("steps") if isinstance(transcript, dict) else None
    out = []
    for step in steps or []:
        if not isinstance(step, dict):
            continue
        server = step.get("host") or step.get("server") or t["not_captured"]
        if step.get("host") and step.get("server"):
            server = f"{step['server']} ({step['host']})"
        out.append(fmt(t["step_line"], kind=str(step.get("kind") or "?").upper(), server=server,
                       port=step.get("port") or t["not_captured"],
                       security=step.get("security") or t["not_captured"]))
    return out


def _transcript_lines(transcript: Any, redact: Callable[[str], str] | None,
                      t: dict[str, str]) -> list[dict[str, Any]]:
    """The client-side record (docs/transcript.md: steps[].events) as {step, dir, text, time} rows.

    Capped (APPENDIX_LINES rows, EVENT_CHARS per row): a real mailbox can make this huge, and
    WeasyPrint's time grows with every line.
    """
    steps = transcript.get("steps") if isinstance(transcript, dict) else None
    rows: list[dict[str, Any]] = []
    for n, step in enumerate(steps or [], 1):
        if not isinstance(step, dict):
            continue
        events = step.get("events") or step.get("lines") or []
        raw = [{"dir": str(x.get("dir") or ""), "text": str(x.get("text", "")), "time": x.get("time")}
               for x in events if isinstance(x, dict)]
        for line in scrub_lines(raw, redact):
            line["step"] = n
            line["text"] = cut(line["text"], EVENT_CHARS, t)
            rows.append(line)
        if step.get("error"):
            err = str(step["error"])
            rows.append({"step": n, "dir": "!", "text": redact(err) if redact else err, "time": None})
    if len(rows) > APPENDIX_LINES:
        total = len(rows)
        rows = rows[:APPENDIX_LINES]
        rows.append({"step": "…", "dir": "", "text": fmt(t["rows_left_out"], n=total - APPENDIX_LINES), "time": None})
    return rows


def _in_language(analysis: Any, folder: Path, lang: str, redact: Callable[[str], str] | None) -> Any:
    """The analysis with its explanations in ``lang``.

    analysis.json holds one language (the run's). For a report in the other one the capture is
    analysed again, locally with tshark (no network) and in memory; if that is not possible the
    stored document is used, and its explanations stay in the language they were written in.
    """
    if not isinstance(analysis, dict) or analysis.get("lang") in (None, lang):
        return analysis
    capture = folder / "capture.pcapng"
    if not capture.is_file():
        return analysis
    try:
        from labrunner.analysis import analyze
    except ImportError:
        return analysis
    from labrunner.errors import LabError

    try:
        return analyze(capture, lang=lang, redactor=redact if isinstance(redact, Redactor) else None)
    except (LabError, OSError):
        return analysis


def _client_certificates(transcript: Any) -> dict[int, list[dict[str, Any] | None]]:
    """Server port → the certificate the client received on each connection there, in order.

    TLS 1.3 hides the certificate from a capture; the client saw it. The n-th connection to a
    port in the transcript is the n-th stream to that port in the capture (both in the order
    the connections were opened).
    """
    found: dict[int, list[dict[str, Any] | None]] = {}
    steps = transcript.get("steps") if isinstance(transcript, dict) else None
    for step in steps or []:
        for conn in (step.get("connections") or []) if isinstance(step, dict) else []:
            if not isinstance(conn, dict) or not isinstance(conn.get("port"), int):
                continue
            tls = conn.get("tls")
            cert = tls.get("peer_certificate") if isinstance(tls, dict) else None
            found.setdefault(conn["port"], []).append(cert if isinstance(cert, dict) else None)
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


def _files(entry: dict[str, Any], folder: Path, t: dict[str, str]) -> list[dict[str, Any]]:
    recorded = entry.get("files") or {}
    names = list(recorded)
    rows = []
    for name in names:
        path = folder / name
        info = recorded.get(name) or {}
        row: dict[str, Any] = {"name": name, "path": path, "sha256": info.get("sha256"),
                               "size": info.get("size"), "mode": None}
        if not path.is_file():
            row["check"], row["ok"] = t["check_missing"], False
        else:
            row["mode"] = f"{stat.S_IMODE(path.stat().st_mode):04o}"
            if not row["sha256"]:
                row["sha256"] = sha256_file(path)
                row["check"], row["ok"] = t["check_unknown"], True
            elif sha256_file(path) == row["sha256"]:
                row["check"], row["ok"] = t["check_ok"], True
            else:
                row["check"], row["ok"] = t["check_bad"], False
            if row["size"] is None:
                row["size"] = path.stat().st_size
            if name.endswith((".pcapng", ".pcap", ".txt")) and row["mode"] != "0600":
                # a capture holds the plaintext AUTH exchange: it must stay private
                row["check"], row["ok"] = fmt(t["check_mode"], mode=row["mode"]), False
        rows.append(row)
    return rows


def _scenario(entry: dict[str, Any], index: int, output_dir: Path, run_dir: Path, lang: str,
              t: dict[str, str], counter: Counter, text: Callable[[Any], str],
              redact: Callable[[str], str] | None) -> dict[str, Any]:
    name = str(entry.get("name") or f"scenario-{index}")
    folder = output_dir / entry["dir"] if entry.get("dir") else run_dir / name
    status_key, status_text = _status(entry, t)
    title = text(entry.get("title")) or name
    run_id = str(entry.get("run_id") or run_dir.name)
    transcript, _ = _load_json(folder / "transcript.json")
    analysis, analysis_problem = _load_json(folder / "analysis.json")
    analysis = _in_language(analysis, folder, lang, redact)
    capture = entry.get("capture") or {}
    notes = text(entry.get("notes"))
    sc: dict[str, Any] = {
        "name": name,
        "index": index,
        "anchor": f"sc-{index}",
        "title": title,
        "objective": text(entry.get("objective")),
        "section": fmt(t["lab_section"], s=entry["section"]) if entry.get("section") else "",
        "status": status_key,
        "status_text": status_text,
        "error": text(entry.get("error")) or None,
        "hint": text(entry.get("hint")) or None,
        "reused": fmt(t["reused"], run=run_id) if entry.get("reused") or run_id != run_dir.name else "",
        "run_id": run_id,
        "duration": num(entry.get("duration"), 2) or t["not_captured"],
        "frames": entry.get("frames") if entry.get("frames") is not None else t["not_captured"],
        "capture": {
            "interface": capture.get("interface") or t["not_captured"],
            "filter": capture.get("filter") or t["not_captured"],
            "packets": capture.get("packets") if capture.get("packets") is not None else t["not_captured"],
        } if capture else None,
        "steps": _steps(transcript, t),
        "notes_html": _markdown(notes) if notes else None,
        "attempts": entry.get("attempts") or [],
        "files": _files(entry, folder, t),
        "folder": f"{output_dir.name}/{entry.get('dir') or run_dir.name + '/' + name}",
        "transcript": _transcript_lines(transcript, redact, t) if transcript is not None else None,
        "analysis_note": None,
        "capture_info": None,
        "streams": [],
    }
    if analysis is None:
        sc["analysis_note"] = (t["no_analysis"] if analysis_problem == "missing"
                               else fmt(t["bad_analysis"], err=analysis_problem))
        return sc
    streams = analysis.get("streams") if isinstance(analysis, dict) else None
    if not isinstance(streams, list):
        sc["analysis_note"] = fmt(t["bad_analysis"], err="analysis.json has no list of streams")
        return sc
    if not streams:
        sc["analysis_note"] = t["no_streams"]
    cap = as_dict(analysis.get("capture"))
    decryption = str(cap.get("decryption") or "")
    sc["capture_info"] = {
        "decryption": t.get(f"decryption_{decryption}", decryption or t["not_captured"]),
        "notes": [text(n) for n in analysis.get("notes") or [] if n],
    }
    shown = [s for s in streams if isinstance(s, dict)]
    certs = _stream_certificates(shown, _client_certificates(transcript))
    sc["streams"] = [build_stream(s, t, counter, text, redact, c) for s, c in zip(shown, certs, strict=True)]
    return sc


def _history(output_dir: Path, upto: str) -> dict[str, list[dict[str, Any]]]:
    """Each scenario's results in the earlier runs of this output folder, oldest first.

    A result counts in the run that produced it (its run_id), not in runs that reused it.
    """
    from labrunner.runfolder import runs

    found: dict[str, list[dict[str, Any]]] = {}
    for folder in runs(output_dir):
        if folder.name > upto:
            break
        manifest, _ = _load_json(folder / "manifest.json")
        for e in (manifest or {}).get("scenarios") or [] if isinstance(manifest, dict) else []:
            if isinstance(e, dict) and e.get("name") and e.get("run_id") == folder.name:
                found.setdefault(str(e["name"]), []).append(
                    {"run_id": folder.name, "status": e.get("status"), "error": e.get("error"), "hint": e.get("hint")})
    return found


def _attempts(history: list[dict[str, Any]], result_run: str,
              redact: Callable[[str], str] | None) -> list[dict[str, Any]]:
    """The runs of one scenario up to the one whose result the report shows."""
    upto = [h for h in history if h["run_id"] <= result_run]
    if not any(h["status"] in ("failed", "interrupted") for h in upto):
        return []
    for h in upto:
        if redact is not None and h.get("error"):
            h["error"] = redact(str(h["error"]))
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
