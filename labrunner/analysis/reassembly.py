"""In-order bytes of one direction of a plain TCP stream, from tshark's segments.

tshark gives each frame's payload with its relative sequence number and marks retransmissions
and out-of-order segments. With the line dissectors switched off nobody asks Wireshark to
reassemble plain text, so the segments are ordered here by those sequence numbers: each byte
is delivered exactly once, in order, attributed to the frame that carried it; bytes the capture
never saw become a gap instead of invented text. Memory is bounded by ``max_pending``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Chunk:
    data: bytes
    frame: int
    time: float
    gap: int = 0  # > 0: this many bytes are missing before ``data``
    seq: int = -1  # tshark's relative sequence number of data[0] (where its bytes sit in the stream)


class Assembler:
    def __init__(self, *, max_pending: int = 1 << 20) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, tuple[bytes, int, float]] = {}
        self.pending_bytes = 0
        self.max_pending = max_pending
        self.duplicate_bytes = 0

    def start_at(self, seq: int) -> None:
        """The SYN fixes where data starts (its sequence number + 1)."""
        if self.next_seq is None:
            self.next_seq = seq

    def add(self, seq: int, payload: bytes, frame: int, time: float) -> list[Chunk]:
        if not payload:
            return []
        if self.next_seq is None:
            self.next_seq = seq  # the capture started in the middle of the stream
        out: list[Chunk] = []
        end = seq + len(payload)
        if end <= self.next_seq:
            self.duplicate_bytes += len(payload)
            return out
        if seq > self.next_seq:
            old = self.pending.get(seq)
            if old is None or len(old[0]) < len(payload):
                self.pending_bytes += len(payload) - (len(old[0]) if old else 0)
                self.pending[seq] = (payload, frame, time)
            if self.pending_bytes > self.max_pending:
                out.extend(self._skip_to_first_pending(frame, time))
            return out
        if seq < self.next_seq:
            self.duplicate_bytes += self.next_seq - seq
            payload = payload[self.next_seq - seq:]
        out.append(Chunk(payload, frame, time, seq=max(seq, self.next_seq)))
        self.next_seq = end
        out.extend(self._drain())
        return out

    def _drain(self) -> list[Chunk]:
        out: list[Chunk] = []
        assert self.next_seq is not None
        while self.pending:
            ready = [s for s in self.pending if s <= self.next_seq]
            if not ready:
                break
            for s in sorted(ready):
                data, frame, time = self.pending.pop(s)
                self.pending_bytes -= len(data)
                end = s + len(data)
                if end <= self.next_seq:
                    self.duplicate_bytes += len(data)
                    continue
                out.append(Chunk(data[self.next_seq - s:], frame, time, seq=self.next_seq))
                self.next_seq = end
        return out

    def _skip_to_first_pending(self, frame: int, time: float) -> list[Chunk]:
        assert self.next_seq is not None
        first = min(self.pending)
        missing = first - self.next_seq
        self.next_seq = first
        chunks = self._drain()
        if chunks:
            chunks[0].gap = missing
        return chunks

    def acked(self, ack: int) -> list[Chunk]:
        """The peer acknowledged up to ``ack``: a hole before it was lost by the capture only."""
        if self.next_seq is None or not self.pending or ack <= self.next_seq:
            return []
        if min(self.pending) > ack:
            return []
        return self._skip_to_first_pending(0, 0.0)

    def flush(self) -> list[Chunk]:
        """End of capture: deliver what waited behind a hole, marking each hole as a gap."""
        out: list[Chunk] = []
        while self.pending:
            out.extend(self._skip_to_first_pending(0, 0.0))
        return out
