"""The packet records of a capture file as the analysis reads them (= Wireshark's frame numbers).

Used by the light pass (tshark.py): tshark says which bytes of a frame are the TCP payload,
and they are cut from the record here instead of being printed by tshark as hex. The
container itself is read by ``labrunner.pcap`` (the one reader of pcap and pcapng bytes, shared
with the capture); what is here is the analysis's own guess at TLS from the first packets.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from labrunner.pcap import Unreadable, packets

__all__ = ["hello_early"]

# A TLS record header carrying a ClientHello or ServerHello (type 22, version 3.x, length, 1|2)
_HELLO = re.compile(rb"\x16\x03[\x00-\x04][\x00-\xff]{2}[\x01\x02]")


def hello_early(path: Path, records: int = 200) -> bool:
    """A TLS hello in one of the first packets: TLS without a key, which the light pass would
    find at once and give up on (a wasted tshark start). A guess, not a proof: a hello found
    later still stops the light pass, and a false alarm only costs the faster pass."""
    try:
        for i, data in enumerate(packets(path)):
            if i >= records:
                return False
            if _HELLO.search(data):
                return True
    except (Unreadable, OSError, struct.error):
        return False
    return False
