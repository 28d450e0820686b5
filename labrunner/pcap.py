"""pcap and pcapng bytes: the one room that knows the file formats and the link layers.

Read by the capture (``capture/pcapstream.py`` follows tcpdump's pcap stream as it arrives and
finds the IP header of each packet), by the analysis (the light pass cuts each TCP payload from
the file's own packet record, where tshark says it lies; a key log block up front says the
capture will be decrypted) and by the sanitized copy (``evidence/sanitize.py``). Only the
container and the link-layer header are read here; every protocol field comes from tshark.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# --- pcap ---------------------------------------------------------------------------------

# magic number -> byte order (microsecond and nanosecond time stamps)
PCAP_MAGIC = {b"\xa1\xb2\xc3\xd4": ">", b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">", b"\x4d\x3c\xb2\xa1": "<"}
PCAP_HEADER = 24  # the file header; its link type is the last 4 bytes
PCAP_RECORD = 16  # a record header: seconds, fraction, captured length, length on the wire
LINKTYPE_MASK = 0x0FFFFFFF  # the upper bits of a pcap header's link type are FCS flags

# --- pcapng -------------------------------------------------------------------------------

SHB = 0x0A0D0D0A  # Section Header Block (its byte-order magic tells the section's order)
IDB, OPB, SPB, EPB, DSB = 1, 2, 3, 6, 0x0A  # interface, obsolete/simple/enhanced packet, secrets
_BOM_LITTLE = b"\x4d\x3c\x2b\x1a"


# --- link layers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A link layer whose header in front of IP has a fixed length."""

    name: str  # as tshark's frame.protocols begins with it
    header: int  # bytes in front of the network layer (Ethernet: without VLAN tags)
    ethertype: int | None = None  # where the header's EtherType lies (None: it has none)


# LINKTYPE_* -> its header. Linux cooked capture (tcpdump -i any) has two versions with the same
# name in tshark: v1 (libpcap < 1.10) puts the protocol at 14 and IP at 16, v2 (libpcap 1.10 and
# later, or -y LINUX_SLL2) puts the protocol first and IP at 20.
LINKS: dict[int, Link] = {
    1: Link("eth", 14, 12),  # Ethernet (VLAN tags skipped: ip_offset)
    113: Link("sll", 16, 14),  # LINUX_SLL
    276: Link("sll", 20, 0),  # LINUX_SLL2
    101: Link("raw", 0),  # RAW: IPv4 or IPv6
    228: Link("ip", 0),  # IPV4 (tshark names no link layer)
    229: Link("ipv6", 0),  # IPV6
    0: Link("null", 4),  # NULL: BSD loopback, the address family in host order
    108: Link("null", 4),  # LOOP: the same in network order
}
_IP_TYPES = (b"\x08\x00", b"\x86\xdd")
_VLAN_TYPES = (b"\x81\x00", b"\x88\xa8")


def ip_offset(linktype: int, data: bytes) -> int | None:
    """Where the IP header starts in a packet of link type ``linktype``; None when the link
    layer is not one of LINKS or says the packet carries something other than IP."""
    link = LINKS.get(linktype)
    if link is None:
        return None
    if link.ethertype is None:
        return link.header
    off, etype = link.header, data[link.ethertype:link.ethertype + 2]
    if linktype == 1:
        while etype in _VLAN_TYPES and len(data) >= off + 4:
            etype, off = data[off + 2:off + 4], off + 4
    return off if etype in _IP_TYPES else None


# --- reading a file -------------------------------------------------------------------------


class Unreadable(Exception):
    """Not a container read here (compressed, another format): the caller uses tshark alone."""


# No packet record or pcapng block of a real capture is larger (Wireshark's own largest packet is
# 16 MiB, its usual limit 256 KiB). A damaged or hostile file may claim up to 4 GiB in a length
# field, and ``read(n)`` reserves n bytes before it reads: such a file is refused here instead.
MAX_RECORD = 1 << 25


def _read(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    return data if len(data) == n else b""


def has_secrets_up_front(path: Path) -> bool:
    """A pcapng Decryption Secrets Block before the first packet (where editcap --inject-secrets
    and labrunner put the key log): the capture will be decrypted, so TLS is certain."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or struct.unpack("<I", head[:4])[0] != SHB:
                return False
            order = "<" if head[8:12] == _BOM_LITTLE else ">"
            fh.seek(0)
            while True:
                hdr = _read(fh, 8)
                if not hdr:
                    return False
                kind, length = struct.unpack(order + "II", hdr)
                if kind == DSB:
                    return True
                if kind in (EPB, SPB, OPB) or length < 12:
                    return False
                fh.seek(length - 8, 1)
    except OSError:
        return False


def packets(path: Path) -> Iterator[bytes]:
    """The captured bytes of every packet record, in order; Unreadable for another format."""
    for data, _, _ in records(path):
        yield data


def frames(path: Path) -> Iterator[tuple[bytes, int]]:
    """(captured bytes, length on the wire) of every packet record, in order (Wireshark's
    frame.number and frame.len); Unreadable for another format."""
    for data, wire, _ in records(path):
        yield data, wire


def records(path: Path) -> Iterator[tuple[bytes, int, int]]:
    """(captured bytes, length on the wire, link type) of every packet record, in order; the
    link type is -1 for a pcapng packet of an interface the file does not describe.
    Unreadable for another format."""
    with path.open("rb") as fh:
        magic = fh.read(4)
        if magic in PCAP_MAGIC:
            yield from _pcap(fh, PCAP_MAGIC[magic])
        elif len(magic) == 4 and struct.unpack("<I", magic)[0] == SHB:
            fh.seek(0)
            yield from _pcapng(fh)
        else:
            raise Unreadable("not a plain pcap or pcapng file")


def _pcap(fh: BinaryIO, order: str) -> Iterator[tuple[bytes, int, int]]:
    head = _read(fh, PCAP_HEADER - 4)
    if not head:
        return
    linktype = struct.unpack(order + "I", head[-4:])[0] & LINKTYPE_MASK
    rec = struct.Struct(order + "IIII")
    while True:
        hdr = _read(fh, PCAP_RECORD)
        if not hdr:
            return
        _, _, caplen, wire = rec.unpack(hdr)
        if caplen > MAX_RECORD:
            raise Unreadable(f"a packet record claims {caplen} bytes: the file is damaged")
        data = fh.read(caplen)
        if len(data) != caplen:
            return  # cut short: tshark stops at the same record
        yield data, wire, linktype


def _pcapng(fh: BinaryIO) -> Iterator[tuple[bytes, int, int]]:
    order = "<"
    interfaces: list[tuple[int, int]] = []  # (link type, snap length) of this section's interfaces
    while True:
        hdr = _read(fh, 8)
        if not hdr:
            return
        kind = struct.unpack("<I", hdr[:4])[0]
        if kind == SHB:
            bom = _read(fh, 4)
            if not bom:
                return
            order = "<" if bom == _BOM_LITTLE else ">"
            length = struct.unpack(order + "I", hdr[4:])[0]
            interfaces = []
            if length < 12 or length > MAX_RECORD or not _read(fh, length - 12):
                return
            continue
        kind, length = struct.unpack(order + "II", hdr)
        if length < 12 or length % 4 or length > MAX_RECORD:
            raise Unreadable("damaged pcapng block")
        body = _read(fh, length - 8)
        if not body:
            return  # cut short
        if kind in (EPB, OPB):  # the same layout up to the packet data, but a 2-byte interface in OPB
            iface = struct.unpack_from(order + ("I" if kind == EPB else "H"), body, 0)[0]
            caplen, wire = struct.unpack_from(order + "II", body, 12)
            yield body[20:20 + caplen], wire, interfaces[iface][0] if iface < len(interfaces) else -1
        elif kind == SPB:
            origlen = struct.unpack_from(order + "I", body, 0)[0]
            cap = min(origlen, length - 16)
            if interfaces and interfaces[0][1]:
                cap = min(cap, interfaces[0][1])
            yield body[4:4 + cap], origlen, interfaces[0][0] if interfaces else -1
        elif kind == IDB:
            linktype, _, snaplen = struct.unpack_from(order + "HHI", body, 0)
            interfaces.append((linktype, snaplen))
