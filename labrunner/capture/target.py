"""What the target knows: the addresses of a host name there and the interface of the route to it.

Asked over the executor, remembered per connection (see ``_ANSWERS``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shlex
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from labrunner.capture.filters import host_problem
from labrunner.errors import CaptureError, ToolMissing
from labrunner.executor.base import Executor

# Answers of the target, per connection: a run asks for the same few host names and routes
# in every scenario (filter, interface, the sessions' address matching), and each question is
# an SSH round trip (~30 ms, 30+ of them per run). Only answers are kept, never failures, and
# only while the connection (the executor object) lives.
_ANSWERS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Any]] = weakref.WeakKeyDictionary()
_ANSWERS_LOCK = threading.Lock()


def _remembered(executor: Executor, key: tuple[str, str]) -> Any:
    with _ANSWERS_LOCK, contextlib.suppress(TypeError):  # TypeError: an executor without weakrefs
        return _ANSWERS.get(executor, {}).get(key)
    return None


def _remember(executor: Executor, key: tuple[str, str], value: Any) -> None:
    with _ANSWERS_LOCK, contextlib.suppress(TypeError):
        _ANSWERS.setdefault(executor, {})[key] = value


def resolve_on_target(executor: Executor, host: str, timeout: float = 15) -> list[str]:
    """Addresses of ``host`` as the target resolves it (``getent ahosts``), IPv4 first."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    known = _remembered(executor, ("ahosts", host))
    if known is not None:
        return list(known)
    res = executor.run(["getent", "ahosts", host], timeout=timeout, check=False)
    addrs = _ahosts(line.split()[0] for line in res.text().splitlines() if line.split())
    if not addrs:
        raise CaptureError(
            f"{executor.host_label}: the host name {host!r} cannot be resolved there",
            hint="check the server host name in lab.yaml, and DNS on the target (/etc/resolv.conf)",
        )
    _remember(executor, ("ahosts", host), tuple(addrs))
    return addrs


def _ahosts(words: Any) -> list[str]:
    """Distinct addresses in ``getent ahosts`` order, IPv4 first (the order we connect in)."""
    addrs: list[str] = []
    for word in words:
        if word and word not in addrs:
            addrs.append(word)
    addrs.sort(key=lambda a: ":" in a)
    return addrs


def facts_script(hosts: Sequence[str]) -> str:
    """sh lines asking the target, in one round trip, what resolve_on_target and
    choose_interface would ask host by host: the addresses of each name and the interface of
    the route to its first address. Feed the output to ``learn_facts``.

    One SSH round trip costs ~50 ms; a run asked 7 of them before its first packet.
    """
    lines = []
    for host in dict.fromkeys(hosts):
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            continue  # an address needs no lookup; its route is asked when needed
        if host_problem(host):
            continue  # asked (and refused) host by host, with its own message
        # The name is data: one quoted word for getent and for printf, never inside a string
        # the shell evaluates again (an `echo "... 'x$(cmd)y' ..."` would run cmd).
        q = shlex.quote(host)
        lines.append(
            f"a=$(getent ahosts {q} 2>/dev/null | awk '{{print $1}}'); "
            f"for w in $a; do printf 'lr-ahosts %s %s\\n' {q} \"$w\"; done; "
            # the first IPv4 address, as _ahosts orders them, else the first one
            "f=$(for w in $a; do case $w in *:*) ;; *) echo $w; break;; esac; done); "
            'f=${f:-$(for w in $a; do echo $w; break; done)}; '
            '[ -n "$f" ] && echo "lr-route $f $(ip -o route get "$f" 2>/dev/null | head -n1)"'
        )
    return "\n".join(lines) + ("\n" if lines else "")


def learn_facts(executor: Executor, output: str) -> None:
    """Remember the answers ``facts_script`` printed (only answers: a failure is asked again,
    host by host, and reported then with its own message)."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "lr-ahosts":
            found.setdefault(words[1], []).append(words[2])
        elif len(words) >= 2 and words[0] == "lr-route":
            m = re.search(r"\bdev (\S+)", line)
            if m:
                _remember(executor, ("route", words[1]), m.group(1))
    for host, words in found.items():
        _remember(executor, ("ahosts", host), tuple(_ahosts(words)))


def choose_interface(executor: Executor, first_server_host: str) -> str:
    """The interface the target uses to reach the first server (``ip route get``)."""
    addr = resolve_on_target(executor, first_server_host)[0]
    known = _remembered(executor, ("route", addr))
    if known is not None:
        return str(known)
    res = executor.run(["ip", "-o", "route", "get", addr], timeout=15, check=False)
    if res.exit_code == 127:
        raise ToolMissing(f"{executor.host_label}: the `ip` command (iproute2) is not installed",
                          hint="install iproute2 there, or set capture.interface in the scenario")
    m = re.search(r"\bdev (\S+)", res.text())
    if res.exit_code != 0 or not m:
        why = res.stderr.decode("utf-8", "replace").strip() or res.text().strip() or "no route"
        raise CaptureError(
            f"{executor.host_label}: no route to {first_server_host} ({addr}): {why}",
            hint="check the network of the target, or set capture.interface in the scenario",
        )
    _remember(executor, ("route", addr), m.group(1))
    return m.group(1)



def list_interfaces(executor: Executor) -> list[str]:
    res = executor.run("ls /sys/class/net", timeout=15, check=False)
    return res.text().split()
