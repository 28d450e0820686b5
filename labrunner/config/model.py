"""The typed model of lab.yaml and the scenario files.

These dataclasses are the contract between configuration loading (config/load.py), the
executors, the sessions and the runner. They hold no secret values: a secret is a
:class:`SecretRef` that is resolved in memory when a run starts (see ``secrets.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from labrunner.text import Text as Text  # re-exported: the bilingual type lives at the ground floor

Lang = Literal["zh", "en"]


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from at run time. It is never stored in a file we write.

    ``env``: the name of an environment variable; ``prompt``: ask on the terminal when the
    variable is unset; ``state``: a key of the sandbox state file (sandbox profile only);
    ``sandbox``: which account of the sandbox state holds it (1 = the first, student@lab.test).
    """

    env: str | None = None
    prompt: bool = True
    state: str | None = None
    sandbox: int | None = None


@dataclass(frozen=True)
class ServerSpec:
    """A mail-provider service: one host name and its ports by security mode.

    Modes: ``plain`` (no TLS), ``starttls`` (SMTP submission / IMAP STARTTLS / POP3 STLS on
    the plain port), ``tls`` (implicit TLS). For SMTP ``starttls`` is usually 587; for POP3
    and IMAP STLS/STARTTLS use the plain port, so ``starttls`` defaults to ``plain``.
    """

    host: str
    ports: dict[str, int] = field(default_factory=dict)

    def port(self, mode: str) -> int:
        if mode in self.ports:
            return self.ports[mode]
        if mode == "starttls" and "plain" in self.ports:
            return self.ports["plain"]
        raise KeyError(mode)


@dataclass(frozen=True)
class TargetSpec:
    """The host the experiment runs on (the ECS instance), reached over SSH or locally."""

    host: str
    user: str | None = None  # None: from ~/.ssh/config, then the local user
    port: int | None = None  # None: from ~/.ssh/config, then 22
    key: str | None = None  # private key file; None: agent, ~/.ssh/config, default keys
    host_key: str | None = None  # pinned fingerprint "SHA256:..." (as ssh-keygen -lf prints)
    known_hosts: str | None = None  # extra known_hosts file (besides ~/.ssh/known_hosts)
    trust_on_first_use: bool = False  # record an unknown key instead of refusing it
    password: SecretRef | None = None  # SSH password or key passphrase, if needed
    proxy_jump: str | None = None
    local: bool = False  # run on this machine with subprocess instead of SSH
    connect_timeout: float = 10.0
    command_timeout: float = 60.0


@dataclass(frozen=True)
class AccountSpec:
    address: str
    user: str | None = None  # login name; defaults to the address
    secret: SecretRef = field(default_factory=SecretRef)

    @property
    def login(self) -> str:
        return self.user or self.address


@dataclass(frozen=True)
class Profile:
    name: str
    target: TargetSpec
    servers: dict[str, ServerSpec]  # keys: smtp, pop3, imap, web (and any other name)
    account: AccountSpec
    ca_file: str | None = None  # CA bundle for verifying the servers; None: system store
    from_sandbox: bool = False  # filled in from the sandbox state file at run time
    sandbox_instance: str | None = None  # from_sandbox: which instance; None: the default one


@dataclass(frozen=True)
class Student:
    name: Text = field(default_factory=Text)  # {zh, en}: the cover of each language's report
    id: str = ""
    klass: str = ""  # "class" in YAML


# The objectives of the seed lab (实验5 电子邮件), section 1 of its report.
SEED_OBJECTIVES = Text(
    zh="理解电子邮件系统的基本结构\n理解客户端与服务器端，以及服务器之间的通信\n分析并理解 SMTP 和 POP3 协议",
    en="Understand the basic structure of e-mail systems\n"
       "Understand the client and server sides, and the communication between servers\n"
       "Analyse and understand the SMTP and POP3 protocols",
)


@dataclass(frozen=True)
class ReportMeta:
    school: Text = field(default_factory=Text)  # each a plain string (both languages) or {zh, en}
    course: Text = field(default_factory=Text)
    lab: Text = field(default_factory=Text)
    student: Student = field(default_factory=Student)
    date: str = ""  # empty: the date of the run
    lang: Lang = "zh"
    templates: str | None = None  # a folder whose files override the built-in templates
    show_credentials: bool = False
    objectives: Text = field(default_factory=lambda: SEED_OBJECTIVES)  # one objective per line
    reflections: Text = field(default_factory=Text)  # the student's reflections, Markdown
    problems: Text = field(default_factory=Text)  # the student's problems and solutions (5.1), Markdown


@dataclass(frozen=True)
class InventoryEntry:
    """One student's host in a class run: own target, account and report metadata."""

    name: str
    target: TargetSpec
    account: AccountSpec
    report: ReportMeta  # the lab's report metadata with this entry's own keys laid over it
    profile: str = ""  # the profile whose servers and CA this entry uses ("": the default one)
    sandbox: int | None = None  # target and account N of the profile's sandbox (then target/account are empty)


@dataclass(frozen=True)
class Lab:
    path: Path
    default_profile: str
    report: ReportMeta
    profiles: dict[str, Profile]
    scenarios_dir: Path
    output_dir: Path
    inventory: list[InventoryEntry] = field(default_factory=list)


# --- scenarios ---------------------------------------------------------------


@dataclass(frozen=True)
class CaptureSpec:
    enabled: bool = True
    interface: str | None = None  # None: the interface of the route to the first server
    filter: str | None = None  # None: derived from the scenario's servers and ports
    snaplen: int = 0  # 0: whole packets


@dataclass(frozen=True)
class Attachment:
    name: str
    content: str = ""  # inline text content
    path: str | None = None  # or a file, relative to the scenario file
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class MessageSpec:
    subject: str = ""
    text: str = ""
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    from_: str | None = None  # None: the account address
    to: tuple[str, ...] = ()  # None/empty: the envelope recipients


@dataclass(frozen=True)
class SmtpStep:
    kind: Literal["smtp"] = "smtp"
    server: str = "smtp"  # key of Profile.servers
    security: Literal["plain", "starttls", "tls"] = "starttls"
    port: int | None = None  # overrides the profile's port for the security mode
    helo: str = "lab-client"
    auth: Literal["login", "plain", "none"] = "login"
    mail_from: str | None = None  # None: the account address
    rcpt_to: tuple[str, ...] = ()  # empty: the account address
    message: MessageSpec = field(default_factory=MessageSpec)
    pipelining: bool = False
    extra: tuple[str, ...] = ()  # NOOP / RSET etc. sent before QUIT
    expect: dict[str, int] = field(default_factory=dict)  # e.g. {"rcpt": 550} to expect a refusal
    id: str | None = None  # name a later step can refer to (find: <id>)


@dataclass(frozen=True)
class Pop3Step:
    kind: Literal["pop3"] = "pop3"
    server: str = "pop3"
    security: Literal["plain", "starttls", "tls"] = "plain"
    port: int | None = None
    auth: Literal["user", "apop"] = "user"
    commands: tuple[str, ...] = ("STAT", "LIST", "UIDL")
    retrieve: Literal["none", "last", "all", "found"] = "found"
    top_lines: int | None = None  # TOP n <lines> instead of RETR
    delete: bool = False
    find: str | None = None  # id of an earlier smtp step whose message must be found
    id: str | None = None


@dataclass(frozen=True)
class ImapStep:
    kind: Literal["imap"] = "imap"
    server: str = "imap"
    security: Literal["plain", "starttls", "tls"] = "starttls"
    port: int | None = None
    mailbox: str = "INBOX"
    search: str = "ALL"
    fetch: str = "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT MESSAGE-ID)])"
    find: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class LineItem:
    """One line of the telnet exercise: what is typed and the reply code it must get."""

    send: str | None = None  # None: only read (the greeting); may hold {account.user|base64}
    send_message: MessageSpec | None = None  # DATA body, ended with CRLF.CRLF
    expect: int | str | None = None  # a numeric code (SMTP) or "+OK"/"-ERR" (POP3) / tag word
    # "scenarios/telnet-smtp.yaml:37:11": where the line is written, so a failure can point there
    where: str = ""


@dataclass(frozen=True)
class LinesStep:
    kind: Literal["lines"] = "lines"
    server: str = "smtp"
    security: Literal["plain", "tls"] = "plain"
    port: int | str | None = None  # a number or a mode name ("plain", "tls")
    protocol: Literal["smtp", "pop3", "imap"] = "smtp"  # how replies are read
    script: tuple[LineItem, ...] = ()
    id: str | None = None


@dataclass(frozen=True)
class HttpsStep:
    kind: Literal["https"] = "https"
    server: str = "web"
    port: int | None = None
    tls_version: Literal["1.2", "1.3"] = "1.3"
    ciphers: str | None = None  # OpenSSL cipher string for TLS 1.2, e.g. ECDHE-RSA-AES128-GCM-SHA256
    method: str = "GET"
    path: str = "/"
    expect_status: int = 200  # of the last response, after the redirects followed
    id: str | None = None
    follow_redirects: int = 5  # same-host redirects followed, each on its own connection


@dataclass(frozen=True)
class WebmailStep:
    """Log in to a Roundcube web mail over HTTPS, compose and send a mail, log out."""

    kind: Literal["webmail"] = "webmail"
    server: str = "web"
    port: int | None = None
    tls_version: Literal["1.2", "1.3"] = "1.3"
    ciphers: str | None = None  # as HttpsStep: forces TLS 1.2 suites
    path: str = "/"  # where the web mail is
    to: tuple[str, ...] = ()  # empty: the account address
    subject: str = "Hello from web mail"
    text: str = "Sent with the web mail's compose form."
    id: str | None = None  # a later pop3/imap step can find the mail (find: <id>)


@dataclass(frozen=True)
class ImportStep:
    """The student's own capture (and browser key log) instead of captured sessions."""

    kind: Literal["import"] = "import"
    capture: str = ""  # absolute path, inside the project folder
    keylog: str | None = None
    project: str = ""  # the project folder the files must lie in (lab.yaml's)
    server: str = ""  # no server: nothing is connected to
    id: str | None = None


Step = SmtpStep | Pop3Step | ImapStep | LinesStep | HttpsStep | WebmailStep | ImportStep


@dataclass(frozen=True)
class Scenario:
    name: str  # the file stem; the run folder is output/<run-id>/<name>/
    path: Path
    title: Text
    objective: Text
    steps: tuple[Step, ...]
    capture: CaptureSpec = field(default_factory=CaptureSpec)
    section: str = ""  # the seed lab's section this reproduces, e.g. "4.2"
    notes: Text = field(default_factory=Text)  # the student's own Markdown
    timeout: float = 120.0  # wall-clock limit for the whole scenario
    order: int | None = None  # position in a run; None: after the ordered ones, by name
