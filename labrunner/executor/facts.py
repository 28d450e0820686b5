"""What the target says about names and routes, asked over its connection and remembered there.

Every executor holds one ``TargetFacts`` (``executor.facts``), so the answers live exactly as
long as the connection: a run asks for the same few host names and routes in every scenario
(the capture filter and interface, the sessions' address matching), and each question is an
SSH round trip (~30 ms, 30+ of them per run). Only answers are kept, never failures: a name
that does not resolve is asked again, and reported then with its own message. ``ask`` puts
the run's questions in one round trip before the first capture.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shlex
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from labrunner.config.rules import host_problem  # the rule config checks lab.yaml with
from labrunner.errors import CaptureError, ToolMissing

if TYPE_CHECKING:
    from labrunner.executor.base import Executor

_DEV = re.compile(r"\bdev (\S+)")


class TargetFacts:
    """The target's answers, for the lifetime of one connection (see the module docstring)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._answers: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _known(self, key: tuple[str, str]) -> Any:
        with self._lock:
            return self._answers.get(key)

    def _remember(self, key: tuple[str, str], value: Any) -> None:
        with self._lock:
            self._answers[key] = value

    def resolve(self, host: str, timeout: float = 15) -> list[str]:
        """Addresses of ``host`` as the target resolves it (``getent ahosts``), IPv4 first."""
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]
        known = self._known(("ahosts", host))
        if known is not None:
            return list(known)
        ex = self._executor
        res = ex.run(["getent", "ahosts", host], timeout=timeout, check=False)
        addrs = _ahosts(line.split()[0] for line in res.text().splitlines() if line.split())
        if not addrs:
            raise CaptureError(
                f"{ex.host_label}: the host name {host!r} cannot be resolved there",
                hint="check the server host name in lab.yaml, and DNS on the target (/etc/resolv.conf)",
            )
        self._remember(("ahosts", host), tuple(addrs))
        return addrs

    def route_interface(self, host: str) -> str:
        """The interface the target uses to reach ``host`` (``ip route get``)."""
        addr = self.resolve(host)[0]
        known = self._known(("route", addr))
        if known is not None:
            return str(known)
        ex = self._executor
        res = ex.run(["ip", "-o", "route", "get", addr], timeout=15, check=False)
        if res.exit_code == 127:
            raise ToolMissing(f"{ex.host_label}: the `ip` command (iproute2) is not installed",
                              hint="install iproute2 there, or set capture.interface in the scenario")
        m = _DEV.search(res.text())
        if res.exit_code != 0 or not m:
            why = res.stderr.decode("utf-8", "replace").strip() or res.text().strip() or "no route"
            raise CaptureError(
                f"{ex.host_label}: no route to {host} ({addr}): {why}",
                hint="check the network of the target, or set capture.interface in the scenario",
            )
        self._remember(("route", addr), m.group(1))
        return m.group(1)

    def interfaces(self) -> list[str]:
        """The network interfaces of the target (asked each time: only an error message uses it)."""
        return self._executor.run("ls /sys/class/net", timeout=15, check=False).text().split()

    def ssh_connection(self) -> str:
        """``$SSH_CONNECTION`` on the target (client address and port, server address and port)."""
        known = self._known(("env", "SSH_CONNECTION"))
        if known is None:
            self.learn(self._executor.run("echo \"ssh_connection=$SSH_CONNECTION\"", timeout=10, check=False).text())
            known = self._known(("env", "SSH_CONNECTION"))
        return str(known or "")

    def ask(self, hosts: Sequence[str]) -> None:
        """Ask in one round trip what the captures and sessions will ask one by one: our SSH
        connection, the addresses of ``hosts`` and the routes to them."""
        res = self._executor.run('echo "ssh_connection=$SSH_CONNECTION"\n' + facts_script(hosts),
                                 timeout=20, check=False)
        self.learn(res.text())

    def learn(self, output: str) -> None:
        """Remember the answers ``ask`` (``facts_script``) printed."""
        found: dict[str, list[str]] = {}
        for line in output.splitlines():
            words = line.split()
            if len(words) == 3 and words[0] == "lr-ahosts":
                found.setdefault(words[1], []).append(words[2])
            elif len(words) >= 2 and words[0] == "lr-route":
                m = _DEV.search(line)
                if m:
                    self._remember(("route", words[1]), m.group(1))
            elif line.startswith("ssh_connection=") and line.partition("=")[2].strip():
                self._remember(("env", "SSH_CONNECTION"), line.partition("=")[2].strip())
        for host, words in found.items():
            self._remember(("ahosts", host), tuple(_ahosts(words)))


def _ahosts(words: Iterable[str]) -> list[str]:
    """Distinct addresses in ``getent ahosts`` order, IPv4 first (the order we connect in)."""
    addrs: list[str] = []
    for word in words:
        if word and word not in addrs:
            addrs.append(word)
    addrs.sort(key=lambda a: ":" in a)
    return addrs


def facts_script(hosts: Sequence[str]) -> str:
    """sh lines asking the target, in one round trip, what TargetFacts.resolve and
    route_interface would ask host by host: the addresses of each name and the interface of
    the route to its first address. Feed the output to ``TargetFacts.learn``.

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
