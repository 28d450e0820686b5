"""The packet records of a pcap or pcapng file, in file order (= Wireshark's frame numbers).

Used by the light pass (tshark.py): tshark says which bytes of a frame are the TCP payload,
and they are cut from the record here instead of being printed by tshark as hex. Only the
container is read; every protocol field still comes from tshark.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_PCAP_MAGIC = {b"\xa1\xb2\xc3\xd4": ">", b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">", b"\x4d\x3c\xb2\xa1": "<"}
_SHB = 0x0A0D0D0A
_EPB, _SPB, _OPB, _DSB, _IDB = 6, 3, 2, 0x0A, 1


class Unreadable(Exception):
    """Not a container read here (compressed, another format): the caller uses tshark alone."""


def _read(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    return data if len(data) == n else b""


def has_secrets_up_front(path: Path) -> bool:
    """A pcapng Decryption Secrets Block before the first packet (where editcap --inject-secrets
    and labrunner put the key log): the capture will be decrypted, so TLS is certain."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or struct.unpack("<I", head[:4])[0] != _SHB:
                return False
            order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            fh.seek(0)
            while True:
                hdr = _read(fh, 8)
                if not hdr:
                    return False
                kind, length = struct.unpack(order + "II", hdr)
                if kind == _DSB:
                    return True
                if kind in (_EPB, _SPB, _OPB) or length < 12:
                    return False
                fh.seek(length - 8, 1)
    except OSError:
        return False


# A TLS record header carrying a ClientHello or ServerHello (type 22, version 3.x, length, 1|2)
_HELLO = re.compile(rb"\x16\x03[\x00-\x04][\x00-\xff]{2}[\x01\x02]")


def hello_early(path: Path, records: int = 200) -> bool:
    """A TLS hello in one of the first packets: TLS without a key, which the light pass would
    find at once and give up on (a wasted tshark start). A guess, not a proof: a hello found
    later still stops the light pass, and a false alarm only costs the faster pass."""
    try:
        for i, data in enumerate(packets(path)):
            if i >= records:
                return False
            if _HELLO.search(data):
                return True
    except (Unreadable, OSError, struct.error):
        return False
    return False


def packets(path: Path) -> Iterator[bytes]:
    """The captured bytes of every packet record, in order; Unreadable for another format."""
    for data, _ in frames(path):
        yield data


def frames(path: Path) -> Iterator[tuple[bytes, int]]:
    """(captured bytes, length on the wire) of every packet record, in order (Wireshark's
    frame.number and frame.len); Unreadable for another format."""
    with path.open("rb") as fh:
        magic = fh.read(4)
        if magic in _PCAP_MAGIC:
            yield from _pcap(fh, _PCAP_MAGIC[magic])
        elif len(magic) == 4 and struct.unpack("<I", magic)[0] == _SHB:
            fh.seek(0)
            yield from _pcapng(fh)
        else:
            raise Unreadable("not a plain pcap or pcapng file")


def _pcap(fh: BinaryIO, order: str) -> Iterator[tuple[bytes, int]]:
    if not _read(fh, 20):
        return
    rec = struct.Struct(order + "IIII")
    while True:
        hdr = _read(fh, 16)
        if not hdr:
            return
        _, _, caplen, wire = rec.unpack(hdr)
        data = fh.read(caplen)
        if len(data) != caplen:
            return  # cut short: tshark stops at the same record
        yield data, wire


def _pcapng(fh: BinaryIO) -> Iterator[tuple[bytes, int]]:
    order = "<"
    snaplens: list[int] = []
    while True:
        hdr = _read(fh, 8)
        if not hdr:
            return
        kind = struct.unpack("<I", hdr[:4])[0]
        if kind == _SHB:
            bom = _read(fh, 4)
            if not bom:
                return
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(order + "I", hdr[4:])[0]
            snaplens = []
            if length < 12 or not _read(fh, length - 12):
                return
            continue
        kind, length = struct.unpack(order + "II", hdr)
        if length < 12 or length % 4:
            raise Unreadable("damaged pcapng block")
        body = _read(fh, length - 8)
        if not body:
            return  # cut short
        if kind in (_EPB, _OPB):  # the same layout up to the packet data
            caplen, wire = struct.unpack_from(order + "II", body, 12)
            yield body[20:20 + caplen], wire
        elif kind == _SPB:
            origlen = struct.unpack_from(order + "I", body, 0)[0]
            cap = min(origlen, length - 16)
            if snaplens and snaplens[0]:
                cap = min(cap, snaplens[0])
            yield body[4:4 + cap], origlen
        elif kind == _IDB:
            snaplens.append(struct.unpack_from(order + "I", body, 4)[0])
