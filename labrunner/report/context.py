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

import base64
import binascii
import json
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from markupsafe import Markup

from labrunner import __version__
from labrunner.errors import ReportError, UsageError
from labrunner.report import figures
from labrunner.report.i18n import LANGS, catalogue, fmt
from labrunner.runfolder import sha256_file
from labrunner.secrets import REDACTED, Redactor

# Section 4 shows the start of each dialogue; the appendix shows all of it, up to this many
# lines per stream (a mailbox FETCH can be thousands of lines, and WeasyPrint slows down on
# very long tables).
DIALOGUE_SHOWN = 40
APPENDIX_LINES = 1500
ENTRY_LINES = 4  # lines of one multi-line reply shown in section 4 (the appendix has all)
LINE_CHARS = 300  # of one line in section 4
EVENT_CHARS = 4000  # of one transcript entry in the appendix (a whole message body can be one)

STATUS_KEYS = {"passed", "failed", "interrupted", "skipped", "running"}


class _Counter:
    """Figure and table numbers, assigned in document order so the text can cite them."""

    def __init__(self) -> None:
        self.figure = 0
        self.table = 0

    def next_figure(self) -> int:
        self.figure += 1
        return self.figure

    def next_table(self) -> int:
        self.table += 1
        return self.table


# --- credentials ----------------------------------------------------------------------

_PASS_PROMPT_B64 = {"UGFzc3dvcmQ6", "cGFzc3dvcmQ6", "UGFzc3dvcmQ"}
_SMTP_AUTH_PLAIN = re.compile(r"^(\s*AUTH\s+PLAIN\s+)\S+", re.IGNORECASE)
_POP_PASS = re.compile(r"^(\s*PASS\s+).+$", re.IGNORECASE)
_TSHARK_PASS = re.compile(r"^(\s*Pass(?:word)?:\s*).+$", re.IGNORECASE)
_IMAP_LOGIN = re.compile(r"^(\s*\S+\s+LOGIN\s+(?:\"(?:[^\"\\]|\\.)*\"|\S+)\s+).+$", re.IGNORECASE)
_BASIC_AUTH = re.compile(r"((?:Proxy-)?Authorization:\s*Basic\s+)\S+", re.IGNORECASE)
_AUTH_START = re.compile(r"^\s*(?:\S+\s+)?(?:AUTH|AUTHENTICATE)\s+(PLAIN|LOGIN)\s*$", re.IGNORECASE)


def _asks_password(server_text: str) -> bool:
    """A SASL challenge ("334 <b64>" or "+ <b64>") that decodes to a password prompt."""
    # a pipelined reply can put the challenge after other lines: "250 ok\n334 UGFzc3dvcmQ6"
    parts = server_text.strip().rsplit("\n", 1)[-1].split()
    if len(parts) < 2 or parts[0] not in ("334", "+"):
        return False
    blob = parts[1]
    if blob in _PASS_PROMPT_B64:
        return True
    try:
        decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return False
    return "password" in decoded.lower()


def scrub_lines(lines: list[dict[str, Any]], redact: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """A copy of a dialogue with every password-bearing client line redacted.

    Works on shapes, not on the secret: the report is rendered offline, where the secret is
    not known. ``redact`` (a :class:`labrunner.secrets.Redactor`) is applied on top when the
    caller has the secret.
    """
    out: list[dict[str, Any]] = []
    expect_password = False  # the next client line answers a password prompt
    plain_pending = False  # AUTH PLAIN without an initial response: the next client line is the blob
    for line in lines:
        text = str(line.get("text", ""))
        if redact is not None:
            text = redact(text)
        direction = line.get("dir")
        if direction == "C":
            first = text.split("\n", 1)[0]
            if expect_password or plain_pending:
                label = _TSHARK_PASS.match(first)
                text = (label.group(1) if label else "") + REDACTED
            else:
                for pattern in (_SMTP_AUTH_PLAIN, _POP_PASS, _TSHARK_PASS, _IMAP_LOGIN):
                    if pattern.match(first):
                        text = pattern.sub(lambda m: m.group(1) + REDACTED, first)
                        break
                text = _BASIC_AUTH.sub(lambda m: m.group(1) + REDACTED, text)
            start = _AUTH_START.match(first)
            plain_pending = bool(start and start.group(1).upper() == "PLAIN")
            expect_password = False
        elif direction == "S":
            expect_password = _asks_password(text)
            if text.strip().rsplit("\n", 1)[-1].split(" ", 1)[0] not in ("334", "+"):
                plain_pending = False
        copy = dict(line)
        copy["text"] = text
        out.append(copy)
    return out


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


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _num(value: Any, digits: int = 3) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _join(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


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
    counter = _Counter()
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
    reflections = text(manifest.get("reflections"))
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


def _environment(manifest: dict[str, Any], t: dict[str, str], counter: _Counter) -> dict[str, Any]:
    target = manifest.get("target") or {}
    missing = t["not_captured"]
    addresses = target.get("addresses") or []
    rows = [
        (t["env_host"], target.get("label") or missing),
        (t["env_hostname"], target.get("hostname") or missing),
        (t["env_os"], target.get("os") or missing),
        (t["env_kernel"], target.get("kernel") or missing),
        (t["env_addresses"], _join(addresses) or missing),
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
            line["text"] = _cut(line["text"], EVENT_CHARS, t)
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


def _client_certificates(transcript: Any) -> dict[int, dict[str, Any]]:
    """Server port → the certificate the client received there (TLS 1.3 hides it from a capture)."""
    found: dict[int, dict[str, Any]] = {}
    steps = transcript.get("steps") if isinstance(transcript, dict) else None
    for step in steps or []:
        for conn in (step.get("connections") or []) if isinstance(step, dict) else []:
            tls = conn.get("tls") if isinstance(conn, dict) else None
            cert = tls.get("peer_certificate") if isinstance(tls, dict) else None
            if isinstance(cert, dict) and isinstance(conn.get("port"), int):
                found.setdefault(conn["port"], cert)
    return found


def _port(endpoint: str) -> int | None:  # "ip:port"
    head, _, port = endpoint.rpartition(":")
    return int(port) if head and port.isdigit() else None


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
              t: dict[str, str], counter: _Counter, text: Callable[[Any], str],
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
        "duration": _num(entry.get("duration"), 2) or t["not_captured"],
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
    cap = _dict(analysis.get("capture"))
    decryption = str(cap.get("decryption") or "")
    sc["capture_info"] = {
        "decryption": t.get(f"decryption_{decryption}", decryption or t["not_captured"]),
        "notes": [text(n) for n in analysis.get("notes") or [] if n],
    }
    certs = _client_certificates(transcript)
    sc["streams"] = [_stream(s, lang, t, counter, text, redact, certs) for s in streams if isinstance(s, dict)]
    return sc


def _cut(text: str, limit: int, t: dict[str, str]) -> str:
    return text if len(text) <= limit else text[:limit] + fmt(t["more_chars"], n=len(text) - limit)


def _first_lines(text: str, count: int, t: dict[str, str]) -> str:
    lines = [_cut(line, LINE_CHARS, t) for line in text.split("\n")]
    if len(lines) <= count:
        return "\n".join(lines)
    return "\n".join(lines[:count]) + "\n" + fmt(t["more_lines"], n=len(lines) - count)


def _endpoint(value: Any, missing: str) -> str:
    """"ip:port" from docs/analysis.md's {"ip", "port"} (a plain string is taken as it is)."""
    if isinstance(value, dict) and value.get("ip"):
        ip = str(value["ip"])
        ip = f"[{ip}]" if ":" in ip else ip
        return f"{ip}:{value['port']}" if value.get("port") is not None else ip
    return str(value) if value else missing


def _stream(stream: dict[str, Any], lang: str, t: dict[str, str], counter: _Counter,
            text: Callable[[Any], str], redact: Callable[[str], str] | None,
            client_certs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    missing = t["not_captured"]
    protocol = str(stream.get("protocol") or "TCP").upper()
    client = _endpoint(stream.get("client"), missing)
    server = _endpoint(stream.get("server"), missing)
    raw = [d for d in stream.get("dialogue") or [] if isinstance(d, dict)]
    lines = []
    for d in scrub_lines(raw, redact):
        lines.append({
            "dir": d.get("dir") if d.get("dir") in ("C", "S") else "?",
            "kind": str(d.get("kind") or ""),
            "frame": d.get("frame", ""),
            "time": _num(d.get("time"), 4) or "",
            "seconds": d.get("time") if isinstance(d.get("time"), int | float) else None,
            "text": d["text"],
            "short": _first_lines(d["text"], ENTRY_LINES, t),
            "explanation": text(d.get("explanation")),
        })
    shown = lines[:DIALOGUE_SHOWN]
    notes = [text(n) for n in stream.get("notes") or [] if n]
    if stream.get("dialogue_truncated"):
        notes.append(t["dialogue_capped"])
    st: dict[str, Any] = {
        "protocol": protocol,
        "client": client,
        "server": server,
        "security": str(stream.get("security") or ""),
        "title": fmt(t["stream_title"], protocol=protocol, client=client, server=server),
        "notes": notes,
        "lines": lines,
        "shown": shown,
        "truncated": (fmt(t["truncated"], shown=len(shown), total=len(lines))
                      if len(lines) > len(shown) else ""),
        "appendix_lines": lines[:APPENDIX_LINES],
        # the appendix repeats a dialogue only when section 4 did not show all of it
        "in_appendix": len(lines) > len(shown) or any(x["short"] != x["text"] for x in shown),
        "appendix_truncated": (fmt(t["truncated"], shown=APPENDIX_LINES, total=len(lines))
                               if len(lines) > APPENDIX_LINES else ""),
        "dialogue_table": None, "sequence_figure": None, "sequence_svg": None,
        "tls": None, "mails": [], "stats": None, "timing": None,
    }
    if lines:
        st["dialogue_table"] = counter.next_table()
        st["dialogue_caption"] = fmt(t["tab_dialogue"], protocol=protocol, client=client, server=server)
        st["sequence_figure"] = counter.next_figure()
        st["sequence_caption"] = fmt(t["fig_sequence"], protocol=protocol, client=client, server=server)
        st["sequence_svg"] = figures.sequence_diagram(
            _with_handshake(shown, stream.get("tls"), complete=len(shown) == len(lines)),
            client_label=f"{t['client']} {client}", server_label=f"{t['server']} {server}",
            uid=f"seq{st['sequence_figure']}", frame_label=t["col_frame"])
        st["dialogue_intro"] = fmt(t["dialogue_intro"], ref=fmt(t["tab_ref"], n=st["dialogue_table"]),
                                   ref2=fmt(t["fig_ref"], n=st["sequence_figure"]))
    tls = stream.get("tls")
    if isinstance(tls, dict):
        number = counter.next_table()
        server_info = stream.get("server")
        port = server_info.get("port") if isinstance(server_info, dict) else _port(server)
        messages = [m for m in tls.get("messages") or tls.get("handshake") or [] if isinstance(m, dict)]
        st["tls"] = {"table": number, "rows": _tls_rows(tls, t, client_certs.get(port) if port else None, text),
                     "caption": fmt(t["tab_tls"], server=server),
                     "handshake": _merge_by_frame(messages),
                     "intro": fmt(t["tls_intro"], ref=fmt(t["tab_ref"], n=number))}
    mails = stream.get("mail")
    if isinstance(mails, dict):  # an older single-message shape
        mails = [mails]
    for mail in mails if isinstance(mails, list) else []:
        if not isinstance(mail, dict):
            continue
        number = counter.next_table()
        st["mails"].append({"table": number, "rows": _mail_rows(mail, t, text),
                            "caption": fmt(t["tab_mail"], frame=mail.get("frame", missing)),
                            "intro": fmt(t["mail_intro"], ref=fmt(t["tab_ref"], n=number))})
    stats = stream.get("stats")
    if isinstance(stats, dict) and stats:
        rows = _stats_rows(stats, t)
        if rows:
            st["stats"] = {"table": counter.next_table(), "rows": rows}
    bars = figures.reply_times(lines)
    if bars:
        number = counter.next_figure()
        st["timing"] = {"figure": number, "svg": figures.timing_chart(bars, unit=t["ms"]),
                        "caption": fmt(t["fig_timing"], client=client, server=server),
                        "intro": fmt(t["timing_intro"], ref=fmt(t["fig_ref"], n=number))}
    return st


def _merge_by_frame(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Handshake messages of one frame and direction as one entry, as Wireshark's Info column shows them."""
    merged: list[dict[str, Any]] = []
    for m in messages:
        text = str(m.get("message", ""))
        if merged and merged[-1]["frame"] == m.get("frame") and merged[-1]["dir"] == m.get("dir"):
            merged[-1]["message"] += ", " + text
            continue
        merged.append({"frame": m.get("frame"), "dir": m.get("dir"), "message": text,
                       "time": _num(m.get("time"), 4) or ""})
    return merged


def _with_handshake(lines: list[dict[str, Any]], tls: Any, *, complete: bool) -> list[dict[str, Any]]:
    """The dialogue with the TLS handshake messages put in by frame number, for the diagram.

    Messages that share a frame and a direction become one arrow, as Wireshark lists them in
    one row; when the dialogue is cut, only messages up to its last frame are added.
    """
    messages = [m for m in _dict(tls).get("messages") or [] if isinstance(m, dict)
                and isinstance(m.get("frame"), int) and m.get("dir") in ("C", "S")]
    if not messages:
        return lines
    last = max((x["frame"] for x in lines if isinstance(x.get("frame"), int)), default=0)
    arrows = [{"dir": m["dir"], "frame": m["frame"], "kind": "tls", "text": m["message"], "time": m["time"]}
              for m in _merge_by_frame(messages) if complete or m["frame"] <= last]
    merged = lines + arrows
    # sorted() is stable: a handshake arrow sharing a frame with a dialogue line comes after it
    return sorted(merged, key=lambda x: x["frame"] if isinstance(x.get("frame"), int) else last)


def _stats_rows(stats: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, label in (("packets", "stat_packets"), ("frames", "stat_frames"), ("bytes", "stat_bytes")):
        if _num(stats.get(key)):
            rows.append((t[label], str(_num(stats.get(key)))))
    payload = stats.get("payload_bytes")
    if isinstance(payload, dict):
        for side, label in (("C", "stat_client_bytes"), ("S", "stat_server_bytes")):
            if _num(payload.get(side)):
                rows.append((t[label], str(_num(payload.get(side)))))
    for key, label in (("retransmissions", "stat_retransmissions"), ("duplicate_acks", "stat_duplicate_acks"),
                       ("out_of_order", "stat_out_of_order"), ("lost_segments", "stat_lost_segments")):
        if _num(stats.get(key)) is not None:
            rows.append((t[label], str(_num(stats.get(key)))))
    rtt = stats.get("rtt")
    if isinstance(rtt, dict) and all(isinstance(rtt.get(k), int | float) for k in ("min", "avg", "max")):
        rows.append((t["stat_rtt"], fmt(t["stat_rtt_value"], min=f"{rtt['min'] * 1000:.3f}",
                                         avg=f"{rtt['avg'] * 1000:.3f}", max=f"{rtt['max'] * 1000:.3f}",
                                         n=rtt.get("samples", "?"))))
    if _num(stats.get("duration"), 4):
        rows.append((t["stat_duration"], str(_num(stats.get("duration"), 4))))
    return rows


def _cert_rows(cert: dict[str, Any], t: dict[str, str], suffix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, label in (("subject", "tls_cert_subject"), ("issuer", "tls_cert_issuer"),
                       ("not_before", "tls_cert_not_before"), ("not_after", "tls_cert_not_after"),
                       ("sans", "tls_cert_sans"), ("san", "tls_cert_sans"), ("sha256", "tls_cert_sha256")):
        if cert.get(key):
            rows.append((t[label] + suffix, _join(cert[key])))
    bits = cert.get("key_bits") or cert.get("key_size")
    if cert.get("key_type"):
        key = str(cert["key_type"]) + (f" {bits}" if bits else "")
        rows.append((t["tls_cert_key"] + suffix, key + (f" ({cert['curve']})" if cert.get("curve") else "")))
    return rows


def _tls_rows(tls: dict[str, Any], t: dict[str, str], client_cert: dict[str, Any] | None,
              text: Callable[[Any], str]) -> list[tuple[str, str]]:
    missing = t["not_captured"]
    suite = str(tls.get("cipher_suite") or missing)
    if tls.get("cipher_suite_id"):
        suite += f" ({tls['cipher_suite_id']})"
    rows: list[tuple[str, str]] = [(t["tls_version"], str(tls.get("version") or missing)),
                                   (t["tls_cipher_suite"], suite)]
    parts = tls.get("suite_parts")
    if isinstance(parts, dict) and parts.get("explanation"):
        rows.append((t["tls_suite_explained"], text(parts["explanation"])))
    hello, ske = _dict(tls.get("server_hello")), _dict(tls.get("server_key_exchange"))
    group = hello.get("key_share_group") or ske.get("curve") or tls.get("group")
    if group:
        rows.append((t["tls_group"], str(group)))
    rows.append((t["tls_sni"], str(tls.get("sni") or missing)))
    alpn = tls.get("alpn_chosen") or tls.get("alpn")
    if alpn:
        rows.append((t["tls_alpn"], _join(alpn)))
    offered = _dict(tls.get("client_hello"))
    if offered.get("supported_versions"):
        rows.append((t["tls_offered_versions"], _join(offered["supported_versions"])))
    if offered.get("cipher_suites"):
        rows.append((t["tls_offered_suites"], fmt(t["tls_n_suites"], n=len(offered["cipher_suites"]))))
    if _num(tls.get("round_trips")):
        rows.append((t["tls_round_trips"], str(tls["round_trips"])))
    if _num(tls.get("handshake_duration"), 4):
        rows.append((t["tls_handshake_time"], f"{tls['handshake_duration'] * 1000:.1f} {t['ms']}"))
    cert = tls.get("certificate")
    if isinstance(cert, dict) and cert:
        rows += _cert_rows(cert, t)
    elif tls.get("certificate_visible") is False or "1.3" in str(tls.get("version") or ""):
        rows.append((t["tls_certificate"], t["tls_cert_encrypted"]))
        if client_cert:
            # the capture cannot show it, but the client recorded what it received
            rows += _cert_rows(client_cert, t, t["tls_client_side"])
    else:
        rows.append((t["tls_certificate"], missing))
    if tls.get("decrypted") is not None:
        rows.append((t["tls_decrypted"], t["yes"] if tls["decrypted"] else t["no"]))
    if tls.get("alert"):
        rows.append((t["tls_alert"], str(tls["alert"])))
    return rows


def _mail_rows(mail: dict[str, Any], t: dict[str, str], text: Callable[[Any], str]) -> list[tuple[str, str]]:
    rows = []
    for key, label in (("envelope_from", "mail_envelope_from"), ("envelope_to", "mail_envelope_to"),
                       ("from", "mail_from"), ("to", "mail_to"), ("cc", "mail_cc"), ("subject", "mail_subject"),
                       ("subject_raw", "mail_subject_raw"), ("date", "mail_date"),
                       ("message_id", "mail_message_id"), ("size", "mail_size")):
        value = mail.get(key)
        if value in (None, "", []):
            if key in ("from", "to", "subject"):
                rows.append((t[label], t["not_captured"]))
            continue
        if key == "subject_raw" and value == mail.get("subject"):
            continue
        rows.append((t[label], text(_join(value))))
    parts = []
    for p in mail.get("parts") or []:
        if isinstance(p, dict):
            extra = [str(p[k]) for k in ("charset", "encoding") if p.get(k)]
            if p.get("size") is not None:
                extra.append(fmt(t["n_bytes"], n=p["size"]))
            parts.append(f"{p.get('content_type') or '?'}" + (f" ({', '.join(extra)})" if extra else ""))
        else:
            parts.append(str(p))
    if parts:
        rows.append((t["mail_parts"], text("; ".join(parts))))
    files = []
    for a in mail.get("attachments") or []:
        if isinstance(a, dict):
            size = fmt(t["n_bytes"], n=a["size"]) if a.get("size") is not None else ""
            files.append(f"{a.get('filename') or '?'} ({', '.join(x for x in (a.get('content_type'), size) if x)})")
        else:
            files.append(str(a))
    if files:
        rows.append((t["mail_attachments"], text("; ".join(files))))
    if mail.get("truncated"):
        rows.append((t["mail_truncated"], t["yes"]))
    return rows


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
