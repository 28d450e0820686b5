"""Loading lab.yaml and the scenario files into the typed model, with every problem at once.

Each file is read safely (``config/yaml.py``), checked against its declaration
(``config/schema.py``) and built into the dataclasses of ``config/model.py``. Problems from all
files are collected and raised together as one :class:`~labrunner.errors.ConfigError`, each as
``file:line:col: key.path: message``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labrunner.config import schema
from labrunner.config.model import (
    InventoryEntry,
    Lab,
    Profile,
    Scenario,
    SecretRef,
    ServerSpec,
    TargetSpec,
)
from labrunner.config.options import INVALID, Ctx, Problem, describe_value, did_you_mean, display_path
from labrunner.config.yaml import Mark, MarkedMap, YamlProblem, read
from labrunner.errors import ConfigError, SandboxError, UsageError

if TYPE_CHECKING:
    from labrunner.sandbox.state import MailAccount, SshHost, State

SCENARIO_SUFFIXES = (".yaml", ".yml")
_NAME = re.compile(r"[\w.-]+\Z")


def _read(path: Path, ctx: Ctx, what: str) -> Any:
    """The marked document of one file, or INVALID with its problem recorded."""
    try:
        value, doc_problems = read(path)
    except YamlProblem as err:
        ctx.problems.append(Problem(display_path(path), err.mark, err.what, err.message))
        return INVALID
    except OSError as err:
        ctx.problems.append(Problem(display_path(path), Mark(1, 1), "file",
                                    f"cannot read it: {err.strerror or err}"))
        return INVALID
    for p in doc_problems:
        ctx.add(p.mark, p.path, p.message)
    if not isinstance(value, MarkedMap):
        got = "an empty file" if value is None else describe_value(value)
        mark = getattr(value, "mark", Mark(1, 1))
        return ctx.add(mark, (), f"expected a mapping of keys ({what}), got {got}")
    return value


def _raise_if(ctx: Ctx) -> None:
    if ctx.problems:
        # Sort by file (in the order the files were read), then by position in the file.
        order = {f: i for i, f in enumerate(dict.fromkeys(p.file for p in ctx.problems))}
        problems = sorted(ctx.problems, key=lambda p: (order[p.file], p.mark.line, p.mark.column))
        raise ConfigError([str(p) for p in problems])


# --- lab.yaml -------------------------------------------------------------------------------


def load_lab(path: str | Path) -> Lab:
    """Read and check the lab file; raises UsageError (missing) or ConfigError (all problems)."""
    lab, ctx, _ = _check_lab(path)
    _raise_if(ctx)
    assert lab is not None
    return lab


def _lab_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        if str(path) == "lab.yaml":
            raise UsageError(f"lab.yaml not found in {Path.cwd()}: create one (see README) or pass -c FILE")
        raise UsageError(f"{path}: no such lab file", hint="pass -c with the path of your lab.yaml")
    if p.is_dir():
        raise UsageError(f"{path} is a folder, not a lab file", hint=f"pass -c {p / 'lab.yaml'}")
    if not p.is_file():  # a FIFO or a device would block or never end
        raise UsageError(f"{path} is not a regular file", hint="pass -c with the path of your lab.yaml")
    return p.resolve()


def _check_lab(path: str | Path) -> tuple[Lab | None, Ctx, Any]:
    """The lab (None when it has problems), the problems, and the raw document."""
    p = _lab_file(path)
    ctx = Ctx(file=p, base_dir=p.parent)
    raw = _read(p, ctx, "profiles:, report:, ...")
    values = INVALID
    if raw is not INVALID:
        values = schema.LAB.validate(raw, raw.mark, (), ctx)
    if ctx.problems or not isinstance(values, dict):
        return None, ctx, raw
    report = values["report"]
    profiles = {name: replace(prof, name=name) for name, prof in values["profiles"].items()}
    inventory = [
        # With `sandbox: N` the target and account are filled in at run time from the state.
        InventoryEntry(**{**e, "report": schema.replace_report(report, e["report"] or {}),
                          "profile": e["profile"] or values["default_profile"]})
        for e in values["inventory"]
    ]
    lab = Lab(
        path=p, default_profile=values["default_profile"], report=report, profiles=profiles,
        # Defaults are relative too: relative to lab.yaml, not to where labrunner is run.
        scenarios_dir=p.parent / values["scenarios_dir"], output_dir=p.parent / values["output_dir"],
        inventory=inventory,
    )
    return lab, ctx, raw


def validate(path: str | Path, names: list[str] | None = None,
             profile: str | None = None) -> tuple[Lab, list[Scenario]]:
    """Check the lab file and the scenarios in one pass: a ConfigError holds the problems of all.

    When lab.yaml itself has problems, the scenarios are still checked, against what can be
    read of it (the scenario folder, the server names), so one run shows everything.
    ``profile`` (default: default_profile) is the one whose SSH key file is checked.
    """
    lab, ctx, raw = _check_lab(path)
    if lab is not None:
        _check_key_file(lab, profile or lab.default_profile, raw, ctx)
        if not ctx.problems:
            return lab, load_scenarios(lab, names)
        try:
            load_scenarios(lab, names)
        except ConfigError as err:
            raise ConfigError([str(p) for p in ctx.problems] + err.problems) from None
        _raise_if(ctx)
    p = _lab_file(path)
    folder = raw.get("scenarios_dir") if isinstance(raw, MarkedMap) else None
    scenarios_dir = p.parent / (folder if isinstance(folder, str) else "scenarios")
    try:
        files = scenario_files(scenarios_dir)
        chosen = list(files) if not names else _choose(files, names)
        ctx.extra["project"] = p.parent
        _check_scenarios(files, chosen, _raw_servers(raw), ctx)
    except UsageError as err:  # no folder, an unknown name: shown after the lab's problems
        ctx.problems.append(Problem(display_path(p), Mark(1, 1), "scenarios", str(err)))
    _raise_if(ctx)
    raise AssertionError("a lab with problems raised above")  # pragma: no cover


def _check_key_file(lab: Lab, name: str, raw: Any, ctx: Ctx) -> None:
    """The SSH key of the profile a run would use: there, a file, and the private half.

    Only that profile: the others may name keys of another machine. A sandbox profile's key
    is made by `sandbox up`, so it is not looked for here.
    """
    prof = lab.profiles.get(name)
    if prof is None or prof.from_sandbox or not prof.target.key:
        return
    target = raw["profiles"][name]["target"]
    where, mark = ("profiles", name, "target", "key"), target.value_mark("key")
    key = Path(prof.target.key)
    written = target.get("key")
    try:
        key.is_file()
    except PermissionError:  # a folder on its path this user may not enter (student-ta D7)
        import getpass

        ctx.add(mark, where, f"cannot read the key file {written}: a folder on its path is not open to this "
                f"user ({getpass.getuser()}); copy the key to a folder of your own (cp KEY ~/.ssh/ && chmod 600 "
                "~/.ssh/KEY) and give the copy's path, or run labrunner as the key's owner")
        return
    if not key.exists():
        ctx.add(mark, where, f"the key file {written} does not exist; give the path of the private key "
                "you log in with, or make one with `ssh-keygen -t ed25519`")
        return
    if not key.is_file():
        ctx.add(mark, where, f"{written} is not a file; give the path of the private key you log in with")
        return
    try:
        with key.open("rb") as fh:
            start = fh.read(64)
    except OSError:
        start = b""  # readable by the SSH connection or not: it says so then, with the reason
    public = start.startswith((b"ssh-", b"ecdsa-sha2-", b"sk-"))
    if public or (key.suffix == ".pub" and not start.startswith(b"-----BEGIN")):
        private = key.with_suffix("") if key.suffix == ".pub" else None
        ctx.add(mark, where, "this is a public key; give the private key"
                + (f" (the same name without .pub: {private.name})" if private else ""))


def _raw_servers(raw: Any) -> set[str] | None:
    """The server names a broken lab.yaml still shows; None when they cannot be told."""
    profiles = raw.get("profiles") if isinstance(raw, MarkedMap) else None
    if not isinstance(profiles, MarkedMap):
        return None
    names: set[str] = set()
    for prof in profiles.values():
        if not isinstance(prof, MarkedMap):
            return None
        servers = prof.get("servers")
        if prof.get("from_sandbox") is True:
            names.update(schema.SANDBOX_SERVERS)
        elif isinstance(servers, MarkedMap):
            names.update(str(k) for k in servers)
        else:
            return None
    return names


# --- scenarios ------------------------------------------------------------------------------


def known_servers(lab: Lab) -> set[str]:
    """Server names a step may use: those of every profile (a sandbox profile has all four)."""
    names: set[str] = set()
    for prof in lab.profiles.values():
        names.update(schema.SANDBOX_SERVERS if prof.from_sandbox else prof.servers)
    return names


def scenario_files(folder: Path) -> dict[str, list[Path]]:
    """Scenario name (the file stem) → its files (more than one is a problem), sorted by name."""
    if not folder.is_dir():
        raise UsageError(f"scenario folder {display_path(folder)} not found",
                         hint="create it, or set scenarios_dir in lab.yaml")
    found: dict[str, list[Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise UsageError(f"cannot read the scenario folder {display_path(folder)}: {err.strerror or err}") from None
    # Hidden files are editor backups and lock files (.#x.yaml), not scenarios.
    for f in entries:
        if f.suffix in SCENARIO_SUFFIXES and not f.name.startswith(".") and f.is_file():
            found.setdefault(f.stem, []).append(f)
    if not found:
        raise UsageError(f"no scenario files (*.yaml) in {display_path(folder)}",
                         hint="copy the scenarios/ folder of the project, or set scenarios_dir in lab.yaml")
    return found


def load_scenarios(lab: Lab, names: list[str] | None) -> list[Scenario]:
    """The named scenarios (all when ``names`` is empty), checked and in run order.

    An unknown name is a UsageError listing the available ones; problems in the files are one
    ConfigError with all of them.
    """
    files = scenario_files(lab.scenarios_dir)
    chosen = list(files) if not names else _choose(files, names)
    ctx = Ctx(file=lab.path)
    ctx.extra["project"] = lab.path.parent  # an import step's files must lie inside it
    scenarios = _check_scenarios(files, chosen, known_servers(lab), ctx)
    _raise_if(ctx)
    return sorted(scenarios, key=lambda s: (s.order is None, s.order or 0, s.name))


def _check_scenarios(files: Mapping[str, list[Path]], chosen: list[str], servers: set[str] | None,
                     ctx: Ctx) -> list[Scenario]:
    """``ctx.extra["project"]``: lab.yaml's folder; an attachment's or an import's file must be in it."""
    ctx.extra["servers"] = servers
    scenarios: list[Scenario] = []
    for name in chosen:
        path, *others = files[name]
        ctx.file, ctx.base_dir = path, path.parent
        if not _NAME.match(name):
            ctx.add(Mark(1, 1), (), f"the file name {path.name!r} is also the scenario's name: use only "
                    "letters, digits, - _ . (no spaces)")
        for other in others:
            ctx.add(Mark(1, 1), (), f"{other.name} gives the same scenario name {name!r}; rename or remove one")
        if path.resolve().parent != path.parent.resolve():
            # A link to /etc/shadow, say: its lines would come back as "unknown key" messages.
            ctx.add(Mark(1, 1), (), "a symbolic link to a file outside the scenario folder; not read "
                    "(copy the scenario file into the folder instead)")
            continue
        raw = _read(path, ctx, "title:, steps:, ...")
        if raw is INVALID:
            continue
        v = schema.SCENARIO.validate(raw, raw.mark, (), ctx)
        if v is INVALID:
            continue
        scenarios.append(Scenario(name=name, path=path, **v))
    return scenarios


def _choose(files: Mapping[str, object], names: list[str]) -> list[str]:
    chosen: list[str] = []
    unknown: list[str] = []
    for given in names:
        name = Path(given).stem if given.endswith(SCENARIO_SUFFIXES) else given
        if name in files:
            if name not in chosen:
                chosen.append(name)
        else:
            unknown.append(given)
    if unknown:
        hints = "".join(did_you_mean(u, files) for u in unknown)
        what = ", ".join(repr(u) for u in unknown)
        raise UsageError(f"no scenario named {what}{hints}; available: {', '.join(files)}",
                         hint="`labrunner list` shows them with their titles")
    return chosen


# --- profiles -------------------------------------------------------------------------------


def resolve_profile(lab: Lab, name: str | None, *, instance: str | None = None) -> Profile:
    """The profile to run on, complete: a from_sandbox one is filled from the sandbox state.

    ``instance`` overrides the profile's sandbox instance (tests run on their own instance).
    """
    name = name or lab.default_profile
    if name not in lab.profiles:
        raise UsageError(
            f"no profile named {name!r} in {display_path(lab.path)}{did_you_mean(name, lab.profiles)}; "
            f"profiles: {', '.join(lab.profiles)}")
    profile = lab.profiles[name]
    if not profile.from_sandbox:
        return profile
    from labrunner import sandbox  # only a sandbox run needs it

    instance = sandbox.default_instance() if not (instance or profile.sandbox_instance) else (
        instance or profile.sandbox_instance)
    state = sandbox.load_state(instance)
    # The runner reads the password from the same instance's state: name it in the profile.
    return replace(profile_from_state(profile, state), sandbox_instance=instance)


def profile_from_state(profile: Profile, state: State | Mapping[str, Any]) -> Profile:
    """A from_sandbox profile filled in from the state `labrunner sandbox up` wrote (sandbox.State,
    or its JSON document).

    The password stays in the state: the account's secret refers to it (``state="password"``).
    """
    from labrunner.sandbox.state import State

    if not isinstance(state, State):
        state = State.from_json(state)  # SandboxError naming the part that is missing
    servers = {name: ServerSpec(spec.host, dict(spec.ports)) for name, spec in state.servers.items()}
    account = schema.ACCOUNT.make(address=state.account.address, user=state.account.user,
                                  secret=SecretRef(state="password", prompt=False))
    return replace(profile, target=_sandbox_target(state.ecs), servers=servers, account=account,
                   ca_file=state.ca_file)


def _sandbox_target(host: SshHost) -> TargetSpec:
    """A sandbox target: what the state says, and for every other key the default a target written in
    lab.yaml gets (the one declaration in config/model.py, through the same Section)."""
    target: TargetSpec = schema.TARGET.make(
        host=host.host, port=host.port, user=host.user, key=host.key, host_key=host.host_key,
        known_hosts=host.known_hosts)
    return target


def sandbox_account(profile: Profile) -> MailAccount | None:
    """The sandbox account whose password a sandbox profile's secret is (secrets.resolve reads it
    there); None for a profile that is not from the sandbox."""
    if not profile.from_sandbox:
        return None
    from labrunner import sandbox

    state = sandbox.load_state(profile.sandbox_instance)
    number = profile.account.secret.sandbox  # an inventory student's account N of a class
    account = state.account_number(number)
    if account is None:
        raise UsageError(f"password of {profile.account.address}: the sandbox has no account {number}",
                         hint=f"start a class: `labrunner sandbox up --targets {number}`")
    return account


def inventory_profile(lab: Lab, entry: InventoryEntry) -> Profile:
    """The profile for one student of the inventory: its servers and CA, the student's host and account.

    ``sandbox: N`` takes target N and account N of the profile's sandbox instance; an account
    whose secret is ``{sandbox: N}`` only takes that password (read by the runner).
    """
    base = resolve_profile(lab, entry.profile or None)
    target, account = entry.target, entry.account
    needed = entry.sandbox or account.secret.sandbox
    if needed:
        from labrunner import sandbox  # only a sandbox class needs it

        state = sandbox.load_state(base.sandbox_instance)
        have = min(len(state.targets), len(state.accounts))
        if needed > have:
            instance = state.instance or base.sandbox_instance
            flag = "" if instance == "lab" else f" --instance {instance}"
            raise SandboxError(
                f"inventory entry {entry.name!r} wants sandbox {'target' if entry.sandbox else 'account'} "
                f"{needed}, but the sandbox `{instance}` has {have}",
                hint=f"start a class of {needed} or more: `labrunner sandbox up{flag} --targets {needed}`")
        own = state.accounts[needed - 1].address
        if not entry.sandbox and own != account.address:
            raise UsageError(
                f"inventory entry {entry.name!r}: secret {{sandbox: {needed}}} is the password of {own}, "
                f"not of {account.address}", hint=f"write address: {own}, or the number of {account.address}")
        if entry.sandbox:
            mine = state.accounts[entry.sandbox - 1]
            target = _sandbox_target(state.targets[entry.sandbox - 1])
            account = schema.ACCOUNT.make(address=mine.address, user=mine.user,
                                          secret=SecretRef(state="password", prompt=False, sandbox=entry.sandbox))
    return replace(base, name=f"{base.name}:{entry.name}", target=target, account=account)
