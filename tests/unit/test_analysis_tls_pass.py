"""The TLS pass (custom columns + payload cut from the file + a Lua tap for the decrypted bytes
and the handshake's fields) against the -T fields pass.

A capture with TLS is read by the TLS pass; its document must be the one the -T fields pass
gives, and what it cannot give for sure (no Lua in tshark, a TLS column longer than Wireshark's
columns hold, anything the light pass cannot place) must send the capture to the -T fields pass.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from test_analysis_captures import CAPS, _write

from labrunner.analysis import analyze, streams, tshark
from labrunner.analysis.tshark import NeedFullPass

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

OPTS = {"lang": "en", "show": False, "redactor": None}
FOREIGN = CAPS / "foreign"


def _both(path: Path, keylog: Path | None = None) -> tuple[dict, dict]:
    version = tshark.tshark_version()
    return (streams._document(path, keylog, OPTS, version, light=False, tap=True),
            streams._document(path, keylog, OPTS, version, light=False))


@pytest.fixture
def passes(monkeypatch) -> list[str]:
    """The passes analyze() runs, in order."""
    used: list[str] = []
    document = streams._document

    def spy(*args, light, tap=False, **kw):
        used.append("light" if light else "tap" if tap else "fields")
        return document(*args, light=light, tap=tap, **kw)

    monkeypatch.setattr(streams, "_document", spy)
    return used


@pytest.mark.parametrize(("name", "keys"), [
    ("imaps-tls13.pcapng", None), ("pop3-stls.pcapng", None), ("browser-login.pcap", "browser-login.keys"),
    ("foreign/lost_srv_hs.pcap", "foreign/lost_srv_hs.keys")])
def test_tls_captures_read_the_same_by_the_tls_pass(name, keys, passes):
    keylog = CAPS / keys if keys else None
    tap, full = _both(CAPS / name, keylog)
    assert tap == full
    assert any(s["tls"] for s in tap["streams"])
    passes.clear()
    assert analyze(CAPS / name, keylog=keylog, lang="en") == full
    assert passes == ["tap"]


def test_decrypted_bytes_and_handshake_fields_reach_the_rows(tmp_path):
    tap, _ = _both(CAPS / "smtps-tls12.pcapng")
    stream = tap["streams"][0]
    assert stream["tls"]["decrypted"] and stream["tls"]["client_hello"]["sni"] == "smtp.lab.test"
    assert stream["tls"]["certificate"]["subject"]
    assert any(str(e["text"]).startswith("AUTH") for e in stream["dialogue"])  # (the analysis' own: {zh, en})


def test_the_tap_stream_keeps_any_byte_of_the_decrypted_data():
    """Decrypted bytes come length-prefixed, not as lines: newlines, the tap's own marker bytes
    and invalid UTF-8 pass through unchanged, each with the line of its frame."""
    blank = "\t".join([""] * len(tshark.TAP_FIELDS))
    raw = (tshark.TAP_HELLO + b"line one\n" + b"\x012 7\n" + b"\x01\n\x02\xff\t\r\n" + b"\x012 1\n\x03"
           + b"\x022\t" + blank.encode() + b"\n" + b"line two\n" + b"line three\n")
    tap = tshark._TapStream(io.BufferedReader(io.BytesIO(raw)))
    got = [(line, tap.data, tap.extra) for line in tap.lines()]
    fields = [""] * len(tshark.TAP_FIELDS)
    assert got == [("line one\n", "", None), ("line two\n", [b"\x01\n\x02\xff\t\r\n", b"\x03"], fields),
                   ("line three\n", "", None)]
    with pytest.raises(NeedFullPass, match="coming frame"):  # bytes said to be of another frame
        list(tshark._TapStream(io.BufferedReader(io.BytesIO(tshark.TAP_HELLO + b"\x025\tx\n"))).lines())


def test_a_tshark_without_lua_leaves_it_to_the_fields_pass(monkeypatch, passes):
    path = CAPS / "smtps-tls12.pcapng"
    _, full = _both(path)
    tls_command = tshark.tls_command

    def without_lua(capture, keylog):
        argv = tls_command(capture, keylog)
        i = argv.index("-X")
        return argv[:i] + argv[i + 2:]

    monkeypatch.setattr(tshark, "tls_command", without_lua)
    with pytest.raises(NeedFullPass, match="without the Lua tap"):
        streams._document(path, None, OPTS, tshark.tshark_version(), light=False, tap=True)
    passes.clear()
    assert analyze(path, lang="en") == full
    assert passes == ["tap", "fields"]


def test_a_tls_column_longer_than_wireshark_holds_goes_to_the_fields_pass(tmp_path, passes):
    """Wireshark cuts a custom column at 2 047 characters: a segment of 700 one-byte records
    would lose record types there, so the capture goes to the -T fields pass."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    c, s = {"src": "10.0.0.2", "dst": "10.0.0.3"}, {"src": "10.0.0.3", "dst": "10.0.0.2"}
    hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00"
    records = b"\x17\x03\x03\x00\x01\x00" * 700
    pkts = [Ether() / IP(**c) / TCP(sport=40000, dport=443, flags="S", seq=100),
            Ether() / IP(**s) / TCP(sport=443, dport=40000, flags="SA", seq=500, ack=101),
            Ether() / IP(**c) / TCP(sport=40000, dport=443, flags="A", seq=101, ack=501),
            Ether() / IP(**c) / TCP(sport=40000, dport=443, flags="PA", seq=101, ack=501) / Raw(hello),
            Ether() / IP(**s) / TCP(sport=443, dport=40000, flags="PA", seq=501, ack=101 + len(hello)) / Raw(records)]
    path = _write(tmp_path, pkts, "many-records")
    with pytest.raises(NeedFullPass, match="longer than"):
        streams._document(path, None, OPTS, tshark.tshark_version(), light=False, tap=True)
    full = streams._document(path, None, OPTS, tshark.tshark_version(), light=False)
    passes.clear()
    assert analyze(path, lang="en") == full
    assert passes == ["tap", "fields"]
    assert full["streams"][0]["tls"] is not None


def test_decrypted_bytes_given_to_another_dissector_leave_it_to_the_fields_pass(monkeypatch, passes):
    """The tap takes the decrypted bytes where Wireshark would give them to its "data" dissector
    (a heuristic, and the ALPN names of the dissectors the pass turns off). Bytes that reach
    "data" another way (here: ALPN http/1.1 left to Wireshark) must not be lost: data.len says
    so, and the capture goes to the -T fields pass, which reads them as data.data."""
    path, keylog = CAPS / "browser-login.pcap", CAPS / "browser-login.keys"
    _, full = _both(path, keylog)
    assert any(e["decrypted"] for s in full["streams"] for e in s["dialogue"])  # the HTTP login, read
    monkeypatch.setattr(tshark, "_TAP_ALPN", ())
    tshark.tap_script.cache_clear()
    try:
        with pytest.raises(NeedFullPass, match="did not see"):
            streams._document(path, keylog, OPTS, tshark.tshark_version(), light=False, tap=True)
        passes.clear()
        assert analyze(path, keylog=keylog, lang="en") == full
        assert passes == ["tap", "fields"]
    finally:
        monkeypatch.undo()
        tshark.tap_script.cache_clear()


def test_a_tap_that_fails_to_load_leaves_it_to_the_fields_pass(monkeypatch, passes):
    """A Lua error while the tap registers its listeners (e.g. a filter this tshark does not
    know) must not leave a pass without decryption: the tap says it is ready only at its end."""
    path = CAPS / "smtps-tls12.pcapng"
    _, full = _both(path)
    monkeypatch.setattr(tshark, "_TAP_LUA", tshark._TAP_LUA.replace("|| tls.alert_message", "||| tls.alert_message"))
    tshark.tap_script.cache_clear()
    try:
        with pytest.raises(NeedFullPass, match="without the Lua tap"):
            streams._document(path, None, OPTS, tshark.tshark_version(), light=False, tap=True)
        passes.clear()
        assert analyze(path, lang="en") == full
        assert passes == ["tap", "fields"]
    finally:
        monkeypatch.undo()
        tshark.tap_script.cache_clear()


def test_the_tap_is_never_taken_from_a_folder_others_can_write_to(monkeypatch, tmp_path):
    """tshark runs the Lua tap: a cache folder that another user can write to (or one made
    beforehand under /tmp by someone else) is passed over, and a planted script never chosen."""
    shared = tmp_path / "shared-cache"
    (shared / "labrunner").mkdir(parents=True)
    (shared / "labrunner").chmod(0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    tshark.tap_script.cache_clear()
    try:
        chosen = tshark.tap_script()
        assert shared not in chosen.parents
        assert chosen.parent == tmp_path / "tmp" / f"labrunner-{os.getuid()}"
        assert chosen.read_text(encoding="utf-8") == tshark._tap_source()
        # the fallback folder, if it is no longer private, is passed over too
        chosen.parent.chmod(0o777)
        tshark.tap_script.cache_clear()
        with pytest.raises(NeedFullPass):
            tshark.tap_script()
    finally:
        monkeypatch.undo()
        tshark.tap_script.cache_clear()


@pytest.mark.parametrize("header", [b"\x011 xx\n", b"\x011 -5\n", b"\x01\n", b"\x011 2 3\n",
                                    b"\x011 99999999999\n", b"\x02x\tfield\n"])
def test_a_tap_header_it_does_not_write_leaves_it_to_the_fields_pass(header):
    """Whatever the tap's output holds, its reader ends in NeedFullPass (the -T fields pass then
    reads the capture), never in a ValueError that escapes, a read to the end of the pipe, or a
    buffer of the size a header claims."""
    reader = tshark._TapStream(io.BytesIO(tshark.TAP_HELLO + header + b"x" * 64))
    with pytest.raises(NeedFullPass):
        list(reader.lines())


def test_the_tap_says_when_tshark_has_read_the_whole_capture():
    """The tap's end line (written when tshark draws its taps, after the last frame and before
    it tears down) ends the rows: nothing after it is read, so the analysis need not wait for
    tshark's exit to know the rows are all there."""
    import subprocess

    out = subprocess.run(tshark.tls_command(CAPS / "smtps-tls12.pcapng", None), capture_output=True, check=True).stdout
    assert out.startswith(tshark.TAP_HELLO) and out.endswith(tshark.TAP_END)
    lines = list(tshark._TapStream(io.BytesIO(out + b"anything after it\n")).lines())
    from labrunner import pcap

    assert len(lines) == len(list(pcap.records(CAPS / "smtps-tls12.pcapng")))  # a line per frame, no more
    with pytest.raises(NeedFullPass, match="did not print"):  # bytes of a frame never printed
        list(tshark._TapStream(io.BytesIO(tshark.TAP_HELLO + b"\x011 3\nabc" + tshark.TAP_END)).lines())


@pytest.mark.parametrize(("name", "old", "port"), [("curl_imaps", 993, 636), ("curl_imaps", 993, 853),
                                                  ("oddports_tls", 8443, 2443)])
def test_tls_on_a_port_whose_dissector_is_on_reads_the_same_by_both_passes(tmp_path, name, old, port):
    """TLS tries its heuristics (the tap is one) before the dissector its table names for the port:
    where that dissector is on (LDAP on 636, DNS on 853), the -T fields pass hands it the decrypted
    bytes, not to "data"; the tap leaves them to it too, so both passes read the same. Where the
    session's ALPN names a dissector the pass turns off (HTTPS with http/1.1 on 2443, Skinny's
    port), the bytes are the tap's whatever the port."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap, wrpcap

    packets = rdpcap(str(FOREIGN / f"{name}.pcap"))
    for p in packets:
        if TCP in p:
            p[TCP].sport, p[TCP].dport = [port if x == old else x for x in (p[TCP].sport, p[TCP].dport)]
            del p[TCP].chksum
            del p[IP].chksum
    path = tmp_path / f"{name}-on-{port}.pcap"
    wrpcap(str(path), packets)
    tap, full = _both(path, FOREIGN / f"{name}.keys")
    assert tap == full
