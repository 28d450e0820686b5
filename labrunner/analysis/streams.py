"""One pass over tshark's rows: streams, their dialogues, TLS handshakes and statistics."""

from __future__ import annotations

import contextlib
import heapq
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labrunner.analysis import dialogue as dlg
from labrunner.analysis import mail as mailsum
from labrunner.analysis.reassembly import Assembler, Chunk
from labrunner.analysis.tls import ALERT_MEANING, CT_APPDATA, Handshake, RecordWalker
from labrunner.analysis.tshark import (
    ACK,
    END,
    FIN,
    ICMP,
    NROW,
    ROW,
    RST,
    SYN,
    CaptureFileError,
    NeedFullPass,
    OutputSpace,
    Pass,
    R,
    light_first,
    tshark_version,
)
from labrunner.errors import AnalysisError
from labrunner.text import Text

SCHEMA = 2  # 2: what the analysis words is {zh, en} (docs/analysis.md); 1: one language

# The server side of a connection without a SYN in the capture, and the protocol on it.
PORTS = {25: "SMTP", 587: "SMTP", 465: "SMTP", 2525: "SMTP", 110: "POP3", 995: "POP3",
         143: "IMAP", 993: "IMAP", 443: "HTTPS", 8443: "HTTPS", 80: "HTTP", 8080: "HTTP"}
IMPLICIT_TLS = {465, 995, 993, 443, 8443}

_TLS_FIELDS = [(name, R[name]) for name in ROW if name.startswith("tls.")]

# a row: tshark.R's layout, whichever pass gave it
I_FRAME, I_TIME, I_LEN, I_STREAM = R["frame.number"], R["frame.time_relative"], R["frame.len"], R["tcp.stream"]
I_SRC, I_SPORT, I_DST, I_DPORT = R["net.src"], R["tcp.srcport"], R["net.dst"], R["tcp.dstport"]
I_FLAGS, I_SEQ, I_TCPACK, I_TLEN = R["tcp.flags"], R["tcp.seq"], R["tcp.ack"], R["tcp.len"]
I_PAYLOAD, I_DATA = R["payload"], R["data.data"]
I_CT, I_OPAQUE = R["tls.record.content_type"], R["tls.record.opaque_type"]
I_RLEN, I_HSTYPE = R["tls.record.length"], R["tls.handshake.type"]
I_RETR, I_DUP, I_OOO, I_LOST = (R["tcp.analysis.retransmission"], R["tcp.analysis.duplicate_ack"],
                                R["tcp.analysis.out_of_order"], R["tcp.analysis.lost_segment"])
I_RTT = R["tcp.analysis.ack_rtt"]
I_PROTO = R["frame.protocols"]
Row = list[Any]


class Stats:
    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.payload = {"C": 0, "S": 0}
        self.retransmissions = 0
        self.duplicate_acks = 0
        self.out_of_order = 0
        self.lost_segments = 0
        self.rtt_n = 0
        self.rtt_sum = 0.0
        self.rtt_min = float("inf")
        self.rtt_max = 0.0

    # Stream.frame counts each frame itself (packets, bytes, payload: a call per frame saved) and
    # calls these for the frames that carry a mark or an RTT sample.

    def marks(self, row: Row) -> None:
        if row[I_RETR]:
            self.retransmissions += 1
        if row[I_DUP]:
            self.duplicate_acks += 1
        if row[I_OOO]:
            self.out_of_order += 1
        if row[I_LOST]:
            self.lost_segments += 1

    def sample(self, value: str) -> None:
        """tcp.analysis.ack_rtt as tshark prints it (the first, for a frame with two TCP headers)."""
        try:
            rtt = float(value if "," not in value else value.split(",")[0])
        except ValueError:
            return
        self.rtt_n += 1
        self.rtt_sum += rtt
        if rtt < self.rtt_min:
            self.rtt_min = rtt
        if rtt > self.rtt_max:
            self.rtt_max = rtt

    def merge(self, other: Stats) -> None:
        self.packets += other.packets
        self.bytes += other.bytes
        for d in ("C", "S"):
            self.payload[d] += other.payload[d]
        self.retransmissions += other.retransmissions
        self.duplicate_acks += other.duplicate_acks
        self.out_of_order += other.out_of_order
        self.lost_segments += other.lost_segments
        self.rtt_n += other.rtt_n
        self.rtt_sum += other.rtt_sum
        self.rtt_min = min(self.rtt_min, other.rtt_min)
        self.rtt_max = max(self.rtt_max, other.rtt_max)

    def result(self, duration: float) -> dict[str, Any]:
        rtt = None
        if self.rtt_n:
            rtt = {"samples": self.rtt_n, "min": round(self.rtt_min, 6),
                   "avg": round(self.rtt_sum / self.rtt_n, 6), "max": round(self.rtt_max, 6)}
        return {"packets": self.packets, "bytes": self.bytes, "payload_bytes": dict(self.payload),
                "retransmissions": self.retransmissions, "duplicate_acks": self.duplicate_acks,
                "out_of_order": self.out_of_order, "lost_segments": self.lost_segments,
                "rtt": rtt, "duration": round(duration, 6)}


# What the analysis says of a stream in its own words, in both languages (docs/analysis.md)
_SIDE = {"C": Text("客户端", "client"), "S": Text("服务器", "server")}
_TLS_BEGINS = Text("[TLS 握手开始：此后的连接内容均已加密]",
                   "[TLS handshake begins: the rest of this connection is encrypted]")
_SEE_HANDSHAKE = Text("见本连接的 TLS 握手分析", "see the TLS handshake analysis of this stream")
_UNREAD_RECORDS = Text("Wireshark 无法读取的记录：只能知道它们的长度和时间",
                       "records Wireshark could not read: only their sizes and times are known")
_STARTS_INSIDE = Text("抓包开始时该连接已在进行中：开头部分缺失。",
                      "The capture starts in the middle of this connection: its beginning is missing.")
_ENDS_OPEN = Text("抓包结束时该连接尚未关闭。", "The capture ends before this connection was closed.")
_PLAIN_PASSWORD = Text("未使用 TLS：路径上的任何人都能看到每一行，包括密码（Base64 只是编码，不是加密）。",
                       "Sent without TLS: anyone on the path can read every line, the password included (base64 is "
                       "an encoding, not encryption).")


class Stream:
    def __init__(self, index: int, row: Row, opts: dict[str, Any]) -> None:
        self.index = index
        # (the light pass's built-in address columns come padded with spaces: stripped here)
        src = row[I_SRC].split(",")[0].strip()
        dst = row[I_DST].split(",")[0].strip()
        sport, dport = int(row[I_SPORT] or 0), int(row[I_DPORT] or 0)
        syn, ack = row[I_FLAGS] & SYN, row[I_FLAGS] & ACK
        if syn and not ack:
            client_first = True
        elif syn and ack:
            client_first = False
        elif (dport in PORTS) != (sport in PORTS):
            client_first = dport in PORTS
        else:
            client_first = sport > dport
        self.client = (src, sport) if client_first else (dst, dport)
        self.server = (dst, dport) if client_first else (src, sport)
        self.sides: dict[tuple[str, str], str] = {}
        self.opts = opts
        self.syn_seen = False
        self.fin_seen = False
        self.first_frame = int(row[I_FRAME])
        self.last_frame = self.first_frame
        self.start = float(row[I_TIME])
        self.end = self.start
        self.asm = {"C": Assembler(), "S": Assembler()}
        self.tls_dir = {"C": False, "S": False}
        self.first_payload = {"C": True, "S": True}
        self.hs = Handshake()
        self.stats = Stats()
        self.protocol = PORTS.get(self.server[1], "")
        self.conv: dlg.Conversation | None = None
        self.enc: dlg.Encrypted | None = None
        self.security = "plain"
        self.tls_marked = False
        self.sniff_decrypted = False  # the protocol waits for the first decrypted bytes
        self.awaiting_tls = False  # STARTTLS accepted: the next bytes are TLS, or text (D5)
        self.starttls_plain = 0  # frame of the text that came instead of TLS
        self.plain_reply = 0  # frame of the text a server sent in answer to a Client Hello (D13)
        self.plain_started: set[str] = set()  # directions whose plain bytes have begun
        self.early_hello = 0  # frame where a Client Hello followed STARTTLS in the same segment
        self.icmp: list[int] = []  # frames of ICMP errors quoting a segment of this stream
        self.walker = {"C": RecordWalker(), "S": RecordWalker()}  # TLS tshark did not report (D4)
        self.final: dict[str, Any] | None = None  # the result, made at the connection's last frame (finish)
        self.encoded = ""  # and its JSON text, when the caller wants the document's text

    def _conv(self, d: str, sample: bytes, *, start: bool = False) -> dlg.Conversation:
        """The stream's conversation, made on its first payload: the protocol is what the first
        bytes say when they say it and are the real start of the stream (``start``: its SYN was
        seen), otherwise the port's."""
        if self.conv is None:
            sniffed = _sniff(d, sample)
            if sniffed != "other" and (start or not self.protocol):
                self.protocol = sniffed
            elif not self.protocol:
                self.protocol = "other"
            self._make_conv(self.protocol)
        assert self.conv is not None
        return self.conv

    def _tls_conv(self) -> dlg.Conversation:
        """The conversation of a stream that starts with TLS: its protocol waits for the first
        decrypted bytes (_decrypted); meanwhile it holds the TLS entries."""
        if self.conv is None:
            self.sniff_decrypted = True
            self._make_conv(self.protocol or "other")
        assert self.conv is not None
        return self.conv

    def _make_conv(self, protocol: str) -> None:
        kind = "HTTP" if protocol in ("HTTP", "HTTPS") else protocol
        conv = dlg.conversation(kind, show_credentials=self.opts["show"],
                                redactor=self.opts["redactor"])
        old = self.conv
        if old is not None:  # the TLS entries written before the first decrypted bytes
            conv.entries, conv.notes, conv.omitted = old.entries, old.notes, old.omitted
        self.conv = conv
        if self.enc is None:
            self.enc = dlg.Encrypted(conv)
        self.enc.conv = conv

    def _decrypted(self, d: str, data: bytes) -> dlg.Conversation:
        """The conversation for decrypted bytes. The first ones decide the protocol, whatever the
        port: IMAPS on 9993 is IMAP (its state machine, its redaction), not "TLS"."""
        if self.sniff_decrypted:
            self.sniff_decrypted = False
            sniffed = _sniff(d, data)
            same = sniffed == self.protocol or (sniffed == "HTTP" and self.protocol == "HTTPS")
            if sniffed != "other" and not same:
                self.protocol = sniffed
                self._make_conv(sniffed)
            elif not self.protocol:
                self.protocol = "other"
        assert self.conv is not None
        return self.conv

    def frame(self, row: Row, time: float) -> None:
        frame = int(row[I_FRAME])
        if row[I_PROTO] == ICMP:
            # an ICMP error (e.g. "fragmentation needed") quoting one of this stream's segments:
            # tshark gives it the stream's index, but it is no segment and carries no payload of it
            self.icmp.append(frame)
            return
        self.last_frame, self.end = frame, time
        key = (row[I_SRC], row[I_SPORT])  # a stream has two: look each up once
        d = self.sides.get(key)
        if d is None:
            src = row[I_SRC].split(",")[0].strip()
            d = "C" if (src, int(row[I_SPORT] or 0)) == self.client else "S"
            if len(self.sides) < 8:
                self.sides[key] = d
        # Stats.add, inlined (once per frame)
        stats = self.stats
        stats.packets += 1
        try:
            stats.bytes += int(row[I_LEN])
            stats.payload[d] += int(row[I_TLEN] or 0)
        except ValueError:
            pass
        if row[I_RETR] or row[I_DUP] or row[I_OOO] or row[I_LOST]:  # seldom
            stats.marks(row)
        if row[I_RTT]:
            stats.sample(row[I_RTT])
        seq = int(row[I_SEQ] or 0)
        flags = row[I_FLAGS]
        asm = self.asm
        if flags & SYN:
            self.syn_seen = True
            asm[d].start_at(seq + 1)
        if flags & (FIN | RST):
            self.fin_seen = True
        other = "S" if d == "C" else "C"
        # (only while bytes wait behind a hole: Assembler.acked does nothing otherwise)
        if flags & ACK and asm[other].pending and row[I_TCPACK]:
            # the peer acknowledged bytes the capture never saw: that hole will not be filled
            conv = self.conv
            if conv is not None and not self.tls_dir[other]:
                for chunk in self.asm[other].acked(int(row[I_TCPACK])):
                    if chunk.gap:
                        conv.gap(other, chunk.gap, chunk.frame, chunk.time)
                    conv.feed(other, chunk.data, chunk.frame, chunk.time, decrypted=False, seq=chunk.seq)
        cts = row[I_CT] or row[I_OPAQUE]
        if cts or self.tls_dir[d]:
            self._tls(d, row, frame, time)
            return
        payload = row[I_PAYLOAD]
        if not payload:
            return
        raw = payload if payload.__class__ is bytes else bytes.fromhex(payload)  # light pass: bytes
        if self.awaiting_tls:
            if _tls_header(raw) or _binary(raw):
                self.tls_dir[d] = True  # the handshake after STARTTLS (or records of it)
                self._tls(d, row, frame, time)
                return
            # STARTTLS was accepted, but text follows, not TLS (D5): e.g. a capture behind a
            # TLS-terminating proxy. Shown as the plain text it is.
            self.awaiting_tls = False
            self.security = "plain"
            if self.conv is not None:
                self.conv.upgraded = False
            self.starttls_plain = frame
        if self.first_payload[d]:
            self.first_payload[d] = False
            if raw[:1] == b"\x16" and raw[1:2] == b"\x03":
                self.tls_dir[d] = True
                self.security = "tls"
                self._tls_conv()
                self._tls(d, row, frame, time)
                return
            if (self.security == "tls" or self.server[1] in IMPLICIT_TLS) and _binary(raw):
                # TLS whose first record the capture lost (so Wireshark cannot follow it), not
                # text: its bytes go to the record walker and are said to be unreadable (D4)
                self.tls_dir[d] = True
                self.security = "tls"
                self._tls_conv()
                self._tls(d, row, frame, time)
                return
            if self.security == "tls" and not self.tls_dir[d]:
                self.plain_reply = frame  # text where the Server Hello should be (D13)
        conv = self.conv if self.conv is not None else self._conv(d, raw, start=self.syn_seen)
        if d not in self.plain_started:
            self.plain_started.add(d)
            # its first line may be the end of an earlier one (the client's: a password's)
            conv.cut[d] = d == "C" and not self.syn_seen
        mine = asm[d]
        if seq == mine.next_seq and not mine.pending:
            # the common case, Assembler.add without its Chunk: the next bytes, nothing waiting
            mine.next_seq = seq + len(raw)
            conv.feed(d, raw, frame, time, decrypted=False, seq=seq)
            if conv.upgraded:
                self.awaiting_tls = True
                self.security = "starttls"
            chunks: list[Chunk] = []
        else:
            chunks = mine.add(seq, raw, frame, time)
        for chunk in chunks:
            if chunk.gap:
                conv.gap(d, chunk.gap, chunk.frame, chunk.time)
            conv.feed(d, chunk.data, chunk.frame, chunk.time, decrypted=False, seq=chunk.seq)
            if conv.upgraded:
                # TLS is expected now: each direction's next bytes say whether it came (frame)
                self.awaiting_tls = True
                self.security = "starttls"
                break
            if d == "C" and conv.buf["C"] and conv.tls_after_starttls():
                break  # (the chunks after it are the rest of that handshake)
        if d == "C" and conv.buf["C"] and conv.tls_after_starttls():  # (it needs bytes left: no call when none)
            # the client did not wait for the server's go-ahead: its Client Hello follows STARTTLS
            # in the same segment (Wireshark does not read it there): TLS, not lines of text
            conv.buf["C"].clear()
            self.tls_dir["C"] = True
            self.security = "starttls"
            self.early_hello = frame
            self._mark_tls("C", frame, time)

    def _tls(self, d: str, row: Row, frame: int, time: float) -> None:
        walker = self.walker[d]
        if not row[I_CT] and not row[I_OPAQUE]:
            # a segment of a TLS record Wireshark reassembles in a later frame; or, when the
            # capture lost a segment before it, one Wireshark will never read (finish_unread)
            payload = row[I_PAYLOAD]
            if payload and self.conv is not None and not row[I_RETR]:  # (a copy: its bytes came already)
                raw = payload if payload.__class__ is bytes else bytes.fromhex(payload)
                walker.add(raw, frame, time, len(self.conv.entries))
            return
        if walker.bytes:
            walker.reset()
        self.tls_dir[d] = True
        if self.security == "plain":
            self.security = "starttls" if self.conv is not None and self.conv.entries else "tls"
        conv = self._tls_conv()
        self._mark_tls(d, frame, time)
        data = row[I_DATA]
        cts_text = row[I_CT]
        if cts_text and not row[I_HSTYPE] and (cts_text == "23" or all(ct == "23" for ct in cts_text.split(","))):
            self.hs.app_data(d, frame, time, decrypted_data=bool(data))  # (most frames: no dict of fields)
        else:
            fields = {name: (row[i].split(",") if row[i] else []) for name, i in _TLS_FIELDS}
            self.hs.frame(d, frame, time, fields, decrypted_data=bool(data))
        if data:
            if self.enc is not None:
                self.enc.flush()
            for part in data if data.__class__ is list else data.split(","):  # (the TLS pass: bytes)
                with contextlib.suppress(ValueError):
                    raw = part if part.__class__ is bytes else bytes.fromhex(part)
                    if not raw:
                        continue  # (-T fields prints an empty one as "<MISSING>")
                    conv = self._decrypted(d, raw)
                    conv.feed(d, raw, frame, time, decrypted=True)
            return
        # TLS 1.3 records Wireshark could not decrypt show only their outer type (23)
        lengths = row[I_RLEN].split(",") if row[I_RLEN] else []
        cts = cts_text.split(",") if cts_text else []
        cts = cts + [str(CT_APPDATA)] * max(0, len(lengths) - len(cts))
        size = 0
        records = 0
        for i, ct in enumerate(cts):
            if ct == str(CT_APPDATA):
                records += 1
                with contextlib.suppress(ValueError, IndexError):
                    size += int(lengths[i])
        if records and self.enc is not None:
            for _ in range(records - 1):
                self.enc.record(d, 0, frame, time)
            self.enc.record(d, size, frame, time)

    def _mark_tls(self, d: str, frame: int, time: float) -> None:
        """The entry where the TLS handshake starts (once per stream)."""
        if self.tls_marked:
            return
        self.tls_marked = True
        conv = self._tls_conv()
        if self.enc is not None:
            self.enc.flush()
        conv.decrypted = False
        conv.add(d, _TLS_BEGINS, frame, time, kind="tls", explanation=_SEE_HANDSHAKE)

    def _finish_unread(self, conv: dlg.Conversation) -> None:
        """TLS bytes of a direction Wireshark never read (a segment before them is missing from the
        capture, and TCP reassembly waits for it to the end): said where they flowed, as a gap
        and the encrypted records walked in them, instead of vanishing (D4)."""
        for d in ("C", "S"):
            w = self.walker[d]
            if not w.bytes or self.enc is None:
                continue
            side = _SIDE[d]
            complete = len(w.records) - (1 if w.synced and w.need > 0 else 0)
            if complete <= 0 and (w.records or not self.fin_seen):
                # no whole record among them: the capture ends inside a record, nothing is lost
                conv.decrypted = False
                conv.add(d, Text(f"[{side.zh}的 {w.bytes} 字节 TLS 数据：抓包在某个记录的中途结束]",
                                 f"[{w.bytes} bytes of TLS from the {side.en}: part of a record the capture "
                                 f"ends in the middle of]"),
                         w.last, w.last_time, first=w.first, kind="gap",
                         explanation=Text("记录只有完整时才能读取", "a record is read once all of it is there"))
                continue
            self.hs.unreadable[d] = w.bytes
            at = min(w.at, len(conv.entries))
            later = conv.entries[at:]  # what the other side said meanwhile: merged by frame below
            del conv.entries[at:]
            conv.decrypted = False
            conv.add(d, Text(f"[{side.zh}的 {w.bytes} 字节 TLS 数据 Wireshark 无法读取："
                             f"帧 {w.first} 之前缺少一个数据段]",
                             f"[{w.bytes} bytes of TLS from the {side.en} that Wireshark could not read: "
                             f"a segment before frame {w.first} is missing from the capture]"),
                     w.first, w.first_time, kind="gap",
                     explanation=Text("丢失数据段之后的记录无法重组，只能知道它们的长度和时间",
                                      "TCP cannot put the records after a lost segment together; only "
                                      "their sizes and times are known"))
            frames = iter(sorted(e["frame"] for e in later))
            boundary = next(frames, None)
            for frame, time, ct, length in w.records:
                if boundary is not None and boundary < frame:  # the other side spoke in between
                    self.enc.flush()
                    while boundary is not None and boundary < frame:
                        boundary = next(frames, None)
                if ct == CT_APPDATA:
                    self.enc.record(d, length, frame, time)
            self.enc.flush()
            added = conv.entries[at:]
            for e in added[1:]:  # (the key log may be there: it is the lost segment that hides them)
                e["explanation"] = _UNREAD_RECORDS.pair
            conv.entries[at:] = list(heapq.merge(later, added, key=lambda e: e["frame"]))

    def _no_handshake(self, conv: dlg.Conversation, tls: dict[str, Any]) -> Text:
        """A TLS handshake that never completed (D13): nothing was encrypted. The marker says so,
        the alerts are entries where they were sent; returns the stream's note."""
        for e in conv.entries:
            if e["kind"] == "tls":
                e["text"] = Text("[TLS 握手开始：客户端提议使用 TLS]",
                                 "[TLS handshake begins: the client offers TLS]").pair
                e["explanation"] = Text("握手没有完成（见下）：没有任何内容被加密",
                                        "the handshake did not complete (see below): nothing was encrypted").pair
                break
        alerts = [m for m in tls["messages"] if m["message"].startswith("Alert")]
        for m in alerts:
            name = m["message"].removeprefix("Alert").strip(" ()")
            meaning = ALERT_MEANING.get(name)
            entry = {"dir": m["dir"], "frame": m["frame"], "first_frame": m["frame"], "time": m["time"],
                     "text": Text(f"[TLS 告警：{name}]", f"[TLS alert: {name}]").pair, "kind": "tls",
                     "decrypted": False, "redacted": False,
                     "explanation": (Text("握手失败", "the handshake fails")
                                     + (Text("：", ": ") + meaning if meaning else "")).pair}
            at = next((i for i, e in enumerate(conv.entries) if e["frame"] > m["frame"]), len(conv.entries))
            conv.entries.insert(at, entry)
        if self.plain_reply:
            return Text(f"服务器用明文回应了 TLS Client Hello（帧 {self.plain_reply}）：此端口上不直接使用 TLS"
                        "（也许应使用 STARTTLS）。没有任何内容被加密，其文本按原样显示。",
                        f"The server answered the TLS Client Hello in plain text (frame {self.plain_reply}): it "
                        "does not speak TLS from the start on this port (STARTTLS, perhaps). Nothing was "
                        "encrypted; its text is shown as it is.")
        if alerts:
            first = alerts[0]
            who = _SIDE[first["dir"]]
            name = first["message"].removeprefix("Alert").strip(" ()")
            return Text(f"TLS 握手失败：{who.zh}发送了告警 {name}（帧 {first['frame']}）。没有任何内容被加密。",
                        f"The TLS handshake failed: the {who.en} sent the alert {name} (frame {first['frame']}). "
                        "Nothing was encrypted.")
        return Text("抓包中 TLS 握手没有完成（没有 Server Hello）：没有任何内容被加密。",
                    "The TLS handshake did not complete in the capture (no Server Hello): nothing was encrypted.")

    def finish(self, encode: Callable[[dict[str, Any]], str] | None) -> None:
        """The stream's result made now (its last frame is in), and with ``encode`` its text."""
        self.final = self.result()
        if encode is not None:
            self.encoded = encode(self.final)

    def result(self) -> dict[str, Any]:
        conv = self._conv("S", b"")
        for d in ("C", "S"):
            for chunk in self.asm[d].flush():
                if chunk.gap:
                    conv.gap(d, chunk.gap, chunk.frame or self.last_frame, chunk.time or self.end)
                if not self.tls_dir[d]:
                    conv.feed(d, chunk.data, chunk.frame or self.last_frame, chunk.time or self.end, decrypted=False,
                              seq=chunk.seq)
        if self.enc is not None:
            self.enc.flush()
        self._finish_unread(conv)
        conv.finish(self.last_frame, self.end)
        tls = self.hs.result()
        protocol = self.protocol or "other"
        if tls and (protocol == "HTTP" or (protocol == "other" and (tls.get("alpn_chosen") or "").startswith(
                ("http", "h2")))):
            protocol = "HTTPS"
        elif tls and protocol == "other":
            protocol = "TLS"
        notes: list[Text] = []
        if tls and tls["server_hello"] is None and not self.hs.first_app and not tls["unreadable"]:
            notes.append(self._no_handshake(conv, tls))
        if self.early_hello:
            notes.append(Text(f"客户端的 TLS Client Hello 紧跟在 STARTTLS 之后、早于服务器的应答"
                              f"（帧 {self.early_hello}：在同一数据段中，或在抓包中顺序错乱的数据段中）："
                              "Wireshark 不在此处解析握手，因此缺少服务器名、所提供的密码套件和解密。",
                              f"The client's TLS Client Hello comes right behind STARTTLS, before the server's "
                              f"reply (frame {self.early_hello}: in the same segment, or in one the capture "
                              "holds out of order): Wireshark does not read a handshake there, so the server "
                              "name, the offered ciphers and the decryption are missing."))
        if self.starttls_plain:
            notes.append(Text(f"STARTTLS 已被接受，但随后没有 TLS 握手：从帧 {self.starttls_plain} 起连接继续以明文进行"
                              f"（例如在终结 TLS 的代理之后抓包），按原样显示。",
                              f"STARTTLS was accepted, but no TLS handshake followed: from frame "
                              f"{self.starttls_plain} on the connection goes on in plain text (e.g. captured "
                              f"behind a proxy that ends the TLS), and is shown as it is."))
        if self.icmp:
            shown = ", ".join(map(str, self.icmp[:10])) + (", …" if len(self.icmp) > 10 else "")
            notes.append(Text(f"{len(self.icmp)} 个关于此连接的 ICMP 差错报文（帧 {shown}），例如“需要分片”："
                              "其中引用的 TCP 段已经发送过，不在对话中重复列出。",
                              f"{len(self.icmp)} ICMP error message(s) about this connection (frames {shown}), "
                              "e.g. \"fragmentation needed\": the TCP segment each one quotes was sent once already "
                              "and is not repeated in the dialogue."))
        if not self.syn_seen:
            notes.append(_STARTS_INSIDE)
        if not self.fin_seen:
            notes.append(_ENDS_OPEN)
        if tls is None and (conv.credentials_seen or any(e["kind"] == "auth" for e in conv.entries)):
            notes.append(_PLAIN_PASSWORD)
        if tls and not tls["decrypted"] and not tls["unreadable"] and (tls["server_hello"] or self.hs.first_app):
            visible = tls["certificate_visible"]
            notes.append(Text(
                f"内容已加密且没有匹配的密钥日志：旁观者只能看到握手信息（{'证书链、' if visible else ''}"
                f"服务器名 {tls['sni'] or '（无）'}、密码套件）以及各记录的长度和时间，看不到命令、密码和邮件内容。"
                + ("" if visible else "TLS 1.3 中连证书也是加密的。"),
                f"Encrypted, and no key log matches it: a passive observer sees only the handshake "
                f"({'the certificate chain, ' if visible else ''}the server name {tls['sni'] or '(none)'}, the "
                f"cipher suite) and the sizes and timing of the records, not the commands, the password or the "
                f"message." + ("" if visible else " In TLS 1.3 even the certificate is encrypted.")))
        for d, size in (tls or {}).get("unreadable", {}).items():
            side = _SIDE[d]
            notes.append(Text(
                f"抓包中缺少{side.zh} TLS 数据的一个数据段：其后{side.zh}的 {size} 字节 Wireshark 无法读取"
                + ("（密钥日志只解密了另一方）" if tls and tls["decrypted"]
                   else "（若丢失的数据段含握手的一部分，双方都无法解密）")
                + "；对话中只显示这些记录的长度和时间。",
                f"A segment of the {side.en}'s TLS data is missing from the capture: Wireshark cannot "
                f"read the {side.en}'s {size} bytes after it"
                + (" (the key log decrypts only the other side)" if tls and tls["decrypted"] else
                   " (nor decrypt either side, should the lost segment hold part of the handshake)")
                + "; the dialogue shows their records' sizes and times only."))
        if conv.omitted:
            notes.append(Text(f"对话最多保留 {dlg.MAX_ENTRIES} 条：另有 {conv.omitted} 条未列出（统计数据包含全部）。",
                              f"The dialogue is capped at {dlg.MAX_ENTRIES} entries: {conv.omitted} more "
                              "were left out (the statistics count everything)."))
        return {
            "index": self.index,
            "protocol": protocol,
            "security": self.security,
            "client": {"ip": self.client[0], "port": self.client[1]},
            "server": {"ip": self.server[0], "port": self.server[1]},
            "start": round(self.start, 6), "end": round(self.end, 6),
            "first_frame": self.first_frame, "last_frame": self.last_frame,
            "syn_seen": self.syn_seen, "fin_seen": self.fin_seen,
            "tls": tls,
            "dialogue": conv.entries,
            "dialogue_truncated": bool(conv.omitted),
            "mail": conv.mail,
            "stats": self.stats.result(self.end - self.start),
            "notes": [n.pair for n in dict.fromkeys(notes)],
            # where the credentials sit: the sanitized copy of the capture overwrites these bytes
            # (plain streams) or withholds this stream's TLS keys (evidence/sanitize.py)
            "carries_credentials": conv.carries_credentials,
            "secret_bytes": {d: [list(r) for r in conv.secret_bytes[d]] for d in ("C", "S")},
        }


_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 13)) + b"\x7f"


def _tls_header(raw: bytes) -> bool:
    return len(raw) >= 5 and 20 <= raw[0] <= 23 and raw[1] == 3


def _binary(raw: bytes) -> bool:
    """Bytes no text protocol sends: more than a few control characters in the first 256."""
    head = raw[:256]
    return len(head) - len(head.translate(None, _CONTROL)) > max(2, len(head) // 20)


_HTTP_METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")
_IMAP_COMMAND = re.compile(rb"^[A-Z0-9.]{1,20} (CAPABILITY|LOGIN|AUTHENTICATE|STARTTLS|ID|NOOP|LOGOUT)[ \r\n]")


def _sniff(d: str, sample: bytes) -> str:
    """The protocol of a stream from its first bytes (either side's): "other" when they do not say."""
    head = sample[:200].upper()
    if d == "S":
        if head.startswith(b"220") and b"SMTP" in head:  # (FTP greets with 220 too)
            return "SMTP"
        if head.startswith(b"+OK"):
            return "POP3"
        if head.startswith(b"* OK") or head.startswith(b"* PREAUTH"):
            return "IMAP"
        if head.startswith(b"HTTP/"):
            return "HTTP"
        return "other"
    verb = head.split(b" ", 1)[0]
    if verb in _HTTP_METHODS and b" HTTP/" in head.split(b"\n", 1)[0]:
        return "HTTP"
    if verb.rstrip(b"\r\n") in (b"EHLO", b"HELO"):
        return "SMTP"
    if verb.rstrip(b"\r\n") in (b"CAPA", b"STLS") or verb == b"USER":
        return "POP3"
    if _IMAP_COMMAND.match(head):
        return "IMAP"
    return "other"


def analyze(capture: Path, *, keylog: Path | None = None, lang: str = "zh", show_credentials: bool = False,
            redactor: Callable[[str], str] | None = None, started: Pass | None = None,
            streams_done: Callable[[list[dict[str, Any]], str], None] | None = None) -> dict[str, Any]:
    """Analyse ``capture`` with tshark and return the JSON document of docs/analysis.md.

    ``started``: the first pass, already started by tshark.start_first (used when it is the
    pass chosen here, else stopped). ``streams_done``: given the document's "streams" list as
    soon as it is final, while tshark may still be exiting, and its text (json.dumps of it),
    for ``labrunner analyze --json``: each stream is encoded as soon as its result is made,
    most of them while tshark still reads (a connection's last frame, light_rows); it may be
    called again if that pass fails and another reads the capture."""
    capture = Path(capture)
    if lang not in ("zh", "en"):
        raise CaptureFileError(f"unknown report language {lang!r}", hint="use zh or en")
    if keylog is not None:
        keylog = Path(keylog)
        if not keylog.is_file():
            raise CaptureFileError(f"key log file not found: {keylog}",
                                   hint="give the SSLKEYLOGFILE written by the client, or leave out --keylog")
    version = tshark_version()
    opts = {"lang": lang, "show": show_credentials, "redactor": redactor, "streams_done": streams_done}
    # TLS needs the TLS pass (tshark.py); without a key the light pass finds out itself, but a
    # hello among the first packets makes that a wasted tshark start (light_first). Either gives
    # up on what it cannot read for sure, and the -T fields pass reads everything.
    light = light_first(capture, keylog)
    if started is not None and (started.capture, started.keylog, started.light, started.tap) != (
            capture, keylog, light, not light):
        started.close()
        started = None
    for kind in ("light", "tap") if light else ("tap",):
        run, started = started, None  # (the pass started first is the first one read)
        try:
            return _document(capture, keylog, opts, version, light=kind == "light", tap=kind == "tap", run=run)
        except NeedFullPass:
            pass
        except CaptureFileError:
            raise  # the file itself: the -T fields pass would say the same
        except AnalysisError:
            pass  # e.g. a tshark without -T tabs, Lua or one of the columns: the -T fields pass decides
    try:
        return _document(capture, keylog, opts, version, light=False)
    except OutputSpace:
        return _document(capture, keylog, opts, version, light=False)  # (through a pipe now)


def _document(capture: Path, keylog: Path | None, opts: dict[str, Any], version: tuple[int, ...], *,
              light: bool, tap: bool = False, run: Pass | None = None) -> dict[str, Any]:
    lang = opts["lang"]
    if run is None:
        run = Pass(capture, keylog, light=light, tap=tap)
    prepared: dict[bytes, mailsum.Prepared] = {}
    run.idle = lambda directions, ready: mailsum.prepare(directions, ready, prepared)
    token = mailsum.PREPARED.set(prepared)  # (this thread's: a run analyses two captures at once)
    judged = False
    try:
        rows = run.rows()
        try:
            streams, frames, last_time = _replay(rows, opts)
        finally:
            rows.close()  # a light pass given up half-way: stop its tshark now
        # (while tshark exits: Pass.finish)
        ordered = [streams[i] for i in sorted(streams)]
        results = [s.final if s.final is not None else s.result() for s in ordered]
        if opts.get("streams_done") is not None:
            # json.dumps(results), of the streams encoded as they were finished and the others now
            opts["streams_done"](results, "[" + ", ".join(
                s.encoded or json.dumps(r) for s, r in zip(ordered, results, strict=True)) + "]")
        judged = True
        run.finish()
    finally:
        mailsum.PREPARED.reset(token)
        if not judged:
            run.close()  # (something failed: tshark stopped, if it still runs)
    total = Stats()
    for s in streams.values():
        total.merge(s.stats)
    overall = total.result(last_time)
    overall["streams"] = len(results)
    decrypted = any(r["tls"] and r["tls"]["decrypted"] for r in results)
    notes: list[Text] = []
    if run.truncated:
        notes.append(Text("抓包文件在某个数据包中途结束（被截断）；之前的内容均已分析。",
                          "The capture file ends in the middle of a packet (cut short); everything before "
                          "it was analysed."))
    if not results:
        notes.append(Text("抓包中没有 TCP 流量。", "No TCP traffic in this capture."))
    return {
        "schema": SCHEMA,
        "capture": {"file": capture.name, "frames": frames, "duration": round(last_time, 6),
                    "tshark": ".".join(map(str, version)),
                    "decryption": "keylog" if keylog and decrypted else ("embedded" if decrypted else "none"),
                    "truncated": run.truncated},
        "lang": lang,
        "streams": results,
        "stats": overall,
        "notes": [n.pair for n in notes],
    }


def _replay(rows: Iterator[Row], opts: dict[str, Any]) -> tuple[dict[int, Stream], int, float]:
    """Feed tshark's rows to their streams; returns the streams, the frame count, the last time."""
    encode = json.dumps if opts.get("streams_done") is not None else None
    streams: dict[int, Stream] = {}
    by_text: dict[str, Stream] = {}  # tcp.stream as printed: parsed once per stream
    frames = 0
    last_time = 0.0
    for row in rows:
        if len(row) < NROW:
            continue
        frames += 1
        try:
            time = float(row[I_TIME])
        except ValueError:
            continue  # (tshark always prints one)
        last_time = time
        stream = by_text.get(row[I_STREAM])
        if stream is None:
            if not row[I_STREAM]:
                continue
            try:
                index = int(row[I_STREAM])
            except ValueError:
                continue
            if index in streams:  # (finished at what was said to be its last frame: see below)
                raise NeedFullPass(f"a frame of TCP stream {index} after the last one of its connection")
            if row[I_PROTO] == ICMP:
                continue  # an ICMP error about a connection the capture has no segment of (yet)
            stream = streams[index] = by_text[row[I_STREAM]] = Stream(index, row, opts)
        stream.frame(row, time)
        if row[I_PROTO] is END:
            # the last frame of its connection in the file (tshark.light_rows): its result is
            # made now, while tshark reads on, instead of after the last frame of all
            stream.finish(encode)
            del by_text[row[I_STREAM]]
    return streams, frames, last_time

