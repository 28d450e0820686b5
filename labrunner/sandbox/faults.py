"""Helpers for tests and fault scenarios: run inside a namespace, stop/start a server, block a
port, add a mailbox account with an awkward password."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from labrunner.errors import SandboxError
from labrunner.sandbox import keys, services
from labrunner.sandbox.layout import Layout, account_local, resolve
from labrunner.sandbox.lifecycle import MAIL_USER, host_addresses, read_state
from labrunner.sandbox.system import run


def netns_exec(instance: str | None, host: str, argv: list[str]) -> list[str]:
    """``argv`` prefixed so it runs inside the instance's ``ecs`` or ``mail`` namespace."""
    return services.netns_argv(Layout(resolve(instance)), host, list(argv))


def stop_service(instance: str | None, name: str) -> None:
    """Stop one server (sshd, postfix, dovecot, nginx) of a running instance."""
    state = read_state(instance)
    services.service(name)  # an unknown name is an error before anything is stopped
    services.stop(Layout(state["instance"]), name)


def start_service(instance: str | None, name: str) -> None:
    """Start one stopped server again and wait until its ports accept connections."""
    state = read_state(instance)
    layout = Layout(state["instance"])
    svc = services.service(name)
    if services.pid_alive(services.pid_of(layout, name)):
        return
    services.start(layout, name)
    host = host_addresses(state)[svc.host]
    missing = services.wait_ports([(name, host, p) for p in svc.ports])
    if missing:
        raise SandboxError(f"{name} does not listen on {host}:{missing[0][2]} after starting",
                           hint=f"see {layout.srv_dir / svc.log}")


def _rule(port: int, how: str) -> list[str]:
    if how == "reject":
        target = ["-j", "REJECT", "--reject-with", "tcp-reset"]
    elif how == "drop":
        target = ["-j", "DROP"]
    else:
        raise SandboxError(f"unknown block mode {how!r}: use `reject` or `drop`")
    return ["OUTPUT", "-p", "tcp", "--dport", str(port), "-m", "comment", "--comment",
            f"labrunner-block-{port}", *target]


def block_port(instance: str | None, port: int, *, how: str = "reject") -> None:
    """Block outbound TCP to ``port`` from ecs (like a cloud host whose port 25 is closed).

    ``reject`` answers with a TCP reset (fails at once); ``drop`` makes connects time out,
    which is what most cloud providers do.
    """
    state = read_state(instance)
    ns = state["ecs"]["netns"]
    rule = _rule(port, how)
    if run(["ip", "netns", "exec", ns, "iptables", "-C", *rule], check=False).returncode == 0:
        return
    run(["ip", "netns", "exec", ns, "iptables", "-I", *rule])


def unblock_port(instance: str | None, port: int) -> None:
    """Remove what block_port added for ``port`` (either mode); no error if none."""
    state = read_state(instance)
    ns = state["ecs"]["netns"]
    for how in ("reject", "drop"):
        while run(["ip", "netns", "exec", ns, "iptables", "-D", *_rule(port, how)], check=False).returncode == 0:
            pass


@contextlib.contextmanager
def _users_locked(users: Path) -> Iterator[None]:
    fd = os.open(users.with_name(".users.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rewrite_users(users: Path, edit: Callable[[list[str]], list[str]]) -> None:
    # Dovecot's passwd-file is re-read when it changes; a rename keeps a reader from ever
    # seeing half a file, and the copy keeps its mode and group (dovecot reads it, 0640).
    with _users_locked(users):
        lines = edit(users.read_text(encoding="utf-8").splitlines(keepends=True))
        tmp = users.with_name(".users.new")
        tmp.write_text("".join(lines), encoding="utf-8")
        shutil.copystat(users, tmp)
        st = users.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, users)


@contextlib.contextmanager
def extra_account(instance: str | None, local: str, password: str) -> Iterator[dict[str, str]]:
    """A Dovecot account ``local@lab.test`` with ``password`` (any text), for POP3/IMAP logins.

    For tests of passwords the generated ones never have (non-ASCII, quotes): the account
    exists only inside the ``with`` block and Dovecot only (Postfix delivers nothing to it).
    """
    state = read_state(instance)
    address = f"{local}@lab.test"
    srv = Path(state["srv_dir"])
    users = srv / "dovecot" / "users"
    home = srv / "mail" / local
    if local in {account_local(k) for k in range(1, len(state.get("accounts") or [1]) + 1)}:
        raise SandboxError(f"{address} is one of the sandbox's own accounts", hint="pick another name")

    def without(lines: list[str]) -> list[str]:
        return [ln for ln in lines if ln.split(":", 1)[0] != address]

    mail = pwd.getpwnam(MAIL_USER)
    # A test killed inside the block left its line and home: replaced, not an error.
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, mail.pw_uid, mail.pw_gid)
    try:
        _rewrite_users(users, lambda lines: [*without(lines), f"{address}:{keys.ssha256(password)}\n"])
        yield {"address": address, "user": address, "password": password}
    finally:
        _rewrite_users(users, without)
        shutil.rmtree(home, ignore_errors=True)
