"""`labrunner sandbox up | down | status`: the life of one sandbox instance.

`up` builds everything from the instance name and writes the state file last, so the state
file's presence means "fully up". `down` never needs the state file: it derives every name
from the instance, so it also cleans up after an `up` that failed halfway.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import json
import os
import pwd
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labrunner.errors import SandboxError, UsageError
from labrunner.sandbox import keys, network, services
from labrunner.sandbox import layout as layout_mod
from labrunner.sandbox.layout import (
    MAX_TARGETS,
    Layout,
    Subnet,
    account_local,
    global_lock,
    host_name,
    pick_index,
    read_allocations,
    resolve,
    write_allocations,
)
from labrunner.sandbox.state import State as TypedState
from labrunner.sandbox.system import (
    LAB_USER,
    ensure_capture_rights,
    ensure_lab_user,
    ensure_packages,
    remove_lab_user,
    remove_sudoers,
    require_root,
    restore_tcpdump,
)

Progress = Callable[[str], object]
State = dict[str, Any]  # the state file's document, as up() writes it; outside: state.State

# Bumped when an instance made by older code must be rebuilt (its network or files differ).
STATE_VERSION = 2
MAIL_USER = "mail"  # Debian's uid 8: owns the Maildir; Postfix and Dovecot write as it
ACCOUNT = "student@lab.test"


class TargetsError(UsageError, SandboxError):
    """A bad `--targets` is the user's input, so exit status 2 (usage), not 3."""


def check_targets(targets: int) -> int:
    if isinstance(targets, bool) or not isinstance(targets, int) or not 1 <= targets <= MAX_TARGETS:
        raise TargetsError(f"bad number of sandbox targets {targets!r}: use 1 to {MAX_TARGETS}",
                           hint="for example `labrunner sandbox up --targets 3` for a class of three")
    return targets


def account_address(k: int) -> str:
    return f"{account_local(k)}@lab.test"


def target_count(state: State) -> int:
    """How many targets a state describes (a state without `targets` has one: ecs)."""
    targets = state.get("targets")
    return len(targets) if isinstance(targets, list) and targets else 1


def host_addresses(state: State) -> dict[str, str]:
    """Host name (ecs, ecs2 ..., mail) → address, from a state."""
    hosts = {"ecs": state["ecs"]["host"], "mail": state["mail"]["host"]}
    for t in state.get("targets") or []:
        hosts[t["name"]] = t["host"]
    return hosts


def state_path(instance: str | None = None) -> Path:
    return Layout(resolve(instance)).state_file


def _not_running(name: str) -> SandboxError:
    flag = "" if name == "lab" else f" --instance {name}"
    return SandboxError(
        f"the sandbox `{name}` is not running: start it with `labrunner sandbox up{flag}`"
    )


def load_state(instance: str | None = None) -> TypedState:
    """The state of a running instance, typed (sandbox/state.py); SandboxError when it is not
    running, or when its file lacks a part the rest of labrunner needs (naming it)."""
    return TypedState.from_json(read_state(instance))


def read_state(instance: str | None = None) -> State:
    """The state file of a running instance as written (the sandbox's own code reads it);
    SandboxError when it is not running."""
    name = resolve(instance)
    path = Layout(name).state_file
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _not_running(name) from None
    except PermissionError:
        raise SandboxError(f"cannot read {path}: it is readable by root only",
                           hint="run labrunner as root (sudo) to use the sandbox") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise SandboxError(f"{path} is damaged (not JSON)",
                           hint=f"restart the sandbox: `labrunner sandbox down --instance {name}` then `up`") from None
    if not isinstance(data, dict):
        raise SandboxError(f"{path} is damaged (not a JSON object)")
    return data


# --- health ---------------------------------------------------------------------


def _service_targets(state: State) -> list[tuple[str, str, int]]:
    hosts = host_addresses(state)
    return [(svc.name, hosts[svc.host], port)
            for svc in services.all_services(target_count(state)).values() for port in svc.ports]


def problems(state: State) -> list[str]:
    """What is wrong with a running instance (empty: healthy)."""
    layout = Layout(state["instance"])
    found: list[str] = []
    if state.get("version") != STATE_VERSION:
        return [f"made by an older labrunner (state version {state.get('version', 1)}, now {STATE_VERSION})"]
    n = target_count(state)
    for ns in network.namespaces(layout, n):
        if not network.netns_exists(ns):
            found.append(f"namespace {ns} is missing")
    if not network.link_exists(layout.bridge):
        found.append(f"bridge {layout.bridge} is missing")
    if found:
        return found
    found += network.offload_problems(layout, n)
    for name in services.all_services(n):
        if not services.pid_alive(services.pid_of(layout, name)):
            found.append(f"{name} is not running")
    for name, host, port in _service_targets(state):
        if not services.port_open(host, port, timeout=0.5):
            found.append(f"{name} does not listen on {host}:{port}")
    return found


# --- up -------------------------------------------------------------------------


def up(instance: str | None = None, *, targets: int | None = None, progress: Progress = print) -> State:
    """Start the instance (idempotent: a healthy running instance is left as it is).

    ``targets``: how many target hosts (ecs, ecs2 ...) with an account each. None keeps what
    runs (1 for a new instance); a number other than the running one rebuilds the instance
    with new keys and passwords, since profiles read the state anew at each run anyway.
    """
    name = resolve(instance)
    if targets is not None:
        check_targets(targets)
    require_root("up")
    ensure_packages(progress)
    layout = Layout(name)
    with global_lock():
        if layout.state_file.exists():
            try:
                state = read_state(name)
                wrong = problems(state)
            except (SandboxError, KeyError, TypeError) as exc:
                state, wrong = {}, [f"unreadable state: {exc}"]
                progress(f"sandbox {name}: {wrong[0]}; rebuilding it")
            running = target_count(state) if state else 1
            if not wrong and targets is not None and targets != running:
                dropped = (f"target ecs{running} and its account" if running == targets + 1 else
                           f"targets ecs{targets + 1}…ecs{running} and their accounts")
                gone = f" ({dropped}, mail included, go)" if targets < running else " (every mailbox starts empty)"
                progress(f"sandbox {name}: running with {running} target(s), {targets} asked; rebuilding it{gone}")
                wrong = [f"{running} target(s) instead of {targets}"]
                state = {}
            if not wrong:
                ensure_capture_rights()  # the lab user may have been made anew by another instance
                progress(f"sandbox {name}: already running and healthy; nothing changed")
                progress(f"state: {layout.state_file}")
                return state
            if state and state.get("version") == STATE_VERSION and _network_intact(layout, running):
                # Only servers are down: restart them and keep keys, password and addresses, so
                # sessions and profiles that already read the state file stay valid.
                return _repair(layout, state, progress)
            if state:
                progress(f"sandbox {name}: running but broken ({'; '.join(wrong)}); rebuilding it")
        if layout.state_file.exists() or _leftovers(layout):
            _down_locked(layout, progress=lambda _m: None)
        try:
            return _build(layout, progress, targets or 1)
        except BaseException:
            # Leave nothing half-made behind; the error itself is what the user needs to see.
            # LABRUNNER_SANDBOX_KEEP=1 keeps the wreck (configs, logs) for debugging.
            if os.environ.get("LABRUNNER_SANDBOX_KEEP") == "1":
                raise
            with contextlib.suppress(SandboxError):
                _down_locked(layout, progress=lambda _m: None)
            raise


def _network_intact(layout: Layout, targets: int) -> bool:
    return (all(network.netns_exists(ns) for ns in network.namespaces(layout, targets))
            and all(network.link_exists(d) for d in (layout.bridge, *network.veths(layout, targets))))


def _repair(layout: Layout, state: State, progress: Progress) -> State:
    n = target_count(state)
    if network.offload_problems(layout, n):
        progress(f"sandbox {layout.name}: turning offloads off again")
        network.all_offloads_off(layout, n)
    hosts = host_addresses(state)
    every = services.all_services(n)
    broken = [
        svc.name for svc in every.values()
        if not services.pid_alive(services.pid_of(layout, svc.name))
        or not all(services.port_open(hosts[svc.host], p) for p in svc.ports)
    ]
    if broken:
        progress(f"sandbox {layout.name}: restarting {', '.join(broken)} (keys, password and addresses kept)")
    for name in broken:
        services.stop(layout, name)
    for name in every:
        if name in broken:
            services.start(layout, name)
    targets = [t for t in _service_targets(state) if t[0] in broken]
    missing = services.wait_ports(targets)
    if missing:
        svc, host, port = missing[0]
        raise SandboxError(f"{svc} does not listen on {host}:{port} after restarting it",
                           hint=f"see {layout.srv_dir / services.service(svc).log}")
    state["pids"] = {svc: services.pid_of(layout, svc) for svc in every}
    _write(layout.state_file, json.dumps(state, indent=2) + "\n", 0o600)
    progress(f"state: {layout.state_file}")
    return state


def _leftovers(layout: Layout) -> bool:
    return (
        any(network.netns_exists(ns) for ns in (layout.ecs_ns, layout.mail_ns))
        or any(network.link_exists(d) for d in (layout.bridge, layout.veth_ecs, layout.veth_mail))
        or bool(network.existing_targets(layout))
        or layout.srv_dir.exists() or layout.state_dir.exists()
    )


def _mkdir(path: Path, mode: int = 0o755, owner: tuple[int, int] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner:
        os.chown(path, *owner)
    return path


def _write(path: Path, text: str | bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    data = text.encode() if isinstance(text, str) else text
    keys.write_private(path, data, mode)
    if owner:
        os.chown(path, *owner)


def _build(layout: Layout, progress: Progress, targets: int = 1) -> State:
    t0 = time.monotonic()
    name = layout.name
    alloc = read_allocations()
    index = alloc.get(name) or pick_index(
        name, {v for k, v in alloc.items() if k != name}, network.busy_networks())
    alloc[name] = index
    write_allocations(alloc)
    subnet = Subnet(index)
    numbers = range(1, targets + 1)

    sdir = _mkdir(layout.state_dir, 0o700)
    srv = _mkdir(layout.srv_dir, 0o755)
    for sub in ("logs", "certs", "postfix/etc", "postfix/data", "dovecot/run",
                "dovecot/state", "nginx/tmp", *(layout.target_srv(k) for k in numbers)):
        _mkdir(srv / sub)

    progress(f"sandbox {name}: keys and certificates (CA, RSA server key, ed25519 SSH keys)")
    user_uid, user_gid = ensure_lab_user()
    ensure_capture_rights()
    if not _other_instances(layout.name):
        # Older versions gave the lab user `NOPASSWD: ALL`: root on this machine. Another
        # instance still running may be of such a version and need it until its own `down`.
        remove_sudoers()
    # One lab key for every target (the TA's key on a class's hosts); a host key per target.
    lab_key = keys.new_ssh_key(f"labrunner-sandbox-{name}")
    tls = keys.new_tls(name, subnet.mail)
    passwords = [keys.new_password() for _ in numbers]
    _write(sdir / "id_ed25519", lab_key.private_openssh, 0o600)
    _write(sdir / "id_ed25519.pub", lab_key.public_line + "\n", 0o644)
    _write(sdir / "ca.key", tls.ca_key, 0o600)
    _write(srv / "certs/ca.crt", tls.ca_cert)
    _write(srv / "certs/mail.crt", tls.server_cert)
    _write(srv / "certs/mail.key", tls.server_key, 0o600)
    values = {
        "instance": name, "srv": str(srv), "user": LAB_USER,
        "mail_uid": "", "mail_gid": "",
    }
    for k in numbers:
        host_key = keys.new_ssh_key(f"{host_name(k)}.lab.test ({name})")
        known = f"{subnet.target(k)} {' '.join(host_key.public_line.split()[:2])}\n"
        _write(sdir / _known_hosts_name(k), known, 0o644)
        tdir = srv / layout.target_srv(k)
        _write(tdir / "ssh_host_ed25519_key", host_key.private_openssh, 0o600)
        _write(tdir / "ssh_host_ed25519_key.pub", host_key.public_line + "\n")
        _write(tdir / "authorized_keys", lab_key.public_line + "\n")
        _write(tdir / "sshd_config", services.template(
            "sshd_config", {**values, "sshd": str(tdir), "host": host_name(k)}))

    mail_pw = pwd.getpwnam(MAIL_USER)
    mail_owner = (mail_pw.pw_uid, mail_pw.pw_gid)
    _mkdir(srv / "mail", 0o755)
    for k in numbers:
        maildir = srv / "mail" / account_local(k) / "Maildir"
        _mkdir(maildir.parent, 0o700, mail_owner)
        _mkdir(maildir, 0o700, mail_owner)
        for sub in ("cur", "new", "tmp"):
            _mkdir(maildir / sub, 0o700, mail_owner)

    values.update(mail_uid=str(mail_owner[0]), mail_gid=str(mail_owner[1]))
    _write(srv / "postfix/etc/main.cf", services.template("postfix-main.cf", values))
    _write(srv / "postfix/etc/master.cf", services.template("postfix-master.cf", values))
    _write(srv / "postfix/etc/vmailbox",
           "".join(f"{account_address(k)} {account_local(k)}/Maildir/\n" for k in numbers))
    _write(srv / "dovecot/dovecot.conf", services.template("dovecot.conf", values))
    dovecot_gid = grp.getgrnam("dovecot").gr_gid
    # Only salted hashes here; the passwords themselves are only in the 0600 state file.
    _write(srv / "dovecot/users",
           "".join(f"{account_address(k)}:{keys.ssha256(passwords[k - 1])}\n" for k in numbers),
           0o640, (0, dovecot_gid))
    _write(srv / "nginx/nginx.conf", services.template("nginx.conf", values))
    services.write_webmail(srv, values)  # Roundcube behind PHP-FPM, served by nginx
    # Postfix's queue: created by `postfix start` (postfix-script fixes owners), but Dovecot's
    # SASL socket goes into spool/private, so make that one now with Postfix's modes.
    postfix_pw = pwd.getpwnam("postfix")
    _mkdir(srv / "postfix/spool", 0o755)
    _mkdir(srv / "postfix/spool/private", 0o700, (postfix_pw.pw_uid, 0))
    _mkdir(srv / "postfix/data", 0o700, (postfix_pw.pw_uid, postfix_pw.pw_gid))

    hosts_said = ", ".join(f"{host_name(k)} {subnet.target(k)}" for k in numbers)
    progress(f"sandbox {name}: network {subnet.network}: {hosts_said}, mail {subnet.mail}, "
             f"bridge {layout.bridge} ({subnet.gateway}), MTU {network.MTU}, offloads off")
    network.create(layout, subnet, targets)

    every = services.all_services(targets)
    progress(f"sandbox {name}: starting {', '.join(n for n in every if n.startswith('sshd'))} "
             f"(targets), postfix, dovecot, php-fpm, nginx (mail)")
    _start_all(layout, list(every))
    state = _state(layout, subnet, passwords, user_uid, user_gid)
    missing = services.wait_ports(_service_targets(state))
    if missing:
        svc, host, port = missing[0]
        raise SandboxError(f"{svc} does not listen on {host}:{port} after starting",
                           hint=f"see {srv / services.service(svc).log}")
    state["pids"] = {svc: services.pid_of(layout, svc) for svc in every}
    _write(layout.state_file, json.dumps(state, indent=2) + "\n", 0o600)
    progress(f"sandbox {name}: up in {time.monotonic() - t0:.1f} s")
    progress(f"state: {layout.state_file}")
    return state


def _start_all(layout: Layout, names: list[str]) -> None:
    """The sshds in parallel (each waits for its own daemon), then the mail servers in order."""
    from concurrent.futures import ThreadPoolExecutor

    sshds = [n for n in names if n.startswith("sshd")]
    with ThreadPoolExecutor(max_workers=min(8, len(sshds)) or 1) as pool:
        for fut in [pool.submit(services.start, layout, n) for n in sshds]:
            fut.result()
    for n in names:
        if n not in sshds:
            services.start(layout, n)


def _known_hosts_name(k: int) -> str:
    return "known_hosts" if k == 1 else f"known_hosts{k}"


def _state(layout: Layout, subnet: Subnet, passwords: list[str], uid: int, gid: int) -> State:
    sdir, srv = layout.state_dir, layout.srv_dir
    targets = []
    for k in range(1, len(passwords) + 1):
        host_pub = (srv / layout.target_srv(k) / "ssh_host_ed25519_key.pub").read_text()
        targets.append({
            "name": host_name(k), "host": subnet.target(k), "port": 22, "user": LAB_USER,
            "key": str(sdir / "id_ed25519"), "host_key": keys.fingerprint(host_pub),
            "known_hosts": str(sdir / _known_hosts_name(k)), "netns": layout.target_ns(k),
            "interface": "eth0",
        })
    accounts = [
        {"address": account_address(k), "user": account_address(k), "password": pw,
         "maildir": str(srv / "mail" / account_local(k) / "Maildir")}
        for k, pw in enumerate(passwords, 1)
    ]
    ecs = {key: v for key, v in targets[0].items() if key != "name"}
    return {
        "instance": layout.name,
        "version": STATE_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "subnet": subnet.network,
        "gateway": subnet.gateway,
        "bridge": layout.bridge,
        "ecs": {**ecs, "uid": uid, "gid": gid},
        "mail": {"host": subnet.mail, "netns": layout.mail_ns, "interface": "eth0"},
        "servers": {
            "smtp": {"host": "smtp.lab.test", "ports": {"plain": 25, "starttls": 587, "tls": 465}},
            "pop3": {"host": "pop.lab.test", "ports": {"plain": 110, "tls": 995}},
            "imap": {"host": "imap.lab.test", "ports": {"plain": 143, "tls": 993}},
            "web": {"host": "mail.lab.test", "ports": {"tls": 443}},
        },
        "account": {key: v for key, v in accounts[0].items() if key != "maildir"},
        "ca_file": str(srv / "certs/ca.crt"),
        "maildir": accounts[0]["maildir"],
        "srv_dir": str(srv),
        "logs": {svc.name: str(srv / svc.log) for svc in services.all_services(len(passwords)).values()},
        "pids": {},
        "targets": targets,
        "accounts": accounts,
    }


# --- down -----------------------------------------------------------------------


def down(instance: str | None = None, *, progress: Progress = print) -> None:
    """Remove every namespace, link, process and file of the instance (also a half-made one)."""
    name = resolve(instance)
    require_root("down")
    layout = Layout(name)
    with global_lock():
        if not _leftovers(layout) and name not in read_allocations():
            progress(f"sandbox {name}: not running; nothing to remove")
            return
        _down_locked(layout, progress)


def _down_locked(layout: Layout, progress: Progress) -> None:
    name = layout.name
    # Every target there is, whatever the state file says (it may be missing or older).
    n = max([1, *network.existing_targets(layout)])
    # Graceful stops first so Postfix and Dovecot close their queues and sockets cleanly...
    for svc in reversed(services.all_services(n)):
        with contextlib.suppress(OSError):
            services.stop(layout, svc, timeout=3.0)
    # ...then whatever is left in the namespaces: sessions, tcpdumps, stray children.
    killed: list[int] = []
    for ns in network.namespaces(layout, n):
        if network.netns_exists(ns):
            killed += services.kill_netns_processes(ns)
    removed = network.destroy(layout)
    for d in (layout.srv_dir, layout.state_dir):
        if d.exists():
            shutil.rmtree(d)
            removed.append(str(d))
    alloc = read_allocations()
    if alloc.pop(name, None) is not None:
        write_allocations(alloc)
    user = f"the user {LAB_USER} stays (another sandbox runs)"
    if not _other_instances(name):
        if remove_sudoers():
            removed.append("/etc/sudoers.d/labrunner-lab")
        user = remove_lab_user()
        restored = restore_tcpdump()
        if restored:
            user += f"; {restored}"
    extra = f", stopped {len(killed)} leftover process(es)" if killed else ""
    progress(f"sandbox {name}: removed {len(removed)} item(s){extra}; {user}")


def _other_instances(name: str) -> list[str]:
    others = set(read_allocations())
    others |= set(instances())
    others.discard(name)
    return sorted(others)


# --- status ---------------------------------------------------------------------


def instances() -> list[str]:
    """Names of the instances that have a state dir (running or half-made)."""
    root = layout_mod.RUN_ROOT  # looked up at call time, so tests can point it elsewhere
    if not root.exists():
        return []
    return sorted(p.name.removeprefix("sandbox-") for p in root.glob("sandbox-*") if p.is_dir())


def status(instance: str | None = None) -> State:
    """What runs and where; never raises for a stopped instance (``running`` is False)."""
    name = resolve(instance)
    require_root("status")
    layout = Layout(name)
    result: State = {"instance": name, "running": False, "state_file": str(layout.state_file)}
    if not layout.state_file.exists():
        result["leftovers"] = _leftovers(layout)
        return result
    state = read_state(name)
    hosts = host_addresses(state)
    n = target_count(state)
    nss = {host_name(k): layout.target_ns(k) for k in range(1, n + 1)} | {"mail": layout.mail_ns}
    svcs: list[dict[str, Any]] = []
    for svc in services.all_services(n).values():
        pid = services.pid_of(layout, svc.name)
        svcs.append({
            "name": svc.name, "host": svc.host, "netns": nss[svc.host], "address": hosts[svc.host],
            "pid": pid, "running": services.pid_alive(pid),
            "ports": {str(p): services.port_open(hosts[svc.host], p) for p in svc.ports},
            "log": str(layout.srv_dir / svc.log),
        })
    result.update({
        "running": True,
        "healthy": all(s["running"] and all(s["ports"].values()) for s in svcs),
        "subnet": state.get("subnet"),
        "bridge": {"name": layout.bridge, "address": state.get("gateway"),
                   "present": network.link_exists(layout.bridge)},
        "namespaces": {h: {"name": nss[h], "address": hosts[h], "present": network.netns_exists(nss[h])}
                       for h in nss},
        "services": svcs,
        "ssh": f"ssh -i {state['ecs']['key']} -o UserKnownHostsFile={state['ecs']['known_hosts']} "
               f"{state['ecs']['user']}@{state['ecs']['host']}",
        "lab_user": LAB_USER,
        "accounts": [a.get("address") for a in state.get("accounts") or [state.get("account", {})]],
    })
    return result


def public_state(state: State) -> State:
    """The state without its secrets, for printing (the password stays in the 0600 file)."""
    out = json.loads(json.dumps(state))
    where = f"(in {Layout(state['instance']).state_file})"
    for account in [out.get("account", {}), *(out.get("accounts") or [])]:
        if isinstance(account, dict) and "password" in account:
            account["password"] = where
    return out


def format_status(info: State) -> str:
    """`labrunner sandbox status` as lines a person reads."""
    name = info["instance"]
    if not info["running"]:
        line = f"sandbox {name}: not running"
        if info.get("leftovers"):
            line += f" (half-made leftovers found: remove them with `labrunner sandbox down --instance {name}`)"
        return line
    health = "healthy" if info["healthy"] else "NOT healthy (run `labrunner sandbox up` to rebuild it)"
    lines = [
        f"sandbox {name}: running, {health}",
        f"  network  {info['subnet']}  bridge {info['bridge']['name']} {info['bridge']['address']}"
        f"{'' if info['bridge']['present'] else ' (missing)'}",
    ]
    for host, ns in info["namespaces"].items():
        lines.append(f"  {host:<5}    {ns['address']:<15} netns {ns['name']}{'' if ns['present'] else ' (missing)'}")
    accounts = info.get("accounts") or []
    if len(accounts) > 1:
        lines.append(f"  accounts {', '.join(accounts)}")
    lines.append("  services:")
    for s in info["services"]:
        ports = " ".join(f"{p}:{'listening' if ok else 'CLOSED'}" for p, ok in s["ports"].items())
        run_s = f"pid {s['pid']}" if s["running"] else "NOT running"
        lines.append(f"    {s['name']:<8} on {s['host']:<4} {run_s:<12} {ports}")
    lines.append(f"  login    {info['ssh']}")
    lines.append(f"  state    {info['state_file']} (0600; has the mailbox password)")
    lines.append(f"  the system user {info['lab_user']} (it captures through tcpdump's capabilities, no sudo) "
                 "goes with the last sandbox's `down`")
    return "\n".join(lines)
