"""labrunner/pcap.py: the one reader of pcap/pcapng bytes, on files that lie about their lengths."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labrunner import pcap

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def _pcap_claiming(path: Path, caplen: int) -> Path:
    path.write_bytes(_PCAP_HEADER + struct.pack("<IIII", 0, 0, caplen, caplen) + b"\0" * 64)
    return path


def _pcapng_claiming(path: Path, length: int) -> Path:
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 262144, 20)
    path.write_bytes(shb + idb + struct.pack("<II", 6, length) + b"\0" * 64)
    return path


@pytest.mark.parametrize("make", [_pcap_claiming, _pcapng_claiming], ids=["pcap", "pcapng"])
def test_a_record_claiming_gigabytes_is_refused_before_any_is_reserved(tmp_path: Path, make) -> None:
    """``read(n)`` reserves n bytes first: a 100-byte file whose record says 4 GiB must be
    refused as damaged, within a memory limit far below that (a MemoryError before the fix)."""
    path = make(tmp_path / "liar.pcap", 0xFFFFF000)
    with pytest.raises(pcap.Unreadable):
        list(pcap.records(path))
    probe = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from labrunner import pcap
        try:
            list(pcap.records(__import__("pathlib").Path({str(path)!r})))
        except pcap.Unreadable:
            print("refused")
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "refused", out.stderr[-500:]


def test_a_real_record_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    path.write_bytes(_PCAP_HEADER + struct.pack("<IIII", 0, 0, 4, 60) + b"abcd")
    assert list(pcap.records(path)) == [(b"abcd", 60, 1)]
