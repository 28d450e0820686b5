"""Names, paths and addresses of a sandbox instance, all derived from the instance name.

Several instances run at once (the test suite, each developer), so nothing is global: the
namespaces, links, directories and the /24 subnet all come from the name. Subnets are recorded
in ``/run/labrunner/subnets.json`` under a lock so two instances never share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labrunner.errors import SandboxError, UsageError

RUN_ROOT = Path("/run/labrunner")
ENV_INSTANCE = "LABRUNNER_SANDBOX_INSTANCE"
DEFAULT_INSTANCE = "lab"
SUBNET_BASE = "10.77"  # 10.77.<n>.0/24, n in 1..254
_NAME_RE = re.compile(r"[a-z0-9]{1,8}")


class InstanceNameError(UsageError, SandboxError):
    """A bad instance name is the user's input, so exit status 2 (usage), not 3."""


def validate_name(name: str, *, where: str = "instance name") -> str:
    if not _NAME_RE.fullmatch(name):
        raise InstanceNameError(
            f"bad sandbox {where} {name!r}: use 1-8 characters a-z and 0-9",
            hint="for example `--instance lab2` (the name goes into interface names, which are short)",
        )
    return name


def default_instance() -> str:
    """The instance named by $LABRUNNER_SANDBOX_INSTANCE, else ``lab``."""
    name = os.environ.get(ENV_INSTANCE) or DEFAULT_INSTANCE
    return validate_name(name, where=f"instance name in ${ENV_INSTANCE}")


def resolve(instance: str | None) -> str:
    return default_instance() if instance is None else validate_name(instance)


@dataclass(frozen=True)
class Layout:
    """Everything of one instance that can be named without looking at the system."""

    name: str

    @property
    def state_dir(self) -> Path:
        """0700: the state file and the secrets (lab key, CA key)."""
        return RUN_ROOT / f"sandbox-{self.name}"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def srv_dir(self) -> Path:
        """0755: the servers' configs, queues, Maildir and logs.

        Separate from the 0700 state dir because Postfix, Dovecot and sshd drop to unprivileged
        users (postfix, mail, the lab user) that must traverse the path to their files.
        """
        return RUN_ROOT / f"srv-{self.name}"

    @property
    def ecs_ns(self) -> str:
        return f"lr-{self.name}-ecs"

    @property
    def mail_ns(self) -> str:
        return f"lr-{self.name}-mail"

    # Interface names are limited to 15 characters: "lr-" + 8 + "-br" is 14.
    @property
    def bridge(self) -> str:
        return f"lr-{self.name}-br"

    @property
    def veth_ecs(self) -> str:
        return f"lr-{self.name}-e"

    @property
    def veth_mail(self) -> str:
        return f"lr-{self.name}-m"

    # Targets of a class (`up --targets N`): target 1 keeps the names above, so everything
    # written for a one-target sandbox stays true; target k > 1 gets a numbered namespace.
    def target_ns(self, k: int) -> str:
        return self.ecs_ns if k == 1 else f"{self.ecs_ns}{k}"

    def veth_target(self, k: int) -> str:
        # "lr-" + 8 + "-e" + 2 digits is 15, the limit of an interface name (MAX_TARGETS < 100).
        return self.veth_ecs if k == 1 else f"{self.veth_ecs}{k}"

    def target_srv(self, k: int) -> str:
        """The target's sshd folder inside the srv dir."""
        return "sshd" if k == 1 else f"sshd{k}"

    def netns_hosts_dir(self, ns: str) -> Path:
        return Path("/etc/netns") / ns


@dataclass(frozen=True)
class Subnet:
    index: int

    @property
    def network(self) -> str:
        return f"{SUBNET_BASE}.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address in the root namespace, so labrunner here reaches ecs's sshd."""
        return f"{SUBNET_BASE}.{self.index}.1"

    @property
    def ecs(self) -> str:
        return f"{SUBNET_BASE}.{self.index}.2"

    @property
    def mail(self) -> str:
        return f"{SUBNET_BASE}.{self.index}.3"

    def target(self, k: int) -> str:
        """Target 1 is ecs (.2); target k > 1 is .10+k, clear of the gateway, ecs and mail."""
        return self.ecs if k == 1 else f"{SUBNET_BASE}.{self.index}.{10 + k}"


MAX_TARGETS = 40


def host_name(k: int) -> str:
    """`ecs`, `ecs2`, `ecs3` ...: the target's host name and its key in the state's host map."""
    return "ecs" if k == 1 else f"ecs{k}"


def account_local(k: int) -> str:
    """`student`, `student2` ...: the local part of account k's address and its Maildir folder."""
    return "student" if k == 1 else f"student{k}"


def preferred_index(name: str) -> int:
    """A stable slot from the name, so an instance usually gets the same subnet each time."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 254 + 1


def pick_index(name: str, taken: set[int], busy_networks: list[ipaddress.IPv4Network]) -> int:
    """The first free slot from the preferred one on; free = not allocated, not routed here."""
    start = preferred_index(name)
    for step in range(254):
        idx = (start - 1 + step) % 254 + 1
        net = ipaddress.IPv4Network(f"{SUBNET_BASE}.{idx}.0/24")
        if idx in taken or any(net.overlaps(b) for b in busy_networks):
            continue
        return idx
    raise SandboxError(f"no free subnet left in {SUBNET_BASE}.0.0/16 for the sandbox",
                       hint="stop sandboxes you no longer need: `labrunner sandbox down --instance NAME`")


_ALLOC_FILE = "subnets.json"


def read_allocations() -> dict[str, int]:
    try:
        data = json.loads((RUN_ROOT / _ALLOC_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}


def write_allocations(alloc: dict[str, int]) -> None:
    path = RUN_ROOT / _ALLOC_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(alloc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def ensure_run_root() -> None:
    RUN_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)


@contextlib.contextmanager
def global_lock() -> Iterator[None]:
    """One `up`/`down` at a time on this machine: they share subnets, the lab user and tcpdump's capture group."""
    ensure_run_root()
    fd = os.open(RUN_ROOT / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
