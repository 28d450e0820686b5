"""The tshark driver: version check, the one streaming pass, and value names.

Everything Wireshark knows (stream indices, TCP analysis flags, TLS records and their
decryption) comes from one tshark pass whose output is read line by line, so memory does not
grow with the capture: the light pass for a capture without TLS, the TLS pass (the light pass
with a Lua tap) for one with TLS, and the ``-T fields`` pass for whatever those two cannot
read for sure (below).
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from labrunner.analysis import memfile
from labrunner.errors import AnalysisError, ExitStatus, LabError, ToolMissing

if TYPE_CHECKING:
    import threading

MIN_VERSION = (3, 6)
INSTALL_HINT = "sudo apt-get install -y tshark   (Debian/Ubuntu; Wireshark ≥ 3.6)"

# The order here is the column order of the pass; FrameRow reads columns by these names.
FIELDS: tuple[str, ...] = (
    "frame.number", "frame.time_relative", "frame.len", "tcp.stream",
    "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
    "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset",
    "tcp.seq", "tcp.ack", "tcp.len", "tcp.payload", "data.data",
    "tls.record.content_type", "tls.record.opaque_type", "tls.record.length", "tls.handshake.type",
    "tls.handshake.version", "tls.handshake.extensions.supported_version", "tls.handshake.ciphersuite",
    "tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str",
    "tls.handshake.extensions_supported_group", "tls.handshake.sig_hash_alg",
    "tls.handshake.extensions_key_share_group", "tls.handshake.server_named_curve",
    "tls.handshake.certificate", "tls.alert_message.desc",
    # the randoms and the Server Key Exchange's public key (the report's TLS 1.2 walk-through)
    "tls.handshake.random", "tls.handshake.server_point",
    "tcp.analysis.retransmission", "tcp.analysis.duplicate_ack", "tcp.analysis.out_of_order",
    "tcp.analysis.lost_segment", "tcp.analysis.ack_rtt", "icmp.type", "icmpv6.type",
)
COL = {name: i for i, name in enumerate(FIELDS)}

# Dissectors switched off so application bytes (plain or decrypted) reach us unchanged as
# data.data; STARTTLS streams are still found by Wireshark's TLS heuristic ("tls_tcp").
DISABLED = ("smtp", "pop", "imap", "imf", "http", "http2", "mime_multipart")

PREFS = (
    "tcp.desegment_tcp_streams:TRUE",
    "tcp.reassemble_out_of_order:TRUE",
    "tcp.analyze_sequence_numbers:TRUE",
    "tcp.relative_sequence_numbers:TRUE",
    "tls.desegment_ssl_records:TRUE",
    "tls.desegment_ssl_application_data:TRUE",
)


class CaptureFileError(AnalysisError):
    """The capture file itself is the problem (missing, not a capture, corrupt): bad input."""

    exit_status = ExitStatus.USAGE


def tshark_path() -> str:
    path = shutil.which("tshark")
    if not path:
        raise ToolMissing("tshark (Wireshark's command-line engine) is not installed", hint=INSTALL_HINT)
    return path


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labrunner"


def _save(path: Path, text: str) -> bool:
    """Write a cache file whole or not at all (a fresh temporary name beside it, then a rename:
    the run's two analysis workers, or two runs, may write the same file at once); False if it
    cannot be written, which a cache survives."""
    from labrunner.runfolder.layout import write_bytes_atomic

    try:
        write_bytes_atomic(path, text.encode("utf-8"))
    except (OSError, LabError):
        return False
    return True


def _binary_key(path: str) -> list[object] | None:
    """What identifies one installed tshark: an upgrade replaces the file (new inode, mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns]


def _ask_version(path: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=30, check=False, start_new_session=True).stdout  # (see Pass)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissing(f"tshark could not be run: {exc}", hint=INSTALL_HINT) from exc
    match = re.search(r"TShark \(Wireshark\) (\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ToolMissing("tshark --version printed no version we recognise", hint=INSTALL_HINT)
    return tuple(int(x) for x in match.groups())


@lru_cache(maxsize=1)
def tshark_version() -> tuple[int, ...]:
    """The installed tshark's version, e.g. (4, 0, 17); ToolMissing if absent or too old.

    ``tshark --version`` loads every dissector library (~0.3 s, as long as dissecting a few
    thousand frames), so the answer is kept on disk for this very binary (path, inode, size,
    mtime): a fresh ``labrunner analyze`` then runs tshark once, not twice.
    """
    path = tshark_path()
    key = _binary_key(path)
    cache = _cache_dir() / "tshark-version.json"
    version: tuple[int, ...] | None = None
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if key is not None and saved["key"] == key:
            version = tuple(int(x) for x in saved["version"])
    if version is None:
        version = _ask_version(path)
        if key is not None:
            _save(cache, json.dumps({"key": key, "version": list(version)}))
    if version[:2] < MIN_VERSION:
        raise ToolMissing(
            f"tshark {'.'.join(map(str, version))} is too old; labrunner needs Wireshark "
            f"{'.'.join(map(str, MIN_VERSION))} or newer", hint=INSTALL_HINT)
    return version


def _dissection(keylog: Path | None) -> list[str]:
    """The dissector settings of the -T fields and TLS passes (the mail dissectors off, so that
    plain and decrypted application bytes reach us as data.data)."""
    argv = []
    for proto in DISABLED:
        argv += ["--disable-protocol", proto]
    for pref in PREFS:
        argv += ["-o", pref]
    if keylog is not None:
        argv += ["-o", f"tls.keylog_file:{keylog}"]
    return argv


def command(capture: Path, keylog: Path | None) -> list[str]:
    argv = [tshark_path(), "-r", str(capture), "-n",
            "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,",
            "-E", "quote=n", *_dissection(keylog)]
    for field in FIELDS:
        argv += ["-e", field]
    return argv


# --- the light pass ----------------------------------------------------------------------------
# ``-T fields`` makes tshark build the whole visible protocol tree of every frame: ~2.5x the CPU
# of a plain pass, whatever the fields (bench/README.md). Custom columns only prime the fields
# they show (~2 % of a plain pass each), but a column holds at most 2 048 characters: too short for a
# segment's payload as hex, for certificates and for decrypted data. So a capture without TLS
# is read with columns (``-T tabs``), and each TCP payload is cut from the file's own packet
# record where tshark says it lies; the first sign of TLS (a record, a key) or of a frame whose
# payload cannot be located that simply (fragments, tunnels, IPv6 extension headers, an odd
# link layer, a cut frame) sends the whole capture to the ``-T fields`` pass instead.

LIGHT_FIELDS: tuple[str, ...] = (
    "frame.time_relative", "tcp.stream", "net.src", "tcp.srcport", "net.dst", "tcp.dstport",
    "tcp.seq", "tcp.ack", "tcp.len",
    "tcp.analysis.retransmission", "tcp.analysis.duplicate_ack", "tcp.analysis.out_of_order",
    "tcp.analysis.lost_segment", "tcp.analysis.ack_rtt",
    # the signs that this pass cannot be used
    "tls.record.content_type", "tls.record.opaque_type",
    # not asked of tshark (ASKED): read from the packet's own headers (light_rows)
    "tcp.flags", "frame.protocols",
)
# Each custom column costs ~2 % of a plain pass (frame.protocols, a string built for every
# frame, ~7 %). So the time, addresses and ports come as Wireshark's built-in columns, which the
# dissectors fill whether asked or not (the network layer's source and destination: ip.src or
# ipv6.src; light_rows makes sure the frame is a plain link/IP/TCP one, where they are the same);
# what the file's own packet records say is taken from them: the frame's number (its place in
# the file), its length on the wire, the layers in front of TCP (link, IP, nothing between),
# where its TCP payload lies (from the header lengths; it must be tshark's tcp.len) and its flags.
ASKED = LIGHT_FIELDS[:-2]
assert LIGHT_FIELDS[len(ASKED):] == ("tcp.flags", "frame.protocols")
_BUILT_IN = {"frame.time_relative": "%Rt", "net.src": "%uns", "tcp.srcport": "%uS", "net.dst": "%und",
             "tcp.dstport": "%uD"}
_L = {name: i for i, name in enumerate(LIGHT_FIELDS)}

# --- the rows both passes give ------------------------------------------------------------------
# One layout for both: the light pass's columns as tshark prints them, except tcp.flags as a
# number (SYN | ACK | FIN | RST), then the TCP payload (bytes from the light pass, hex from the
# -T fields pass), frame.number and frame.len (numbers from the light pass, text from the other),
# and, from the -T fields pass only, data.data and the other TLS fields. The light pass's lines
# then need no rebuilding, which was a third of its Python side; the -T fields pass is bound by
# tshark and affords the rearranging.
TLS_EXTRA = tuple(name for name in FIELDS if name.startswith("tls.") and name not in LIGHT_FIELDS)
ROW: tuple[str, ...] = (*LIGHT_FIELDS, "payload", "frame.number", "frame.len", "data.data", *TLS_EXTRA)
R = {name: i for i, name in enumerate(ROW)}
NROW = len(LIGHT_FIELDS) + 3  # every row has at least the payload, the number and the length
SYN, ACK, FIN, RST = 0x002, 0x010, 0x001, 0x004
FALSE = frozenset(("", "0", "False"))  # how tshark prints a flag that is not set
# where each column of a row comes from in a -T fields line (-1: worked out by fields_row)
_FIELDS_ORDER = [COL["tcp.payload"] if name == "payload" else COL.get(name, -1) for name in ROW]
assert [name for name, i in zip(ROW, _FIELDS_ORDER, strict=True) if i < 0] == [
    "net.src", "net.dst", "tcp.flags", "frame.protocols"]


def _set(value: str) -> bool:
    """A flag of the -T fields pass: "1", or "0,1" for a frame with two TCP headers (any set)."""
    if "," not in value:
        return value not in FALSE
    return any(v not in FALSE for v in value.split(","))


_SYN, _ACK, _FIN, _RST = COL["tcp.flags.syn"], COL["tcp.flags.ack"], COL["tcp.flags.fin"], COL["tcp.flags.reset"]
_SRC4, _SRC6, _DST4, _DST6 = COL["ip.src"], COL["ipv6.src"], COL["ip.dst"], COL["ipv6.dst"]
_R_FLAGS, _R_PROTOCOLS, _R_SRC, _R_DST = R["tcp.flags"], R["frame.protocols"], R["net.src"], R["net.dst"]
_ICMP4, _ICMP6 = COL["icmp.type"], COL["icmpv6.type"]
# frame.protocols of a row whose TCP header is one an ICMP error quotes (tshark gives it the
# quoted segment's tcp.stream): no segment of that stream, its payload no TCP payload (D3)
ICMP = "icmp"
# and of a row the light and TLS passes know to be the last of its connection in the file
# (_last_frames): the analysis may finish its stream there
END = "end"


def fields_row(cols: list[str]) -> list[Any]:
    """A -T fields line's columns (COL) as a row of the common layout (R)."""
    row: list[Any] = [cols[i] for i in _FIELDS_ORDER]
    row[_R_FLAGS] = (SYN if _set(cols[_SYN]) else 0) | (ACK if _set(cols[_ACK]) else 0) | \
        (FIN if _set(cols[_FIN]) else 0) | (RST if _set(cols[_RST]) else 0)
    row[_R_PROTOCOLS] = ICMP if cols[_ICMP4] or cols[_ICMP6] else ""
    row[_R_SRC] = cols[_SRC4] or cols[_SRC6]
    row[_R_DST] = cols[_DST4] or cols[_DST6]
    return row


class NeedFullPass(Exception):
    """The light pass met something only the -T fields pass handles (TLS, an unusual frame)."""


class OutputSpace(NeedFullPass):
    """The tmpfs that held tshark's output ran full: the capture is read again through a pipe."""


def light_command(capture: Path) -> list[str]:
    """The light pass. It leaves the mail dissectors on: with them off, TCP offers every segment
    to each heuristic dissector in turn, which cost ~15 % of a plain pass (bench/README.md);
    only IMF is off.
    Their reading of the payload is not used here (it is cut from the file), and a TLS record
    they do not recognise as such is caught in light_rows by its header bytes."""
    columns = ",".join(f'"{i}","{_BUILT_IN.get(name) or "%Cus:" + name}"' for i, name in enumerate(ASKED))
    # IMF (mail headers and bodies, called by the mail dissectors, never by a port) is the one
    # that can go without waking the heuristics: ~4 % of a plain pass on a capture of mails
    argv = [tshark_path(), "-r", str(capture), "-n", "-T", "tabs", "-o", f"gui.column.format:{columns}",
            "--disable-protocol", "imf"]
    for pref in PREFS:
        argv += ["-o", pref]
    return argv


def _payload_span(layout: tuple[int, int], record: bytes, length: int) -> tuple[int, int]:
    """Start and end of the TCP payload in the packet's bytes, from its own IP and TCP headers
    (``layout``: where IP starts, and its version); NeedFullPass unless they agree with
    tshark's tcp.len (evidence/sanitize.py)."""
    start, end, _, _ = _segment_at(*layout, record)
    if end - start != length or end == start:
        raise NeedFullPass("payload not where the headers say")
    return start, end


# the IP protocol (IPv4) / next header (IPv6) of an ICMP error, which quotes a TCP header that
# tshark dissects (and gives the quoted segment's tcp.stream): no segment of that stream (D3)
_ICMP = {4: 1, 6: 58}


def _segment_at(ip: int, version: int, record: bytes) -> tuple[int, int, int, int]:
    """Start and end of the TCP payload, the TCP header's flags (SYN | ACK | FIN | RST) and where
    it starts, from the IP header at ``ip`` and the TCP header right behind it; (0, 0, -1, 0) for
    an ICMP error (quoting a TCP header). NeedFullPass for anything else: an IP fragment, a tunnel, an
    IPv6 extension header, a frame cut inside its headers, lengths that do not fit."""
    try:
        first = record[ip]
        if first >> 4 != version:
            raise NeedFullPass(f"not IPv{version}")
        if version == 4:
            if int.from_bytes(record[ip + 6:ip + 8], "big") & 0x3FFF:
                raise NeedFullPass("IP fragment")  # more fragments, or an offset
            proto = record[ip + 9]
            tcp = ip + (first & 0x0F) * 4
            end = ip + int.from_bytes(record[ip + 2:ip + 4], "big")
            if tcp < ip + 20:
                raise NeedFullPass("IP header shorter than 20 bytes")
        else:
            proto = record[ip + 6]
            tcp = ip + 40
            end = tcp + int.from_bytes(record[ip + 4:ip + 6], "big")
        if proto != 6:
            if proto == _ICMP[version]:
                return 0, 0, -1, 0
            raise NeedFullPass(f"IP protocol {proto} in front of TCP")
        offset = record[tcp + 12] >> 4
        flags = record[tcp + 13] & (SYN | ACK | FIN | RST)
    except IndexError as exc:
        raise NeedFullPass("a frame shorter than its headers") from exc
    start = tcp + offset * 4
    if offset < 5 or end > len(record) or end < start:
        raise NeedFullPass("payload not where the headers say")
    return start, end, flags, tcp


# Where IP starts in an Ethernet frame (link type 1) of type 0x0800 or 0x86DD, or either behind
# one VLAN tag, and its version (the other link layers: pcap.ip_offset)
_ETHER_IP = {b"\x08\x00": (14, 4), b"\x86\xdd": (14, 6)}
_VLAN_IP = {b"\x08\x00": (18, 4), b"\x86\xdd": (18, 6)}


# Ethernet, IPv4 and the IPv4 header's fields read here, at once (the frames of most captures):
# EtherType, version and header length, total length, fragment bits, protocol
_ETHER_IPV4 = struct.Struct("!12xHBxH2xHxB")


def _segment(record: bytes, linktype: int) -> tuple[int, int, int, int, int, int]:
    """A frame tshark found a TCP header in, from its own bytes: the TCP payload's start and end,
    the flags (-1: an ICMP error's quote), where IP starts, its version and where TCP starts.
    NeedFullPass when it is not link, IP and TCP and nothing else (see _segment_at)."""
    if linktype == 1 and len(record) >= 54:
        kind, first, total, fragment, proto = _ETHER_IPV4.unpack_from(record)
        if kind == 0x0800 and first >> 4 == 4 and proto == 6 and not fragment & 0x3FFF and first & 0x0F >= 5:
            # (what _segment_at does for these, without its general checks)
            tcp = 14 + (first & 0x0F) * 4
            end = 14 + total
            if tcp + 14 <= len(record):
                offset = record[tcp + 12] >> 4
                start = tcp + offset * 4
                if offset >= 5 and start <= end <= len(record):
                    return start, end, record[tcp + 13] & (SYN | ACK | FIN | RST), 14, 4, tcp
    if linktype == 1:
        kind = record[12:14]
        layout = _ETHER_IP.get(kind) if kind != b"\x81\x00" else _VLAN_IP.get(record[16:18])
        if layout is None:
            raise NeedFullPass("an Ethernet frame with neither IPv4 nor IPv6 in it")
        ip, version = layout
    else:
        from labrunner import pcap

        at = pcap.ip_offset(linktype, record)
        version = record[at] >> 4 if at is not None and at < len(record) else 0
        if at is None or version not in (4, 6):
            raise NeedFullPass(f"link type {linktype}")
        ip = at
    start, end, flags, tcp = _segment_at(ip, version, record)
    return start, end, flags, ip, version, tcp


# A frame's segment read ahead (_ahead), before tshark says anything: _segment's answer, tcp.len
# as tshark prints it, and whether the payload starts like a TLS record (light_rows decides);
# None for a frame _segment cannot read
Guess = tuple[tuple[int, int, int, int, int, int], str, bool] | None


def _tls_head(record: bytes, start: int, end: int) -> bool:
    """Whether the payload at ``start`` begins with a TLS record header (handshake, alert, data...)."""
    return end - start > 4 and record[start + 1] == 3 and 0x14 <= record[start] <= 0x17


def _guess(record: bytes, linktype: int) -> Guess:
    try:
        seg = _segment(record, linktype)
    except (NeedFullPass, IndexError):
        return None
    start, end = seg[0], seg[1]
    return seg, str(end - start) if end > start else "0", _tls_head(record, start, end)


_END: tuple[None, int, int, None] = (None, 0, -1, None)
Idle = Callable[[Iterable[bytes], Callable[[], bool]], None]
Record = tuple[bytes, int, int, Guess]


def _ahead(records: Iterator[tuple[bytes, int, int]], ready: Callable[[], bool] | None,
           limit: int = 64 << 20, idle: Idle | None = None) -> tuple[Iterator[Record], frozenset[int] | None]:
    """The packet records, each with its _guess; the first ones read (and guessed) before
    tshark's first line is there: tshark spends ~0.17 s loading its dissectors, and reading the
    file meanwhile costs the analysis no time. Stops at ``ready`` (asked every 256 records) or
    after ``limit`` bytes (memory stays bounded); the rest comes unguessed. With the whole file
    read and tshark still starting, also the frames each connection ends with (_last_frames,
    else None), and ``idle`` is given the guessed payloads of each direction of each
    connection, joined in the order captured (mail.prepare). Each record read ahead is let go
    as it is handed on (freeing 50 MB of them at once took ~10 ms at the end of the pass)."""
    read: list[Record] = []
    last: frozenset[int] | None = None
    if ready is not None:
        size = 0
        for record, wire, link in records:
            read.append((record, wire, link, _guess(record, link)))
            size += len(record)
            if size > limit or (not len(read) & 0xFF and ready()):
                break
        else:
            if not ready():
                last = _last_frames(read)
            if idle is not None and not ready():
                idle(_directions(read), ready)
    queue: collections.deque[Record | None] = collections.deque(read)
    del read
    queue.append(None)
    return itertools.chain(iter(queue.popleft, None),
                           ((record, wire, link, None) for record, wire, link in records)), last


# ICMP messages that quote no packet (echo request and reply); any other may quote a TCP header
# (errors, an ICMPv6 Redirect's Redirected Header...), and tshark gives it that segment's tcp.stream
_ICMP_ECHO = {4: frozenset((0, 8)), 6: frozenset((128, 129))}


def _last_frames(read: list[Record]) -> frozenset[int] | None:
    """The numbers of the frames after which the file holds no other frame of their TCP
    connection (addresses and ports, either way; tshark's streams of one connection are
    consecutive, so no later frame of that stream either): the analysis can finish that
    stream there, while tshark reads on. None when a frame could still join a connection
    later without being of it: an ICMP message other than an echo (an error, a redirect:
    quoting a TCP header, tshark gives it that segment's stream; the review of session 7 found
    an ICMPv6 Redirect doing it). A frame read here otherwise than tshark reads it never gets that far:
    light_rows gives up at it (its tcp.len, its payload), and the analysis is made anew."""
    ends: dict[bytes, int] = {}
    for number, (record, _, _, guess) in enumerate(read, 1):
        if guess is None:
            continue  # no TCP here, or TCP light_rows gives up at
        _, _, flags, ip, version, tcp = guess[0]
        if flags < 0:
            icmp = ip + ((record[ip] & 0x0F) * 4 if version == 4 else 40)
            if icmp >= len(record) or record[icmp] not in _ICMP_ECHO[version]:
                return None
            continue
        if version == 4:
            a, b = record[ip + 12:ip + 16] + record[tcp:tcp + 2], record[ip + 16:ip + 20] + record[tcp + 2:tcp + 4]
        else:
            a, b = record[ip + 8:ip + 24] + record[tcp:tcp + 2], record[ip + 24:ip + 40] + record[tcp + 2:tcp + 4]
        ends[a + b if a < b else b + a] = number
    return frozenset(ends.values())


def _directions(read: list[Record]) -> Iterator[bytes]:
    """The guessed TCP payloads of each direction (addresses and ports), joined in file order."""
    joined: dict[bytes, list[bytes]] = {}
    for record, _, _, guess in read:
        if guess is None or guess[2]:
            continue  # (a payload that starts like TLS: no mail in it)
        (start, end, flags, ip, version, tcp), _, _ = guess
        if flags < 0 or end == start:
            continue
        key = record[ip + 12:ip + 20] + record[tcp:tcp + 4] if version == 4 else record[ip + 8:ip + 44]
        joined.setdefault(key, []).append(record[start:end])
    for payloads in joined.values():
        yield b"".join(payloads)


def light_rows(lines: Iterator[str], capture: Path, *, tap: _TapStream | None = None,
               ready: Callable[[], bool] | None = None, idle: Idle | None = None) -> Iterator[list[Any]]:
    """Rows (R) from the light pass's lines and the file's records (``tap``: the TLS pass's
    lines, which have TAP_COLUMNS too, and whose TLS is read, not a reason to give up;
    ``ready``: whether tshark's first line is there, and ``idle``, see _ahead).

    tshark's columns (ASKED), then tcp.flags and frame.protocols (ICMP for an ICMP error's
    quote, END for the last frame of its connection when the whole file was read ahead, else
    empty) from the packet's headers, the payload, the frame's number and its
    length on the wire; from the TLS pass, then the bytes the tap gave (data.data), TLS_COLUMNS
    and TAP_FIELDS. The network-layer addresses stay as the built-in columns print them (padded
    with spaces): streams.Stream strips them where it reads them, once per stream and side, not
    per frame."""
    from labrunner import pcap

    tls = tap is not None
    try:
        records, last = _ahead(pcap.records(capture), ready, idle=idle)
        ends = last or ()
        ncols = len(ASKED) + (len(TAP_COLUMNS) if tls else 0)
        i_ct, i_opaque, i_len, i_stream = (_L["tls.record.content_type"], _L["tls.record.opaque_type"],
                                           _L["tcp.len"], _L["tcp.stream"])
        n = len(ASKED)  # (the TLS pass: data.len there, then TLS_COLUMNS)
        blank = [""] * len(TAP_FIELDS)
        for number, line in enumerate(lines, 1):
            cols: list[Any] = line.rstrip("\n").split("\t")
            if len(cols) != ncols:
                raise NeedFullPass("a line with another number of columns")
            if (cols[i_ct] or cols[i_opaque]) and not tls:
                raise NeedFullPass("TLS")
            record, wire, link, guess = next(records, _END)  # tshark prints every frame, in the file's order
            if record is None:
                raise NeedFullPass("fewer packet records than tshark's frames")
            layers = ""
            if not cols[i_stream]:
                flags, payload = 0, b""  # no TCP in it
            else:
                if guess is not None:
                    (start, end, flags, _, _, _), length, tls_head = guess
                else:
                    start, end, flags, _, _, _ = _segment(record, link)
                    length = str(end - start) if end > start else "0"
                    tls_head = _tls_head(record, start, end)
                if flags < 0:
                    flags, layers, payload = 0, ICMP, b""  # a TCP segment an ICMP error quotes (fields_row)
                elif length != (cols[i_len] or "0"):
                    raise NeedFullPass("payload not where the headers say")
                elif flags & RST or end == start:
                    payload = b""  # (RST data: no TCP payload for Wireshark)
                else:
                    payload = record[start:end]
                    if tls_head and not tls:
                        # a TLS record header (handshake, alert, data...): TLS that no dissector
                        # marked (the mail dissectors are on in this pass, see light_command)
                        raise NeedFullPass("TLS")
            if number in ends and not layers:
                layers = END
            if tap is None:
                cols += (flags, layers, payload, number, wire)
            else:
                data = tap.data
                if cols[n] and not data and (cols[i_ct] or cols[i_opaque]):
                    raise NeedFullPass("decrypted bytes the tap did not see")
                cols[n:n + 1] = (flags, layers, payload, number, wire, data)  # (in data.len's place)
                cols += tap.extra or blank
            yield cols
        if next(records, None) is not None:
            raise NeedFullPass("more packet records than tshark's frames")
    except (pcap.Unreadable, ValueError, OSError, IndexError) as exc:
        raise NeedFullPass(str(exc)) from exc


# --- the TLS pass -------------------------------------------------------------------------------
# A capture with TLS needs Wireshark's TLS fields and the bytes it decrypts. ``-T fields`` gives
# them at ~2x the CPU of a plain pass for building the visible tree of every frame, and on a
# big capture ~5x: it prints every payload as hex one fputc at a time (perf: 46 % of its time in
# fputc; bench/README.md). The TLS pass is the light pass (custom columns, payload cut from the
# file) plus a Lua tap inside the same tshark: the Field extractors prime only the fields they
# read, and the tap writes, for the frames that have them, the decrypted bytes as they are
# (length-prefixed, no hex) and the handshake's fields as ``-T fields`` prints them. The
# decryption and the dissection stay Wireshark's; the tap only copies what its tree holds.
# Without Lua in tshark (its first line missing), or for anything the light pass cannot place,
# the -T fields pass is used instead.

# short per-frame TLS fields as custom columns (a column holds at most 2 048 characters: a longer
# one sends the capture to the -T fields pass), the rest from the tap, on handshake/alert frames
TLS_COLUMNS: tuple[str, ...] = ("tls.record.length", "tls.handshake.type")
TAP_FIELDS: tuple[str, ...] = tuple(name for name in TLS_EXTRA if name not in TLS_COLUMNS)
assert TLS_EXTRA[:len(TLS_COLUMNS)] == TLS_COLUMNS
# the TLS pass's lines: the light pass's columns, data.len and TLS_COLUMNS. data.len is there when
# Wireshark's "data" dissector got bytes in the frame: with TLS records in it, decrypted bytes the
# tap did not see (given to a dissector other than the tap's), and the capture goes to the -T
# fields pass
TAP_COLUMNS: tuple[str, ...] = ("data.len", *TLS_COLUMNS)
_BYTES_FIELDS = frozenset(("tls.handshake.certificate", "tls.handshake.random", "tls.handshake.server_point"))
TAP_HELLO = b"\x03labrunner-tls-tap 2\n"
TAP_END = b"\x04labrunner-tls-tap end\n"  # (written once tshark has read the whole capture)
_COLUMN_MAX = 2000  # (Wireshark cuts a column at 2 047 characters)

_TAP_LUA = r"""-- labrunner's TLS tap (written by labrunner/analysis/tshark.py; see the TLS pass there)
local out = io.stdout
local fields = { %(fields)s }
local kind = { %(kinds)s }  -- "b": bytes (as lower-case hex), "s": text (escaped), "n": a number
local esc = { ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
-- the handshake's fields, as -T fields prints them (occurrences joined by ","), in the frames
-- whose messages analysis/tls.py reads them from (hellos, encrypted extensions, certificate,
-- key exchange; alerts): other handshake frames (tickets, Finished...) get none
local hs = Listener.new(nil, "tls.handshake.type in {1, 2, 8, 11, 12} || tls.alert_message")
function hs.packet(pinfo)
  local cols = {}
  for i = 1, #fields do
    local found = { fields[i]() }
    local k = kind[i]
    for j = 1, #found do
      local fi = found[j]
      if k == "b" then
        found[j] = fi.len > 0 and string.lower(tostring(fi.value)) or "<MISSING>"
      elseif k == "s" then
        found[j] = (string.gsub(tostring(fi), "[\b\f\n\r\t]", esc))
      else
        found[j] = tostring(fi)
      end
    end
    cols[i] = table.concat(found, ",")
  end
  out:write("\2", pinfo.number, "\t", table.concat(cols, "\t"), "\n")
end
-- called once tshark has read the whole capture, before it tears down (tens of ms on a big
-- one): the analysis goes on meanwhile
function hs.draw()
  out:write("\4labrunner-tls-tap end\n")
  out:flush()
end
-- the bytes the TLS dissector decrypted, as they are: "\1FRAME LENGTH\n" then LENGTH bytes.
-- TLS hands each decrypted record to the application's dissector: a heuristic one while it
-- knows none (the mail dissectors are off), or the one ALPN names; this is both, in place of
-- Wireshark's "data" (whose data.data the -T fields pass reads), so a filter on every frame
-- is not needed. Where another dissector gets the bytes, the frame's data.len (a column)
-- says so, and the capture goes to the -T fields pass.
local tap = Proto("labrunner_tls_tap", "labrunner TLS tap")
-- TLS tries its heuristics before the dissector of a port in its table (tls.port): where that one
-- is on (LDAP on 636, DNS on 853...), it gets the bytes in the -T fields pass, not "data", so it
-- gets them here too (the tap declines), and the two passes read the same
local tls_port = DissectorTable.get("tls.port")
local off = {}
for _, name in ipairs({ %(disabled)s }) do
  local found, handle = pcall(Dissector.get, name)
  if found and handle then off[tostring(handle)] = true end
end
local other = {}  -- port -> whether a dissector that is on takes TLS's bytes there
local function taken(port)
  local known = other[port]
  if known == nil then
    local handle = tls_port:get_dissector(port)
    known = handle ~= nil and not off[tostring(handle)]
    other[port] = known
  end
  return known
end
local function write(tvb, pinfo)
  out:write("\1", pinfo.number, " ", tvb:len(), "\n", tvb:raw())
  return tvb:len()
end
local function give(tvb, pinfo)
  if taken(pinfo.src_port) or taken(pinfo.dst_port) then return false end
  write(tvb, pinfo)
  return true
end
-- (named by ALPN: the session's dissector, whatever the ports; -T fields gives "data" its bytes)
function tap.dissector(tvb, pinfo, tree)
  return write(tvb, pinfo)
end
tap:register_heuristic("tls", give)
local alpn = DissectorTable.get("tls.alpn")
for _, id in ipairs({ %(alpn)s }) do
  if alpn:get_dissector(id) then alpn:add(id, tap) end
end
-- last: said only once everything is in place (an error above leaves it out, and the
-- capture to the -T fields pass)
out:write("\3labrunner-tls-tap 2\n")
"""
# ALPN names of the application protocols whose dissectors the TLS pass turns off (DISABLED)
_TAP_ALPN = ("http/1.1", "http/1.0", "h2", "imap", "pop3", "smtp")
_TEXT_FIELDS = frozenset(("tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str"))


def _tap_source() -> str:
    def kind(name: str) -> str:
        return '"b"' if name in _BYTES_FIELDS else '"s"' if name in _TEXT_FIELDS else '"n"'

    return _TAP_LUA % {"fields": ", ".join(f'Field.new("{name}")' for name in TAP_FIELDS),
                       "kinds": ", ".join(kind(name) for name in TAP_FIELDS),
                       "alpn": ", ".join(f'"{name}"' for name in _TAP_ALPN),
                       "disabled": ", ".join(f'"{name}"' for name in DISABLED)}


def _private_folder(folder: Path) -> bool:
    """A real folder of this user's that no one else can write to (a folder under /tmp can be
    made beforehand by another user; the Lua tap in it would then be theirs to change)."""
    import stat

    st = folder.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


@lru_cache(maxsize=1)
def tap_script() -> Path:
    """The Lua tap's file (named by its content's checksum: a new version writes a new file; the
    content is compared too). Made before tshark starts: zlib (imported already) rather than
    hashlib, tempfile only when the cache folder will not do (~5 ms of imports)."""
    import zlib

    source = _tap_source()
    name = f"tls-tap-{zlib.crc32(source.encode()):08x}-{len(source)}.lua"
    for folder in _tap_folders():
        path = folder / name
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not _private_folder(folder):
                continue  # tshark runs the script: only a folder no one else can write to
            if (path.is_file() and path.read_text(encoding="utf-8") == source) or _save(path, source):
                return path
    raise NeedFullPass("no folder to write the Lua tap in")


def _tap_folders() -> Iterator[Path]:
    yield _cache_dir()
    import tempfile

    yield Path(tempfile.gettempdir()) / f"labrunner-{os.getuid()}"


def _tap_header(line: bytes) -> tuple[int, int]:
    """Frame number and byte count of a tap header line; anything else is no header the tap
    writes, and the capture goes to the -T fields pass."""
    parts = line[1:].split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise NeedFullPass("the tap's bytes are not where its header says")
    return int(parts[0]), int(parts[1])


def tls_command(capture: Path, keylog: Path | None) -> list[str]:
    """The TLS pass: the light pass's columns and TAP_COLUMNS, with the -T fields pass's
    dissector settings, and the tap."""
    names = (*ASKED, *TAP_COLUMNS)
    # the TLS fields as numbers (":0:U": every occurrence, unresolved), as -T fields prints them
    columns = ",".join(f'"{i}","{_BUILT_IN.get(name) or "%Cus:" + name + (":0:U" if name.startswith("tls.") else "")}"'
                       for i, name in enumerate(names))
    return [tshark_path(), "-r", str(capture), "-n", "-T", "tabs", "-o", f"gui.column.format:{columns}",
            "-X", f"lua_script:{tap_script()}", *_dissection(keylog)]


class _TapStream:
    """The TLS pass's output: tshark's column lines, each after what the tap wrote of its frame
    (``data``: the decrypted bytes, ``extra``: TAP_FIELDS' values, for the line just given)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.data: list[bytes] | str = ""
        self.extra: list[str] | None = None
        self.ended = False  # the tap's end line read: tshark has read and printed the whole capture

    def lines(self) -> Iterator[str]:
        from labrunner.pcap import MAX_RECORD

        read = self.stream.readline
        if read() != TAP_HELLO:
            raise NeedFullPass("tshark ran without the Lua tap")
        frame = 0
        data: list[bytes] = []
        extra: list[str] | None = None
        long_cols = [_L["tls.record.content_type"], _L["tls.record.opaque_type"], len(ASKED) + 1, len(ASKED) + 2]
        while True:
            line = read()
            if not line:
                return
            kind = line[0]
            if kind == 4 and line == TAP_END:
                # every frame printed: tshark still tears down (tens of ms on a big capture; Pass.finish)
                if data or extra is not None:
                    raise NeedFullPass("the tap's bytes of a frame tshark did not print")
                self.ended = True
                return
            if kind == 1:  # decrypted bytes of the coming frame
                number, size = _tap_header(line)
                chunk = self.stream.read(size) if size <= MAX_RECORD else b""  # (never a claimed GiB)
                if number != frame + 1 or len(chunk) != size:
                    raise NeedFullPass("the tap's bytes are not where its header says")
                data.append(chunk)
            elif kind == 2:  # the coming frame's handshake fields
                head, _, rest = line[1:].rstrip(b"\n").partition(b"\t")
                extra = rest.decode("utf-8", "surrogateescape").split("\t")
                if not head.isdigit() or int(head) != frame + 1 or len(extra) != len(TAP_FIELDS):
                    raise NeedFullPass("the tap's fields are not those of the coming frame")
            else:
                frame += 1
                text = line.decode("utf-8", "surrogateescape")
                if len(text) > _COLUMN_MAX:
                    cols = text.split("\t")
                    if any(len(cols[i]) >= _COLUMN_MAX for i in long_cols if i < len(cols)):
                        raise NeedFullPass("a TLS column longer than Wireshark's columns hold")
                if data:
                    self.data, data = data, []
                else:
                    self.data = ""
                self.extra, extra = extra, None
                yield text


# How long one tshark pass may take (seconds; LABRUNNER_ANALYZE_TIMEOUT): a capture it cannot
# finish in that time is refused with a clear line instead of running for ever (F17). tshark
# reads ~50-100 MB/s of mail traffic here, so the default leaves room for captures of tens of GB.
DEFAULT_TIMEOUT = 1800.0


def pass_timeout() -> float:
    try:
        value = float(os.environ.get("LABRUNNER_ANALYZE_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def _check_file(capture: Path) -> None:
    if not capture.exists():
        raise CaptureFileError(f"capture file not found: {capture}",
                               hint="give the path of a .pcap or .pcapng file")
    if not capture.is_file():
        raise CaptureFileError(f"not a file: {capture}", hint="give the path of a .pcap or .pcapng file")
    try:
        with capture.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CaptureFileError(f"cannot read {capture}: {exc.strerror}",
                               hint="check the file's permissions (captures are 0600: run as their owner)") from exc
    if len(head) < 4:
        raise CaptureFileError(f"{capture} is empty or too short to be a capture file",
                               hint="save the capture again as .pcapng from Wireshark or tcpdump -w")
    st = capture.stat()
    on_disk = getattr(st, "st_blocks", 0) * 512
    if st.st_size > 64 << 20 and on_disk and on_disk * 16 < st.st_size:
        # mostly holes (a sparse file: truncate -s, a broken copy): no capture tool writes one, and
        # tshark would read its zeros as millions of empty packets for many minutes (F17)
        raise CaptureFileError(
            f"{capture} is not a real capture: it is {st.st_size:,} bytes long but only {on_disk:,} of them "
            f"were ever written (a sparse file, mostly zeros)",
            hint="give the capture file itself (tcpdump -w, Wireshark's Save As), not a truncated or preallocated copy")


def _harmless(line: str) -> bool:
    """tshark's warning when run as root, which says nothing of the capture."""
    return "Running as user" in line or "could be dangerous" in line


class Pass:
    """One streaming tshark pass; iterate for rows (lists of column strings), then ``finish``."""

    def __init__(self, capture: Path, keylog: Path | None, *, light: bool = False, tap: bool = False) -> None:
        _check_file(capture)
        self.capture = capture
        self.keylog = keylog
        self.light = light
        self.tap = tap and not light  # the TLS pass (above)
        self.argv = light_command(capture) if light else tls_command(capture, keylog) if self.tap else \
            command(capture, keylog)
        self.truncated = False
        self.stderr = ""
        self.timeout = pass_timeout()
        self.expired = False
        self.idle: Idle | None = None  # work for the light pass while tshark starts (_ahead)
        self._proc: subprocess.Popen[Any] | None = None
        self._out: IO[Any]  # tshark's output (start)
        self._growing: memfile.GrowingFile | None = None
        self._err: IO[str]
        self._timer: threading.Timer
        self._deadline = 0.0  # time.monotonic() when the pass's time is up (start)
        self._rc = 0
        self._eof = False  # tshark's output read to its end
        self._drawn = False  # the TLS pass: its tap's end line read (finish)

    def rows(self) -> Generator[list[Any], None, None]:
        """Rows of the common layout (R); a line with too few columns is left out. A light pass
        read to its end leaves tshark's exit to ``finish``."""
        if self.light:
            self.start()
            lines = self._lines(defer=True)
            try:
                yield from light_rows(lines, self.capture, ready=self._ready, idle=self.idle)
            except NeedFullPass:
                lines.close()
                if self._eof:
                    self.finish()  # a tshark that failed says so: the better reason
                self.close()  # (tshark stopped if its output was not read to the end)
                raise
            return
        if self.tap:
            # the light pass's rows with data.data (a list of bytes) and the TLS fields; tshark's
            # exit left to finish (the tap says when the rows end, before it exits)
            for out in self._output(defer=True):
                tap = _TapStream(out)
                yield from light_rows(tap.lines(), self.capture, tap=tap, ready=self._ready)
                self._drawn = tap.ended
            return
        ncols = len(FIELDS)
        for line in self._lines():
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= ncols:
                yield fields_row(cols)

    def start(self) -> None:
        """Start tshark now (``rows`` does it otherwise): ``labrunner analyze`` starts it before
        importing the rest of the analysis, so the imports overlap tshark's start-up."""
        if self._proc is not None:
            return
        import tempfile
        import threading

        env = dict(os.environ, LC_ALL="C.UTF-8")
        # stderr goes to a temporary file, not a pipe: a chatty tshark must never block on it.
        self._err = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by _reap or close)
        # stdout: a file in memory where there is one (memfile.py: a pipe costs tshark ~20 % of its time)
        # (room: the TLS pass's output is about as big as the capture, a line per frame more; the
        # reader keeps up, so that much is the worst case, not the usual one)
        fd = memfile.open_memory_file(2 * self.capture.stat().st_size + (32 << 20))
        # A session of its own: a Ctrl-C at the terminal goes to the whole foreground
        # process group, and a run that is stopping still finishes the analyses of the
        # scenarios it captured (a killed tshark made them "failed"); stopping early is
        # ours to do (below).
        try:
            self._proc = proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE if fd is None else fd, stderr=self._err, env=env, bufsize=1 << 16,
                start_new_session=True)
        except BaseException:
            self._err.close()
            if fd is not None:
                os.close(fd)
            raise
        if fd is None:
            assert proc.stdout is not None
            raw: IO[bytes] = proc.stdout
        else:
            self._growing = memfile.GrowingFile(fd, lambda: proc.poll() is None)
            raw = io.BufferedReader(self._growing, 1 << 18)
        # the TLS pass's output is bytes (its tap writes binary records among the lines)
        self._out = raw if self.tap else io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")

        def expire() -> None:  # bounds the pass (F17): tshark killed, the reader sees its output end
            if proc.poll() is not None:
                return  # (tshark is done: the documents made after its last line may take their time)
            self.expired = True
            with contextlib.suppress(OSError):
                proc.kill()

        self._deadline = time.monotonic() + self.timeout
        self._timer = threading.Timer(self.timeout, expire)
        self._timer.daemon = True
        self._timer.start()

    def _ready(self) -> bool:
        """Whether tshark's output can be read without waiting (its first line is there)."""
        if self._growing is not None:
            # (the TLS pass: the tap's first line comes before tshark reads the capture)
            return self._growing.ready(len(TAP_HELLO) if self.tap else 0)
        try:
            return bool(select.select([self._out], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        """Stop a pass that will not be read (or not to its end): its tshark killed, reaped."""
        proc = self._proc
        if proc is None or self._err.closed:
            return
        self._timer.cancel()
        if proc.poll() is None:
            self._out.close()
            with contextlib.suppress(OSError):
                proc.kill()
        proc.wait()
        self._out.close()
        self._err.close()

    def _lines(self, *, defer: bool = False) -> Generator[str, None, None]:
        for out in self._output(defer=defer):
            yield from out

    def _output(self, *, defer: bool = False) -> Generator[Any, None, None]:
        """tshark's output, given once (text; bytes for the TLS pass, whose tap writes binary
        records among the lines) and taken back when read to its end or given up; at its end,
        tshark waited for and judged (``_judge``), or with ``defer`` left to ``finish``."""
        self.start()
        proc = self._proc
        assert proc is not None
        read_all = False
        try:
            yield self._out
            read_all = self._eof = True
        finally:
            # Stopped early (the caller gave up): kill it. At the end of its output tshark may
            # still be tearing down (a big capture: tens of ms), and must not be killed then.
            if not read_all and proc.poll() is None:
                self._out.close()
                with contextlib.suppress(OSError):
                    proc.kill()
            if not (read_all and defer):
                self._reap()  # (the timer still bounds a tshark left to finish)
        if not defer:
            self._judge(self._rc)

    def _reap(self) -> None:
        assert self._proc is not None
        self._rc = self._proc.wait()
        self._timer.cancel()
        self._out.close()
        self._err.seek(0)
        self.stderr = self._err.read(20000)
        self._err.close()

    def finish(self) -> None:
        """The end of a light pass's rows, read to their end (``rows`` leaves it to the caller,
        who makes its documents meanwhile: tshark takes 10-40 ms to tear down after its last
        line on a capture of some MB): tshark waited for and its exit judged. Once; a pass not
        read to its end is stopped with ``close``.

        The TLS pass's tap writes its end line once tshark has read the whole capture and said
        what it had to say of it (a damaged or cut file, on stderr, before it draws its taps):
        with nothing said, tshark's exit is not waited for here; it tears down meanwhile (~30 ms
        on a capture of 50 MB) and a thread of its own reaps it (init does, after ``labrunner
        analyze`` has ended)."""
        if self._proc is None or self._err.closed:
            return
        if self._drawn and self._proc.poll() is None:
            self._err.seek(0)
            said = self._err.read(20000)
            if not any(line.strip() and not _harmless(line) for line in said.splitlines()):
                import threading

                self._timer.cancel()  # (its thread would sleep out the whole pass's time: a run's threads grew)
                self._out.close()
                self._err.close()
                self.stderr = said
                proc, left = self._proc, self._deadline - time.monotonic()

                def reap() -> None:  # a tshark hung in its teardown is still killed when the pass's time is up
                    try:
                        proc.wait(max(left, 0))
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(OSError):
                            proc.kill()
                        proc.wait()

                threading.Thread(target=reap, name="tshark-reaper", daemon=True).start()
                return
        self._reap()
        self._judge(self._rc)

    def _judge(self, rc: int) -> None:
        if self.expired:
            size = self.capture.stat().st_size if self.capture.exists() else 0
            raise CaptureFileError(
                f"analysis of {self.capture} stopped: tshark did not finish within {self.timeout:g} s "
                f"(the file is {size / 1e6:,.1f} MB)",
                hint="analyse a part of it (editcap -r FILE part.pcapng 1-100000), or allow more time with "
                     "LABRUNNER_ANALYZE_TIMEOUT=SECONDS")
        text = self.stderr
        if self._growing is not None and "no space left" in text.lower():
            # the tmpfs ran full under the output (others use it too): read again through a pipe
            memfile.refused = True
            raise OutputSpace(f"no room left in {memfile._PLACE} for tshark's output")
        if "cut short in the middle of a packet" in text or "appears to be damaged or corrupt" in text:
            self.truncated = True
        if rc == 0 or self.truncated:
            return
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _harmless(ln)]
        detail = lines[0] if lines else f"tshark exited with status {rc}"
        if "isn't a capture file" in detail or "unknown file format" in detail or "format TShark understands" in detail:
            raise CaptureFileError(
                f"{self.capture} is not a capture file tshark can read",
                hint="give a .pcap or .pcapng file (Wireshark: File → Save As → pcapng)")
        if "doesn't exist" in detail or "Permission denied" in detail:
            raise CaptureFileError(f"tshark cannot open {self.capture}: {detail.removeprefix('tshark: ')}")
        if detail.removeprefix("tshark: ").startswith("The file \""):
            # tshark's complaints about the file itself (a link type or record it does not support, a
            # damaged block): bad input, exit 2, not a tool failure (F17)
            raise CaptureFileError(f"tshark cannot read {self.capture}: {detail.removeprefix('tshark: ')}",
                                   hint="open the file in Wireshark to see whether it is damaged, or save it "
                                        "again as .pcapng")
        raise AnalysisError(f"tshark failed on {self.capture}: {detail.removeprefix('tshark: ')}",
                            hint="open the file in Wireshark to see whether it is damaged")


def light_first(capture: Path, keylog: Path | None) -> bool:
    """Whether analyze() tries the light pass first. TLS needs the TLS pass; without a key the
    light pass finds out itself, but a hello among the first packets makes that a wasted tshark
    start."""
    if keylog is not None:
        return False  # (before the imports: start_first calls this before tshark starts)
    from labrunner import pcap
    from labrunner.analysis import pcapfile

    return not pcap.has_secrets_up_front(capture) and not pcapfile.hello_early(capture)


def start_first(capture: Path, keylog: Path | None) -> Pass:
    """The pass analyze() reads first (light, else TLS), its tshark started now: ``labrunner
    analyze`` calls this before it imports the rest of the analysis (~0.1 s), which then overlaps
    tshark's own start-up (~0.17 s, loading its dissectors). Errors are left to analyze() to say
    (the caller ignores them and passes nothing)."""
    tshark_version()
    light = light_first(capture, keylog)
    run = Pass(capture, keylog, light=light, tap=not light)
    run.start()
    return run


# --- value names (cipher suites, groups, signature algorithms) ------------------------------

_NAME_FIELDS = ("tls.handshake.ciphersuite", "tls.handshake.extensions_supported_group",
                "tls.handshake.sig_hash_alg", "tls.handshake.version",
                # the hash and signature halves of a TLS 1.2 SignatureAndHashAlgorithm (sig_name)
                "tls.handshake.sig_hash_hash", "tls.handshake.sig_hash_sig")


def _cache_file(version: tuple[int, ...]) -> Path:
    return _cache_dir() / f"tshark-{'.'.join(map(str, version))}-names.json"


@lru_cache(maxsize=1)
def value_names() -> dict[str, dict[int, str]]:
    """Wireshark's own names for TLS code points, from ``tshark -G values`` (cached on disk)."""
    version = tshark_version()
    cache = _cache_file(version)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        raw = json.loads(cache.read_text(encoding="utf-8"))
        if all(f in raw for f in _NAME_FIELDS):  # (a cache written before a table was added: renewed)
            return {f: {int(k): v for k, v in table.items()} for f, table in raw.items()}
    names: dict[str, dict[int, str]] = {f: {} for f in _NAME_FIELDS}
    try:
        out = subprocess.run([tshark_path(), "-G", "values"], capture_output=True, text=True, start_new_session=True,
                             timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return names
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] == "V" and parts[1] in names:
            with contextlib.suppress(ValueError):
                names[parts[1]][int(parts[2], 0)] = parts[3]
    _save(cache, json.dumps(names))
    return names


def sig_name(value: str) -> str:
    """A signature algorithm as Wireshark names it: its TLS 1.3 name (``0x0804`` →
    ``rsa_pss_rsae_sha256``), else the hash and signature of the TLS 1.2 pair as Wireshark
    prints them (``0x0303`` → ``SHA224 ECDSA``); unknown values stay as they are."""
    name = name_of("tls.handshake.sig_hash_alg", value)
    if name != value:
        return name
    try:
        number = int(value, 0)
    except ValueError:
        return value
    names = value_names()
    hash_name = names.get("tls.handshake.sig_hash_hash", {}).get(number >> 8)
    sig = names.get("tls.handshake.sig_hash_sig", {}).get(number & 0xFF)
    return f"{hash_name} {sig}" if hash_name and sig and number <= 0xFFFF else value


def name_of(field: str, value: str) -> str:
    """``0x1302`` → ``TLS_AES_256_GCM_SHA384``; unknown values stay as they are."""
    try:
        number = int(value, 0)
    except ValueError:
        return value
    return value_names().get(field, {}).get(number, value)
