"""The light pass (custom columns + payload cut from the file) against the -T fields pass.

A capture without TLS is read by the light pass; whatever it is given, its document must be
the one the -T fields pass gives, and anything it cannot place for sure (TLS, fragments,
other link layers, a compressed file) must send the capture to the -T fields pass.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import pytest
from test_analysis_captures import CAPS, _packets, _payload, _write

from labrunner import pcap
from labrunner.analysis import CaptureFileError, analyze, pcapfile, streams, tshark
from labrunner.analysis.tshark import NeedFullPass
from labrunner.errors import AnalysisError

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

OPTS = {"lang": "en", "show": False, "redactor": None}


def _both(path: Path) -> tuple[dict, dict]:
    version = tshark.tshark_version()
    return (streams._document(path, None, OPTS, version, light=True),
            streams._document(path, None, OPTS, version, light=False))


def _without_secrets(src: Path, dst: Path) -> Path:
    """The pcapng with its Decryption Secrets Blocks left out (what a capture without keys is)."""
    data = src.read_bytes()
    order = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    out, i = bytearray(), 0
    while i < len(data):
        kind, length = struct.unpack_from(order + "II", data, i)
        if kind != 0x0A:
            out += data[i:i + length]
        i += length
    dst.write_bytes(bytes(out))
    return dst


def test_plain_smtp_reads_the_same_both_ways(tmp_path):
    path = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    assert not pcap.has_secrets_up_front(path)
    light, full = _both(path)
    assert light == full
    assert any(e["kind"] == "data" for e in light["streams"][0]["dialogue"])
    # the fixture itself carries a key log block, so analyze() takes the -T fields pass there
    assert pcap.has_secrets_up_front(CAPS / "smtp-plain.pcapng")
    assert analyze(path, lang="en") == full


@pytest.mark.parametrize("edit", ["dup", "v6", "vlan", "sll", "sll2", "short", "pad"])
def test_edited_copies_read_the_same_both_ways(tmp_path, edit):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether
    from scapy.packet import Raw

    pkts = _packets()
    if edit == "dup":  # retransmissions: the tcp.analysis columns
        pkts = [q for p in pkts for q in ([p, p.copy()] if _payload(p) else [p])]
    elif edit == "v6":
        out = []
        for p in pkts:
            tcp = p[TCP].copy()
            del tcp.chksum
            six = {a: f"fd00::{a.rsplit('.', 1)[1]}" for a in (p[IP].src, p[IP].dst)}
            q = Ether(src=p[Ether].src, dst=p[Ether].dst) / IPv6(src=six[p[IP].src], dst=six[p[IP].dst]) / tcp
            q.time = p.time
            out.append(q)
        pkts = out
    elif edit in ("vlan", "sll", "sll2"):  # another link layer under the same IP packets
        out = []
        for p in pkts:
            if edit == "vlan":
                link = Ether(src=p[Ether].src, dst=p[Ether].dst) / Dot1Q(vlan=7)
            elif edit == "sll":
                link = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02" * 6 + b"\0\0", proto=0x0800)
            else:  # Linux cooked v2 (tcpdump -i any, libpcap >= 1.10): IP at 20, not 16, and one name
                # in tshark for both versions ("sll")
                link = CookedLinuxV2(proto=0x0800, ifindex=2, lladdrtype=1, pkttype=0, lladdrlen=6,
                                     src=b"\x02" * 6 + b"\0\0")
            q = link / p[IP].copy()
            q.time = p.time
            out.append(q)
        pkts = out
    elif edit == "short":  # one-byte segments: Ethernet pads them, the padding is no payload
        i = next(i for i, p in enumerate(pkts) if _payload(p).startswith(b"EHLO"))
        p = pkts[i]
        data = _payload(p)
        pieces = []
        for k in range(len(data)):
            q = p.copy()
            q[TCP].remove_payload()
            q[TCP].seq = p[TCP].seq + k
            del q[IP].len, q[IP].chksum, q[TCP].chksum
            pieces.append(q / Raw(data[k:k + 1]))
        pkts[i:i + 1] = pieces
    elif edit == "pad":  # an Ethernet trailer after the IP packet
        out = []
        for p in pkts:
            q = Ether(bytes(p) + b"\xee" * 6)
            q.time = p.time
            out.append(q)
        pkts = out
    path = _write(tmp_path, pkts, edit)
    light, full = _both(path)
    assert light == full
    assert analyze(path, lang="en") == full
    texts = [e["text"] for e in light["streams"][0]["dialogue"]]
    assert any(t.startswith("EHLO") for t in texts) and any(t.startswith("DATA fragment") for t in texts)


def test_ip_fragments_go_to_the_fields_pass(tmp_path):
    from scapy.layers.inet import IP, fragment

    pkts = []
    for p in _packets():
        if len(p) > 600:
            for f in fragment(p[IP], fragsize=512):
                q = p.__class__(src=p.src, dst=p.dst) / f
                q.time = p.time
                pkts.append(q)
        else:
            pkts.append(p)
    path = _write(tmp_path, pkts, "frag")
    version = tshark.tshark_version()
    with pytest.raises(NeedFullPass):
        streams._document(path, None, OPTS, version, light=True)
    full = streams._document(path, None, OPTS, version, light=False)
    assert analyze(path, lang="en") == full
    assert any(e["kind"] == "data" for e in full["streams"][0]["dialogue"])


def test_tls_without_keys_goes_to_the_fields_pass(tmp_path):
    path = _without_secrets(CAPS / "imaps-tls13.pcapng", tmp_path / "imaps.pcapng")
    version = tshark.tshark_version()
    with pytest.raises(NeedFullPass, match="TLS"):
        streams._document(path, None, OPTS, version, light=True)
    doc = analyze(path, lang="en")
    assert doc == streams._document(path, None, OPTS, version, light=False)
    assert doc["streams"][0]["tls"]["version"] == "TLS 1.3" and not doc["streams"][0]["tls"]["decrypted"]
    # its ClientHello is among the first packets: analyze() does not even try the light pass
    assert pcapfile.hello_early(path)
    assert not pcapfile.hello_early(_without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng"))


def test_a_compressed_capture_goes_to_the_fields_pass(tmp_path):
    plain = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    packed = tmp_path / "plain.pcapng.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(pcap.Unreadable):
        next(pcap.packets(packed))
    assert analyze(packed, lang="en")["streams"] == analyze(plain, lang="en")["streams"]


def test_records_are_the_frames_tshark_counts(tmp_path):
    plain = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    classic = _write(tmp_path, _packets(), "same")
    for path in (plain, classic):
        records = list(pcap.packets(path))
        assert len(records) == analyze(path, lang="en")["capture"]["frames"]
        assert [len(r) for r in records] == [len(p) for p in _packets()]


def test_a_tshark_that_refuses_the_light_pass_leaves_it_to_the_fields_pass(tmp_path, monkeypatch):
    """An older tshark without -T tabs (or one of the columns) fails the light pass: not the analysis."""
    path = _without_secrets(CAPS / "smtp-plain.pcapng", tmp_path / "plain.pcapng")
    full = streams._document(path, None, OPTS, tshark.tshark_version(), light=False)
    light_command = tshark.light_command
    monkeypatch.setattr(tshark, "light_command",
                        lambda capture: [*light_command(capture), "-T", "no-such-format"])
    with pytest.raises(AnalysisError, match="tshark failed"):
        streams._document(path, None, OPTS, tshark.tshark_version(), light=True)
    assert analyze(path, lang="en") == full
    with pytest.raises(CaptureFileError):  # a bad file is still reported as one
        analyze(tmp_path / "missing.pcap")


def test_a_tls_record_no_dissector_marks_goes_to_the_fields_pass(tmp_path):
    """The light pass leaves the mail dissectors on (cheaper than TCP's heuristics): a TLS record
    where the SMTP dissector expects a command is not marked as TLS by tshark, and must still
    send the capture to the -T fields pass rather than into the dialogue as text."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw

    pkts = _packets()
    i = next(i for i, p in enumerate(pkts) if _payload(p) == b"QUIT\r\n")
    q = pkts[i].copy()
    q[TCP].remove_payload()
    del q[IP].chksum, q[TCP].chksum
    pkts[i] = q / Raw(b"\x16\x03\x01\x00\x01\x01")  # a handshake record, same length as QUIT\r\n
    path = _write(tmp_path, pkts, "tls-as-command")
    version = tshark.tshark_version()
    with pytest.raises(NeedFullPass, match="TLS"):
        streams._document(path, None, OPTS, version, light=True)
    assert analyze(path, lang="en") == streams._document(path, None, OPTS, version, light=False)


def _tshark_lengths(path: Path) -> list[tuple[int, int]]:
    import subprocess

    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.cap_len", "-e", "frame.len"],
                         capture_output=True, text=True, check=True).stdout
    return [(int(a), int(b)) for a, b in (line.split("\t") for line in out.splitlines())]


def test_frame_lengths_come_from_the_records_as_wireshark_reads_them(tmp_path):
    """The light pass takes frame.len from the packet records: pcap, and pcapng with enhanced
    (cut by a snap length) and simple packet blocks, must agree with tshark's own lengths."""
    pkts = _packets()[:6]
    cut = tmp_path / "cut.pcap"  # records cut at 60 bytes, the wire length kept
    cut.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 60, 1) + b"".join(
        struct.pack("<IIII", i, 0, min(60, len(bytes(p))), len(bytes(p))) + bytes(p)[:60]
        for i, p in enumerate(pkts)))

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    ng = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    ng += block(1, struct.pack("<HHI", 1, 0, 80))  # Ethernet, snap length 80
    for i, p in enumerate(pkts):
        data = bytes(p)
        if i % 2:  # a simple packet block: no time stamp, cut at the interface's snap length
            ng += block(3, struct.pack("<I", len(data)) + data[:80])
        else:  # an enhanced packet block cut at 50 bytes
            ng += block(6, struct.pack("<IIIII", 0, 0, i, 50, len(data)) + data[:50])
    mixed = tmp_path / "mixed.pcapng"
    mixed.write_bytes(ng)
    for path in (cut, mixed):
        ours = [(len(data), wire) for data, wire in pcap.frames(path)]
        assert ours == _tshark_lengths(path)
        assert any(cap < wire for cap, wire in ours)


def test_tcp_in_an_ip_tunnel_goes_to_the_fields_pass(tmp_path):
    """The light pass takes addresses and ports from Wireshark's built-in columns, which follow
    the innermost IP header, while the document names the outermost (ip.src's first value):
    only frames that are link, IP and TCP may be read that way, SYNs without payload included."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    out = []
    for p in _packets():
        q = Ether(src=p[Ether].src, dst=p[Ether].dst) / IP(src="192.0.2.1", dst="192.0.2.2") / p[IP].copy()
        q.time = p.time
        out.append(q)
    path = _write(tmp_path, out, "ipip")
    version = tshark.tshark_version()
    with pytest.raises(NeedFullPass, match=r"IP protocol 4 in front of TCP"):
        streams._document(path, None, OPTS, version, light=True)
    full = streams._document(path, None, OPTS, version, light=False)
    assert analyze(path, lang="en") == full
    assert {full["streams"][0]["client"]["ip"], full["streams"][0]["server"]["ip"]} == {"192.0.2.1", "192.0.2.2"}


def test_a_pcapng_with_two_link_layers_reads_the_same_both_ways(tmp_path):
    """Each packet's link layer is its interface's (pcapng): Ethernet frames and Linux cooked v2
    ones (tcpdump -i any) in one file, as a merge of two captures has them, both read by the
    light pass from the header lengths of their own link types."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import CookedLinuxV2

    def block(kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    ng = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    ng += block(1, struct.pack("<HHI", 1, 0, 0)) + block(1, struct.pack("<HHI", 276, 0, 0))
    for i, p in enumerate(_packets()):
        data = bytes(p) if i % 2 else bytes(CookedLinuxV2(proto=0x0800, lladdrtype=1, lladdrlen=6) / p[IP])
        usec = int(p.time * 1_000_000)
        ng += block(6, struct.pack("<IIIII", 1 - i % 2, usec >> 32, usec & 0xFFFFFFFF, len(data), len(data)) + data)
    path = tmp_path / "two-links.pcapng"
    path.write_bytes(ng)
    assert {link for _, _, link in pcap.records(path)} == {1, 276}
    light, full = _both(path)
    assert light == full
    assert any(e["text"].startswith("EHLO") for e in light["streams"][0]["dialogue"])
