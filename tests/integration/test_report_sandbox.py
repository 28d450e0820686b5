"""The report from a real sandbox run, re-rendered offline: no network namespace at all.

One run of every shipped scenario against the sandbox's real servers (sshd, Postfix, Dovecot,
nginx), written with --no-pdf; then `labrunner report` renders HTML and PDF inside an empty
network namespace (`unshare -n`), which proves it needs nothing but the run folder.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from labfiles import write_lab  # type: ignore[import-not-found]  # same folder
from markupsafe import escape

from labrunner.secrets import secret_forms

pytestmark = pytest.mark.integration



def lab_yaml(folder: Path, instance: str) -> Path:
    return write_lab(folder, instance, student=("李四", "2020000002", "计科2002"))


def labrunner(*args: str, cwd: Path, offline: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "labrunner", *args]
    if offline:
        argv = ["unshare", "--net", "--", *argv]  # a namespace with only a downed loopback
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def run(sandbox: dict[str, Any], sandbox_instance: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reportlab")
    lab = lab_yaml(folder, sandbox_instance)
    res = labrunner("run", "--no-pdf", "--json", "-c", str(lab), cwd=folder)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(json.loads(res.stdout)["run"])
    assert not (run_dir / "report.pdf").exists()
    return run_dir


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is missing")
def test_report_renders_offline_from_the_run_folder(run: Path, sandbox: dict[str, Any]) -> None:
    res = labrunner("report", str(run), cwd=run.parent, offline=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"report.html: {run / 'report.html'}", f"report.pdf:  {run / 'report.pdf'}"]
    text = pdf_text(run / "report.pdf")
    manifest = json.loads((run / "manifest.json").read_text("utf-8"))
    # section 4 follows the handout (4.1-4.4, then 4.5 beyond it), an experiment 4.x.y each
    flat = re.sub(r"\s+", " ", text)
    for entry in manifest["scenarios"]:
        assert re.search(r"4\.[1-5]\.\d " + re.escape(entry["title"]["zh"]), flat), entry["name"]
    # facts of this machine and this run, not of the fixture
    assert manifest["target"]["kernel"] in text
    assert manifest["run_id"] in text
    for needle in ("1 实验目的", "5.1 遇到的问题与解决方法", "注意：抓包文件包含明文凭据", "李四"):
        assert needle in text
    pages = text.split("\f")
    assert f"{len(pages) - 1} / {len(pages) - 1}" in pages[-2]  # pdftotext ends with a form feed
    # every entry of the table of contents points at the page that has its heading
    toc = [(m.group(1).strip(), int(m.group(2))) for m in
           re.finditer(r"^\s*(\S.*?)\s*\.{4,}\s*(\d+)\s*$", pages[1], flags=re.MULTILINE)]
    sections = {str(e.get("section") or "x")[2:] or "x" for e in manifest["scenarios"]}
    assert len(toc) == 4 + len(sections) + len(manifest["scenarios"]) + 1 + 2 + 1 + 7  # appendix A-G (G: evidence)
    for title, page in toc:
        assert re.sub(r"\s+", " ", title) in re.sub(r"\s+", " ", pages[page - 1]), (title, page)


LANDMARKS = re.compile(r"^(?:\S+ )?(?:EHLO|HELO|STARTTLS|STLS|AUTH|USER|PASS|LOGIN|MAIL FROM|RCPT TO|DATA|RETR|TOP|"
                       r"FETCH|QUIT|LOGOUT|GET|POST)\b", re.IGNORECASE)
LINE = re.compile(r'<div class="dl dir-([CS?]) kind-([a-z]*)">\s*(\d*) [CS?]: ')
OMITTED = re.compile(r'<div class="dl omitted">(?:<a href="#([^"]+)">)?… (\d+) (?:more lines here|行)')


def test_dialogue_shows_every_landmark_and_accounts_for_every_line(run: Path) -> None:
    """Section 4 shows the dialogue of each connection it features, capped: each line the
    analysis found is either shown with its frame or counted in a "left out" note that links to
    appendix A, and the connection with the exercise's sequence diagram shows every command of
    its landmarks (TLS, login, transfer, quit). A connection of a kind an earlier exercise
    showed is left to appendix A whole (issue 15)."""
    from labrunner.report.context import build_context

    res = labrunner("report", str(run), "--no-pdf", "--lang", "en", cwd=run.parent)
    assert res.returncode == 0, res.stderr
    page = (run / "report.en.html").read_text("utf-8")  # beside the run's own (Chinese) report
    blocks = re.findall(r'<div class="dialogue" id="tab-\d+">(.*?)\n  </div>', page, flags=re.DOTALL)
    ctx = build_context(run, lang="en")
    body = [st for sec in ctx["sections"] for sc in sec["scenarios"] for st in sc["streams"] if st["in_body"]]
    assert len(blocks) == len(body) >= 10
    for block, st in zip(blocks, body, strict=True):
        dialogue = st["lines"]
        shown = [int(frame) for _, _, frame in LINE.findall(block) if frame]
        left_out = [(anchor, int(n)) for anchor, n in OMITTED.findall(block)]
        assert len(LINE.findall(block)) + sum(n for _, n in left_out) == len(dialogue)
        assert len(LINE.findall(block)) <= 40
        for anchor, _ in left_out:
            assert anchor and f'<h4 id="{anchor}">' in page  # the full record is in the appendix
        if not st["sequence_svg"]:
            continue
        for line in dialogue:
            if line["dir"] == "C" and LANDMARKS.match(line["text"]):
                assert line["frame"] in shown, (st["title"], line)
                assert str(escape(line["text"].split("\n")[0][:60])) in block, line
    assert sum(len(LINE.findall(b)) for b in blocks) > 100
    for sc in ctx["scenarios"]:
        for st in sc["streams"]:
            if not st["in_body"]:
                assert st["appendix_anchor"] and f'<h4 id="{st["appendix_anchor"]}">' in page


def test_no_form_of_the_password_in_the_report(run: Path, sandbox: dict[str, Any]) -> None:
    account = sandbox["account"]
    forms = secret_forms(account["password"], [account["address"], account["user"]])
    for lang in ("zh", "en"):
        res = labrunner("report", str(run), "--lang", lang, cwd=run.parent)
        assert res.returncode == 0, res.stderr
        name = "report" if lang == "zh" else "report.en"
        for data in ((run / f"{name}.html").read_text("utf-8"), pdf_text(run / f"{name}.pdf")):
            assert not [f for f in forms if f in data]


def test_the_report_scrubber_and_the_analyser_hide_the_same_lines(run: Path, sandbox: dict[str, Any]) -> None:
    """Passwords are hidden twice, by position in the protocol: by the analyser as it reads the
    capture, and again by the report (report/scrub.py), which renders offline where the secret
    is unknown. The two must agree line for line on every real dialogue: the analyser's
    dialogue with the credentials shown, scrubbed, reads as the analyser's own hidden one."""
    from labfiles import analyze  # type: ignore[import-not-found]  # each {zh, en} in the language asked

    from labrunner.report.scrub import scrub_lines
    from labrunner.secrets import REDACTED

    password = sandbox["account"]["password"]
    hidden_lines = 0
    for capture in sorted(run.glob("*/capture.pcapng")):
        shown = analyze(capture, lang="en", show_credentials=True)
        hidden = analyze(capture, lang="en", show_credentials=False)
        for with_secret, without in zip(shown["streams"], hidden["streams"], strict=True):
            scrubbed = [e["text"] for e in scrub_lines(with_secret["dialogue"])]
            assert scrubbed == [e["text"] for e in without["dialogue"]], (capture.parent.name, with_secret["index"])
            hidden_lines += sum(REDACTED in text for text in scrubbed)
            assert not [t for t in scrubbed if password in t]
    assert hidden_lines >= 6  # AUTH LOGIN and PLAIN, SMTP on port 25 and typed, POP3 PASS, IMAP LOGIN (11 here)


def test_english_report_from_the_same_run(run: Path) -> None:
    res = labrunner("report", str(run), "--lang", "en", cwd=run.parent)
    assert res.returncode == 0, res.stderr
    text = pdf_text(run / "report.en.pdf")
    for needle in ("4 Results and Analysis", "Table 1 Target host environment", "Warning: the capture files"):
        assert needle in text
    # analysis.json was written by a Chinese run and holds both languages: the report took the
    # English explanations from it (tests/unit/test_analysis_bilingual.py: without tshark)
    written = json.loads((run / "telnet-smtp" / "analysis.json").read_text("utf-8"))
    assert (written["lang"], written["schema"]) == ("zh", 2)
    cells = re.findall(r'<span class="ex">// ([^<]*)</span>', (run / "report.en.html").read_text("utf-8"))
    assert len(cells) > 20
    assert not [c for c in cells if re.search(r"[\u4e00-\u9fff]", c)]
