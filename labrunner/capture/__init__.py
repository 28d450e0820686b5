"""Packet capture on the target host with tcpdump, streamed back over the executor.

The package's rooms (every name callers use is re-exported here):

``tcpdump.py``     the capture itself: the sh wrapper around tcpdump on the target, the stream
                   written locally as it arrives, the capture lock, the pcapng conversion
``filters.py``     the BPF filter of a scenario, and the checks on what goes on tcpdump's argv
``pcapstream.py``  pcap bytes: complete records, link types, which TCP connections have ended
``target.py``      what the target knows: host name resolution and the route's interface

See ``tcpdump.py`` for how a capture runs, what it writes and with which privileges.
"""

from __future__ import annotations

from labrunner.capture.filters import (
    MAX_FILTER,
    check_filter,
    check_interface,
    derive_filter,
    filter_problem,
    host_problem,
    interface_problem,
    session_clause,
)
from labrunner.capture.pcapstream import PcapCounter, TcpEnds
from labrunner.capture.target import (
    choose_interface,
    facts_script,
    learn_facts,
    list_interfaces,
    resolve_on_target,
)
from labrunner.capture.tcpdump import (
    BUSY,
    CAPTURE_GROUP,
    PCAPNG_NAME,
    RAW_NAME,
    Capture,
    CaptureResult,
    Progress,
    finalize,
    hold_target,
    setup_command,
    setup_hint,
    tcpdump_script,
)
from labrunner.errors import CaptureError

__all__ = [
    "BUSY", "CAPTURE_GROUP", "MAX_FILTER", "PCAPNG_NAME", "RAW_NAME", "Capture", "CaptureError",
    "CaptureResult", "PcapCounter", "Progress", "TcpEnds", "check_filter", "check_interface",
    "choose_interface", "derive_filter", "facts_script", "filter_problem", "finalize", "hold_target",
    "host_problem", "interface_problem", "learn_facts", "list_interfaces", "resolve_on_target",
    "session_clause", "setup_command", "setup_hint", "tcpdump_script",
]
