"""`labrunner analyze` starts tshark before it imports the analysis, and a pass started that
way is the one analyze() reads, or is stopped.

tshark needs ~0.17 s to load its dissectors before it prints a line; the dialogue, mail and TLS
modules take ~0.1 s to import. Started first, tshark loads while Python imports (issue 18: a
small capture's analysis, start-up included, within 1.5x of a plain tshark pass).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_analysis_light import _without_secrets

from labrunner import pcap
from labrunner.analysis import analyze, mail, tshark

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

CAPS = Path(__file__).resolve().parents[1] / "fixtures" / "captures"

# Records, for each tshark started to read a capture, whether the analysis's heavy modules had
# been imported by then; then runs the command line.
PROBE = r"""
import json, subprocess, sys
seen = []
popen_init = subprocess.Popen.__init__
def init(self, argv, *args, **kwargs):
    if "-r" in argv:
        seen.append(sorted(m for m in ("labrunner.analysis.streams", "labrunner.analysis.mail") if m in sys.modules))
    popen_init(self, argv, *args, **kwargs)
subprocess.Popen.__init__ = init
from labrunner.cli import main
code = main(["analyze", "--json", "--lang", "en", *sys.argv[1:]])
print(json.dumps({"code": code, "seen": seen}), file=sys.stderr)
"""


@pytest.mark.parametrize("name", ["smtp-plain.pcapng", "plain.pcapng"])
def test_cli_starts_tshark_before_importing_the_analysis(tmp_path: Path, name: str) -> None:
    # the fixture carries a key log block (-T fields pass); its copy without it takes the light pass
    path = CAPS / name if name != "plain.pcapng" else _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / name)
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True,
                         timeout=120)
    probe = json.loads(out.stderr.strip().splitlines()[-1])
    assert probe["code"] == 0
    assert probe["seen"] == [[]]  # one tshark, started before analysis.streams and mail were imported
    assert json.loads(out.stdout) == json.loads(json.dumps(analyze(path, lang="en")))


def test_a_started_pass_that_is_not_the_one_chosen_is_stopped(tmp_path: Path) -> None:
    path = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    started = tshark.start_first(path, None)
    assert started.light
    keys = tmp_path / "keys.txt"
    keys.write_text("# no keys\n")
    doc = analyze(path, lang="en", keylog=keys, started=started)  # a key log: the -T fields pass
    assert started._proc is not None and started._proc.returncode is not None  # killed and reaped
    assert doc == analyze(path, lang="en", keylog=keys)


def test_a_started_pass_is_the_one_read(tmp_path: Path) -> None:
    path = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    started = tshark.start_first(path, None)
    doc = analyze(path, lang="en", started=started)
    assert started._proc is not None and started._proc.returncode == 0  # read to its end
    assert doc == analyze(path, lang="en")


def test_errors_are_said_by_analyze_as_before(tmp_path: Path) -> None:
    missing = tmp_path / "none.pcap"
    with pytest.raises(Exception) as first:
        tshark.start_first(missing, None)
    out = subprocess.run([sys.executable, "-m", "labrunner", "analyze", str(missing)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == f"labrunner: error: {first.value}"


def test_light_pass_reads_the_file_ahead_while_tshark_starts(tmp_path: Path, monkeypatch) -> None:
    """The packet records are read, and their payloads cut, before tshark's first line: the
    rows are the ones read without that, and _segment is not asked again for them."""
    path = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    lines = list(tshark.Pass(path, None, light=True)._lines())
    plain = list(tshark.light_rows(iter(lines), path))  # no read-ahead: every payload cut as it comes
    read: list[int] = []
    records = pcap.records

    def counting(capture: Path):
        for record in records(capture):
            read.append(1)
            yield record

    asked: list[int] = []

    def first_lines():
        assert len(read) == len(lines)  # every record read before tshark's first line was asked for
        asked.clear()  # (the read-ahead read each one)
        yield from lines

    segment = tshark._segment
    monkeypatch.setattr(pcap, "records", counting)
    monkeypatch.setattr(tshark, "_segment", lambda *a: asked.append(1) or segment(*a))
    ahead = list(tshark.light_rows(first_lines(), path, ready=lambda: False))
    # the whole file read ahead: the last frame of the connection is known, and said
    layers = tshark.R["frame.protocols"]
    assert [row[layers] for row in ahead] == [""] * (len(ahead) - 1) + [tshark.END]
    ahead[-1][layers] = ""
    assert ahead == plain
    assert any(row[tshark.R["payload"]] for row in ahead)
    assert not asked  # each payload came from the read-ahead


def _message(subject: str) -> bytes:
    return (f"From: a@lab.test\r\nTo: b@lab.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
            ".a line that starts with a dot\r\nhello\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "eHh4eHh4\r\n--XX--\r\n").encode()


def test_messages_walked_while_tshark_starts_are_the_ones_summarised() -> None:
    one, two = _message("one"), _message("two")
    stuffed = [m.replace(b"\r\n.", b"\r\n..") for m in (one, two, one)]  # (as a client sends them)
    client = b"EHLO x\r\n" + b"".join(b"MAIL FROM:<a@lab.test>\r\nDATA\r\n" + m + b".\r\n" for m in stuffed)
    prepared: dict[bytes, mail.Prepared] = {}
    mail.prepare([b"220 ready\r\n354 go ahead\r\n", client], lambda: False, prepared)
    assert {body: len(walks) for body, walks in prepared.items()} == {one: 2, two: 1}  # each message walked
    expected = [mail.summarize(m, size=len(m), frame=1, direction="C") for m in (one, two, one)]
    token = mail.PREPARED.set(prepared)
    try:
        got = [mail.summarize(m, size=len(m), frame=1, direction="C") for m in (one, two, one)]
        assert got == expected
        assert not prepared  # each walk taken once
        assert mail.summarize(two, size=len(two), frame=1, direction="C") == expected[1]  # none left: walked
    finally:
        mail.PREPARED.reset(token)


def test_read_ahead_walks_the_mails_of_a_capture_before_its_rows(tmp_path: Path, monkeypatch) -> None:
    path = CAPS / "foreign" / "swaks_plain_attach.pcap"
    expected = analyze(path, lang="en")
    walked: list[str] = []
    walk, summarize = mail._walk, mail.summarize

    def counting(raw: bytes, parts: list, depth: int = 0):
        if depth == 0:
            walked.append("prepare" if mail.PREPARED.get() is not None and not summarizing else "summarize")
        return walk(raw, parts, depth)

    summarizing = False

    def summarizes(raw: bytes, **kw):
        nonlocal summarizing
        summarizing = True
        try:
            return summarize(raw, **kw)
        finally:
            summarizing = False

    monkeypatch.setattr(mail, "_walk", counting)
    monkeypatch.setattr(mail, "summarize", summarizes)
    monkeypatch.setattr(tshark.Pass, "_ready", lambda self: False)  # tshark "still starting"
    assert analyze(path, lang="en") == expected
    assert walked == ["prepare"]  # walked ahead once, not again when summarised


@pytest.mark.parametrize("tls", [False, True])
def test_documents_are_made_while_tshark_exits_and_its_exit_is_still_judged(tmp_path: Path, monkeypatch,
                                                                            tls: bool) -> None:
    """After its last line tshark takes tens of ms to exit: the streams' documents are made
    meanwhile, and its exit is judged after them (a capture cut short still says so). The TLS
    pass knows its last line by the tap's end line (written before tshark tears down)."""
    from labrunner.analysis import streams

    plain = CAPS / "smtp-plain.pcapng"
    path = CAPS / "smtps-tls12.pcapng" if tls else _without_secrets(plain, tmp_path / "plain.pcapng")
    passes: list[tshark.Pass] = []
    seen: list[bool] = []
    monkeypatch.setattr(streams, "Pass", lambda *a, **kw: passes.append(tshark.Pass(*a, **kw)) or passes[-1])
    result = streams.Stream.result
    monkeypatch.setattr(streams.Stream, "result", lambda self: seen.append(passes[-1]._err.closed) or result(self))
    doc = analyze(path, lang="en")
    assert [p.tap for p in passes] == [tls]
    assert seen == [False] and passes[-1]._err.closed  # tshark reaped after the stream's document
    cut = tmp_path / f"cut{path.suffix}"
    cut.write_bytes(path.read_bytes()[:-10])  # the last packet cut short
    assert analyze(cut, lang="en")["capture"]["truncated"] and not doc["capture"]["truncated"]


@pytest.mark.parametrize("cut", [False, True])
def test_analyze_json_prints_the_document_exactly(tmp_path: Path, capsys, cut: bool) -> None:
    """--json encodes the streams while tshark exits and puts the rest of the document around
    them: the text is json.dumps of the whole document, notes of a capture cut short included."""
    path = CAPS / "browser-login.pcap"
    if cut:
        path = tmp_path / "cut.pcap"
        path.write_bytes((CAPS / "browser-login.pcap").read_bytes()[:-10])
    keys = CAPS / "browser-login.keys"
    from labrunner.cli import main

    assert main(["analyze", "--json", "--keylog", str(keys), str(path)]) == 0
    out = capsys.readouterr().out
    doc = analyze(path, keylog=keys)
    assert out == json.dumps(doc) + "\n"
    assert doc["capture"]["truncated"] == cut and doc["streams"]


@pytest.mark.timeout(120)  # (a hang guard: tshark blocked on a full pipe nobody reads)
def test_a_light_pass_given_up_before_its_first_line_stops_its_tshark(tmp_path: Path, monkeypatch) -> None:
    """The file cannot be read by the light pass (e.g. compressed) while its tshark, started,
    prints more than a pipe holds: tshark is stopped, not waited for, and the -T fields pass reads
    the capture."""
    from scapy.utils import rdpcap, wrpcap

    pkts = list(rdpcap(str(_without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng"))))
    big = tmp_path / "big.pcap"
    wrpcap(str(big), pkts * 100)  # 3,400 frames: ~350 kB of lines
    expected = analyze(big, lang="en")

    def unreadable(capture: Path):
        raise pcap.Unreadable("not a plain pcap or pcapng file")
        yield  # (a generator, as pcap.records)

    monkeypatch.setattr(pcap, "records", unreadable)
    assert analyze(big, lang="en") == expected
