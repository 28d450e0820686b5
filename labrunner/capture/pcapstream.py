"""tcpdump's pcap stream as it arrives: complete records, and which TCP connections have ended.

The bytes themselves (magic numbers, record headers, link layers) are read as ``labrunner.pcap``
says, the one room that knows them.
"""

from __future__ import annotations

import struct
from typing import Any

from labrunner.errors import CaptureError
from labrunner.pcap import LINKS, LINKTYPE_MASK, PCAP_HEADER, PCAP_MAGIC, PCAP_RECORD, ip_offset


class TcpEnds:
    """Which TCP connections in a capture have ended: both FINs acknowledged, or a reset.

    This is how a capture knows it holds a whole exchange: once every connection it has seen
    has ended, every packet of them is in the file (tcpdump writes in the order it captures),
    so stopping then loses nothing of ours, and no waiting for a quiet moment is needed.
    Only connections whose opening SYN is in the capture count: a late packet of an older
    connection (a retransmission) will never show an end here.
    """

    def __init__(self, linktype: int) -> None:
        self.linktype = linktype
        # key (the two endpoints, sorted) -> per endpoint: [FIN's end sequence, FIN acked]
        self._conns: dict[tuple[tuple[bytes, int], ...], dict[tuple[bytes, int], list[Any]]] = {}
        self._reset: set[tuple[tuple[bytes, int], ...]] = set()
        self._opened: set[tuple[tuple[bytes, int], ...]] = set()  # SYN seen

    @property
    def usable(self) -> bool:
        return self.linktype in LINKS

    @property
    def seen(self) -> int:
        """Connections opened in the capture."""
        return len(self._opened)

    @property
    def open(self) -> int:
        """Connections opened in the capture that have not ended yet."""
        return sum(1 for key in self._opened
                   if key not in self._reset and not (len(self._conns[key]) == 2
                                                      and all(e[1] for e in self._conns[key].values())))

    def packet(self, data: bytes) -> None:
        ip = ip_offset(self.linktype, data)
        if ip is None or len(data) < ip + 20:
            return
        version = data[ip] >> 4
        if version == 4:
            ihl = (data[ip] & 0x0F) * 4
            if data[ip + 9] != 6 or (struct.unpack("!H", data[ip + 6:ip + 8])[0] & 0x1FFF):
                return  # not TCP, or a later fragment
            src, dst, tcp = data[ip + 12:ip + 16], data[ip + 16:ip + 20], ip + ihl
            total = struct.unpack("!H", data[ip + 2:ip + 4])[0]
            end = ip + total
        elif version == 6 and len(data) >= ip + 40:
            if data[ip + 6] != 6:
                return  # extension headers: not followed (our sessions send none)
            src, dst, tcp = data[ip + 8:ip + 24], data[ip + 24:ip + 40], ip + 40
            end = tcp + struct.unpack("!H", data[ip + 4:ip + 6])[0]
        else:
            return
        if len(data) < tcp + 20:
            return  # cut by the snap length: not enough to follow the connection
        sport, dport, seq, ack = struct.unpack("!HHII", data[tcp:tcp + 12])
        offset = (data[tcp + 12] >> 4) * 4
        flags = data[tcp + 13]
        a, b = (src, sport), (dst, dport)
        key = (a, b) if a <= b else (b, a)
        ends = self._conns.setdefault(key, {})
        if flags & 0x04:  # RST
            self._reset.add(key)
            return
        if flags & 0x02 and not flags & 0x10:  # a new SYN (perhaps a port reused after an end)
            self._reset.discard(key)
            ends.clear()
            self._opened.add(key)
        if flags & 0x01:  # FIN: its end is seq + payload + 1 (+1 more when SYN is set too)
            payload = max(end - tcp - offset, 0)
            ends[a] = [(seq + payload + 1 + (1 if flags & 0x02 else 0)) & 0xFFFFFFFF, False]
        if flags & 0x10:  # ACK: does it acknowledge the peer's FIN?
            peer = ends.get(b)
            if peer is not None and ((ack - peer[0]) & 0xFFFFFFFF) < 0x80000000:
                peer[1] = True


class PcapCounter:
    """Follows a pcap byte stream: complete records and where the last one ends; with
    ``track``, which TCP connections in it have ended (``ends``)."""

    HEADER = PCAP_HEADER
    RECORD = PCAP_RECORD

    def __init__(self, *, track: bool = False) -> None:
        self._pending = bytearray()
        self.offset = 0  # bytes consumed so far
        self.complete = 0  # end of the last complete record (or of the file header)
        self.packets = 0
        self._endian: str | None = None
        self._need = self.HEADER  # bytes needed before the next step can be parsed
        self._track = track
        self.ends: TcpEnds | None = None  # set with the file header when tracking

    def feed(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= self._need:
            if self._endian is None:
                self._endian = PCAP_MAGIC.get(bytes(self._pending[:4]))
                if self._endian is None:
                    raise CaptureError("the data from tcpdump is not a pcap stream")
                if self._track:
                    (linktype,) = struct.unpack(self._endian + "I", bytes(self._pending[20:24]))
                    self.ends = TcpEnds(linktype & LINKTYPE_MASK)
                self._advance(self.HEADER)
                self._need = self.RECORD
                continue
            (incl,) = struct.unpack(self._endian + "I", bytes(self._pending[8:12]))
            if len(self._pending) < self.RECORD + incl:
                self._need = self.RECORD + incl
                continue
            if self.ends is not None and self.ends.usable:
                self.ends.packet(bytes(self._pending[self.RECORD:self.RECORD + incl]))
            self._advance(self.RECORD + incl)
            self.packets += 1
            self._need = self.RECORD

    def _advance(self, n: int) -> None:
        del self._pending[:n]
        self.offset += n
        self.complete = self.offset

    @property
    def trailing(self) -> int:
        """Bytes received after the last complete record (a packet cut in the middle)."""
        return len(self._pending)

