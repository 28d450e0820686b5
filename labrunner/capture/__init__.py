"""Packet capture on the target host with tcpdump, streamed back over the executor.

The package's rooms (every name callers use is re-exported here):

``tcpdump.py``     the capture itself: the sh wrapper around tcpdump on the target, the stream
                   written locally as it arrives, the capture lock, the pcapng conversion
``filters.py``     the BPF filter of a scenario, and the checks on what goes on tcpdump's argv
``pcapstream.py``  tcpdump's pcap stream: complete records, which TCP connections have ended

What the target knows (the addresses of a name there, the interface of the route to it) is the
executor's: ``executor.facts`` (executor/facts.py).

See ``tcpdump.py`` for how a capture runs, what it writes and with which privileges.
"""

from __future__ import annotations

from labrunner.capture.filters import (
    MAX_FILTER,
    check_filter,
    check_interface,
    derive_filter,
    filter_problem,
    interface_problem,
    session_clause,
)
from labrunner.capture.pcapstream import PcapCounter, TcpEnds
from labrunner.capture.tcpdump import (
    BUSY,
    CAPTURE_GROUP,
    PCAPNG_NAME,
    RAW_NAME,
    Capture,
    CaptureResult,
    Progress,
    TargetBusy,
    finalize,
    hold_target,
    setup_command,
    setup_hint,
    tcpdump_script,
)
from labrunner.errors import CaptureError
from labrunner.executor.facts import host_problem

__all__ = [
    "BUSY", "CAPTURE_GROUP", "MAX_FILTER", "PCAPNG_NAME", "RAW_NAME", "Capture", "CaptureError",
    "CaptureResult", "PcapCounter", "Progress", "TargetBusy", "TcpEnds", "check_filter", "check_interface",
    "derive_filter", "filter_problem", "finalize", "hold_target", "host_problem", "interface_problem",
    "session_clause", "setup_command", "setup_hint", "tcpdump_script",
]
