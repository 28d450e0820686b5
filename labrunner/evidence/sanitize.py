"""A copy of a capture that holds no credential, for the teaching assistant (sanitized.pcapng).

Where the credentials are comes from the project's own analysis (analysis/dialogue/ marks, by
protocol position, the bytes of every AUTH LOGIN/PLAIN answer, POP3 PASS/APOP/AUTH answer, IMAP
LOGIN argument or literal and AUTHENTICATE answer, HTTP Authorization/Cookie/Set-Cookie value and
password-like form field: ``secret_bytes``, in tshark's relative sequence numbers). Every TCP
segment that carries one of those bytes -- retransmissions too, since the mapping goes by
sequence number, not by frame -- gets it overwritten with ``X``. When the secret itself is known
(at run time) each direction of each stream is also reassembled and searched for every encoded
form of it (plain, base64 and its offset cores, AUTH PLAIN, HTTP Basic, URL-encoded, hex), and
so is every packet record as a whole: a second line of defence.

Inside TLS there are no plain bytes to overwrite: a TLS session that carries a credential keeps
its ciphertext but loses its keys (its lines are dropped from the Decryption Secrets Block);
the keys of every other session are kept, so the TA's Wireshark still decrypts them. With the
secret known, the kept sessions are decrypted once more and searched too.

Everything else stays byte for byte: the same blocks in the same order (frame numbers, lengths,
timestamps), only the overwritten bytes, the recomputed TCP checksum of each changed segment and
a comment on its packet block ("credential bytes overwritten") differ.
"""

from __future__ import annotations

import base64
import binascii
import struct
import subprocess
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labrunner import pcap
from labrunner.analysis.streams import PORTS
from labrunner.analysis.tshark import PREFS, NeedFullPass, _payload_span, tshark_path
from labrunner.errors import AnalysisError
from labrunner.runfolder import write_bytes_atomic
from labrunner.secrets import secret_forms

SANITIZED = "sanitized.pcapng"
FILLER = ord("X")
MIN_FORM = 6  # shorter forms would match innocent bytes (the sandbox's passwords are long)
COMMENT = "labrunner: credential bytes overwritten with X (sanitized copy)"

_SHB, _IDB, _SPB, _EPB, _OPB, _DSB = pcap.SHB, pcap.IDB, pcap.SPB, pcap.EPB, pcap.OPB, pcap.DSB
_TLSK = 0x544C534B
_FIELDS = ("frame.number", "frame.protocols", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "tcp.seq",
           "tcp.len", "tls.handshake.type", "tls.handshake.random")


class SanitizeError(AnalysisError):
    """The capture cannot be sanitized safely (nothing is written then)."""


@dataclass
class SanitizeResult:
    path: Path
    overwritten: int = 0  # bytes
    frames: list[int] = field(default_factory=list)  # frames changed
    tls_kept: list[int] = field(default_factory=list)  # streams whose keys are kept
    tls_withheld: list[int] = field(default_factory=list)  # TLS streams that carry a credential

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path.name, "overwritten_bytes": self.overwritten, "frames": self.frames,
                "tls_keys_kept": self.tls_kept, "tls_keys_withheld": self.tls_withheld}


def secret_byte_forms(secret: str | None, users: Iterable[str] = ()) -> list[bytes]:
    """Every encoded form of ``secret`` looked for in the bytes (at least MIN_FORM long)."""
    if not secret:
        return []
    raw = secret.encode("utf-8", "surrogatepass")
    # secrets.py's forms (plain, base64 and its cores, PLAIN, Basic, and their escaped spellings),
    # as bytes, and the spellings only a byte stream has
    forms = {f.encode("utf-8", "surrogatepass") for f in secret_forms(secret, users)}
    forms |= {urllib.parse.quote(secret, safe="").encode(), urllib.parse.quote_plus(secret).encode(),
              binascii.hexlify(raw), binascii.hexlify(raw).upper(),
              base64.urlsafe_b64encode(raw).rstrip(b"=")}
    return sorted((f for f in forms if len(f) >= MIN_FORM), key=len, reverse=True)


def _hits(data: bytes | bytearray, forms: list[bytes]) -> list[tuple[int, int]]:
    out = []
    for form in forms:
        at = data.find(form)
        while at >= 0:
            out.append((at, at + len(form)))
            at = data.find(form, at + 1)
    return out


# --- pcapng ---------------------------------------------------------------------------------


@dataclass
class _Block:
    kind: int
    start: int
    end: int
    order: str
    data: int = 0  # packet blocks: where the packet bytes start (in the file)
    caplen: int = 0
    link: int = -1  # packet blocks: the link type of their interface


def _blocks(raw: bytes) -> list[_Block]:
    if len(raw) < 12 or struct.unpack_from("<I", raw)[0] != _SHB:
        raise SanitizeError("the capture is not a pcapng file", hint="labrunner run writes pcapng captures")
    out: list[_Block] = []
    at, order = 0, "<"
    links: list[int] = []
    while at + 12 <= len(raw):
        if struct.unpack_from("<I", raw, at)[0] == _SHB:
            order = "<" if raw[at + 8:at + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        kind, length = struct.unpack_from(order + "II", raw, at)
        if length < 12 or length % 4 or at + length > len(raw):
            raise SanitizeError("the capture has a damaged or cut pcapng block")
        block = _Block(kind, at, at + length, order)
        if kind == _IDB:
            links.append(struct.unpack_from(order + "H", raw, at + 8)[0])
        elif kind in (_EPB, _OPB):
            block.data = at + 28
            block.caplen = struct.unpack_from(order + "I", raw, at + 20)[0]
            iface = struct.unpack_from(order + ("I" if kind == _EPB else "H"), raw, at + 8)[0]
            block.link = links[iface] if iface < len(links) else -1
        elif kind == _SPB:
            block.data = at + 12
            block.caplen = min(struct.unpack_from(order + "I", raw, at + 8)[0], length - 16)
            block.link = links[0] if links else -1
        out.append(block)
        at += length
    return out


def _pad(n: int) -> int:
    return (n + 3) & ~3


def _epb_with_comment(raw: bytes, b: _Block, packet: bytes) -> bytes:
    """The packet block with ``packet`` as its bytes and COMMENT added to its options."""
    o = b.order
    head = raw[b.start + 8:b.data]  # interface, timestamps, lengths: unchanged
    opts_at = b.data + _pad(b.caplen)
    opts = bytearray()
    at = opts_at
    while at + 4 <= b.end - 4:
        code, size = struct.unpack_from(o + "HH", raw, at)
        if code == 0:
            break
        opts += raw[at:at + 4 + _pad(size)]
        at += 4 + _pad(size)
    text = COMMENT.encode()
    if b.kind == _EPB:
        opts += struct.pack(o + "HH", 1, len(text)) + text + b"\0" * (_pad(len(text)) - len(text))
    if opts:
        opts += struct.pack(o + "HH", 0, 0)
    body = head + packet + b"\0" * (_pad(len(packet)) - len(packet)) + bytes(opts)
    length = 12 + len(body)
    return struct.pack(o + "II", b.kind, length) + body + struct.pack(o + "I", length)


def _dsb(b: _Block, raw: bytes, keep: set[str]) -> tuple[bytes, int]:
    """The Decryption Secrets Block with only the key-log lines of the client randoms in
    ``keep`` (b"" when none is left), and the number of lines dropped."""
    o = b.order
    kind, size = struct.unpack_from(o + "II", raw, b.start + 8)
    if kind != _TLSK:
        return b"", 1  # a kind of secret we do not read: not carried over
    text = raw[b.start + 16:b.start + 16 + size].decode("utf-8", "replace")
    kept, dropped = [], 0
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and not line.startswith("#") and words[1].lower() in keep:
            kept.append(line)
        elif line.strip() and not line.startswith("#"):
            dropped += 1
    if not kept:
        return b"", dropped
    data = ("\n".join(kept) + "\n").encode()
    body = struct.pack(o + "II", _TLSK, len(data)) + data + b"\0" * (_pad(len(data)) - len(data))
    length = 12 + len(body)
    return struct.pack(o + "II", _DSB, length) + body + struct.pack(o + "I", length), dropped


# --- TCP ------------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _fix_tcp_checksum(packet: bytearray, ip: int, version: int) -> None:
    """Recompute the TCP checksum of a packet captured whole (a cut one is left as it is)."""
    if version == 4:
        tcp = ip + (packet[ip] & 0x0F) * 4
        end = ip + int.from_bytes(packet[ip + 2:ip + 4], "big")
        pseudo = bytes(packet[ip + 12:ip + 20]) + struct.pack("!BBH", 0, 6, end - tcp)
    else:
        tcp, end = ip + 40, ip + 40 + int.from_bytes(packet[ip + 4:ip + 6], "big")
        pseudo = bytes(packet[ip + 8:ip + 40]) + struct.pack("!IxxxB", end - tcp, 6)
    if end > len(packet) or end - tcp < 20:
        return
    packet[tcp + 16:tcp + 18] = b"\0\0"
    packet[tcp + 16:tcp + 18] = struct.pack("!H", _checksum(pseudo + bytes(packet[tcp:end])))


def _ip_layout(link: int, data: bytes) -> tuple[int, int]:
    """Where IP starts in a packet of link type ``link``, and its version (NeedFullPass: unknown)."""
    ip = pcap.ip_offset(link, data)
    if ip is None or len(data) <= ip or data[ip] >> 4 not in (4, 6):
        raise NeedFullPass(f"link type {link}")
    return ip, data[ip] >> 4


@dataclass
class _Frame:
    number: int
    stream: int
    side: str  # "C" or "S"
    seq: int
    length: int
    protocols: str
    hello: str = ""  # the client random of a ClientHello in this frame


def _frames(capture: Path, doc: dict[str, Any]) -> dict[int, _Frame]:
    """Every TCP frame with its stream, side and relative sequence number, as tshark sees them
    (the same numbering as the analysis that found the credentials)."""
    clients = {s["index"]: (s["client"]["ip"], s["client"]["port"]) for s in doc["streams"]}
    argv = [tshark_path(), "-r", str(capture), "-n", "-T", "fields", "-E", "separator=/t",
            "-E", "occurrence=a", "-E", "aggregator=,", "-E", "quote=n"]
    for pref in PREFS:
        argv += ["-o", pref]
    for name in _FIELDS:
        argv += ["-e", name]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SanitizeError(f"tshark could not read {capture.name}: {proc.stderr.strip()[-300:]}")
    out: dict[int, _Frame] = {}
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) < len(_FIELDS) or not cols[2]:
            continue
        number, protocols, stream, ip4, ip6, port, seq, length, types, randoms = cols[:10]
        index = int(stream.split(",")[0])
        src = (ip4 or ip6).split(",")[0]
        side = "C" if (src, int(port.split(",")[0] or 0)) == clients.get(index) else "S"
        frame = _Frame(int(number), index, side, int(seq.split(",")[0] or 0), int(length.split(",")[0] or 0),
                       protocols)
        if side == "C" and "1" in types.split(",") and randoms:
            frame.hello = randoms.split(",")[0].replace(":", "").lower()
        out[frame.number] = frame
    return out


def _decrypted_hits(path: Path, streams: list[int], forms: list[bytes]) -> set[int]:
    """The streams among ``streams`` whose decrypted bytes hold a form of the secret."""
    if not streams or not forms:
        return set()
    argv = [tshark_path(), "-r", str(path), "-n", "-q"]
    for index in streams:
        argv += ["-z", f"follow,tls,raw,{index}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        return set(streams)  # cannot look inside: withhold them all
    found: set[int] = set()
    sides: dict[str, bytearray] = {}
    current = -1

    def judge() -> None:
        if current >= 0 and any(_hits(data, forms) for data in sides.values()):
            found.add(current)

    for line in proc.stdout.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            judge()
            current, sides = int(line.rsplit(" ", 1)[1]), {}
            continue
        hexpart = line.strip()
        if current < 0 or not hexpart or line.startswith(("=", "Follow:", "Node ")):
            continue
        try:
            sides.setdefault("S" if line.startswith("\t") else "C", bytearray()).extend(bytes.fromhex(hexpart))
        except ValueError:
            continue
    judge()
    return found


# --- the copy -------------------------------------------------------------------------------


def sanitize(capture: Path, out: Path, doc: dict[str, Any] | None = None, *, secret: str | None = None,
             users: Iterable[str] = ()) -> SanitizeResult:
    """Write ``out``: ``capture`` with every credential byte overwritten and the keys of the TLS
    sessions that carry one withheld. ``doc``: the analysis of ``capture`` (made here if None)."""
    from labrunner.analysis import analyze

    capture, out = Path(capture), Path(out)
    if doc is None:
        doc = analyze(capture, lang="en")
    forms = secret_byte_forms(secret, users)
    raw = capture.read_bytes()
    blocks = _blocks(raw)
    packets = [b for b in blocks if b.kind in (_EPB, _OPB, _SPB)]
    frames = _frames(capture, doc)

    # each frame's payload, where it sits in its packet
    spans: dict[int, tuple[int, int, tuple[int, int]]] = {}
    unplaced: dict[int, str] = {}  # frames whose payload is not where their headers say (fragments, ...)
    for number, fr in frames.items():
        if fr.length <= 0 or number > len(packets):
            continue
        b = packets[number - 1]
        record = raw[b.data:b.data + b.caplen]
        try:
            layout = _ip_layout(b.link, record)
            spans[number] = (*_payload_span(layout, record, fr.length), layout)
        except NeedFullPass as exc:
            unplaced[number] = str(exc)

    # the byte ranges to overwrite, per stream and side: the analysis's, plus the secret's forms
    ranges: dict[tuple[int, str], list[tuple[int, int]]] = {}
    for st in doc["streams"]:
        for side in ("C", "S"):
            for lo, hi in (st.get("secret_bytes") or {}).get(side, []):
                ranges.setdefault((st["index"], side), []).append((lo, hi))
    if forms:
        by_side: dict[tuple[int, str], list[_Frame]] = {}
        for number, fr in frames.items():
            if number in spans:
                by_side.setdefault((fr.stream, fr.side), []).append(fr)
        for key, frs in by_side.items():
            base = min(f.seq for f in frs)
            buf = bytearray(max(f.seq + f.length for f in frs) - base)
            for f in frs:
                b = packets[f.number - 1]
                start, end, _ = spans[f.number]
                buf[f.seq - base:f.seq - base + f.length] = raw[b.data + start:b.data + end]
            ranges.setdefault(key, []).extend((base + lo, base + hi) for lo, hi in _hits(buf, forms))

    for number, why in unplaced.items():  # harmless unless it carries a credential byte
        fr = frames[number]
        if any(lo < fr.seq + fr.length and fr.seq < hi for lo, hi in ranges.get((fr.stream, fr.side), [])):
            raise SanitizeError(f"frame {number} carries credential bytes but its TCP payload cannot be found "
                                f"({why})", hint="the capture is kept as it is; no sanitized copy is written")

    result = SanitizeResult(out)
    changed: dict[int, bytearray] = {}
    for number, (start, _end, (ip, version)) in spans.items():
        fr = frames[number]
        hit = False
        b = packets[number - 1]
        for lo, hi in ranges.get((fr.stream, fr.side), []):
            a, z = max(lo, fr.seq), min(hi, fr.seq + fr.length)
            if a >= z:
                continue
            packet = changed.setdefault(number, bytearray(raw[b.data:b.data + b.caplen]))
            packet[start + a - fr.seq:start + z - fr.seq] = bytes([FILLER]) * (z - a)
            hit = True
        if hit:
            _fix_tcp_checksum(changed[number], ip, version)
    if forms:  # whatever is left anywhere in a packet (another protocol, a frame tshark did not take as TCP)
        for number, b in enumerate(packets, 1):
            packet = changed.get(number) or bytearray(raw[b.data:b.data + b.caplen])
            found = _hits(packet, forms)
            for lo, hi in found:
                packet[lo:hi] = bytes([FILLER]) * (hi - lo)
            if found:
                changed[number] = packet
                if number in spans:
                    _fix_tcp_checksum(packet, *spans[number][2])
    result.frames = sorted(changed)
    for number, now in changed.items():
        b = packets[number - 1]
        start = spans[number][0] if number in spans else 0
        before = raw[b.data + start:b.data + b.caplen]
        result.overwritten += sum(x != y for x, y in zip(now[start:], before, strict=True))

    # TLS keys: kept for the sessions without a credential
    tls = {st["index"]: st for st in doc["streams"] if st.get("tls")}
    randoms: dict[int, str] = {}
    for fr in frames.values():
        if fr.hello and fr.stream in tls:
            randoms.setdefault(fr.stream, fr.hello)
    # keys are kept only where the analysis read the protocol (a known port: its parser found the
    # credentials); a stream on another port was read as plain lines, its credentials unseen
    withheld = {i for i, st in tls.items()
                if st.get("carries_credentials") or (st.get("server") or {}).get("port") not in PORTS}
    for _ in range(2):
        keep = {randoms[i] for i in tls if i not in withheld and i in randoms}
        _write(raw, blocks, packets, changed, keep, out)
        more = _decrypted_hits(out, sorted(i for i in tls if i not in withheld and i in randoms), forms)
        if not more:
            break
        withheld |= more
    else:
        raise SanitizeError(f"{out.name}: a decrypted session still holds the secret")
    result.tls_withheld = sorted(withheld)
    result.tls_kept = sorted(i for i in tls if i not in withheld and i in randoms)
    return result


def _write(raw: bytes, blocks: list[_Block], packets: list[_Block], changed: dict[int, bytearray],
           keep: set[str], out: Path) -> None:
    number_of = {id(b): n for n, b in enumerate(packets, 1)}
    parts: list[bytes] = []
    for b in blocks:
        n = number_of.get(id(b))
        if n is not None and n in changed:
            parts.append(_epb_with_comment(raw, b, bytes(changed[n])))
        elif b.kind == _DSB:
            parts.append(_dsb(b, raw, keep)[0])
        else:
            parts.append(raw[b.start:b.end])
    # a fresh temporary file renamed onto out (a planted symlink is replaced, never written
    # through); 0644: it holds no secret, readable like the report
    write_bytes_atomic(out, b"".join(parts), mode=0o644)


def write_sanitized(folder: Path, doc: dict[str, Any], secret: str | None, users: Iterable[str]) -> str | None:
    """The run's hook: ``folder/sanitized.pcapng`` from ``folder/capture.pcapng``; None, or why
    there is none (the scenario's result does not depend on it)."""
    from labrunner.errors import LabError

    try:
        sanitize(folder / "capture.pcapng", folder / SANITIZED, doc, secret=secret, users=users)
    except (LabError, OSError) as err:
        (folder / SANITIZED).unlink(missing_ok=True)
        return f"no sanitized copy of the capture: {err}"
    return None
