"""Students of a class run taking turns on what they share: a host, a mail account.

Two students may never capture on one host at once: the capture filter is the servers'
addresses and ports, so each capture would hold the other's sessions (and passwords). Nor use
one mail account at once: each would read the other's mail, and a POP3 session locks the
mailbox. They may use them one after the other, which is what a teaching assistant with fewer
hosts than students does (10 lab hosts, 30 students). So a class run gives each student the
set of things it uses, and ``take_turns`` starts a student only when none of them is in use,
``parallel`` at most at once, in inventory order otherwise: a student whose host is busy is
passed over for the next one whose host is free, so no slot waits while another host idles.

"One host" is the machine, not how lab.yaml writes it: ``host_needs`` resolves each target as
the SSH connection will (ssh_config's HostName, then getaddrinfo, a few seconds at most) and
keys it on every address it has, so 10.0.0.3, a name of it, an ssh_config alias of it and
``::ffff:10.0.0.3`` are one host. The target's own lock (capture.hold_target) is the second line:
a class run's student that finds its host held anyway (another run's, or a classmate's on a
spelling of the host not resolved) gives its place back and is tried again a few seconds later
(run/lab.py), the students whose hosts are free going first meanwhile.
"""

from __future__ import annotations

import bisect
import contextlib
import ipaddress
import math
import socket
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labrunner.config.model import TargetSpec

# How long the class run waits for the names of its hosts, all of them looked up at once: a
# dead DNS server must not hold a class for minutes (glibc tries each server 5 s, twice). A
# name not resolved by then keys on its text; the student's own run says if it cannot connect.
RESOLVE_TIMEOUT = 5.0
Resolver = Callable[..., Sequence[tuple[Any, ...]]]  # socket.getaddrinfo's signature


def take_turns(needs: Sequence[frozenset[Hashable]], parallel: int, work: Callable[[int], float | None],
               stop: threading.Event) -> list[threading.Thread]:
    """Start ``parallel`` threads that call ``work(i)`` for every i of ``needs``, never two at
    once whose needs meet. Returns the threads (the caller joins them). Once ``stop`` is set,
    no student starts any more; ``work`` must not raise (a class run catches each student's error).

    ``work(i)`` returns None when student i is done, or a time (time.monotonic()) before which
    it is not to start again: its host was held by another run, so it gave its place back
    (run/lab.py, _hold_target). It is put back in the queue, in inventory order, and meanwhile
    its place and its needs go to the students after it."""
    cond = threading.Condition()
    pending = list(range(len(needs)))  # in inventory order
    not_before: dict[int, float] = {}
    busy: set[Hashable] = set()

    def next_free() -> tuple[int | None, float]:
        """The first student that may start now; else how long until one of them may (inf: when
        a student ends)."""
        now, soonest = time.monotonic(), math.inf
        for i in pending:
            if needs[i] & busy:
                continue
            if not_before.get(i, now) <= now:
                return i, 0.0
            soonest = min(soonest, not_before[i] - now)
        return None, soonest

    def worker() -> None:
        while True:
            with cond:
                while True:
                    if stop.is_set() or not pending:
                        cond.notify_all()
                        return
                    i, soon = next_free()
                    if i is not None:
                        break
                    # woken when a student ends; the timeout to see `stop`, or a student's time come
                    cond.wait(min(0.5, soon))
                pending.remove(i)
                busy.update(needs[i])
            later: float | None = None
            try:
                later = work(i)
            finally:
                with cond:
                    busy.difference_update(needs[i])
                    if later is not None:
                        not_before[i] = later
                        bisect.insort(pending, i)
                    cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"student-{k + 1}", daemon=False)
               for k in range(max(1, min(parallel, len(needs))))]
    for t in threads:
        t.start()
    return threads


def host_needs(targets: Sequence[TargetSpec | None], *, timeout: float = RESOLVE_TIMEOUT,
               resolve: Resolver = socket.getaddrinfo) -> list[frozenset[Hashable]]:
    """For each target, ("host", address, port) for every address its SSH connection may reach:
    two targets whose sets meet are one machine. A name not resolved (unknown, or not within
    ``timeout`` seconds for all names together) gives ("host", its text, port); so does one
    reached through a ProxyJump, which the jump host resolves, not this machine. None: no target."""
    keys = {_key(t): t for t in targets if t is not None}
    found: dict[tuple[object, ...], frozenset[Hashable]] = {}
    lock = threading.Lock()

    def look_up(key: tuple[object, ...], target: TargetSpec) -> None:
        # (the ssh_config lookup too: with CanonicalizeHostname, paramiko resolves names itself)
        try:
            name, port, direct = _connection(target)
        except Exception:  # (its own run says what is wrong; its text meanwhile)
            return
        addresses: frozenset[str] = frozenset()
        literal = _address(name)
        if literal is not None:
            addresses = frozenset({literal})
        elif direct:
            with contextlib.suppress(OSError, UnicodeError, ValueError):  # unknown here: its text is its key
                infos = resolve(name, port, type=socket.SOCK_STREAM)
                addresses = frozenset(a for info in infos if (a := _address(str(info[4][0]))) is not None)
        with lock:
            found[key] = frozenset(("host", a, port) for a in addresses or {_text(name)})

    # Every target at once, each in a thread of its own (getaddrinfo has no timeout); one that is
    # still asking at the deadline is left to finish on its own (a daemon thread).
    threads = [threading.Thread(target=look_up, args=(key, t), name=f"resolve-{t.host}", daemon=True)
               for key, t in keys.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0))
    with lock:
        resolved = dict(found)
    return [frozenset() if t is None else resolved.get(_key(t)) or frozenset({("host", _text(t.host), t.port or 22)})
            for t in targets]


def _key(target: TargetSpec) -> tuple[object, ...]:
    """What decides where a target's connection goes (targets equal in these resolve alike)."""
    return target.host, target.port, target.local, target.proxy_jump


def _text(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _connection(target: TargetSpec) -> tuple[str, int, bool]:
    """The name the SSH connection to ``target`` resolves, its port, and whether this machine
    resolves it (False behind a ProxyJump) — as executor/ssh.py's SSHExecutor decides them."""
    from labrunner.errors import LabError
    from labrunner.executor.ssh import ssh_config_lookup

    if target.local:  # this machine, no SSH: what an SSH target of localhost reaches
        return "localhost", 22, True
    try:
        cfg = ssh_config_lookup(target.host)
    except LabError:  # an unreadable ~/.ssh/config: the student's run says so; the text meanwhile
        cfg = {}
    try:
        port = int(target.port or cfg.get("port") or 22)
    except ValueError:
        port = 22
    jump = target.proxy_jump or cfg.get("proxyjump")
    return str(cfg.get("hostname") or target.host), port, not jump or str(jump).strip().lower() == "none"


def _address(text: str) -> str | None:
    """One spelling of an IP address (IPv4-mapped IPv6 as IPv4, every loopback address as
    "loopback": one machine); None when ``text`` is not an address."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return "loopback" if ip.is_loopback else str(ip)
