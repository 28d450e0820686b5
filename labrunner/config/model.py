"""The typed model of lab.yaml and the scenario files, and the declaration of every key.

These dataclasses are the contract between configuration loading (config/load.py), the
executors, the sessions and the runner. They hold no secret values: a secret is a
:class:`SecretRef` that is resolved in memory when a run starts (see ``secrets.py``).

Each key of a file is declared once, here, as its field: ``opt(Option(default, help, ...))``
gives the key's default (also the field's), type and help; ``sub(help)`` marks a key that is a
mapping of its own, whose Section (with its checks) config/schema.py gives. config/schema.py
derives its Sections from these fields (``Section.from_dataclass``) and adds only what is its
own: cross-key checks, string checks and the docs tables. A field without either is not a key
of the file (set by the loader or the runner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from labrunner.config.options import (
    MAX_SANDBOX_TARGETS,
    REQUIRED,
    Bool,
    Choice,
    ExpectOpt,
    Float,
    Int,
    LinePort,
    ListOf,
    MapOf,
    PathStr,
    Port,
    ReplyCode,
    SecretOpt,
    Str,
    TextOpt,
    opt,
    sub,
)
from labrunner.protocols.pop3 import STEP_COMMANDS as POP3_COMMANDS
from labrunner.protocols.smtp import EXTRA as SMTP_EXTRA
from labrunner.protocols.smtp import PHASES as SMTP_EXPECT_KEYS
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


SECURITY = ("plain", "starttls", "tls")
# The servers `labrunner sandbox up` provides; a sandbox profile's names are known before it runs.
SANDBOX_SERVERS = ("smtp", "pop3", "imap", "web")
# (The protocols' words a step may name, the phases of an smtp step, the commands a step may add
# and the replies an expect may give, are the protocols' own: labrunner/protocols/.)


@dataclass(frozen=True)
class ServerSpec:
    """A mail-provider service: one host name and its ports by security mode.

    Modes: ``plain`` (no TLS), ``starttls`` (SMTP submission / IMAP STARTTLS / POP3 STLS on
    the plain port), ``tls`` (implicit TLS). For SMTP ``starttls`` is usually 587; for POP3
    and IMAP STLS/STARTTLS use the plain port, so ``starttls`` defaults to ``plain``.
    (Its keys in the file, host/plain/starttls/tls, are declared by config/schema.SERVER.)
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
    """The host the experiment runs on (the ECS instance), reached over SSH or locally.

    A sandbox or class target (config/load.py, from the sandbox state) gets the same defaults
    as one written in lab.yaml: these.
    """

    host: str = opt(Str(help="address or name of the target host (the ECS instance's public IP)", nonempty=True))
    user: str | None = opt(Str(None, "SSH user; empty: from ~/.ssh/config, then your local user name"))
    port: int | None = opt(Port(None, "SSH port; empty: from ~/.ssh/config, then 22"))
    key: str | None = opt(PathStr(None, "private key file; empty: the SSH agent, ~/.ssh/config, default keys"))
    # pinned fingerprint "SHA256:..." (as ssh-keygen -lf prints)
    host_key: str | None = opt(Str(None, 'the host key fingerprint "SHA256:..." (ssh-keyscan HOST | ssh-keygen -lf -)'))
    known_hosts: str | None = opt(PathStr(None, "an extra known_hosts file, besides ~/.ssh/known_hosts"))
    trust_on_first_use: bool = opt(Bool(False, "record an unknown host key instead of refusing it (first connection)"))
    password: SecretRef | None = opt(SecretOpt(None, "where the SSH password or key passphrase comes from, if one "
                                               "is needed"))
    proxy_jump: str | None = opt(Str(None, "jump hosts, as in ssh -J: user@host:port, or a chain a,b (the target "
                                     "is reached from the last)"))
    local: bool = opt(Bool(False, "run on this machine (no SSH): the target is localhost"))
    connect_timeout: float = opt(Float(10.0, "seconds to wait for the SSH connection"))
    command_timeout: float = opt(Float(60.0, "seconds a command on the target may run by default"))


@dataclass(frozen=True)
class AccountSpec:
    address: str = opt(Str(help="the mail address, e.g. 123456@qq.com"))
    user: str | None = opt(Str(None, "login name; empty: the address"))
    secret: SecretRef = opt(SecretOpt(SecretRef(), "where the password / QQ authorization code (授权码) comes from"))

    @property
    def login(self) -> str:
        return self.user or self.address


@dataclass(frozen=True)
class Profile:
    # The name is the key in `profiles:`; config/load.py sets it once the mapping is built.
    name: str = ""
    from_sandbox: bool = opt(Bool(False, "fill target, servers, account and CA from `labrunner sandbox up`"))
    # from_sandbox: which instance; None: the default one
    sandbox_instance: str | None = opt(Str(None, "from_sandbox: the sandbox instance name; empty: "
                                           "$LABRUNNER_SANDBOX_INSTANCE, then `lab`"), key="instance")
    # A from_sandbox profile has none of these until config/load.py fills them from the state.
    target: TargetSpec = sub("the host the experiment runs on, reached over SSH",
                             default_factory=lambda: TargetSpec(host=""))
    # keys: smtp, pop3, imap, web (and any other name)
    servers: dict[str, ServerSpec] = sub("the services by name: smtp, pop3, imap, web (scenarios refer to them)",
                                         default_factory=dict, when_absent=None)
    account: AccountSpec = sub("the mail account used by every scenario",
                               default_factory=lambda: AccountSpec(address=""))
    ca_file: str | None = opt(PathStr(None, "CA bundle to verify the servers' certificates; empty: the system's"))


@dataclass(frozen=True)
class Student:
    # {zh, en}: the cover of each language's report
    name: Text = opt(TextOpt(None, "the student's name (姓名); {zh, en} for a name written differently in each "
                             "language"))
    id: str = opt(Str("", "student ID (学号); numbers are fine", numbers=True))
    klass: str = opt(Str("", "class (班级)", numbers=True), key="class")


# The objectives of the seed lab (实验5 电子邮件), section 1 of its report.
SEED_OBJECTIVES = Text(
    zh="理解电子邮件系统的基本结构\n理解客户端与服务器端，以及服务器之间的通信\n分析并理解 SMTP 和 POP3 协议",
    en="Understand the basic structure of e-mail systems\n"
       "Understand the client and server sides, and the communication between servers\n"
       "Analyse and understand the SMTP and POP3 protocols",
)


@dataclass(frozen=True)
class ReportMeta:
    school: Text = opt(TextOpt(None, "school or university (学校); {zh, en} for each language's cover"))
    course: Text = opt(TextOpt(None, "course name (课程), e.g. 计算机网络 or {zh: 计算机网络, en: Computer Networks}"))
    lab: Text = opt(TextOpt(None, "lab title (实验名称), e.g. 实验5 电子邮件 or "
                            "{zh: 实验5 电子邮件, en: Lab 5 E-mail}"))
    student: Student = sub("who wrote the report", default_factory=Student)
    date: str = opt(Str("", "date on the cover, e.g. 2026-11-26; empty: the day of the run", numbers=True))
    lang: Lang = opt(Choice(("zh", "en"), "zh", "language of the report: zh (中文) or en (English)"))
    # a folder whose files override the built-in templates
    templates: str | None = opt(PathStr(None, "a folder of templates that override the built-in ones (same file "
                                        "names)"))
    show_credentials: bool = opt(Bool(False, "show the account's user name in the report (the secret never is)"))
    objectives: Text = opt(TextOpt(SEED_OBJECTIVES, "the lab's objectives (实验目的), one per line; default: the "
                                   "seed lab's"))
    reflections: Text = opt(TextOpt(None, "your reflections (心得体会) for section 5.2, in Markdown"))
    problems: Text = opt(TextOpt(None, "the problems you met and how you solved them (遇到的问题与解决方法), "
                                 "section 5.1, in Markdown; the report adds the failures and retries it recorded"))


@dataclass(frozen=True)
class InventoryEntry:
    """One student's host in a class run: own target, account and report metadata."""

    name: str = opt(Str(help="a short name for this student's run, e.g. the student ID", numbers=True))
    # the profile whose servers and CA this entry uses ("": the default one)
    profile: str = opt(Str("", "the profile whose servers and CA are used; empty: default_profile"))
    # target and account N of the profile's sandbox (then target/account are empty)
    sandbox: int | None = opt(Int(None, "this student is target N (ecs, ecs2 ...) and account N (student, "
                                  "student2 ...) of the profile's sandbox; the profile must be from_sandbox",
                                  min=1, max=MAX_SANDBOX_TARGETS))
    target: TargetSpec = sub("this student's host, reached over SSH; empty with `sandbox: N`",
                             default_factory=lambda: TargetSpec(host=""))
    account: AccountSpec = sub("this student's mail account; empty with `sandbox: N`",
                               default_factory=lambda: AccountSpec(address=""))
    # the lab's report metadata with this entry's own keys laid over it (in the file: only those keys)
    report: ReportMeta = sub("this student's report metadata (overrides the lab's)", default_factory=ReportMeta,
                             when_absent=None)


@dataclass(frozen=True)
class Lab:
    # Its keys (default_profile, scenarios_dir, ...) are declared by config/schema.LAB: config/load.py
    # resolves them (folders relative to lab.yaml, the inventory's reports over the lab's).
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
    enabled: bool = opt(Bool(True, "capture the traffic with tcpdump on the target"))
    # None: the interface of the route to the first server
    interface: str | None = opt(Str(None, "interface to capture on; empty: the one routing to the first server"))
    # None: derived from the scenario's servers and ports
    filter: str | None = opt(Str(None, "a tcpdump (BPF) filter, never tcpdump options; empty: the scenario's "
                                 "servers and ports"))
    snaplen: int = opt(Int(0, "bytes kept of each packet; 0: whole packets", min=0))


@dataclass(frozen=True)
class Attachment:
    name: str = opt(Str(help="file name shown in the mail, e.g. report.txt", nonempty=True))
    content: str = opt(Str("", "inline text content"))
    # or a file, relative to the scenario file
    path: str | None = opt(PathStr(None, "or a file to attach, relative to the scenario file and inside the "
                                   "project folder (no absolute path, no .., no link out of it)"))
    content_type: str = opt(Str("application/octet-stream", "MIME type, e.g. text/plain"))


@dataclass(frozen=True)
class MessageSpec:
    subject: str = opt(Str("", "Subject: line (Chinese is fine: it is encoded as RFC 2047 asks)"))
    text: str = opt(Str("", "plain-text body"))
    html: str | None = opt(Str(None, "an HTML body as well (the mail becomes multipart/alternative)"))
    attachments: tuple[Attachment, ...] = sub("files attached to the mail", default=())
    from_: str | None = opt(Str(None, "From: header; empty: the account address"), key="from")  # None: the account
    to: tuple[str, ...] = opt(ListOf(Str(), (), "To: header; empty: the envelope recipients"))


_SERVER_HELP = "which server of the profile (smtp, pop3, imap, web)"
_PORT_HELP = "a port number instead of the profile's port for the security mode"
_ID_HELP = "a name later steps refer to (find: ID)"
_TLS_PORT_HELP = "a port number instead of the profile's tls port"
_TLS_VERSION_HELP = "the TLS version offered (only this one)"


@dataclass(frozen=True)
class SmtpStep:
    kind: Literal["smtp"] = "smtp"
    server: str = opt(Str("smtp", _SERVER_HELP))  # key of Profile.servers
    security: Literal["plain", "starttls", "tls"] = opt(Choice(
        SECURITY, "starttls", "plain: no TLS (port 25, like the seed's 4.2); starttls: upgrade on the submission "
        "port (587); tls: TLS from the start (465)"))
    port: int | None = opt(Port(None, _PORT_HELP))  # overrides the profile's port for the security mode
    helo: str = opt(Str("lab-client", "the name given in EHLO"))
    auth: Literal["login", "plain", "none"] = opt(Choice(
        ("login", "plain", "none"), "login", "AUTH mechanism: login (two base64 lines, like the seed), plain (one "
        "line), none"))
    mail_from: str | None = opt(Str(None, "envelope sender (MAIL FROM); empty: the account address"))
    rcpt_to: tuple[str, ...] = opt(ListOf(Str(), (), "envelope recipients (RCPT TO); empty: the account address"))
    message: MessageSpec = sub("the mail to send", default_factory=MessageSpec)
    pipelining: bool = opt(Bool(False, "send MAIL, RCPT and DATA in one go when the server offers PIPELINING"))
    # NOOP / RSET etc. sent before QUIT
    extra: tuple[str, ...] = opt(ListOf(Str(), (), "commands sent before QUIT, each must get a 2xx reply: "
                                        + ", ".join(SMTP_EXTRA)))
    # e.g. {"rcpt": 550} to expect a refusal
    expect: dict[str, int] = opt(MapOf(ReplyCode(help="an SMTP reply code"), {}, "the reply code each stage must "
                                       f"end with ({', '.join(SMTP_EXPECT_KEYS)}), e.g. {{rcpt: 550}} or {{rcpt: 5}} "
                                       "for any 5xx; a stage not named must succeed", nonempty=False))
    id: str | None = opt(Str(None, _ID_HELP))  # name a later step can refer to (find: <id>)


@dataclass(frozen=True)
class Pop3Step:
    kind: Literal["pop3"] = "pop3"
    server: str = opt(Str("pop3", _SERVER_HELP))
    security: Literal["plain", "starttls", "tls"] = opt(Choice(
        SECURITY, "plain", "plain: no TLS (110); starttls: STLS on 110; tls: 995"))
    port: int | None = opt(Port(None, _PORT_HELP))
    auth: Literal["user", "apop"] = opt(Choice(("user", "apop"), "user", "USER/PASS, or APOP"))
    commands: tuple[str, ...] = opt(ListOf(Str(), ("STAT", "LIST", "UIDL"), "commands sent after login, before "
                                           "retrieving: " + ", ".join(POP3_COMMANDS)))
    retrieve: Literal["none", "last", "all", "found"] = opt(Choice(
        ("none", "last", "all", "found"), "found", "which messages to RETR: the one sent by the `find` step (found; "
        "without find: last), the newest (last), all, none"))
    # TOP n <lines> instead of RETR
    top_lines: int | None = opt(Int(None, "use TOP n LINES instead of RETR (headers and the first lines)", min=0))
    delete: bool = opt(Bool(False, "DELE the retrieved messages"))
    # id of an earlier smtp step whose message must be found
    find: str | None = opt(Str(None, "id of an earlier smtp (or lines) step whose message must be in the mailbox"))
    id: str | None = opt(Str(None, _ID_HELP))


@dataclass(frozen=True)
class ImapStep:
    kind: Literal["imap"] = "imap"
    server: str = opt(Str("imap", _SERVER_HELP))
    security: Literal["plain", "starttls", "tls"] = opt(Choice(
        SECURITY, "starttls", "plain: no TLS (143); starttls: STARTTLS on 143; tls: 993"))
    port: int | None = opt(Port(None, _PORT_HELP))
    mailbox: str = opt(Str("INBOX", "the mailbox to SELECT"))
    search: str = opt(Str("ALL", "SEARCH criteria, e.g. ALL, UNSEEN, SUBJECT \"实验5\""))
    fetch: str = opt(Str("(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT MESSAGE-ID)])",
                         "FETCH items for the found messages"))
    find: str | None = opt(Str(None, "id of an earlier smtp (or lines) step whose message must be found"))
    id: str | None = opt(Str(None, _ID_HELP))


@dataclass(frozen=True)
class LineItem:
    """One line of the telnet exercise: what is typed and the reply code it must get."""

    # None: only read (the greeting); may hold {account.user|base64}
    send: str | None = opt(Str(None, "the line typed, without CRLF; may use {account.address}, {account.user}, "
                               "{account.user|base64}, {account.secret|base64}, {auth.plain}"))
    # DATA body, ended with CRLF.CRLF
    send_message: MessageSpec | None = sub("the mail sent after DATA, ended with a line \".\" (protocol smtp)",
                                           default=None)
    # a numeric code (SMTP) or "+OK"/"-ERR" (POP3) / tag word
    expect: int | str | None = opt(ExpectOpt(None, "the reply it must get: an SMTP code (250) or +OK/-ERR (POP3), "
                                             "OK/NO/BAD (IMAP)"))
    # "scenarios/telnet-smtp.yaml:37:11": where the line is written, so a failure can point there
    where: str = ""


@dataclass(frozen=True, kw_only=True)
class LinesStep:
    kind: Literal["lines"] = "lines"
    server: str = opt(Str("smtp", _SERVER_HELP))
    security: Literal["plain", "tls"] = opt(Choice(("plain", "tls"), "plain", "plain: as telnet does; tls: as "
                                                   "openssl s_client does"))
    # a number or a mode name ("plain", "tls")
    port: int | str | None = opt(LinePort(None, "a port number, or plain / tls for the profile's port of that mode"))
    protocol: Literal["smtp", "pop3", "imap"] = opt(Choice(("smtp", "pop3", "imap"), "smtp", "how replies are read "
                                                           "(multi-line replies)"))
    script: tuple[LineItem, ...] = sub("the lines, in order; the first item usually only expects the greeting")
    id: str | None = opt(Str(None, _ID_HELP))


@dataclass(frozen=True)
class HttpsStep:
    kind: Literal["https"] = "https"
    server: str = opt(Str("web", _SERVER_HELP))
    port: int | None = opt(Port(None, _TLS_PORT_HELP))
    tls_version: Literal["1.2", "1.3"] = opt(Choice(("1.2", "1.3"), "1.3", _TLS_VERSION_HELP))
    # OpenSSL cipher string for TLS 1.2, e.g. ECDHE-RSA-AES128-GCM-SHA256
    ciphers: str | None = opt(Str(None, "TLS 1.2 only: offer only these suites (OpenSSL names, e.g. "
                                  "ECDHE-RSA-AES256-GCM-SHA384) to force one; default: a browser's 12 suites, the "
                                  "server chooses"))
    method: str = opt(Choice(("GET", "HEAD", "POST"), "GET", "the HTTP method"))
    path: str = opt(Str("/", "the path requested"))
    # of the last response, after the redirects followed
    expect_status: int = opt(Int(200, "the HTTP status the last response must have (after the redirects "
                                 "followed)", min=100, max=599))
    # same-host redirects followed, each on its own connection
    follow_redirects: int = opt(Int(5, "how many redirects (301 302 303 307 308) to the same host and port to "
                                    "follow, each a new connection; 0: none. A redirect elsewhere is recorded, "
                                    "not followed", min=0, max=20))
    id: str | None = opt(Str(None, _ID_HELP))


@dataclass(frozen=True)
class WebmailStep:
    """Log in to a Roundcube web mail over HTTPS, compose and send a mail, log out."""

    kind: Literal["webmail"] = "webmail"
    server: str = opt(Str("web", _SERVER_HELP))
    port: int | None = opt(Port(None, _TLS_PORT_HELP))
    tls_version: Literal["1.2", "1.3"] = opt(Choice(("1.2", "1.3"), "1.3", _TLS_VERSION_HELP))
    # as HttpsStep: forces TLS 1.2 suites
    ciphers: str | None = opt(Str(None, "TLS 1.2 only: offer only these suites (OpenSSL names) to force one"))
    path: str = opt(Str("/", "where the web mail's login page is"))
    to: tuple[str, ...] = opt(ListOf(Str(), (), "recipients typed into the compose form; empty: the account "
                                     "address"))
    subject: str = opt(Str("Hello from web mail", "the subject typed into the compose form"))
    text: str = opt(Str("Sent with the web mail's compose form.", "the text typed into the compose form"))
    id: str | None = opt(Str(None, _ID_HELP))  # a later pop3/imap step can find the mail (find: <id>)


@dataclass(frozen=True, kw_only=True)
class ImportStep:
    """The student's own capture (and browser key log) instead of captured sessions."""

    kind: Literal["import"] = "import"
    # absolute path, inside the project folder
    capture: str = opt(PathStr(REQUIRED, "the student's own capture (pcap or pcapng, e.g. saved by Wireshark), "
                               "relative to the scenario file, inside the project folder"))
    keylog: str | None = opt(PathStr(None, "the browser's TLS key log (SSLKEYLOGFILE), to decrypt HTTPS"))
    project: str = ""  # the project folder the files must lie in (lab.yaml's)
    server: str = ""  # no server: nothing is connected to
    id: str | None = opt(Str(None, _ID_HELP))


Step = SmtpStep | Pop3Step | ImapStep | LinesStep | HttpsStep | WebmailStep | ImportStep


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str  # the file stem; the run folder is output/<run-id>/<name>/
    path: Path
    title: Text = opt(TextOpt(REQUIRED, help="the title, {zh: ..., en: ...} or one string", nonempty=True))
    section: str = opt(Str("", 'the seed lab\'s section it reproduces, e.g. "4.2"', numbers=True))
    # position in a run; None: after the ordered ones, by name
    order: int | None = opt(Int(None, "position in a run (smaller first); empty: after the ordered ones, by name"))
    objective: Text = opt(TextOpt(None, "what the student learns, {zh, en} or one string"))
    steps: tuple[Step, ...] = sub("what is done, in order")
    capture: CaptureSpec = sub("how the traffic is captured", default_factory=CaptureSpec)
    # wall-clock limit for the whole scenario
    timeout: float = opt(Float(120.0, "seconds the whole scenario may take"))
    # the student's own Markdown
    notes: Text = opt(TextOpt(None, "the student's own analysis and reflections, in Markdown ({zh, en} or one "
                              "string)"))
