"""Shared state of the sessions: the context, step results, transcript events.

The transcript event format is documented in docs/transcript.md; keep both in agreement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from labrunner.config.model import Profile, Scenario
from labrunner.errors import LabError, SessionError, UsageError
from labrunner.executor.base import Executor
from labrunner.protocols import notes
from labrunner.secrets import REDACTED, Redactor

# Reads are capped so a server that trickles bytes or sends an endless line cannot hang us
# or eat memory; the caps are far above anything a mail or web server legitimately sends.
MAX_LINE = 64 * 1024
MAX_REPLY = 4 * 1024 * 1024  # one reply: POP3 LIST/UIDL, IMAP untagged lines of one command
# A longer line is shortened in the transcript (an IMAP SEARCH of a big mailbox is one line).
SHOWN_LINE = 2000
MAX_MESSAGE = 64 * 1024 * 1024  # one retrieved message or HTTP body

Direction = Literal["C", "S", "*"]


@dataclass
class SentMessage:
    """A message an SMTP or lines step sent, so a later POP3/IMAP step can look for it."""

    step_id: str
    message_id: str
    subject: str
    data: bytes  # as sent, before dot-stuffing, CRLF line ends
    sha256: str
    recipients: tuple[str, ...]


@dataclass
class TlsInfo:
    version: str
    cipher: str
    bits: int | None
    sni: str | None
    verified: bool
    peer_certificate: dict[str, Any] | None  # see certificates.certificate_summary
    started: float  # seconds since the scenario start, when the handshake began
    done: float


@dataclass
class ConnectionInfo:
    conn: int  # unique within a scenario, also used in the events
    host: str
    port: int
    security: str  # plain | starttls | tls
    started: float  # seconds since the scenario start
    started_wall: float  # Unix time: lets the analysis match the stream in the capture
    server_ip: str | None = None  # as the target resolved the host name (None: unknown)
    tls: TlsInfo | None = None
    closed: float | None = None
    # Over direct-tcpip the target's local port is unknown to us; the analysis matches
    # streams by server port and order of connection.
    local_port: int | None = None


@dataclass
class StepResult:
    kind: str
    id: str | None
    server: str  # key of Profile.servers
    host: str
    port: int
    security: str
    started: float
    started_wall: float
    ended: float | None = None
    ok: bool = False
    error: str | None = None
    hint: str | None = None
    error_type: str | None = None  # the LabError subclass name
    expected_failure: str | None = None  # e.g. "rcpt 550": the scenario wanted this refusal
    # Every TCP connection the step opened (sessions.wire.connect records each): the runner
    # stops a capture once that many connections have ended in it (capture.TcpEnds).
    connections: list[ConnectionInfo] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None  # what was sent: Message-ID, subject, size, sha256
    body: str | None = None  # the full DATA payload as sent (not in events)
    found: dict[str, Any] | None = None  # the earlier message found again by POP3/IMAP
    details: dict[str, Any] = field(default_factory=dict)  # protocol facts (capabilities, ...)
    exception: LabError | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("exception")
        return data


def step_endpoint(step: Any, profile: Profile) -> tuple[str, int, str]:
    """Host, port and security mode a step connects to: the step's own port, else the profile's.

    The one place that decides it: the sessions connect there, the capture filter and
    ``doctor`` look there.
    """
    server = profile.servers.get(step.server)
    if server is None:
        known = ", ".join(sorted(profile.servers)) or "none"
        raise UsageError(f"profile {profile.name!r} has no server {step.server!r} (it has: {known})",
                         hint=f"add servers.{step.server} to the profile in lab.yaml")
    if step.kind in ("https", "webmail"):
        security = "tls"
        port = step.port if step.port is not None else (server.ports.get("tls") or server.ports.get("https") or 443)
        return server.host, int(port), security
    security = step.security
    if isinstance(step.port, int):
        return server.host, step.port, security
    mode = step.port if isinstance(step.port, str) else security  # a lines step may name a mode
    try:
        return server.host, server.port(mode), security
    except KeyError:
        raise UsageError(
            f"profile {profile.name!r}: server {step.server!r} has no port for {mode!r}",
            hint=f"add servers.{step.server}.{mode}: <port> to the profile, or give port: in the step",
        ) from None


def scenario_endpoints(sc: Scenario, profile: Profile) -> list[tuple[str, str, int]]:
    """(server name, host, port) of every connection the scenario's steps make, once each: what
    its capture filters on and ``doctor`` checks."""
    seen: list[tuple[str, str, int]] = []
    for step in sc.steps:
        if step.kind == "import":  # a capture made elsewhere: nothing is connected to
            continue
        host, port, _security = step_endpoint(step, profile)
        if (step.server, host, port) not in seen:
            seen.append((step.server, host, port))
    return seen


@dataclass
class SessionContext:
    executor: Executor
    profile: Profile
    secret: str  # the account secret, in memory only
    keylog: Path  # every TLS context appends its secrets here (created 0600)
    redactor: Redactor
    scenario_dir: Path  # attachments are relative to it
    sent: dict[str, SentMessage] = field(default_factory=dict)
    deadline: float = field(default_factory=lambda: time.monotonic() + 120.0)
    started: float = field(default_factory=time.monotonic)  # event times count from here
    started_wall: float = field(default_factory=time.time)
    reply_timeout: float = 30.0  # for one reply (all lines of it)
    step_timeout: float = 90.0  # for one step, all its connections
    connect_timeout: float = 10.0
    find_timeout: float = 20.0  # how long POP3/IMAP wait for a sent message to be delivered
    lang: str = "en"  # language of error lines
    conn_count: int = 0
    addresses: dict[str, str | None] = field(default_factory=dict)  # host -> IP on the target

    def __post_init__(self) -> None:
        # Every form of the secret (plain, base64, AUTH PLAIN blob) is redacted from events.
        self.redactor.add(self.secret, [self.profile.account.login, self.profile.account.address])

    def now(self) -> float:
        return round(time.monotonic() - self.started, 6)

    def address_of(self, host: str) -> str | None:
        """The IP the target resolves ``host`` to, once per host; None when it cannot tell.

        The capture shows IPs only: with the address the analysis matches a stream to its
        connection by server IP, port and order.
        """
        if host not in self.addresses:
            try:
                self.addresses[host] = self.executor.facts.resolve(host, timeout=5)[0]
            except (LabError, NotImplementedError):
                self.addresses[host] = None
        return self.addresses[host]

    def next_conn(self) -> int:
        self.conn_count += 1
        return self.conn_count

    def record(self, result: StepResult, conn: int, direction: Direction, text: str,
               *, tls: bool = False, sensitive: bool = False, note: str | None = None,
               fields: dict[str, Any] | None = None) -> None:
        shown = self.redactor(text)
        if sensitive and shown == text:
            # A line known to carry a credential is hidden even when the redactor does not
            # recognise the form (for example an APOP-like digest or an odd encoding).
            shown = REDACTED
        event: dict[str, Any] = {"conn": conn, "dir": direction, "time": self.now(), "text": shown, "tls": tls}
        if note is not None:
            event["note"] = note
            event["fields"] = {k: self.redactor(v) if isinstance(v, str) else v for k, v in (fields or {}).items()}
        result.events.append(event)

    def note(self, result: StepResult, conn: int, key: str, *, direction: Direction = "*", tls: bool = False,
             **fields: str | int | None) -> None:
        """A note of the client (or a line it writes in place of a body): the key of
        labrunner/protocols/notes.py and its fields, with the English text beside them, so
        that the report says it in its language (docs/transcript.md)."""
        self.record(result, conn, direction, notes.english(key, **fields), tls=tls, note=key, fields=fields)


def sent_by(ctx: SessionContext, step_id: str, kind: str) -> SentMessage:
    """The message an earlier step sent, for ``find:``."""
    sent = ctx.sent.get(step_id)
    if sent is None:
        raise UsageError(f"{kind} step: find: {step_id!r} names no earlier step that sent a message",
                         hint="give the smtp (or lines) step that id and put it before this step")
    return sent


def not_delivered(where: str, sent: SentMessage, place: str, waited: float) -> SessionError:
    return SessionError(
        f"{where}: the message {sent.message_id} sent by step {sent.step_id!r} is not in {place} "
        f"after {waited:.0f} s",
        hint="the server accepted it but did not deliver it here: check the recipient and the mail server's log",
    )
