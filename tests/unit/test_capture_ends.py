"""The capture's end marker (every TCP connection in it has ended) and the batched target facts."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import pytest

from labrunner import capture, pcap
from labrunner.capture import PcapCounter, TcpEnds
from labrunner.executor.facts import facts_script
from labrunner.executor.local import LocalExecutor

SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10
CLIENT = ("10.0.0.2", 40000)
SERVER = ("10.0.0.3", 25)


def _ip4(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


def _tcp(src: tuple[str, int], dst: tuple[str, int], flags: int, seq: int, ack: int = 0,
         payload: bytes = b"", *, v6: bool = False) -> bytes:
    """An IP packet (no link header) carrying one TCP segment."""
    tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                      65535, 0, 0) + payload
    if v6:
        s = b"\xfd" + bytes(14) + bytes([_ip4(src[0])[-1]])
        d = b"\xfd" + bytes(14) + bytes([_ip4(dst[0])[-1]])
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + s + d + tcp
    return struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0) + _ip4(src[0]) + _ip4(dst[0]) + tcp


def _ether(ip: bytes, v6: bool = False) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + (b"\x86\xdd" if v6 else b"\x08\x00") + ip


def _sll(ip: bytes) -> bytes:
    return struct.pack("!HHH", 0, 1, 6) + b"\x02" * 6 + b"\x00\x00" + b"\x08\x00" + ip


def _pcap(frames: Sequence[bytes], linktype: int = 1) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    for i, f in enumerate(frames):
        out += struct.pack("<IIII", 1700000000 + i, 0, len(f), len(f)) + f
    return out


def _session(c: tuple[str, int] = CLIENT, s: tuple[str, int] = SERVER, *, cseq: int = 1000, sseq: int = 5000,
             v6: bool = False) -> list[bytes]:
    """A whole connection: handshake, a reply and a command, the client closes first."""
    return [
        _tcp(c, s, SYN, cseq, v6=v6),
        _tcp(s, c, SYN | ACK, sseq, cseq + 1, v6=v6),
        _tcp(c, s, ACK, cseq + 1, sseq + 1, v6=v6),
        _tcp(s, c, PSH | ACK, sseq + 1, cseq + 1, b"220 hi\r\n", v6=v6),
        _tcp(c, s, PSH | ACK, cseq + 1, sseq + 9, b"QUIT\r\n", v6=v6),
        _tcp(c, s, FIN | ACK, cseq + 7, sseq + 9, v6=v6),
        _tcp(s, c, FIN | ACK, sseq + 9, cseq + 8, v6=v6),  # acknowledges the client's FIN
        _tcp(c, s, ACK, cseq + 8, sseq + 10, v6=v6),  # the last packet: acknowledges the server's FIN
    ]


def test_a_connection_ends_only_with_the_ack_of_the_second_fin() -> None:
    ends = TcpEnds(1)
    packets = _session()
    for p in packets[:-1]:
        ends.packet(_ether(p))
        assert ends.seen == 1 and ends.open == 1
    ends.packet(_ether(packets[-1]))
    assert ends.open == 0


def test_an_ack_below_the_fin_does_not_end_it() -> None:
    ends = TcpEnds(1)
    packets = _session()
    for p in packets[:-1]:
        ends.packet(_ether(p))
    ends.packet(_ether(_tcp(CLIENT, SERVER, ACK, 1008, 5009)))  # a duplicate ACK of older data
    assert ends.open == 1


def test_fin_sequence_numbers_wrap_around() -> None:
    ends = TcpEnds(1)
    for p in _session(cseq=0xFFFFFFF0, sseq=0xFFFFFFFA):
        ends.packet(_ether(p))
    assert ends.seen == 1 and ends.open == 0


def test_a_reset_ends_a_connection_and_a_new_syn_reopens_the_ports() -> None:
    ends = TcpEnds(1)
    ends.packet(_ether(_tcp(CLIENT, SERVER, SYN, 1)))
    ends.packet(_ether(_tcp(SERVER, CLIENT, RST | ACK, 0, 2)))  # refused
    assert ends.seen == 1 and ends.open == 0
    ends.packet(_ether(_tcp(CLIENT, SERVER, SYN, 77)))  # the same ports again
    assert ends.open == 1


def test_one_open_connection_among_ended_ones_keeps_it_open() -> None:
    ends = TcpEnds(1)
    for p in _session():
        ends.packet(_ether(p))
    for p in _session(("10.0.0.2", 40001), ("10.0.0.3", 587))[:6]:  # no FIN from the server yet
        ends.packet(_ether(p))
    assert ends.seen == 2 and ends.open == 1


def test_a_late_packet_of_an_older_connection_does_not_count() -> None:
    ends = TcpEnds(1)
    ends.packet(_ether(_tcp(SERVER, ("10.0.0.2", 39999), FIN | ACK, 9000, 77)))  # its SYN came before
    assert ends.seen == 0 and ends.open == 0
    for p in _session():
        ends.packet(_ether(p))
    assert ends.seen == 1 and ends.open == 0


def test_counter_tracks_ipv6_over_linux_cooked_capture_fed_byte_by_byte() -> None:
    def sll_v6(ip: bytes) -> bytes:
        return struct.pack("!HHH", 0, 1, 6) + b"\x02" * 6 + b"\x00\x00" + b"\x86\xdd" + ip

    data = _pcap([sll_v6(p) for p in _session(v6=True)], linktype=113)
    c = PcapCounter(track=True)
    for i in range(len(data) - 1):
        c.feed(data[i:i + 1])
    assert c.ends is not None and c.ends.seen == 1 and c.ends.open == 1  # the last ACK not yet in
    c.feed(data[-1:])
    assert c.packets == 8 and c.ends.open == 0


def test_sll_ipv4_and_packets_cut_by_the_snap_length() -> None:
    ends = TcpEnds(113)
    packets = _session()
    for p in packets:
        ends.packet(_sll(p))
    assert ends.open == 0
    cut = TcpEnds(1)
    cut.packet(_ether(packets[0])[:30])  # the TCP header is missing: nothing to follow
    assert cut.seen == 0


def test_linux_cooked_v2_as_tcpdump_any_writes_it(tmp_path) -> None:
    """tcpdump -i any with libpcap 1.10 or later writes Linux cooked v2 (IP at 20, not 16): the
    capture's counter and the file reader of the analysis read it from the one link table."""
    frames = [struct.pack("!HHIHBB", 0x0800, 0, 2, 1, 0, 6) + b"\x02" * 6 + b"\x00\x00" + p for p in _session()]
    data = _pcap(frames, linktype=276)
    c = PcapCounter(track=True)
    c.feed(data)
    assert c.packets == 8 and c.ends is not None and c.ends.seen == 1 and c.ends.open == 0
    path = tmp_path / "any.pcap"
    path.write_bytes(data)
    assert [(f, link) for f, _, link in pcap.records(path)] == [(f, 276) for f in frames]
    assert {pcap.ip_offset(276, f) for f in frames} == {20}


def test_an_unknown_link_type_is_not_followed() -> None:
    c = PcapCounter(track=True)
    c.feed(_pcap([b"\x00" * 60], linktype=147))  # a user link type
    assert c.packets == 1 and c.ends is not None and not c.ends.usable and c.ends.seen == 0


def test_without_tracking_nothing_is_followed() -> None:
    c = PcapCounter()
    c.feed(_pcap([_ether(p) for p in _session()]))
    assert c.packets == 8 and c.ends is None


# --- the target's facts in one round trip -------------------------------------------------------


class CountingLocal(LocalExecutor):
    """This machine as the target, counting the commands asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[str] = []

    def run(self, command: Any, **kw: Any) -> Any:
        self.commands.append(str(command))
        return super().run(command, **kw)


def test_facts_answer_what_the_capture_would_ask_host_by_host() -> None:
    asked = CountingLocal()
    expected = (asked.facts.resolve("localhost"), asked.facts.route_interface("localhost"))
    assert len(asked.commands) == 2  # getent, then ip route get
    assert (asked.facts.resolve("localhost"), asked.facts.route_interface("localhost")) == expected
    assert len(asked.commands) == 2  # remembered for the connection's lifetime

    batched = CountingLocal()
    batched.facts.ask(["localhost", "127.0.0.1", "no-such-host.invalid"])
    assert (batched.facts.resolve("localhost"), batched.facts.route_interface("localhost")) == expected
    assert len(batched.commands) == 1  # nothing asked again
    # a name the target cannot resolve is not remembered: asked again, and reported as before
    with pytest.raises(capture.CaptureError, match="cannot be resolved there"):
        batched.facts.resolve("no-such-host.invalid")
    assert len(batched.commands) == 2
    # another connection knows nothing of these answers: it asks
    other = CountingLocal()
    assert other.facts.resolve("localhost") == expected[0] and len(other.commands) == 1


def test_facts_quote_host_names() -> None:
    script = facts_script(["a.example; touch /tmp/x", "b.example"])
    # a name that is no host name is left out (asked, and refused, host by host); the others are quoted words
    assert "touch" not in script and "b.example" in script
    assert facts_script(["10.0.0.1", "::1"]) == ""
