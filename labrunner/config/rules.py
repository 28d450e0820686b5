"""What a well-formed value is: the rules config checks lab.yaml and the scenarios with, and
the rooms that use the value apply again where it goes (tcpdump's argv, the target's resolver, the
imported files).

They live here, at the config's floor, so that config/ imports nothing above it: the executor
(host names asked about on the target), capture/ (the interface and the filter on tcpdump's argv)
and importer.py (the student's capture and key log) import them from here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from pathlib import Path

from labrunner.textsafe import safe

# --- names and filters on the target -------------------------------------------------------

# A host name as DNS writes it (letters, digits, '-' between, dot-separated labels)
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?\Z")


def host_problem(host: str) -> str | None:
    """Why ``host`` is neither a host name nor an IP literal (None: it is one)."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    if len(host) <= 253 and HOSTNAME.match(host) and not host.replace(".", "").isdigit():
        return None
    return (f"'{safe(host)}' is not a host name or an IP address: letters, digits, '-' and '.' only "
            "(e.g. smtp.qq.com, 203.0.113.7)")


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


# --- files a student imports ---------------------------------------------------------------

PCAP_MAGIC = (b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# NSS key log lines (what Chrome, Firefox and curl write to SSLKEYLOGFILE)
KEYLOG_LINE = re.compile(r"^(CLIENT_RANDOM|CLIENT_EARLY_TRAFFIC_SECRET|CLIENT_HANDSHAKE_TRAFFIC_SECRET|"
                          r"SERVER_HANDSHAKE_TRAFFIC_SECRET|CLIENT_TRAFFIC_SECRET_0|SERVER_TRAFFIC_SECRET_0|"
                          r"EARLY_EXPORTER_SECRET|EXPORTER_SECRET|RSA) [0-9A-Fa-f]+ [0-9A-Fa-f]+\s*$")
MAX_KEYLOG = 64 * 1024 * 1024


def file_problem(path: Path, project: Path, what: str) -> str | None:
    """Why ``path`` cannot be imported as ``what`` ("capture" or "keylog"), or None."""
    shown = Path(os.path.normpath(path))
    try:
        real = path.resolve(strict=False)
        inside = real.is_relative_to(project.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        return (f"{shown} is outside the project folder {project}; copy the file into it "
                "(e.g. captures/) and give that path")
    if not path.exists():
        return f"no such file: {shown}"
    if not path.is_file():
        return f"{shown} is not a file"
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror}"
    if what == "capture":
        if head[:4] not in PCAP_MAGIC and head[:4] != PCAPNG_MAGIC:
            return (f"{shown} is not a capture file (pcap or pcapng); in Wireshark use File → Save As "
                    "with the format \"Wireshark/... - pcapng\"")
        return None
    if path.stat().st_size > MAX_KEYLOG:
        return f"{shown} is larger than 64 MiB: not a key log"
    lines = [ln for ln in head.decode("ascii", "replace").splitlines()[:-1] or [head.decode("ascii", "replace")]
             if ln.strip() and not ln.startswith("#")]
    if not lines or not all(KEYLOG_LINE.match(ln) for ln in lines[:20]):
        return (f"{shown} is not a TLS key log (lines like \"CLIENT_RANDOM <hex> <hex>\"); give the file "
                "SSLKEYLOGFILE named when the browser ran")
    return None
