"""A scenario's transcript.json (docs/transcript.md) as the report reads it: typed, read once.

The file may come from an older labrunner or a hand edit: anything of the wrong shape is left
out here (a step that is not an object, an event without a text, a port that is not a number),
so the report's functions get records and need no guard of their own. The run folder's
manifest has its own typed records (labrunner/runfolder/records.py); this one is the report's
view of the client's record and holds only what the report prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Event:
    """One line of the client's record: ``dir`` C, S or * (a note), seconds since the start; a
    note of the client also has its key and fields (labrunner/protocols/notes.py)."""

    dir: str
    text: str
    time: Any
    conn: int | None
    note: str | None = None
    fields: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        note, fields = d.get("note"), d.get("fields")
        return cls(dir=str(d.get("dir") or ""), text=str(d.get("text", "")), time=d.get("time"),
                   conn=_int(d.get("conn")), note=note if isinstance(note, str) else None,
                   fields=fields if isinstance(fields, dict) else None)


@dataclass(frozen=True)
class Connection:
    """One TCP connection of a step: the server's port, the transcript's id for it, and the TLS
    it negotiated as Python's ssl module said (version "TLSv1.3", cipher, the peer certificate)."""

    port: int | None
    conn: int | None
    tls_version: str
    tls_cipher: Any
    certificate: dict[str, Any] | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Connection:
        tls = d.get("tls")
        tls = tls if isinstance(tls, dict) else {}
        cert = tls.get("peer_certificate")
        port, conn = d.get("port"), d.get("conn")
        return cls(port=port if isinstance(port, int) else None, conn=conn if isinstance(conn, int) else None,
                   tls_version=str(tls.get("version") or ""), tls_cipher=tls.get("cipher"),
                   certificate=cert if isinstance(cert, dict) else None)


@dataclass(frozen=True)
class Step:
    """One step of the scenario (an SMTP session, a POP3 session, ...); ``number`` counts from 1
    in the file's list."""

    number: int
    kind: str
    server: Any
    host: Any
    port: Any
    security: str
    error: str | None
    events: list[Event]
    connections: list[Connection]

    @classmethod
    def from_json(cls, d: dict[str, Any], number: int) -> Step:
        return cls(number=number, kind=str(d.get("kind") or "?"), server=d.get("server"), host=d.get("host"),
                   port=d.get("port"),
                   security=str(d.get("security") or ""), error=str(d["error"]) if d.get("error") else None,
                   events=[Event.from_json(x) for x in _dicts(d.get("events") or d.get("lines"))],
                   connections=[Connection.from_json(x) for x in _dicts(d.get("connections"))])


@dataclass(frozen=True)
class Transcript:
    steps: list[Step]

    @classmethod
    def from_json(cls, value: Any) -> Transcript | None:
        """The transcript, or None when there is none (missing or unreadable); one of another
        shape has no steps."""
        if value is None:
            return None
        steps = value.get("steps") if isinstance(value, dict) else None
        return cls(steps=[Step.from_json(x, n) for n, x in enumerate(steps if isinstance(steps, list) else [], 1)
                          if isinstance(x, dict)])

    def connections(self) -> list[Connection]:
        return [c for step in self.steps for c in step.connections]
