"""Capture filters: the BPF expression of a scenario and the checks on what goes on tcpdump's argv.

Everything here ends up as one argument of tcpdump on the target (the interface after ``-i``,
the filter as the one operand after ``--``), so each value is checked before it gets there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

# the rules config checks lab.yaml with (config/rules.py), applied again on tcpdump's argv
from labrunner.config.rules import HOSTNAME
from labrunner.config.rules import MAX_FILTER as MAX_FILTER
from labrunner.config.rules import filter_problem as filter_problem
from labrunner.config.rules import interface_problem as interface_problem
from labrunner.errors import CaptureError


def check_interface(name: str) -> str:
    """``name`` if it is a usable interface name, else CaptureError (it goes on tcpdump's argv)."""
    problem = interface_problem(name)
    if problem:
        raise CaptureError(problem)
    return name


def check_filter(bpf: str) -> str:
    """``bpf`` if it can go to tcpdump as its filter operand, else CaptureError."""
    problem = filter_problem(bpf)
    if problem:
        raise CaptureError(problem)
    return bpf


# --- filters ---------------------------------------------------------------------------

def _bpf_host(host: str) -> str:
    """An address (or host name) safe to put in a BPF expression."""
    h = host.strip()
    if h.lower().startswith("::ffff:") and "." in h:
        h = h[7:]  # IPv4-mapped, as sshd reports on dual-stack sockets
    try:
        return str(ipaddress.ip_address(h.split("%", 1)[0]))
    except ValueError:
        pass
    if HOSTNAME.match(h) and not h.replace(".", "").isdigit():
        return h
    raise CaptureError(f"{host!r} is neither an IP address nor a host name; it cannot go in a capture filter")


def session_clause(ssh: tuple[str, int, str, int]) -> str:
    """A BPF clause matching exactly one TCP connection (both directions)."""
    c, cp, s, sp = _bpf_host(ssh[0]), int(ssh[1]), _bpf_host(ssh[2]), int(ssh[3])
    return (f"(tcp and ((src host {c} and src port {cp} and dst host {s} and dst port {sp}) or "
            f"(src host {s} and src port {sp} and dst host {c} and dst port {cp})))")


def derive_filter(
    endpoints: Sequence[tuple[str, int]], exclude_ssh: tuple[str, int, str, int] | None = None
) -> str:
    """The BPF filter for a scenario: its servers' addresses and ports, never our SSH session.

    ``endpoints`` are (address, port) pairs (addresses resolved on the target, host names
    accepted); ``exclude_ssh`` is our SSH connection as the target sees it (client address,
    client port, server address, server port) — see ``SSHExecutor.session_tuple()``.
    """
    by_host: dict[str, list[int]] = {}
    for host, port in endpoints:
        p = int(port)
        if not 0 < p < 65536:
            raise CaptureError(f"port {port} of {host} is not a TCP port number")
        ports = by_host.setdefault(_bpf_host(host), [])
        if p not in ports:
            ports.append(p)
    parts = []
    for host, ports in by_host.items():
        port_expr = " or ".join(f"port {p}" for p in ports)
        parts.append(f"(host {host} and ({port_expr}))" if len(ports) > 1 else f"(host {host} and {port_expr})")
    wanted = " or ".join(parts)
    if exclude_ssh is None:
        return wanted
    not_ssh = "not " + session_clause(exclude_ssh)
    return f"({wanted}) and {not_ssh}" if wanted else not_ssh

