"""The checking Sections of lab.yaml and of a scenario file, derived from config/model.py.

Each key's default, type and help are declared once, in its model dataclass field
(``opt(...)``, ``sub(...)``); ``Section.from_dataclass`` makes the Sections here from them. This
module keeps only what is its own: the cross-key checks (the ``post`` functions), the string
checks given to keys (``checks=``: a fingerprint, an address, a command of the allowed ones ...),
the few sections whose keys are not fields of one model (SERVER, LAB, REPORT_OVERRIDE), and the
tables of ``docs/configuration.md`` (regenerate them with
``python -c "from labrunner.config.schema import docs_tables; print(docs_tables())"``).
``load.py`` applies the Sections to files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from labrunner.config import template
from labrunner.config.model import (
    SANDBOX_SERVERS,
    SECURITY,
    AccountSpec,
    Attachment,
    CaptureSpec,
    HttpsStep,
    ImapStep,
    ImportStep,
    InventoryEntry,
    LineItem,
    LinesStep,
    MessageSpec,
    Pop3Step,
    Profile,
    ReportMeta,
    Scenario,
    ServerSpec,
    SmtpStep,
    Student,
    TargetSpec,
    WebmailStep,
)
from labrunner.config.options import (
    INVALID,
    MAX_SANDBOX_TARGETS,
    Ctx,
    KeyPath,
    ListOf,
    MapOf,
    OneOf,
    PathStr,
    Port,
    SecretOpt,
    Section,
    Str,
    describe,
    did_you_mean,
    display_path,
)
from labrunner.config.rules import file_problem, filter_problem, host_problem, interface_problem
from labrunner.config.yaml import Mark, MarkedList, MarkedMap

# The protocols' words a step may name are the protocols' own (re-exported: schema.SMTP_EXTRA ...)
from labrunner.protocols.imap import REPLY_WORDS as IMAP_REPLIES
from labrunner.protocols.pop3 import OWN as POP3_OWN
from labrunner.protocols.pop3 import REPLY_WORDS as POP3_REPLIES
from labrunner.protocols.pop3 import STEP_COMMANDS as POP3_COMMANDS
from labrunner.protocols.smtp import EXTRA as SMTP_EXTRA
from labrunner.protocols.smtp import OWN as SMTP_OWN
from labrunner.protocols.smtp import PHASES as SMTP_EXPECT_KEYS

__all__ = ["IMAP_REPLIES", "MAX_SANDBOX_TARGETS", "POP3_COMMANDS", "POP3_OWN", "POP3_REPLIES", "SANDBOX_SERVERS",
           "SECURITY", "SMTP_EXPECT_KEYS", "SMTP_EXTRA", "SMTP_OWN", "CaptureSpec", "ReportMeta", "docs_tables",
           "replace_report"]

# --- shared pieces --------------------------------------------------------------------------


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
    # an IP literal may go there (config/rules.py: the executor applies the same rule).
    return host_problem(value) if value.strip() else None  # empty: `nonempty` says so


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

STUDENT = Section.from_dataclass(Student, "report.student")

REPORT = Section.from_dataclass(ReportMeta, "report", sections={"student": STUDENT})

# In the inventory each student's `report:` only says what differs from the lab's own, so the
# same keys are checked but only the given ones are kept and laid over the lab's report later.
REPORT_OVERRIDE = Section("inventory[].report", {
    **REPORT.fields,
    "student": Section("inventory[].report.student", STUDENT.fields, dict, default=None, partial=True),
}, dict, default=None, partial=True)

TARGET = Section.from_dataclass(TargetSpec, "target", checks={"host_key": _fingerprint})


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

ACCOUNT = Section.from_dataclass(AccountSpec, "account", checks={"address": _address})

# An inventory entry's account may take its password from the sandbox (a class run).
INVENTORY_ACCOUNT = ACCOUNT.but(name="inventory[].account", fields={
    **ACCOUNT.fields,
    "secret": SecretOpt(ACCOUNT.fields["secret"].default, "where the password comes from; {sandbox: N}: the "
                        "password of the sandbox's account N (the entry's profile must be from_sandbox)", sandbox=True),
})


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


PROFILE = Section.from_dataclass(Profile, "profile", sections={
    "target": TARGET, "servers": MapOf(SERVER, nonempty=True), "account": ACCOUNT,
}, checks={"instance": _instance_name}, post=_profile_post,
    build=lambda v: Profile(**{**v, "servers": v["servers"] or {}}))  # none written: a from_sandbox profile


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


INVENTORY_ENTRY = Section.from_dataclass(InventoryEntry, "inventory[]", build=dict, sections={
    "target": TARGET, "account": INVENTORY_ACCOUNT, "report": REPORT_OVERRIDE,
}, checks={"name": _folder_name}, post=_inventory_post)


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
    # Two entries on one host (or one account) are allowed: a class run takes them one after
    # the other there, never at once (run/turns.py), as a TA with fewer hosts than students does.


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
    "report": REPORT.but(default=ReportMeta(),
                         help="report metadata: school, course, lab title, student, date, language"),
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


ATTACHMENT = Section.from_dataclass(Attachment, "attachment", checks={"name": _one_line, "content_type": _one_line},
                                    post=_attachment_post)

MESSAGE = Section.from_dataclass(MessageSpec, "message", sections={
    "attachments": ListOf(ATTACHMENT, single=False),
}, checks={"subject": _one_line, "from": _one_line, "to": _one_line})

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


SMTP_STEP = Section.from_dataclass(SmtpStep, "smtp step", sections={"message": MESSAGE}, checks={
    "helo": _no_space, "mail_from": _address, "rcpt_to": _address,
    "extra": _command(SMTP_EXTRA, SMTP_OWN, "smtp"), "id": _no_space,
}, post=_smtp_post, empty_ok=True)


def _pop3_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    _server_check(v, raw, path, ctx)
    if v["retrieve"] == "found" and v["find"] is None:
        if "retrieve" in raw:
            ctx.add(raw.value_mark("retrieve"), (*path, "retrieve"),
                    "retrieve: found needs find: <id of the step that sent it>; or use last / all / none")
        else:  # the default follows `find`: without it, fetch the newest message
            v["retrieve"] = "last"


POP3_STEP = Section.from_dataclass(Pop3Step, "pop3 step", checks={
    "commands": _command(POP3_COMMANDS, POP3_OWN, "pop3"), "id": _no_space,
}, post=_pop3_post, empty_ok=True)

IMAP_STEP = Section.from_dataclass(ImapStep, "imap step", checks={"id": _no_space}, post=_server_check, empty_ok=True)

LINE_ITEM = Section.from_dataclass(LineItem, "script line", sections={"send_message": MESSAGE})


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


LINES_STEP = Section.from_dataclass(LinesStep, "lines step", sections={
    "script": ListOf(LINE_ITEM, single=False, nonempty=True),
}, checks={"id": _no_space}, post=_lines_post)


def _https_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    _server_check(v, raw, path, ctx)
    if isinstance(v["ciphers"], str) and v["tls_version"] == "1.3":
        ctx.add(raw.key_mark("ciphers"), (*path, "ciphers"),
                "ciphers applies to TLS 1.2 only (TLS 1.3 suites are fixed); add tls_version: \"1.2\"")
    if isinstance(v["path"], str) and (not v["path"].startswith("/") or re.search(r"\s", v["path"])):
        ctx.add(raw.value_mark("path"), (*path, "path"), "must start with / and hold no spaces (write %20)")


HTTPS_STEP = Section.from_dataclass(HttpsStep, "https step", checks={"id": _no_space}, post=_https_post,
                                    empty_ok=True)

WEBMAIL_STEP = Section.from_dataclass(WebmailStep, "webmail step", checks={
    "to": _address, "subject": _one_line, "id": _no_space,
}, post=_https_post, empty_ok=True)


def _import_post(v: dict[str, Any], raw: MarkedMap, path: KeyPath, ctx: Ctx) -> None:
    project = Path(ctx.extra.get("project") or ctx.base_dir)
    v["project"] = str(project)
    for key in ("capture", "keylog"):
        if isinstance(v.get(key), str):
            problem = file_problem(Path(v[key]), project, key)
            if problem:
                ctx.add(raw.value_mark(key), (*path, key), problem)


IMPORT_STEP = Section.from_dataclass(ImportStep, "import step", checks={"id": _no_space}, post=_import_post)

STEP = OneOf({"smtp": SMTP_STEP, "pop3": POP3_STEP, "imap": IMAP_STEP, "lines": LINES_STEP,
              "https": HTTPS_STEP, "webmail": WEBMAIL_STEP, "import": IMPORT_STEP}, help="one step")

CAPTURE = Section.from_dataclass(CaptureSpec, "capture", checks={
    "interface": interface_problem, "filter": filter_problem,
})


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


SCENARIO = Section.from_dataclass(Scenario, "scenario", build=dict, sections={
    "steps": ListOf(STEP, single=False, nonempty=True), "capture": CAPTURE,
}, post=_scenario_post)


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
