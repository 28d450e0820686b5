"""A stream's result is made at its connection's last frame, while tshark still reads (the whole
file read ahead tells where that is: tshark._last_frames), and the TLS pass does not wait for
tshark's teardown once its tap said the whole capture was read and tshark said nothing of it
(tshark.Pass.finish). Both are only faster: the documents are the ones made without them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from labrunner.analysis import streams, tshark
from labrunner.analysis.tshark import tshark_version

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

CAPS = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
OPTS = {"lang": "en", "show": False, "redactor": None}


def _passes(monkeypatch) -> list[tshark.Pass]:
    passes: list[tshark.Pass] = []
    monkeypatch.setattr(streams, "Pass", lambda *a, **kw: passes.append(tshark.Pass(*a, **kw)) or passes[-1])
    return passes


def _read_ahead_whole(monkeypatch) -> list[frozenset[int] | None]:
    """The read-ahead always done before tshark's first line is looked at (on a loaded machine
    tshark could come first, and nothing be finished early); what _last_frames said."""
    said: list[frozenset[int] | None] = []
    last_frames = tshark._last_frames
    monkeypatch.setattr(tshark.Pass, "_ready", lambda self: False)
    monkeypatch.setattr(tshark, "_last_frames", lambda read: said.append(last_frames(read)) or said[-1])
    return said


def test_streams_are_finished_at_their_connections_last_frame(monkeypatch) -> None:
    """browser-login.pcap: three HTTPS connections, one after another. The first two are
    finished (result made, JSON text too) before tshark's row of the next one's frames; the
    document is the -T fields pass's, and the text json.dumps of its streams."""
    path, keys = CAPS / "browser-login.pcap", CAPS / "browser-login.keys"
    finished: dict[int, int] = {}  # stream -> rows read when it was finished
    rows_read = [0]
    replay = streams._replay

    def counting_replay(rows, opts):
        def counted():
            for row in rows:
                rows_read[0] += 1
                yield row
        return replay(counted(), opts)

    finish = streams.Stream.finish

    def noting_finish(self: streams.Stream, encode) -> None:
        finished[self.index] = rows_read[0]
        finish(self, encode)

    monkeypatch.setattr(streams, "_replay", counting_replay)
    monkeypatch.setattr(streams.Stream, "finish", noting_finish)
    said = _read_ahead_whole(monkeypatch)
    texts: list[str] = []
    doc = streams.analyze(path, keylog=keys, lang="en", streams_done=lambda s, text: texts.append(text))
    frames = doc["capture"]["frames"]
    early = {i: n for i, n in finished.items() if n < frames}
    assert len(said) == 1 and said[0]
    assert len(doc["streams"]) == 3 and len(early) >= 2, finished
    for s in doc["streams"]:
        if s["index"] in early:
            assert early[s["index"]] == s["last_frame"]  # (the row of its last frame)
    assert texts == [json.dumps(doc["streams"])]
    opts = dict(OPTS)
    assert doc == streams._document(path, keys, opts, tshark_version(), light=False)


def _icmp_after_the_end(src: Path, dst: Path, *, v6: bool) -> None:
    """``src`` and, after its last frame, an ICMP message quoting the connection's first big
    client segment (tshark gives it that segment's stream): a router's "fragmentation needed",
    or ``v6``, the same connection over IPv6 and an ICMPv6 Redirect whose Redirected Header
    option holds the segment."""
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6ND_Redirect, ICMPv6NDOptRedirectedHdr, IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap, wrpcap

    packets = []
    for p in rdpcap(str(src)):
        if v6 and IP in p:
            ip = p[IP]
            p6 = Ether(src=p[Ether].src, dst=p[Ether].dst) / IPv6(
                src=f"fd00::{ip.src.split('.')[-1]}", dst=f"fd00::{ip.dst.split('.')[-1]}") / ip[TCP]
            del p6[TCP].chksum
            p6.time = ip.time
            p = p6
        packets.append(p)
    big = next(p for p in packets if TCP in p and len(p[TCP].payload) > 100)
    if v6:
        net = big[IPv6]
        err = Ether() / IPv6(src="fe80::1", dst=net.src) / ICMPv6ND_Redirect(tgt="fe80::9", dst=net.dst) / \
            ICMPv6NDOptRedirectedHdr(pkt=bytes(net))
    else:
        err = Ether(src=big[Ether].dst, dst=big[Ether].src) / IP(src="10.77.230.1", dst=big[IP].src) / \
            ICMP(type=3, code=4, nexthopmtu=1400) / bytes(big[IP])
    err.time = packets[-1].time + 0.001
    wrpcap(str(dst), [*packets, err])


@pytest.mark.parametrize("v6", [False, True], ids=["icmp-error", "icmpv6-redirect"])
def test_an_icmp_message_after_a_connections_end_keeps_its_stream_open(tmp_path: Path, monkeypatch,
                                                                       v6: bool) -> None:
    """An ICMP message quoting a segment may join its stream after the last frame of its
    connection: a capture with one keeps every stream open to the end (the light pass reads it,
    not the -T fields pass after finding a frame of a stream already finished)."""
    path = tmp_path / "icmp-late.pcap"
    _icmp_after_the_end(CAPS / "foreign" / "snail_send.pcap", path, v6=v6)
    said = _read_ahead_whole(monkeypatch)
    passes = _passes(monkeypatch)
    doc = streams.analyze(path, lang="en")
    assert said == [None]
    assert [p.light for p in passes] == [True]  # one pass, not given up
    (stream,) = doc["streams"]
    if not v6:
        assert any("1 ICMP error message(s)" in n["en"] for n in stream["notes"])
    assert doc == streams._document(path, None, dict(OPTS), tshark_version(), light=False)


def test_a_frame_after_a_finished_stream_sends_the_capture_to_the_fields_pass(monkeypatch) -> None:
    """Should a frame of a stream come after what was taken for its connection's last (none
    can: the one fault injected here, _last_frames saying the first frame of every connection
    is its last), the capture is read again, by the -T fields pass: the same document as
    without any early finish, no stream lost or made twice."""
    path = CAPS / "browser-login.pcap"
    keys = CAPS / "browser-login.keys"
    expected = streams.analyze(path, keylog=keys, lang="en")

    def firsts(read):
        seen, ends = set(), set()
        for number, (record, _, link, _) in enumerate(read, 1):
            try:
                _, _, _, ip, _, tcp = tshark._segment(record, link)
            except tshark.NeedFullPass:
                continue
            key = frozenset((record[ip + 12:ip + 16] + record[tcp:tcp + 2],
                             record[ip + 16:ip + 20] + record[tcp + 2:tcp + 4]))
            if key not in seen:
                seen.add(key)
                ends.add(number)
        return frozenset(ends)

    monkeypatch.setattr(tshark.Pass, "_ready", lambda self: False)
    monkeypatch.setattr(tshark, "_last_frames", firsts)
    passes = _passes(monkeypatch)
    doc = streams.analyze(path, keylog=keys, lang="en")
    assert [(p.light, p.tap) for p in passes] == [(False, True), (False, False)]  # the TLS pass, then -T fields
    assert doc == expected


def test_last_frames_of_connections(tmp_path: Path) -> None:
    """The last frame of each connection (either direction, the same addresses and ports);
    an ICMP echo changes nothing, any other ICMP message makes it None."""
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.l2 import Ether

    def seg(src: str, sport: int, dst: str, dport: int, flags: str = "A") -> bytes:
        return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / b"x")

    a, b = ("10.0.0.1", 40000), ("10.0.0.2", 25)
    c = ("10.0.0.1", 40001)
    records = [seg(*a, *b, "S"), seg(*b, *a, "SA"), seg(*c, *b, "S"), seg(*a, *b), seg(*b, *c), seg(*b, *a, "F")]
    read = [(r, len(r), 1, tshark._guess(r, 1)) for r in records]
    assert tshark._last_frames(read) == {5, 6}
    echo = bytes(Ether() / IP(src="10.0.0.9", dst="10.0.0.1") / ICMP(type=0))
    with_echo = [*read, (echo, len(echo), 1, tshark._guess(echo, 1))]
    assert tshark._last_frames(with_echo) == {5, 6}
    for kind in (3, 5, 11, 12, 42):  # errors, a redirect, a type unknown today: any may quote a segment
        other = bytes(Ether() / IP(src="10.0.0.9", dst="10.0.0.1") / ICMP(type=kind, code=0) / records[3][14:])
        assert tshark._last_frames([*with_echo, (other, len(other), 1, tshark._guess(other, 1))]) is None


def _tshark_wrapper(folder: Path, *, before: str = "") -> Path:
    """A ``tshark`` first on PATH: the real one (``before`` on stderr first); after the TLS
    pass's tshark exits, it waits until the test writes to its FIFO (a teardown that lasts)."""
    fifo = folder / "teardown"
    os.mkfifo(fifo)
    script = folder / "tshark"
    script.write_text(f"""#!/bin/sh
{before}
{shutil.which("tshark")} "$@"
rc=$?
case "$*" in *lua_script*) read line < {fifo} ;; esac
exit $rc
""")
    script.chmod(0o755)
    return fifo


def _first_on_path(monkeypatch, folder: Path) -> None:
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))  # (its version and Lua tap kept apart)
    tshark.tap_script.cache_clear()


@pytest.fixture(autouse=True)
def _tap_script_forgotten():
    yield
    tshark.tap_script.cache_clear()  # (a test may have written it under its own cache folder)


@pytest.mark.timeout(180)
def test_the_tls_pass_does_not_wait_for_tsharks_teardown(tmp_path: Path, monkeypatch) -> None:
    """Its tap's end line read and nothing on tshark's stderr: the analysis is done while its
    tshark has not exited (here, never until released)."""
    fifo = _tshark_wrapper(tmp_path)
    _first_on_path(monkeypatch, tmp_path)
    passes = _passes(monkeypatch)
    done: list[dict] = []
    worker = threading.Thread(target=lambda: done.append(
        streams.analyze(CAPS / "smtps-tls12.pcapng", lang="en")), daemon=True)
    worker.start()
    try:
        worker.join(120)  # (a hang guard: without the change, it waits for the FIFO)
        assert done and done[0]["streams"], "analyze() waited for tshark's exit"
        assert [p.tap for p in passes] == [True] and passes[0]._proc is not None
        assert passes[0]._proc.poll() is None  # tshark (its wrapper) still there
    finally:
        with open(fifo, "w") as release:
            release.write("go\n")
        worker.join(60)
    assert passes[0]._proc.wait(60) == 0


@pytest.mark.timeout(180)
def test_what_tshark_said_before_the_tap_ended_is_still_judged(tmp_path: Path, monkeypatch) -> None:
    """Something on stderr when the tap's end line comes: tshark's exit is waited for and what
    it said judged (here: a file cut short, which this one is not)."""
    fifo = _tshark_wrapper(tmp_path, before='echo "tshark: The file appears to have been cut short in the '
                                            'middle of a packet." >&2')
    _first_on_path(monkeypatch, tmp_path)
    releaser = threading.Thread(target=lambda: fifo.open("w").write("go\n"), daemon=True)
    releaser.start()  # (the wrapper's teardown ends once it reads)
    doc = streams.analyze(CAPS / "smtps-tls12.pcapng", lang="en")
    assert doc["capture"]["truncated"]
    releaser.join(60)


@pytest.mark.timeout(180)
def test_a_tshark_hung_in_its_teardown_is_still_stopped_in_time(tmp_path: Path, monkeypatch) -> None:
    """Not waited for, a tshark that never ends its teardown is still killed once the pass's
    time (LABRUNNER_ANALYZE_TIMEOUT) is up: it holds its memory, a run may go on for hours."""
    fifo = _tshark_wrapper(tmp_path)
    _first_on_path(monkeypatch, tmp_path)
    monkeypatch.setenv("LABRUNNER_ANALYZE_TIMEOUT", "5")
    passes = _passes(monkeypatch)
    try:
        doc = streams.analyze(CAPS / "smtps-tls12.pcapng", lang="en")
        assert doc["streams"] and [p.tap for p in passes] == [True]
        assert passes[0]._proc is not None
        assert passes[0]._proc.wait(120) == -9  # (a hang guard: without the timer it waits for ever)
    finally:
        with contextlib.suppress(OSError):  # (nobody reads it any more once the wrapper was killed)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.timeout(180)
def test_a_tls_pass_not_waited_for_leaves_no_thread_behind(tmp_path: Path, monkeypatch) -> None:
    """Once its tshark has exited, nothing of the pass is left running (the soak test of a run
    found the pass's timer thread left to sleep out its 30 minutes, one per analysis)."""
    fifo = _tshark_wrapper(tmp_path)
    _first_on_path(monkeypatch, tmp_path)
    passes = _passes(monkeypatch)
    before = threading.active_count()
    try:
        streams.analyze(CAPS / "smtps-tls12.pcapng", lang="en")  # (returns with its tshark still there)
        assert [p.tap for p in passes] == [True] and passes[0]._proc is not None
        assert passes[0]._proc.poll() is None
    finally:
        with open(fifo, "w") as release:  # (waits for the wrapper to read it)
            release.write("go\n")
    assert passes[0]._proc.wait(60) == 0
    for thread in threading.enumerate():
        if thread.name == "tshark-reaper":
            thread.join(60)
    assert threading.active_count() == before
