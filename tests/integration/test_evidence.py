"""Evidence a teaching assistant can check (issue 16), on one real sandbox run of every scenario:
the sanitized captures hold no form of the password (not even decrypted with the keys they keep)
and give the dialogue the report shows, ours and tshark's; report.pdf carries them; `labrunner
verify` passes on the untouched run and fails on each of three forgeries."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from labfiles import (  # type: ignore[import-not-found]  # same folder
    analyze,  # type: ignore[import-not-found]  # each {zh, en} in the language asked
    cli,
    write_lab,
)

from labrunner.analysis import analyze as analyze_both
from labrunner.evidence import secret_byte_forms
from labrunner.evidence.verify import compare_analyses

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QQ_GREETING = "220 newxmesmtplogicsvrszc10.qq.com XMail Esmtp QQ Mail Server."


@pytest.fixture(scope="module")
def run(sandbox: dict[str, Any], sandbox_instance: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lab = write_lab(tmp_path_factory.mktemp("evidence"), sandbox_instance)
    cli(lab, "run", check=True)
    return (lab.parent / "output" / "latest").resolve()


@pytest.fixture(scope="module")
def forms(sandbox: dict[str, Any]) -> list[bytes]:
    account = sandbox["account"]
    return secret_byte_forms(account["password"], [account["address"], account["user"]])


def _tshark(*args: str) -> str:
    return subprocess.run(["tshark", "-n", *args], capture_output=True, text=True, check=True).stdout


def _follow(path: Path, mode: str, indices: list[int]) -> dict[int, list[tuple[str, bytes]]]:
    """tshark's "Follow stream" of each stream (one tshark): (side, bytes) per turn."""
    args = [a for i in indices for a in ("-z", f"follow,{mode},raw,{i}")]
    turns: dict[int, list[tuple[str, bytes]]] = {}
    current: list[tuple[str, bytes]] = []
    for line in _tshark("-r", str(path), "-q", *args).splitlines():
        text = line.strip()
        if line.startswith("Filter: tcp.stream eq "):
            current = turns.setdefault(int(text.rsplit(" ", 1)[1]), [])
        elif text and not line.startswith(("=", "Follow:", "Filter:", "Node ")):
            current.append(("S" if line.startswith("\t") else "C", bytes.fromhex(text)))
    return turns


def _verify(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", "verify", str(target)], capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_no_form_of_the_password_in_any_sanitized_capture(run: Path, forms: list[bytes]) -> None:
    leaked_before = 0
    for folder in sorted(p for p in run.iterdir() if (p / "capture.pcapng").is_file()):
        data = (folder / "sanitized.pcapng").read_bytes()
        assert (folder / "sanitized.pcapng").stat().st_mode & 0o777 == 0o644
        leaked_before += any(f in (folder / "capture.pcapng").read_bytes() for f in forms)
        assert not [f for f in forms if f in data], folder.name
        doc = json.loads((folder / "analysis.json").read_text("utf-8"))
        tls = [st["index"] for st in doc["streams"] if st["tls"]]
        if tls:  # what the keys it keeps decrypt
            seen = b"".join(d for turns in _follow(folder / "sanitized.pcapng", "tls", tls).values() for _, d in turns)
            assert not [f for f in forms if f in seen], folder.name
    assert leaked_before >= 3  # plain-smtp, telnet-smtp, imap: the originals hold it


def test_the_sanitized_dialogue_is_the_reports_ours_and_tsharks(run: Path) -> None:
    withheld = kept = 0
    for folder in sorted(p for p in run.iterdir() if (p / "capture.pcapng").is_file()):
        report = json.loads((folder / "analysis.json").read_text("utf-8"))
        again = analyze_both(folder / "sanitized.pcapng", lang=report["lang"])  # the document as a run writes it
        diffs, _, _ = compare_analyses(report, again)
        assert diffs == [], folder.name
        indices = [st["index"] for st in report["streams"]]
        follows = {(name, mode): _follow(folder / name, mode, indices)
                   for name in ("capture.pcapng", "sanitized.pcapng") for mode in ("tcp", "tls")}
        for st in report["streams"]:
            i = st["index"]
            before, after = follows["capture.pcapng", "tcp"][i], follows["sanitized.pcapng", "tcp"][i]
            assert [(s, len(d)) for s, d in before] == [(s, len(d)) for s, d in after]
            for (_, x), (_, y) in zip(before, after, strict=True):  # only X where bytes differ
                assert all(b == ord("X") for a, b in zip(x, y, strict=True) if a != b)
            if st["tls"] and st["carries_credentials"]:
                withheld += 1
                assert follows["sanitized.pcapng", "tls"][i] == []
            elif st["tls"]:
                kept += 1
                assert follows["sanitized.pcapng", "tls"][i] == follows["capture.pcapng", "tls"][i] != []
    # every TLS session of the default scenarios carries a credential: the mail logins, and the web
    # mail's session cookie on every page (the kept-keys case: test_evidence_sanitize.py)
    assert withheld >= 6 and kept == 0


_LINE_FIELDS = ("smtp.command_line", "smtp.response", "smtp.auth.username", "smtp.auth.password", "pop.request",
                "pop.response", "imap.line")


def _tshark_lines(path: Path, stream: dict[str, Any]) -> dict[str, list[str]]:
    """The protocol lines tshark's own SMTP/POP/IMAP dissectors read in one plain stream, per side."""
    args = ["-r", str(path), "-Y", f"tcp.stream == {stream['index']}", "-T", "fields", "-E", "occurrence=a",
            "-E", "aggregator=\x1f", "-e", "tcp.srcport"]
    for name in _LINE_FIELDS:
        args += ["-e", name]
    out: dict[str, list[str]] = {"C": [], "S": []}
    for row in _tshark(*args).splitlines():
        port, *values = row.split("\t")
        side = "C" if int(port) == stream["client"]["port"] else "S"
        for value in values:
            out[side] += [v.removesuffix("\\r\\n") for v in value.split("\x1f") if v.strip()]
    return out


def test_tsharks_dialogue_of_the_sanitized_capture_is_ours(run: Path) -> None:
    """Wireshark's SMTP/IMAP dissectors on the sanitized plain streams read the lines our analysis
    shows: every client line, in order, and each server line tshark shows (its SMTP dissector
    shows the first line of a multi-line reply), the hidden values as X."""
    from labrunner.evidence.verify import _same_text

    compared = 0
    for name in ("plain-smtp", "telnet-smtp", "imap"):
        doc = analyze(run / name / "sanitized.pcapng", lang="en")
        for st in doc["streams"]:
            if st["tls"]:
                continue
            theirs = _tshark_lines(run / name / "sanitized.pcapng", st)
            ours = {d: [ln for e in st["dialogue"] if e["dir"] == d and e["kind"] in ("command", "reply", "auth")
                        for ln in e["text"].split("\n")] for d in ("C", "S")}
            assert len(ours["C"]) == len(theirs["C"]), (name, ours["C"], theirs["C"])
            assert all(_same_text(a, b) for a, b in zip(ours["C"], theirs["C"], strict=True)), (name, theirs["C"])
            assert any("XXXX" in line for line in theirs["C"])  # the password, as tshark sees it now
            for line in theirs["S"]:
                assert any(_same_text(o, line) for o in ours["S"]), (name, line)
            compared += len(theirs["C"]) + len(theirs["S"])
    assert compared > 40


def test_the_pdf_carries_the_captures_and_lists_their_hashes(run: Path) -> None:
    from pypdf import PdfReader

    attached = PdfReader(str(run / "report.pdf")).attachments
    text = "".join(subprocess.run(["pdftotext", str(run / "report.pdf"), "-"], capture_output=True, text=True,
                                  check=True).stdout.split())
    names = ["manifest.json"]
    for entry in json.loads((run / "manifest.json").read_text("utf-8"))["scenarios"]:
        names += [f"{entry['name']}.analysis.json", f"{entry['name']}.sanitized.pcapng"]
    assert sorted(attached) == sorted(names)
    for name, (data,) in attached.items():
        scenario, _, file = name.partition(".")
        path = run / (name if name == "manifest.json" else f"{scenario}/{file}")
        assert data == path.read_bytes()
        assert hashlib.sha256(data).hexdigest() in text, name


def test_verify_passes_on_the_untouched_run(run: Path) -> None:
    res = _verify(run / "report.pdf")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DIFF" not in res.stdout and res.stdout.count("ok ") == 6


def _forged_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "output" / run.name
    shutil.copytree(run, copy, symlinks=True)
    return copy


def _rehash(run_dir: Path, scenario: str, file: str) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    entry = next(e for e in manifest["scenarios"] if e["name"] == scenario)
    entry["files"][file]["sha256"] = hashlib.sha256((run_dir / scenario / file).read_bytes()).hexdigest()
    (run_dir / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")


def test_verify_catches_an_edited_greeting_whose_hash_was_updated(run: Path, tmp_path: Path) -> None:
    # the attack of the TA review (D4): edit analysis.json, fix its hash, render the report again
    forged = _forged_copy(run, tmp_path)
    path = forged / "plain-smtp" / "analysis.json"
    doc = json.loads(path.read_text("utf-8"))
    assert doc["streams"][0]["dialogue"][0]["text"].startswith("220 ")
    doc["streams"][0]["dialogue"][0]["text"] = QQ_GREETING
    path.write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
    _rehash(forged, "plain-smtp", "analysis.json")
    res = subprocess.run([sys.executable, "-m", "labrunner", "report", str(forged)], capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    res = _verify(forged / "report.pdf")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "DIFF  plain-smtp: stream 0.dialogue[0].text" in res.stdout and "qq.com" in res.stdout


def test_verify_catches_an_edited_manifest_hash(run: Path, tmp_path: Path) -> None:
    forged = _forged_copy(run, tmp_path)
    (forged / "report.pdf").unlink()  # the folder alone: only the hash can tell
    manifest = json.loads((forged / "manifest.json").read_text("utf-8"))
    entry = next(e for e in manifest["scenarios"] if e["name"] == "telnet-smtp")
    entry["files"]["analysis.json"]["sha256"] = "0" * 64
    (forged / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    res = _verify(forged)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "DIFF  telnet-smtp/analysis.json: its SHA-256 is not the one the manifest records" in res.stdout


def test_verify_catches_a_swapped_capture(run: Path, tmp_path: Path) -> None:
    # another SMTP session's capture in place of plain-smtp's, its hash updated in the manifest
    forged = _forged_copy(run, tmp_path)
    (forged / "report.pdf").unlink()
    shutil.copy(forged / "telnet-smtp" / "sanitized.pcapng", forged / "plain-smtp" / "sanitized.pcapng")
    _rehash(forged, "plain-smtp", "sanitized.pcapng")
    res = _verify(forged)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "DIFF  plain-smtp:" in res.stdout and "SHA-256" not in res.stdout


def test_verify_on_unusable_input_says_so_with_status_2(run: Path, tmp_path: Path) -> None:
    (tmp_path / "not.pdf").write_text("hello")
    res = _verify(tmp_path / "not.pdf")
    assert res.returncode == 2 and "not a readable PDF" in res.stderr and "Traceback" not in res.stderr


def test_the_class_overview_verifies_the_report_and_flags_template_text(run: Path, tmp_path: Path) -> None:
    from labrunner.report.overview import review_rows

    rows = [{"run": str(run), "report_pdf": str(run / "report.pdf")}]
    review_rows(rows, tmp_path)
    assert rows[0]["verify"]["status"] == "ok", rows[0]["verify"]
    assert rows[0]["mixed_runs"] == []
    assert rows[0]["template_text"] == ["mail-client", "plain-smtp", "webmail-tls", "telnet-smtp", "pop3", "imap"]


def test_verify_catches_a_report_whose_text_was_edited(run: Path, tmp_path: Path) -> None:
    # the analyses and captures untouched, the report's own text changed (a client line, not the
    # greeting): report.html edited, the PDF rendered from it
    from markupsafe import escape

    from labrunner.report.pdf import render_pdf

    forged = _forged_copy(run, tmp_path)
    html = (forged / "report.html").read_text("utf-8")
    dialogue = json.loads((forged / "plain-smtp" / "analysis.json").read_text("utf-8"))["streams"][0]["dialogue"]
    i, line = next((i, e["text"]) for i, e in enumerate(dialogue) if str(e["text"]).startswith("MAIL FROM:"))
    assert str(escape(line)) in html
    (forged / "report.html").write_text(html.replace(str(escape(line)), "MAIL FROM:&lt;someone@qq.com&gt;"), "utf-8")
    render_pdf(forged)
    res = _verify(forged / "report.pdf")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"DIFF  plain-smtp: stream 0.dialogue[{i}]: {line!r} is not in the PDF's text" in res.stdout
