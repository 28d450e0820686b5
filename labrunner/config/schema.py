"""The declaration of lab.yaml and of a scenario file: every key, its type, default and meaning.

This is the one place where the formats are defined; ``load.py`` applies them to files and
``docs/configuration.md`` shows the same tables (regenerate them with
``python -c "from labrunner.config.schema import docs_tables; print(docs_tables())"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from labrunner.config import template
from labrunner.config.model import (
    SEED_OBJECTIVES,
    AccountSpec,
    Attachment,
    CaptureSpec,
    HttpsStep,
    ImapStep,
    ImportStep,
    LineItem,
    LinesStep,
    MessageSpec,
    Pop3Step,
    Profile,
    ReportMeta,
    SecretRef,
    ServerSpec,
    SmtpStep,
    Student,
    TargetSpec,
    Text,
    WebmailStep,
)
from labrunner.config.options import (
    INVALID,
    REQUIRED,
    Bool,
    Choice,
    Ctx,
    Float,
    Int,
    KeyPath,
    ListOf,
    MapOf,
    OneOf,
    Option,
    PathStr,
    Port,
    Section,
    Str,
    describe,
    did_you_mean,
    display_path,
)
from labrunner.config.yaml import Mark, MarkedList, MarkedMap

SECURITY = ("plain", "starttls", "tls")
# The servers `labrunner sandbox up` provides; a sandbox profile's names are known before it runs.
SANDBOX_SERVERS = ("smtp", "pop3", "imap", "web")
# The stages of an smtp step (as labrunner/sessions/smtp.py names them); the first word of an
# `extra` command (noop, rset, vrfy ...) may be given an expected code as well.
SMTP_EXPECT_KEYS = ("greeting", "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "message", "quit")
POP3_REPLIES = ("+OK", "-ERR")
# Commands a step may add; login, STLS, RETR of the found mail and QUIT are the step's own.
POP3_COMMANDS = ("STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "NOOP", "RSET", "CAPA")
POP3_OWN = ("USER", "PASS", "APOP", "AUTH", "STLS", "QUIT")
SMTP_EXTRA = ("NOOP", "RSET", "VRFY", "EXPN", "HELP")
SMTP_OWN = ("HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "QUIT", "BDAT")
IMAP_REPLIES = ("OK", "NO", "BAD", "PREAUTH", "BYE", "+")

# --- shared pieces --------------------------------------------------------------------------


class TextOpt(Option):
    """A text in both languages: a plain string (the same for both) or ``{zh: ..., en: ...}``."""

    type_name = "a string or {zh, en}"

    def __init__(self, default: Any = None, help: str = "", *, attr: str | None = None,
                 nonempty: bool = False) -> None:
        super().__init__(Text() if default is None else default, help, attr=attr)
        self.nonempty = nonempty
        self.section = Section("text", {
            "zh": Str("", "Chinese text (中文)"),
            "en": Str("", "English text"),
        }, lambda v: Text(**v))

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, str):
            text = Text(zh=value, en=value)
        elif isinstance(value, MarkedMap):
            text = self.section.validate(value, mark, path, ctx)
        else:
            return self.wrong_type(value, mark, path, ctx)
        if self.nonempty and text is not INVALID and not (text.zh.strip() or text.en.strip()):
            return ctx.add(mark, path, "must not be empty: give zh, en or both")
        return text

    def default_text(self) -> str:
        return '`""`' if not self.required else "required"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_SANDBOX_TARGETS = 40  # labrunner.sandbox.layout.MAX_TARGETS (not imported: config stays light)


class SecretOpt(Option):
    """Where a secret comes from: ``{env: NAME}``; never the secret itself.

    Messages never repeat what was written here: it may be the secret. ``sandbox``: also
    ``{sandbox: N}``, the password of the sandbox's account N (an inventory entry's account).
    """

    type_name = "{env: VARIABLE, prompt: true/false}"

    def __init__(self, default: Any = None, help: str = "", *, sandbox: bool = False) -> None:
        super().__init__(default, help)
        self.sandbox = sandbox
        if sandbox:
            self.type_name = "{env: VARIABLE, prompt: true/false} or {sandbox: N}"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        allowed = ("env", "prompt", "sandbox") if self.sandbox else ("env", "prompt")
        if not isinstance(value, MarkedMap):
            return ctx.add(mark, path, "write where the secret comes from, not the secret: "
                           "{env: QQ_AUTH_CODE} (then `export QQ_AUTH_CODE=...`), or {prompt: true}"
                           + (", or {sandbox: N} for the sandbox's account N" if self.sandbox else ""))
        bad = False
        for key in value:
            if key not in allowed:
                # `secret: {the-code}` makes the code a key: show where, never what
                ctx.add(value.key_mark(key), path, "unknown key (not shown: it may be the secret); "
                        f"allowed: {', '.join(allowed)}")
                bad = True
        if "sandbox" in value and self.sandbox:
            number = value.get("sandbox")
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_SANDBOX_TARGETS:
                ctx.add(value.value_mark("sandbox"), (*path, "sandbox"),
                        f"expected the number of a sandbox account, 1 to {MAX_SANDBOX_TARGETS} "
                        "(1 = student@lab.test, 2 = student2@lab.test ...)")
                bad = True
            for key in ("env", "prompt"):
                if key in value:
                    ctx.add(value.key_mark(key), (*path, key), "give sandbox or env/prompt, not both")
                    bad = True
            return INVALID if bad else SecretRef(prompt=False, state="password", sandbox=number)
        env = value.get("env")
        if "env" in value and not (isinstance(env, str) and _ENV_NAME.match(env)):
            ctx.add(value.value_mark("env"), (*path, "env"),
                    "must be the name of an environment variable (letters, digits, _), e.g. QQ_AUTH_CODE")
            bad = True
        prompt = value.get("prompt", True)
        if not isinstance(prompt, bool):
            ctx.add(value.value_mark("prompt"), (*path, "prompt"), "expected true or false")
            bad = True
        return INVALID if bad else SecretRef(env=env, prompt=prompt)

    def default_text(self) -> str:
        return "`{prompt: true}`" if self.default is not None else "—"


def _fingerprint(value: str) -> str | None:
    if re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", value):
        return None
    return ('expected a fingerprint as `ssh-keygen -lf` prints it, "SHA256:" and 43 base64 characters '
            "(get it with: ssh-keyscan HOST | ssh-keygen -lf -)")


def _address(value: str) -> str | None:
    if re.fullmatch(r"[^@\s<>]+@[^@\s<>]+", value):
        return None
    if "<" in value or ">" in value:
        return f"{value!r}: write the bare address, name@domain; the <> are added where SMTP needs them"
    return f"{value!r} is not a mail address (name@domain)"


def _command(allowed: tuple[str, ...], own: tuple[str, ...], protocol: str) -> Callable[[str], str | None]:
    """A check that a command line starts with one of ``allowed`` (the step sends ``own`` itself)."""
    def check(value: str) -> str | None:
        verb = value.split()[0].upper() if value.split() else ""
        if verb in allowed:
            return None
        if verb in own:
            return f"{verb} is sent by the {protocol} step itself; list only: {', '.join(allowed)}"
        return (f"{value!r} is not one of the commands: {', '.join(allowed)}"
                + did_you_mean(verb, allowed))
    return check


def _host(value: str) -> str | None:
    # The name is asked about on the target (getent, the capture filter): only a host name or
    # an IP literal may go there. capture/filters.py holds the rule (imported here: it loads no more).
    from labrunner.capture import host_problem

    return host_problem(value) if value.strip() else None  # empty: `nonempty` says so


def _interface(value: str) -> str | None:
    from labrunner.capture import interface_problem

    return interface_problem(value)


def _capture_filter(value: str) -> str | None:
    from labrunner.capture import filter_problem

    return filter_problem(value)


def _no_space(value: str) -> str | None:
    return "must be one word (letters, digits, - _ .), no spaces" if not re.fullmatch(r"[\w.-]+", value) else None


def _folder_name(value: str) -> str | None:
    # The name becomes output/students/<name>/: refuse here what the run would refuse later.
    from labrunner.runfolder import SAFE_NAME_RE

    if SAFE_NAME_RE.match(value) and ".." not in value:
        return None
    return "must be a folder name: letters, digits and - _ . (starting with a letter or digit, no ..)"


def _one_line(value: str) -> str | None:
    # A header value with a line break would start a header of its own (header injection);
    # the email package refuses it only when the mail is built, in the middle of a run.
    return "must be one line (no line break): it becomes a mail header" if re.search(r"[\r\n]", value) else None


def _instance_name(value: str) -> str | None:
    from labrunner.sandbox.layout import InstanceNameError, validate_name  # the sandbox owns the rule

    try:
        validate_name(value)
    except InstanceNameError as err:
        return str(err)
    return None


# --- lab.yaml -------------------------------------------------------------------------------

STUDENT = Section("report.student", {
    "name": TextOpt(None, "the student's name (姓名); {zh, en} for a name written differently in each language"),
    "id": Str("", "student ID (学号); numbers are fine", numbers=True),
    "class": Str("", "class (班级)", attr="klass", numbers=True),
}, lambda v: Student(**v), default=None, help="who wrote the report")

_REPORT_FIELDS: dict[str, Option] = {
    "school": TextOpt(None, "school or university (学校); {zh, en} for each language's cover"),
    "course": TextOpt(None, "course name (课程), e.g. 计算机网络 or {zh: 计算机网络, en: Computer Networks}"),
    "lab": TextOpt(None, "lab title (实验名称), e.g. 实验5 电子邮件 or {zh: 实验5 电子邮件, en: Lab 5 E-mail}"),
    "student": STUDENT,
    "date": Str("", "date on the cover, e.g. 2026-11-26; empty: the day of the run", numbers=True),
    "lang": Choice(("zh", "en"), "zh", "language of the report: zh (中文) or en (English)"),
    "templates": PathStr(None, "a folder of templates that override the built-in ones (same file names)"),
    "show_credentials": Bool(False, "show the account's user name in the report (the secret never is)"),
    "objectives": TextOpt(SEED_OBJECTIVES, "the lab's objectives (实验目的), one per line; default: the seed lab's"),
    "reflections": TextOpt(None, "your reflections (心得体会) for section 5.2, in Markdown"),
    "problems": TextOpt(None, "the problems you met and how you solved them (遇到的问题与解决方法), section "
                              "5.1, in Markdown; the report adds the failures and retries it recorded"),
}


def _build_report(v: dict[str, Any]) -> ReportMeta:
    v = dict(v)
    v["student"] = v["student"] or Student()
    return ReportMeta(**v)


REPORT = Section("report", _REPORT_FIELDS, _build_report, default=None,
                 help="report metadata: school, course, lab title, student, date, language")

# In the inventory each student's `report:` only says what differs from the lab's own, so the
# same keys are checked but only the given ones are kept and laid over the lab's report later.
REPORT_OVERRIDE = Section("inventory[].report", {
    **_REPORT_FIELDS,
    "student": Section("inventory[].report.student", STUDENT.fields, dict, default=None, partial=True),
}, dict, default=None, partial=True, help="this student's report metadata (overrides the lab's)")

TARGET = Section("target", {
    "host": Str(help="address or name of the target host (the ECS instance's public IP)", nonempty=True),
    "user": Str(None, "SSH user; empty: from ~/.ssh/config, then your local user name"),
    "port": Port(None, "SSH port; empty: from ~/.ssh/config, then 22"),
    "key": PathStr(None, "private key file; empty: the SSH agent, ~/.ssh/config, default keys"),
    "host_key": Str(None, 'the host key fingerprint "SHA256:..." (ssh-keyscan HOST | ssh-keygen -lf -)',
                    check=_fingerprint),
    "known_hosts": PathStr(None, "an extra known_hosts file, besides ~/.ssh/known_hosts"),
    "trust_on_first_use": Bool(False, "record an unknown host key instead of refusing it (first connection)"),
    "password": SecretOpt(None, "where the SSH password or key passphrase comes from, if one is needed"),
    "proxy_jump": Str(None, "jump hosts, as in ssh -J: user@host:port, or a chain a,b (the target "
                      "is reached from the last)"),
    "local": Bool(False, "run on this machine (no SSH): the target is localhost"),
    "connect_timeout": Float(10.0, "seconds to wait for the SSH connection"),
    "command_timeout": Float(60.0, "seconds a command on the target may run by default"),
}, lambda v: TargetSpec(**v), help="the host the experiment runs on, reached over SSH")


def _server_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    if all(v[mode] is None for mode in SECURITY):
        ctx.add(raw.mark, path, "give at least one port: plain, starttls or tls")


SERVER = Section("server", {
    "host": Str(help="host name of the service, e.g. smtp.qq.com", nonempty=True, check=_host),
    "plain": Port(None, "port without TLS (SMTP 25, POP3 110, IMAP 143; web 80)"),
    "starttls": Port(None, "port where the client upgrades with STARTTLS/STLS (SMTP 587); "
                           "empty: the plain port"),
    "tls": Port(None, "port with TLS from the first byte (SMTP 465, POP3 995, IMAP 993, web 443)"),
}, lambda v: ServerSpec(v["host"], {m: v[m] for m in SECURITY if v[m] is not None}),
    post=_server_post, help="one service of the mail provider")

ACCOUNT = Section("account", {
    "address": Str(help="the mail address, e.g. 123456@qq.com", check=_address),
    "user": Str(None, "login name; empty: the address"),
    "secret": SecretOpt(SecretRef(), "where the password / QQ authorization code (授权码) comes from"),
}, lambda v: AccountSpec(**v), help="the mail account used by every scenario")

# An inventory entry's account may take its password from the sandbox (a class run).
INVENTORY_ACCOUNT = ACCOUNT.but(name="inventory[].account", default=None, fields={
    **ACCOUNT.fields,
    "secret": SecretOpt(SecretRef(), "where the password comes from; {sandbox: N}: the password of "
                        "the sandbox's account N (the entry's profile must be from_sandbox)", sandbox=True),
}, help="this student's mail account; empty with `sandbox: N`")


def _profile_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    if v["from_sandbox"] is INVALID:
        return
    if v["from_sandbox"]:
        for key in ("target", "servers", "account", "ca_file"):
            if key in raw:
                ctx.add(raw.key_mark(key), (*path, key),
                        "a from_sandbox profile takes this from `labrunner sandbox up`; remove it")
        return
    if "instance" in raw:
        ctx.add(raw.key_mark("instance"), (*path, "instance"), "only a from_sandbox profile has an instance")
    for key in ("target", "servers", "account"):
        if key not in raw:
            ctx.add(raw.mark, (*path, key), "missing required key (or set from_sandbox: true)")


def _build_profile(v: dict[str, Any]) -> Profile:
    # The name is the key in `profiles:`; load.py sets it once the mapping is built.
    return Profile(
        name="", target=v["target"] or TargetSpec(host=""), servers=v["servers"] or {},
        account=v["account"] or AccountSpec(address=""), ca_file=v["ca_file"],
        from_sandbox=v["from_sandbox"], sandbox_instance=v["instance"],
    )


PROFILE = Section("profile", {
    "from_sandbox": Bool(False, "fill target, servers, account and CA from `labrunner sandbox up`"),
    "instance": Str(None, "from_sandbox: the sandbox instance name; empty: $LABRUNNER_SANDBOX_INSTANCE, "
                    "then `lab`", check=_instance_name),
    "target": TARGET.but(default=None),
    "servers": MapOf(SERVER, None, "the services by name: smtp, pop3, imap, web (scenarios refer to them)"),
    "account": ACCOUNT.but(default=None),
    "ca_file": PathStr(None, "CA bundle to verify the servers' certificates; empty: the system's"),
}, _build_profile, post=_profile_post, help="where and as whom the experiment runs")

def _inventory_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    if "sandbox" in raw:
        for key in ("target", "account"):
            if key in raw:
                ctx.add(raw.key_mark(key), (*path, key),
                        "`sandbox: N` takes this from target N of `labrunner sandbox up --targets`; remove it")
        return
    for key in ("target", "account"):
        if key not in raw:
            ctx.add(raw.mark, (*path, key), "missing required key (or set sandbox: N for a sandbox target)")


INVENTORY_ENTRY = Section("inventory[]", {
    "name": Str(help="a short name for this student's run, e.g. the student ID", numbers=True,
                check=_folder_name),
    "profile": Str("", "the profile whose servers and CA are used; empty: default_profile"),
    "sandbox": Int(None, "this student is target N (ecs, ecs2 ...) and account N (student, student2 ...) "
                   "of the profile's sandbox; the profile must be from_sandbox", min=1, max=MAX_SANDBOX_TARGETS),
    "target": TARGET.but(default=None, help="this student's host, reached over SSH; empty with `sandbox: N`"),
    "account": INVENTORY_ACCOUNT,
    "report": REPORT_OVERRIDE,
}, lambda v: v, post=_inventory_post, help="one student's host in a class run")


def _unknown_profile(name: Any, profiles: list[str]) -> str | None:
    if not isinstance(name, str) or not name or name in profiles:
        return None
    return f"no profile named {name!r}; profiles: {', '.join(profiles)}" + did_you_mean(name, profiles)


def _lab_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    # The profile names are the keys written, even where a profile itself has a problem.
    raw_profiles = raw.get("profiles")
    if not isinstance(raw_profiles, MarkedMap):
        return
    profiles = [str(k) for k in raw_profiles]
    message = _unknown_profile(v["default_profile"], profiles)
    if message:
        ctx.add(raw.value_mark("default_profile") if "default_profile" in raw else raw.mark,
                ("default_profile",), message + ("; set default_profile" if "default_profile" not in raw else ""))
    entries = raw.get("inventory")
    if not isinstance(entries, MarkedList):
        return
    names: dict[str, Mark] = {}
    for i, item in enumerate(entries):
        if not isinstance(item, MarkedMap):
            continue
        name = item.get("name")
        if isinstance(name, (str, int)) and not isinstance(name, bool):
            if str(name) in names:
                ctx.add(item.value_mark("name"), ("inventory", i, "name"),
                        f"duplicate name {str(name)!r} (first at line {names[str(name)].line})")
            names.setdefault(str(name), item.value_mark("name"))
        message = _unknown_profile(item.get("profile"), profiles)
        if message:
            ctx.add(item.value_mark("profile"), ("inventory", i, "profile"), message)
            continue
        _check_inventory_sandbox(item, i, raw, raw_profiles, ctx)
    _check_shared_targets(entries, raw, ctx)


def _check_shared_targets(entries: MarkedList, raw: MarkedMap, ctx: Ctx) -> None:
    """Two students on one host would capture each other's sessions (and passwords): the
    capture filter is the servers' addresses and ports, which they share."""
    seen: dict[tuple[Any, ...], tuple[str, int]] = {}
    where: KeyPath
    for i, item in enumerate(entries):
        if not isinstance(item, MarkedMap):
            continue
        target = item.get("target")
        if "sandbox" in item:
            key: tuple[Any, ...] = ("sandbox", item.get("profile") or raw.get("default_profile"), item.get("sandbox"))
            mark, where = item.value_mark("sandbox"), ("inventory", i, "sandbox")
        elif isinstance(target, MarkedMap) and isinstance(target.get("host"), str):
            port = target.get("port") or 22
            key = ("host", target["host"].strip().lower().rstrip("."), port)
            mark, where = target.value_mark("host"), ("inventory", i, "target", "host")
        else:
            continue
        name = str(item.get("name", f"#{i + 1}"))
        if key in seen:
            first, line = seen[key]
            ctx.add(mark, where, f"the same host as {first!r} (line {line}): two students on one host would "
                    "capture each other's traffic and passwords; give each student a host of their own "
                    "(or run them one after the other, each with its own inventory)")
        else:
            seen[key] = (name, mark.line)


def _check_inventory_sandbox(item: MarkedMap, i: int, raw: MarkedMap, raw_profiles: MarkedMap, ctx: Ctx) -> None:
    """`sandbox: N` and `secret: {sandbox: N}` need the entry's profile to be a sandbox one."""
    account = item.get("account")
    secret = account.get("secret") if isinstance(account, MarkedMap) else None
    uses: list[tuple[Mark, tuple[str, ...]]] = []
    if "sandbox" in item:
        uses.append((item.value_mark("sandbox"), ("sandbox",)))
    if isinstance(secret, MarkedMap) and "sandbox" in secret:
        uses.append((secret.value_mark("sandbox"), ("account", "secret", "sandbox")))
    if not uses:
        return
    name = item.get("profile") or raw.get("default_profile", "sandbox")
    prof = raw_profiles.get(name) if isinstance(name, str) else None
    if isinstance(prof, MarkedMap) and prof.get("from_sandbox") is True:
        return
    for mark, where in uses:
        ctx.add(mark, ("inventory", i, *where),
                f"the profile {name!r} is not a sandbox profile (from_sandbox: true), so there is no "
                "sandbox target or account to use; set profile: to a from_sandbox one")


LAB = Section("lab.yaml", {
    "default_profile": Str("sandbox", "the profile `labrunner run` uses without --profile"),
    "scenarios_dir": PathStr("scenarios", "folder of the scenario files, relative to lab.yaml"),
    "output_dir": PathStr("output", "folder of the run folders, relative to lab.yaml"),
    "report": REPORT,
    "profiles": MapOf(PROFILE, help="the labs this file can run on, by name (sandbox, qq, ...)"),
    "inventory": ListOf(INVENTORY_ENTRY, (), "for a teaching assistant: one entry per student",
                        single=False),
}, lambda v: v, post=_lab_post, help="the lab file")

# --- scenario files -------------------------------------------------------------------------

def _attachment_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    if "content" in raw and "path" in raw:
        ctx.add(raw.key_mark("path"), (*path, "path"), "give content or path, not both")
    elif isinstance(v["path"], str) and isinstance(raw.get("path"), str):
        problem = _attachment_problem(raw["path"], Path(v["path"]), ctx)
        if problem:
            ctx.add(raw.value_mark("path"), (*path, "path"), problem)


def _attachment_problem(given: str, full: Path, ctx: Ctx) -> str | None:
    """Why an attachment's file may not be mailed out: it must be a file of the project.

    A scenario shared by someone else must not make the run read and send any file (the
    sandbox's state, an SSH key): no absolute path, no ``..``, and no symbolic link that leads
    out of the project folder (lab.yaml's) or the scenario's own folder. The link's target is
    not shown."""
    how = "give a path relative to the scenario file, to a file inside the project folder"
    if given.startswith("~") or Path(given).is_absolute():
        return f"an absolute path is not allowed here: {how}"
    if ".." in Path(given).parts:
        return f"'..' is not allowed here: {how} (copy the file into it)"
    if not full.is_file():
        return f"no such file: {display_path(full)}"
    real = full.resolve()
    roots = {ctx.base_dir.resolve()}
    if isinstance(ctx.extra.get("project"), Path):
        roots.add(ctx.extra["project"].resolve())
    if not any(root == real or root in real.parents for root in roots):
        return "a symbolic link to a file outside the project folder; copy the file into the project instead"
    return None


ATTACHMENT = Section("attachment", {
    "name": Str(help="file name shown in the mail, e.g. report.txt", nonempty=True, check=_one_line),
    "content": Str("", "inline text content"),
    "path": PathStr(None, "or a file to attach, relative to the scenario file and inside the project folder "
                          "(no absolute path, no .., no link out of it)"),
    "content_type": Str("application/octet-stream", "MIME type, e.g. text/plain", check=_one_line),
}, lambda v: Attachment(**v), post=_attachment_post)


MESSAGE = Section("message", {
    "subject": Str("", "Subject: line (Chinese is fine: it is encoded as RFC 2047 asks)", check=_one_line),
    "text": Str("", "plain-text body"),
    "html": Str(None, "an HTML body as well (the mail becomes multipart/alternative)"),
    "attachments": ListOf(ATTACHMENT, (), "files attached to the mail", single=False),
    "from": Str(None, "From: header; empty: the account address", attr="from_", check=_one_line),
    "to": ListOf(Str(check=_one_line), (), "To: header; empty: the envelope recipients"),
}, lambda v: MessageSpec(**v), default=None, help="the mail to send")

_STEP_COMMON_HELP = {
    "server": "which server of the profile (smtp, pop3, imap, web)",
    "port": "a port number instead of the profile's port for the security mode",
    "id": "a name later steps refer to (find: ID)",
}


def _server_check(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    known = ctx.extra.get("servers")
    if known is not None and isinstance(v["server"], str) and v["server"] not in known:
        ctx.add(raw.value_mark("server") if "server" in raw else raw.mark, (*path, "server"),
                f"unknown server {v['server']!r}; the profiles have: {', '.join(sorted(known))}"
                + did_you_mean(v["server"], known))


def _smtp_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    _server_check(v, raw, path, ctx)
    expect = raw.get("expect")
    if not isinstance(expect, MarkedMap):
        return
    extra = v["extra"] if isinstance(v["extra"], tuple) else ()
    stages = SMTP_EXPECT_KEYS + tuple(dict.fromkeys(w.split()[0].lower() for w in extra if w.split()))
    for key in expect:
        if key not in stages:
            ctx.add(expect.key_mark(key), (*path, "expect", str(key)),
                    f"unknown stage; allowed: {', '.join(stages)}" + did_you_mean(str(key), stages))
    if v["security"] in ("plain", "tls") and "starttls" in expect:
        ctx.add(expect.key_mark("starttls"), (*path, "expect", "starttls"),
                f"security is {v['security']}: there is no STARTTLS stage")
    if v["auth"] == "none" and "auth" in expect:
        ctx.add(expect.key_mark("auth"), (*path, "expect", "auth"), "auth is none: there is no AUTH stage")


class ReplyCode(Int):
    """An SMTP reply code (550), or one digit for its class (5: any 5xx), as the sessions compare."""

    type_name = "an SMTP reply code (200-599) or class (2-5)"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        code = super().validate(value, mark, path, ctx)
        if code is not INVALID and not (2 <= code <= 5 or 200 <= code <= 599):
            return ctx.add(mark, path, f"{code} is not a reply code: 200 to 599, or 2 to 5 for a class")
        return code


REPLY_CODE = ReplyCode(help="an SMTP reply code")

SMTP_STEP = Section("smtp step", {
    "server": Str("smtp", _STEP_COMMON_HELP["server"]),
    "security": Choice(SECURITY, "starttls", "plain: no TLS (port 25, like the seed's 4.2); starttls: "
                       "upgrade on the submission port (587); tls: TLS from the start (465)"),
    "port": Port(None, _STEP_COMMON_HELP["port"]),
    "helo": Str("lab-client", "the name given in EHLO", check=_no_space),
    "auth": Choice(("login", "plain", "none"), "login", "AUTH mechanism: login (two base64 lines, like the "
                   "seed), plain (one line), none"),
    "mail_from": Str(None, "envelope sender (MAIL FROM); empty: the account address", check=_address),
    "rcpt_to": ListOf(Str(check=_address), (), "envelope recipients (RCPT TO); empty: the account address"),
    "message": MESSAGE.but(default=MessageSpec()),
    "pipelining": Bool(False, "send MAIL, RCPT and DATA in one go when the server offers PIPELINING"),
    "extra": ListOf(Str(check=_command(SMTP_EXTRA, SMTP_OWN, "smtp")), (),
                    f"commands sent before QUIT, each must get a 2xx reply: {', '.join(SMTP_EXTRA)}"),
    "expect": MapOf(REPLY_CODE, {}, "the reply code each stage must end with "
                    f"({', '.join(SMTP_EXPECT_KEYS)}), e.g. {{rcpt: 550}} or {{rcpt: 5}} for any 5xx; "
                    "a stage not named must succeed", nonempty=False),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: SmtpStep(**v), post=_smtp_post, empty_ok=True, help="send one mail with an SMTP client")


def _pop3_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    _server_check(v, raw, path, ctx)
    if v["retrieve"] == "found" and v["find"] is None:
        if "retrieve" in raw:
            ctx.add(raw.value_mark("retrieve"), (*path, "retrieve"),
                    "retrieve: found needs find: <id of the step that sent it>; or use last / all / none")
        else:  # the default follows `find`: without it, fetch the newest message
            v["retrieve"] = "last"


POP3_STEP = Section("pop3 step", {
    "server": Str("pop3", _STEP_COMMON_HELP["server"]),
    "security": Choice(SECURITY, "plain", "plain: no TLS (110); starttls: STLS on 110; tls: 995"),
    "port": Port(None, _STEP_COMMON_HELP["port"]),
    "auth": Choice(("user", "apop"), "user", "USER/PASS, or APOP"),
    "commands": ListOf(Str(check=_command(POP3_COMMANDS, POP3_OWN, "pop3")), ("STAT", "LIST", "UIDL"),
                       f"commands sent after login, before retrieving: {', '.join(POP3_COMMANDS)}"),
    "retrieve": Choice(("none", "last", "all", "found"), "found",
                       "which messages to RETR: the one sent by the `find` step (found; without find: last), "
                       "the newest (last), all, none"),
    "top_lines": Int(None, "use TOP n LINES instead of RETR (headers and the first lines)", min=0),
    "delete": Bool(False, "DELE the retrieved messages"),
    "find": Str(None, "id of an earlier smtp (or lines) step whose message must be in the mailbox"),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: Pop3Step(**v), post=_pop3_post, empty_ok=True, help="read the mailbox with POP3")

IMAP_STEP = Section("imap step", {
    "server": Str("imap", _STEP_COMMON_HELP["server"]),
    "security": Choice(SECURITY, "starttls", "plain: no TLS (143); starttls: STARTTLS on 143; tls: 993"),
    "port": Port(None, _STEP_COMMON_HELP["port"]),
    "mailbox": Str("INBOX", "the mailbox to SELECT"),
    "search": Str("ALL", "SEARCH criteria, e.g. ALL, UNSEEN, SUBJECT \"实验5\""),
    "fetch": Str(ImapStep.fetch, "FETCH items for the found messages"),
    "find": Str(None, "id of an earlier smtp (or lines) step whose message must be found"),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: ImapStep(**v), post=_server_check, empty_ok=True, help="read the mailbox with IMAP")


class ExpectOpt(Option):
    """A reply a line must get: a number (SMTP) or a word (+OK, -ERR; OK, NO, BAD)."""

    type_name = "a reply code (220) or word (+OK, OK)"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return self.wrong_type(value, mark, path, ctx)
        return int(value) if isinstance(value, int) else value


LINE_ITEM = Section("script line", {
    "send": Str(None, "the line typed, without CRLF; may use {account.address}, {account.user}, "
                      "{account.user|base64}, {account.secret|base64}, {auth.plain}"),
    "send_message": MESSAGE.but(help="the mail sent after DATA, ended with a line \".\" (protocol smtp)"),
    "expect": ExpectOpt(None, "the reply it must get: an SMTP code (250) or +OK/-ERR (POP3), OK/NO/BAD (IMAP)"),
}, lambda v: LineItem(**v), help="one line typed, and the reply it must get")


def _check_expect(value: Any, protocol: str) -> str | None:
    if protocol == "smtp":
        # One digit is a class ("2": any 2xx), as labrunner/sessions/lines.py compares it.
        code = int(value) if isinstance(value, str) and value.strip().isdigit() else value
        if not isinstance(code, int) or not (200 <= code <= 599 or 2 <= code <= 5):
            return f"an SMTP reply is a code from 200 to 599 (or a class 2 to 5), got {value!r}"
        return None
    words = POP3_REPLIES if protocol == "pop3" else IMAP_REPLIES
    if str(value).strip().upper() not in words:
        return (f"a {protocol.upper()} reply is one of: {', '.join(words)}, got {value!r}"
                + did_you_mean(str(value), words))
    return None


def _lines_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    _server_check(v, raw, path, ctx)
    port = v["port"]
    if isinstance(port, str) and v["security"] is not INVALID and port != v["security"]:
        if "security" in raw:
            ctx.add(raw.value_mark("port"), (*path, "port"),
                    f"port {port} contradicts security: {v['security']}; give only one of them")
        else:  # `port: tls` alone says what security is meant
            v["security"] = port
    protocol = v["protocol"]
    script = raw.get("script")
    if not isinstance(script, MarkedList):
        return
    items = v["script"]
    if isinstance(items, tuple) and len(items) == len(script):
        # Named by the scenario folder and file, not the full path: the message reaches the
        # report a student hands in, and it must not depend on where labrunner was started.
        file = f"{ctx.file.parent.name}/{ctx.file.name}"
        v["script"] = tuple(
            replace(item, where=f"{file}:{script.item_mark(i).line}:{script.item_mark(i).column}")
            if isinstance(item, LineItem) else item for i, item in enumerate(items))
    # Checked on the raw items, so a line with a wrong key still gets its other checks.
    for i, item in enumerate(script):
        if not isinstance(item, MarkedMap):
            continue
        where = (*path, "script", i)
        send, expect = item.get("send"), item.get("expect")
        if "send" in item and "send_message" in item:
            ctx.add(item.key_mark("send_message"), (*where, "send_message"),
                    "a line sends either send or send_message, not both")
        if not any(k in item for k in ("send", "send_message", "expect")):
            ctx.add(item.mark, where, "an empty line item: give send, send_message or expect")
        if isinstance(send, str):
            if "\n" in send or "\r" in send:
                ctx.add(item.value_mark("send"), (*where, "send"), "one line only: CRLF is added when it is sent")
            message = template.check_line(send, protocol if isinstance(protocol, str) else "smtp")
            if message:
                ctx.add(item.value_mark("send"), (*where, "send"), message)
        if protocol is INVALID:
            continue
        if "send_message" in item and protocol != "smtp":
            ctx.add(item.key_mark("send_message"), (*where, "send_message"),
                    "send_message is the body after SMTP DATA; it needs protocol: smtp")
        if isinstance(expect, (int, str)) and not isinstance(expect, bool):
            message = _check_expect(expect, protocol)
            if message:
                ctx.add(item.value_mark("expect"), (*where, "expect"), message)


class LinePort(Option):
    """A port number, or the profile's port for a mode: plain or tls."""

    type_name = "a port number or plain/tls"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, str):
            return Choice(("plain", "tls")).validate(value, mark, path, ctx)
        return Port().validate(value, mark, path, ctx)


LINES_STEP = Section("lines step", {
    "server": Str("smtp", _STEP_COMMON_HELP["server"]),
    "security": Choice(("plain", "tls"), "plain", "plain: as telnet does; tls: as openssl s_client does"),
    "port": LinePort(None, "a port number, or plain / tls for the profile's port of that mode"),
    "protocol": Choice(("smtp", "pop3", "imap"), "smtp", "how replies are read (multi-line replies)"),
    "script": ListOf(LINE_ITEM, REQUIRED, help="the lines, in order; the first item usually only expects the "
                     "greeting", single=False, nonempty=True),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: LinesStep(**v), post=_lines_post, help="type lines by hand, as in telnet")


def _https_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    _server_check(v, raw, path, ctx)
    if isinstance(v["ciphers"], str) and v["tls_version"] == "1.3":
        ctx.add(raw.key_mark("ciphers"), (*path, "ciphers"),
                "ciphers applies to TLS 1.2 only (TLS 1.3 suites are fixed); add tls_version: \"1.2\"")
    if isinstance(v["path"], str) and (not v["path"].startswith("/") or re.search(r"\s", v["path"])):
        ctx.add(raw.value_mark("path"), (*path, "path"), "must start with / and hold no spaces (write %20)")


HTTPS_STEP = Section("https step", {
    "server": Str("web", _STEP_COMMON_HELP["server"]),
    "port": Port(None, "a port number instead of the profile's tls port"),
    "tls_version": Choice(("1.2", "1.3"), "1.3", "the TLS version offered (only this one)"),
    "ciphers": Str(None, "TLS 1.2 only: offer only these suites (OpenSSL names, e.g. "
                   "ECDHE-RSA-AES256-GCM-SHA384) to force one; default: a browser's 12 suites, the "
                   "server chooses"),
    "method": Choice(("GET", "HEAD", "POST"), "GET", "the HTTP method"),
    "path": Str("/", "the path requested"),
    "expect_status": Int(200, "the HTTP status the last response must have (after the redirects "
                         "followed)", min=100, max=599),
    "follow_redirects": Int(5, "how many redirects (301 302 303 307 308) to the same host and port to "
                            "follow, each a new connection; 0: none. A redirect elsewhere is recorded, "
                            "not followed", min=0, max=20),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: HttpsStep(**v), post=_https_post, empty_ok=True,
    help="fetch a page over HTTPS, as a browser opening web mail does")

WEBMAIL_STEP = Section("webmail step", {
    "server": Str("web", _STEP_COMMON_HELP["server"]),
    "port": Port(None, "a port number instead of the profile's tls port"),
    "tls_version": Choice(("1.2", "1.3"), "1.3", "the TLS version offered (only this one)"),
    "ciphers": Str(None, "TLS 1.2 only: offer only these suites (OpenSSL names) to force one"),
    "path": Str("/", "where the web mail's login page is"),
    "to": ListOf(Str(check=_address), (), "recipients typed into the compose form; empty: the account address"),
    "subject": Str("Hello from web mail", "the subject typed into the compose form", check=_one_line),
    "text": Str("Sent with the web mail's compose form.", "the text typed into the compose form"),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: WebmailStep(**v), post=_https_post, empty_ok=True,
    help="log in to a Roundcube web mail (the sandbox's) over HTTPS, compose and send a mail, as a "
         "browser does; not QQ Mail, whose login needs a browser")

def _import_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    from labrunner.importer import file_problem

    project = Path(ctx.extra.get("project") or ctx.base_dir)
    v["project"] = str(project)
    for key in ("capture", "keylog"):
        if isinstance(v.get(key), str):
            problem = file_problem(Path(v[key]), project, key)
            if problem:
                ctx.add(raw.value_mark(key), (*path, key), problem)


IMPORT_STEP = Section("import step", {
    "capture": PathStr(REQUIRED, "the student's own capture (pcap or pcapng, e.g. saved by Wireshark), "
                       "relative to the scenario file, inside the project folder"),
    "keylog": PathStr(None, "the browser's TLS key log (SSLKEYLOGFILE), to decrypt HTTPS"),
    "id": Str(None, _STEP_COMMON_HELP["id"], check=_no_space),
}, lambda v: ImportStep(**v), post=_import_post,
    help="put a capture made elsewhere (Wireshark on the student's PC) into the report, marked as imported")

STEP = OneOf({"smtp": SMTP_STEP, "pop3": POP3_STEP, "imap": IMAP_STEP, "lines": LINES_STEP,
              "https": HTTPS_STEP, "webmail": WEBMAIL_STEP, "import": IMPORT_STEP}, help="one step")

CAPTURE = Section("capture", {
    "enabled": Bool(True, "capture the traffic with tcpdump on the target"),
    "interface": Str(None, "interface to capture on; empty: the one routing to the first server",
                     check=_interface),
    "filter": Str(None, "a tcpdump (BPF) filter, never tcpdump options; empty: the scenario's servers and ports",
                  check=_capture_filter),
    "snaplen": Int(0, "bytes kept of each packet; 0: whole packets", min=0),
}, lambda v: CaptureSpec(**v), default=None, help="how the traffic is captured")


def _sends_a_message(kind: str, body: MarkedMap) -> bool:
    """Whether a step sends a mail a later `find:` can look for: smtp, or lines with send_message."""
    if kind in ("smtp", "webmail"):
        return True
    script = body.get("script")
    return kind == "lines" and isinstance(script, MarkedList) and any(
        isinstance(item, MarkedMap) and "send_message" in item for item in script)


def _scenario_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    """Step ids are unique, and `find:` names an earlier step that sent a mail: checked on the raw steps."""
    steps = raw.get("steps")
    if not isinstance(steps, MarkedList):
        return
    ids: dict[str, bool] = {}  # id -> whether that step sends a mail
    kinds = [next(iter(step)) for step in steps if isinstance(step, MarkedMap) and len(step) == 1]
    if "import" in kinds:
        # the student's capture is the whole scenario: nothing is captured or connected to here
        if len(steps) > 1:
            ctx.add(steps.mark, (*path, "steps"), "an import step stands alone: the scenario is the "
                    "imported capture; put other steps in another scenario")
        v["capture"] = CaptureSpec(enabled=False)
    for i, step in enumerate(steps):
        if not isinstance(step, MarkedMap) or len(step) != 1:
            continue
        ((kind, body),) = step.items()
        if not isinstance(body, MarkedMap):
            continue
        where = (*path, "steps", i, str(kind))
        find = body.get("find")
        if isinstance(find, str) and not ids.get(find):
            senders = [k for k, sends in ids.items() if sends]
            ctx.add(body.value_mark("find"), (*where, "find"),
                    f"no earlier step that sends a mail has id {find!r}"
                    + (f"; earlier ones: {', '.join(senders)}" if senders
                       else "; give the smtp (or lines) step that sends it an id")
                    + did_you_mean(find, senders))
        step_id = body.get("id")
        if isinstance(step_id, str):
            if step_id in ids:
                ctx.add(body.value_mark("id"), (*where, "id"), f"id {step_id!r} is used by an earlier step")
            ids.setdefault(step_id, _sends_a_message(str(kind), body))


SCENARIO = Section("scenario", {
    "title": TextOpt(REQUIRED, help="the title, {zh: ..., en: ...} or one string", nonempty=True),
    "section": Str("", 'the seed lab\'s section it reproduces, e.g. "4.2"', numbers=True),
    "order": Int(None, "position in a run (smaller first); empty: after the ordered ones, by name"),
    "objective": TextOpt(None, "what the student learns, {zh, en} or one string"),
    "steps": ListOf(STEP, REQUIRED, "what is done, in order", single=False, nonempty=True),
    "capture": CAPTURE,
    "timeout": Float(120.0, "seconds the whole scenario may take"),
    "notes": TextOpt(None, "the student's own analysis and reflections, in Markdown ({zh, en} or one string)"),
}, lambda v: v, post=_scenario_post, help="one experiment")


def docs_tables() -> str:
    """The option tables of docs/configuration.md, generated from the declarations above."""
    sections = [LAB, REPORT, STUDENT, PROFILE, TARGET, SERVER, ACCOUNT, INVENTORY_ENTRY, INVENTORY_ACCOUNT,
                SCENARIO, CAPTURE, SMTP_STEP, POP3_STEP, IMAP_STEP, LINES_STEP, LINE_ITEM, HTTPS_STEP, WEBMAIL_STEP,
                IMPORT_STEP,
                MESSAGE, ATTACHMENT]
    return "\n".join(describe(s) for s in sections)


def replace_report(base: ReportMeta, given: dict[str, Any]) -> ReportMeta:
    """The lab's report metadata with one inventory entry's own keys laid over it."""
    given = dict(given)
    student = given.pop("student", None)
    out = replace(base, **given)
    if student:
        out = replace(out, student=replace(base.student, **student))
    return out
