"""Capture filters: the BPF expression of a scenario and the checks on what goes on tcpdump's argv.

Everything here ends up as one argument of tcpdump on the target (the interface after ``-i``,
the filter as the one operand after ``--``), so each value is checked before it gets there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Sequence

from labrunner.errors import CaptureError
from labrunner.textsafe import safe

# Linux interface names: at most 15 bytes, no "/", no whitespace; we also refuse a leading
# "-" and anything outside a conservative set, so a name can never be read as an option.
_INTERFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,14}\Z")
MAX_FILTER = 4096  # characters of a capture filter (a derived one is a few hundred)


def interface_problem(name: str) -> str | None:
    """Why ``name`` cannot be a capture interface (None: it can)."""
    if _INTERFACE.match(name):
        return None
    return (f"'{safe(name)}' is not a network interface name: write one as `ip link` shows it (eth0, ens5, "
            "lo, any), or leave capture.interface out")


def filter_problem(bpf: str) -> str | None:
    """Why ``bpf`` cannot be tcpdump's filter operand (None: it can)."""
    if len(bpf) > MAX_FILTER:
        return f"the capture filter is {len(bpf)} characters long; at most {MAX_FILTER} are accepted"
    if bpf.lstrip().startswith("-"):
        return ("the capture filter starts with '-', which tcpdump would read as an option: write a BPF "
                "expression such as `tcp port 25`, not tcpdump options")
    if any((ord(c) < 32 and c not in "\t\n") or ord(c) == 127 for c in bpf):
        return "the capture filter contains a control character: write a BPF expression such as `tcp port 25`"
    return None


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither a host name nor an IP literal (None: it is one)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    if len(host) <= 253 and _HOSTNAME.match(host) and not host.replace(".", "").isdigit():
        return None
    return (f"'{safe(host)}' is not a host name or an IP address: letters, digits, '-' and '.' only "
            "(e.g. smtp.qq.com, 203.0.113.7)")


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

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z")


def _bpf_host(host: str) -> str:
    """An address (or host name) safe to put in a BPF expression."""
    h = host.strip()
    if h.lower().startswith("::ffff:") and "." in h:
        h = h[7:]  # IPv4-mapped, as sshd reports on dual-stack sockets
    try:
        return str(ipaddress.ip_address(h.split("%", 1)[0]))
    except ValueError:
        pass
    if _HOSTNAME.match(h) and not h.replace(".", "").isdigit():
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

