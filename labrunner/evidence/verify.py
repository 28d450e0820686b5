"""``labrunner verify REPORT.pdf | RUN_FOLDER``: does the report say what its captures say?

The evidence is what report.pdf carries as attachments (attach.py): the manifest, each
scenario's analysis.json (the data the report was rendered from) and its sanitized capture.
Checked, each difference named:

* every attached file hashes to what the manifest records for it, and the report's appendix
  lists that hash (the PDF's own text);
* each sanitized capture, analysed again here, gives the attached analysis: the same streams,
  dialogues, TLS parameters, mail summaries and statistics, apart from the hidden credential
  bytes. A TLS session that carried a credential has no keys in the sanitized copy: of it the
  handshake, the plain part before STARTTLS and the frames and directions of its decrypted lines
  are checked (their text cannot be);
* every line of the attached analyses' commands and replies is in the PDF's text (the report
  prints each one), so an edit of the report itself shows too.

Exit status: 0 when everything matches, 1 on any difference, 2 when the input is unusable.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrunner.errors import AnalysisError, UsageError
from labrunner.evidence.attach import ANALYSIS, attachment_name, scenario_folders
from labrunner.evidence.sanitize import SANITIZED
from labrunner.runfolder import MANIFEST, read_json, sha256_file
from labrunner.secrets import REDACTED
from labrunner.text import in_language

MAX_PER_SCENARIO = 12  # differences printed per scenario (the count says how many in all)


@dataclass
class Evidence:
    """The files to check, wherever they came from (a PDF's attachments or a run folder)."""

    source: Path
    files: dict[str, Path]  # attachment name -> a file holding its bytes
    pdf_text: str | None  # the PDF's text without whitespace, or None (a folder without report.pdf)


@dataclass
class Result:
    differences: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what matched, one line per scenario
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def ok(self) -> bool:
        return not self.differences


# --- reading the evidence --------------------------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _pdf_text(reader: Any) -> str:
    return _squash("".join(page.extract_text() or "" for page in reader.pages))


@contextlib.contextmanager
def evidence(target: Path) -> Iterator[Evidence]:
    """The evidence of a report.pdf (its attachments, extracted to a temporary folder) or of a
    run folder (its own files); UsageError when there is none."""
    target = Path(target)
    if target.is_dir():
        run_dir = target
        if not (run_dir / MANIFEST).is_file():
            raise UsageError(f"{target}: no {MANIFEST} here: not a run folder",
                             hint="give a report.pdf or a folder output/<run-id> written by labrunner run")
        files = {MANIFEST: run_dir / MANIFEST}
        _, folders = scenario_folders(run_dir)
        for name, folder in folders.items():
            for file in (ANALYSIS, SANITIZED):
                if (folder / file).is_file():
                    files[attachment_name(name, file)] = folder / file
        text = None
        if (run_dir / "report.pdf").is_file():
            text = _pdf_text(_reader(run_dir / "report.pdf"))
        yield Evidence(target, files, text)
        return
    reader = _reader(target)
    try:
        attached = reader.attachments
        names = list(attached)
    except Exception as exc:  # pypdf on a damaged name tree
        raise UsageError(f"{target}: cannot read the PDF's attachments: {exc}") from None
    if MANIFEST not in names:
        raise UsageError(f"{target}: this PDF carries no evidence (no attached {MANIFEST})",
                         hint="reports carry their captures since labrunner 0.x (issue 16); "
                              "render it again with `labrunner report`, or give the run folder")
    with tempfile.TemporaryDirectory(prefix="labrunner-verify-") as tmp:
        files = {}
        for i, name in enumerate(names):
            data = attached[name]
            if len(data) != 1:
                raise UsageError(f"{target}: the attachment {name!r} is there {len(data)} times")
            path = Path(tmp) / f"{i:03d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
            path.write_bytes(data[0])
            files[name] = path
        yield Evidence(target, files, _pdf_text(reader))


def _reader(path: Path) -> Any:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        return PdfReader(str(path))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="give a report.pdf or a run folder") from None
    except (PdfReadError, OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable PDF ({exc})", hint="give a report.pdf or a run folder") from None


def _json(path: Path, where: Path) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: {path.name} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: {path.name} is not a JSON object")
    return doc


# --- comparing an analysis with the analysis of its capture ------------------------------------

_HIDDEN = re.compile(re.escape(REDACTED))


def _same_text(a: str, b: str) -> bool:
    """Equal, apart from hidden values: «redacted» on one side stands for the other side's
    X filler (a secret form the sanitizer overwrote) or for what the other side shows."""
    if a == b:
        return True
    for x, y in ((a, b), (b, a)):
        if REDACTED in x:
            parts = [re.escape(p) for p in _HIDDEN.split(x)]
            if re.fullmatch("[^\n]*?".join(parts), y):
                return True
    return False


_SKIP = {"redacted"}  # (whether a line was redacted follows from its text)


def _compare(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key in _SKIP:
                continue
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in the {'capture' if key in b else 'report'}")
                continue
            _compare(a[key], b[key], f"{where}.{key}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} in the report, {len(b)} in the capture")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _compare(x, y, f"{where}[{i}]", out)
    elif isinstance(a, str) and isinstance(b, str):
        if not _same_text(a, b):
            out.append(f"{where}: the report says {_short(a)}, the capture {_short(b)}")
    elif a != b or type(a) is not type(b):
        out.append(f"{where}: the report says {_short(a)}, the capture {_short(b)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 90 else text[:87] + "…"


_TLS_VISIBLE = ("version", "cipher_suite", "cipher_suite_id", "sni", "client_hello", "server_hello",
                "server_key_exchange")
_TLS_CERT = ("certificate", "chain", "suite_parts")  # (TLS 1.3: the certificate is encrypted)
_STREAM_SAME = ("index", "protocol", "security", "client", "server", "start", "end", "first_frame", "last_frame",
                "syn_seen", "fin_seen", "stats")


def compare_analyses(report: dict[str, Any], capture: dict[str, Any]) -> tuple[list[str], int, int]:
    """Differences between the report's analysis and that of its sanitized capture; also the
    number of dialogue lines checked in full and of lines inside keyless TLS (frame and
    direction only)."""
    out: list[str] = []
    checked = unreadable = 0
    cap_a = {k: v for k, v in (report.get("capture") or {}).items() if k not in ("file", "tshark", "decryption")}
    cap_b = {k: v for k, v in (capture.get("capture") or {}).items() if k not in ("file", "tshark", "decryption")}
    _compare(cap_a, cap_b, "capture", out)
    _compare(report.get("stats"), capture.get("stats"), "stats", out)
    _compare(report.get("notes"), capture.get("notes"), "notes", out)
    ra, rb = report.get("streams") or [], capture.get("streams") or []
    if len(ra) != len(rb):
        out.append(f"streams: {len(ra)} in the report, {len(rb)} in the capture")
    for a, b in zip(ra, rb, strict=False):
        where = f"stream {a.get('index')}"
        ta, tb = a.get("tls") or {}, b.get("tls") or {}
        if not (ta.get("decrypted") and tb and not tb.get("decrypted")):
            _compare(a, b, where, out)
            checked += len(a.get("dialogue") or [])
            continue
        # keys withheld (the session carried a credential): what a passive observer sees
        for key in _STREAM_SAME:
            if key == "protocol" and b.get(key) in ("TLS", "other"):
                continue  # on an unusual port only the decrypted bytes said which protocol it is
            _compare(a.get(key), b.get(key), f"{where}.{key}", out)
        for key in _TLS_VISIBLE + (_TLS_CERT if tb.get("certificate_visible") else ()):
            _compare(ta.get(key), tb.get(key), f"{where}.tls.{key}", out)
        da, db = a.get("dialogue") or [], b.get("dialogue") or []
        plain = next((i + 1 for i, e in enumerate(da) if e.get("kind") == "tls"), 0)
        _compare(da[:plain], db[:plain], f"{where}.dialogue", out)
        checked += plain
        runs = [(e.get("dir"), e.get("first_frame"), e.get("frame")) for e in db[plain:] if e.get("kind") == "tls"]
        for i, e in enumerate(da[plain:], plain):
            unreadable += 1
            if not any(d == e.get("dir") and lo <= e.get("frame", -1) <= hi for d, lo, hi in runs):
                out.append(f"{where}.dialogue[{i}]: {_short(e.get('text'))} at frame {e.get('frame')} "
                           f"({e.get('dir')}): the capture has no encrypted data from that side there")
    return out, checked, unreadable


# --- the whole check ------------------------------------------------------------------------


def verify(target: Path, *, progress: Callable[[str], None] | None = None) -> Result:
    """Check the report (or run folder) ``target``; UsageError when it carries no evidence."""
    from labrunner.analysis import analyze

    result = Result()
    with evidence(target) as ev:
        manifest = _json(ev.files[MANIFEST], ev.source)
        entries = [e for e in manifest.get("scenarios") or [] if isinstance(e, dict) and e.get("name")]
        if not entries:
            raise UsageError(f"{ev.source}: the manifest lists no scenario: nothing to verify")
        known = {MANIFEST} | {attachment_name(str(e["name"]), f) for e in entries for f in (ANALYSIS, SANITIZED)}
        for name in ev.files:
            if name not in known:
                result.differences.append(f"{name}: attached, but the manifest has no such scenario")
        if ev.pdf_text is not None:
            for name, path in ev.files.items():
                if sha256_file(path) not in ev.pdf_text:
                    result.differences.append(f"{name}: its SHA-256 is not the one the report's appendix lists")
        run_id = str(manifest.get("run_id") or "")
        if (manifest.get("report") or {}).get("show_credentials"):
            result.differences.append("the report shows the credentials (report.show_credentials: true), so its "
                                      "analyses are not attached and it cannot be checked")
            return result
        for entry in entries:
            name = str(entry["name"])
            if progress:
                progress(f"{name}: checking ...")
            _scenario(entry, ev, result, analyze)
            if entry.get("run_id") and str(entry["run_id"]) != run_id:
                result.notes.append(f"{name}: the result of run {entry['run_id']}, reused in run {run_id}")
    return result


def _not_in_text(doc: dict[str, Any], text: str) -> Iterator[tuple[str, str]]:
    """The dialogue lines of ``doc`` (commands, replies, AUTH lines; ASCII, as the report prints
    them unchanged) that the PDF's text lacks: the report shows every one, in section 4 or in
    appendix A."""
    for st in doc.get("streams") or []:
        for i, e in enumerate(st.get("dialogue") or []):
            if e.get("kind") not in ("command", "reply", "auth"):
                continue
            for line in str(e.get("text") or "").split("\n"):
                if line.isascii() and len(line) >= 4 and REDACTED not in line and _squash(line) not in text:
                    yield f"stream {st.get('index')}.dialogue[{i}]", line


def _scenario(entry: dict[str, Any], ev: Evidence, result: Result, analyze: Callable[..., Any]) -> None:
    name = str(entry["name"])
    recorded = entry.get("files") or {}
    paths = {f: ev.files.get(attachment_name(name, f)) for f in (ANALYSIS, SANITIZED)}
    for file, path in paths.items():
        if path is None:
            continue
        want = (recorded.get(file) or {}).get("sha256")
        if not want:
            result.differences.append(f"{name}/{file}: the manifest records no SHA-256 for it")
        elif sha256_file(path) != want:
            result.differences.append(f"{name}/{file}: its SHA-256 is not the one the manifest records")
    analysis_path, capture_path = paths[ANALYSIS], paths[SANITIZED]
    if analysis_path is None and capture_path is None:
        if "analysis.json" in recorded:
            result.differences.append(f"{name}: the manifest lists an analysis, but the evidence has none")
        else:
            result.notes.append(f"{name}: no capture, nothing to check ({entry.get('status')})")
        return
    if analysis_path is None or capture_path is None:
        missing = ANALYSIS if analysis_path is None else SANITIZED
        result.differences.append(f"{name}: {missing} is missing, so the report cannot be checked against a capture")
        return
    try:
        report_doc = _json(analysis_path, ev.source)
    except UsageError as exc:  # a damaged analysis: the report cannot be checked against it
        result.differences.append(f"{name}/{ANALYSIS}: {exc}")
        return
    try:
        again = analyze(capture_path, lang=str(report_doc.get("lang") or "zh"))
    except AnalysisError as exc:  # the capture itself is bad: a difference, not a crash
        result.differences.append(f"{name}/{SANITIZED}: cannot be analysed: {exc}")
        return
    if report_doc.get("schema") == 1:  # written in one language, before the analysis said things in both
        again = in_language(again, str(report_doc.get("lang") or "zh"))
    diffs, checked, unreadable = compare_analyses(report_doc, again)
    theirs, ours = (report_doc.get("capture") or {}).get("tshark"), (again.get("capture") or {}).get("tshark")
    if diffs and theirs != ours:
        result.notes.append(f"{name}: the report was analysed with tshark {theirs}, this check with tshark {ours}: "
                            "some differences may come from the versions")
    for d in diffs[:MAX_PER_SCENARIO]:
        result.differences.append(f"{name}: {d}")
    if len(diffs) > MAX_PER_SCENARIO:
        result.differences.append(f"{name}: … and {len(diffs) - MAX_PER_SCENARIO} more differences")
    # (the lines of the protocols as sent: what the analysis words itself is left out, in Chinese)
    absent = list(_not_in_text(in_language(report_doc, "zh"), ev.pdf_text)) if ev.pdf_text is not None else []
    for where, line in absent[:MAX_PER_SCENARIO]:
        result.differences.append(f"{name}: {where}: {_short(line)} is not in the PDF's text")
    if len(absent) > MAX_PER_SCENARIO:
        result.differences.append(f"{name}: … and {len(absent) - MAX_PER_SCENARIO} more lines not in the PDF")
    if not diffs and not absent:
        text = f"{name}: {len(report_doc.get('streams') or [])} connection(s), {checked} dialogue line(s) match"
        if unreadable:
            text += f"; {unreadable} line(s) inside TLS that carried a credential: frames and sides match"
        result.checked.append(text)
