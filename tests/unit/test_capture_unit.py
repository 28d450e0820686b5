"""Capture without a target: filters, pcap bookkeeping, pcapng conversion with secrets."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from labrunner.capture import (
    CaptureResult,
    PcapCounter,
    check_interface,
    derive_filter,
    finalize,
    setup_command,
    setup_hint,
    tcpdump_script,
)
from labrunner.errors import CaptureError, ToolMissing
from labrunner.executor import _wire

SSH = ("203.0.113.9", 51234, "172.16.0.5", 22)


def _compiles(bpf: str) -> bool:
    """Ask libpcap itself whether the filter is valid (needs tcpdump and root)."""
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        pytest.skip("tcpdump -d needs tcpdump and root")
    res = subprocess.run(["tcpdump", "-d", "-i", "lo", bpf], capture_output=True, text=True)
    return res.returncode == 0


def test_filter_groups_ports_by_host_and_keeps_ssh_out() -> None:
    f = derive_filter([("10.0.0.3", 25), ("10.0.0.3", 465), ("10.0.0.3", 25), ("10.0.0.4", 443)], SSH)
    assert "(host 10.0.0.3 and (port 25 or port 465))" in f
    assert "(host 10.0.0.4 and port 443)" in f
    assert f.count("port 25") == 1
    assert "not (tcp and ((src host 203.0.113.9 and src port 51234 and dst host 172.16.0.5" in f
    assert _compiles(f)


def test_filter_accepts_ipv6_names_and_mapped_addresses() -> None:
    f = derive_filter([("2001:db8::25", 587), ("smtp.qq.com", 465)],
                      ("::ffff:198.51.100.2", 40000, "::ffff:10.0.0.2", 22))
    assert "host 2001:db8::25" in f and "host smtp.qq.com" in f and "host 198.51.100.2" in f
    assert "::ffff" not in f


def test_filter_without_endpoints_still_excludes_ssh() -> None:
    assert derive_filter([], SSH).startswith("not (tcp and")
    assert derive_filter([], None) == ""


@pytest.mark.parametrize("bad", ["10.0.0.1 or 1=1", "a'b", "$(reboot)", "1.2.3"])
def test_filter_refuses_what_is_not_a_host(bad: str) -> None:
    with pytest.raises(CaptureError, match="capture filter"):
        derive_filter([(bad, 25)], None)


def test_filter_refuses_bad_ports() -> None:
    with pytest.raises(CaptureError, match="not a TCP port"):
        derive_filter([("10.0.0.1", 70000)], None)


def test_tcpdump_script_quotes_the_filter() -> None:
    script = tcpdump_script("eth0", "host 10.0.0.3 and port 25", 0)
    assert "--immediate-mode -U -w - -- 'host 10.0.0.3 and port 25'" in script
    assert "read l <&3" in script and 'kill -TERM "$p"' in script and "sleep 60" in script


def test_the_filter_is_never_an_option_and_nothing_uses_sudo() -> None:
    """F4/F11: the filter is tcpdump's operand after "--"; a leading "-", a control character,
    an overlong filter or a bad interface name never reach the target."""
    script = tcpdump_script("any", "port 25 -w /tmp/x", 0, wait_for_go=True)
    assert "-U -w - -- 'port 25 -w /tmp/x'" in script and "sudo" not in script
    assert "sudo" not in _wire.wrap("tcpdump -D", die_with_stdin=True)
    for bad in ("-w/tmp/x", "  -r /etc/shadow", "port 25\x00", "port 25\x1b[2J", "port 25 " * 600):
        with pytest.raises(CaptureError):
            tcpdump_script("eth0", bad, 0)
    for bad in ("-w/tmp/x", "eth0 x", "$(id)", "a" * 16, "", "eth0\n"):
        with pytest.raises(CaptureError, match="not a network interface name"):
            tcpdump_script(bad, "port 25", 0)
    assert check_interface("ens5") == "ens5" and check_interface("br-lab.10") == "br-lab.10"


def test_readme_gives_the_setup_line_doctor_prints() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"sudo sh -c '{setup_command('lab')}'" in readme
    assert setup_command("lab") in setup_hint("lab") and "root" in setup_hint("root")


# --- pcap bookkeeping -----------------------------------------------------------------------


def _pcap(packets: list[bytes], endian: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, 1)
    for i, p in enumerate(packets):
        out += struct.pack(endian + "IIII", 1700000000 + i, 0, len(p), len(p)) + p
    return out


def _frame(n: int) -> bytes:
    # Ethernet II, IPv4 ethertype, then padding: enough for editcap/tshark to read it.
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + bytes(n)


@pytest.mark.parametrize(("endian", "nano"), [("<", False), (">", False), ("<", True)])
def test_counter_follows_records_fed_byte_by_byte(endian: str, nano: bool) -> None:
    data = _pcap([_frame(40), _frame(1400), _frame(0)], endian, nano)
    c = PcapCounter()
    for i in range(len(data)):
        c.feed(data[i:i + 1])
    assert c.packets == 3 and c.complete == len(data) and c.trailing == 0


def test_counter_marks_a_packet_cut_in_the_middle() -> None:
    data = _pcap([_frame(40), _frame(100)])
    c = PcapCounter()
    c.feed(data[:-30])
    assert c.packets == 1 and c.complete == 24 + 16 + 54 and c.trailing == len(data) - 30 - c.complete


def test_counter_refuses_what_is_not_pcap() -> None:
    with pytest.raises(CaptureError, match="not a pcap"):
        PcapCounter().feed(b"tcpdump: listening on eth0\n" * 2)


# --- pcapng with secrets -----------------------------------------------------------------------


needs_editcap = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap is not installed")

KEYLOG = ("CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n")


@needs_editcap
def test_finalize_writes_0600_pcapng_with_the_key_log_inside(tmp_path: Path) -> None:
    raw = tmp_path / "capture.pcap"
    raw.write_bytes(_pcap([_frame(60), _frame(60)]))
    keylog = tmp_path / "keys.log"
    keylog.write_text(KEYLOG)
    old = os.umask(0)
    try:
        out = finalize(raw, keylog, tmp_path / "capture.pcapng")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    data = out.read_bytes()
    assert data[:4] == b"\x0a\x0d\x0d\x0a"  # pcapng section header block
    assert struct.pack("<I", 0x0000000A) in data and KEYLOG.strip().encode() in data  # DSB
    count = subprocess.run(["tshark", "-r", str(out), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True, check=True)
    assert count.stdout.split() == ["1", "2"]
    assert not list(tmp_path.glob(".*.tmp"))


@needs_editcap
def test_finalize_without_key_log_and_with_an_empty_one(tmp_path: Path) -> None:
    raw = tmp_path / "capture.pcap"
    raw.write_bytes(_pcap([_frame(60)]))
    empty = tmp_path / "keys.log"
    empty.write_text("")
    out = finalize(raw, empty, tmp_path / "capture.pcapng")
    assert struct.pack("<I", 0x0000000A) not in out.read_bytes()[:64] and out.stat().st_size > 0


@needs_editcap
def test_finalize_refuses_garbage_and_keeps_the_previous_result(tmp_path: Path) -> None:
    out = tmp_path / "capture.pcapng"
    out.write_bytes(b"previous")
    raw = tmp_path / "capture.pcap"
    raw.write_bytes(b"this is not a capture file at all" * 10)
    with pytest.raises(CaptureError, match="editcap could not convert"):
        finalize(raw, None, out)
    assert out.read_bytes() == b"previous"


def test_finalize_without_editcap_is_tool_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a real PATH on which editcap is not found
    with pytest.raises(ToolMissing, match="editcap"):
        finalize(tmp_path / "x.pcap", None, tmp_path / "x.pcapng")


def test_result_to_json_is_plain(tmp_path: Path) -> None:
    r = CaptureResult(path=tmp_path / "c.pcapng", packets=3, bytes=300, interface="eth0", filter="port 25",
                      partial=True, problem="the connection to the target was lost during the capture")
    d = r.to_json()
    assert d["path"] == str(tmp_path / "c.pcapng") and d["partial"] is True and d["raw_path"] is None


def test_facts_script_never_runs_a_host_name(tmp_path: Path) -> None:
    """F7 (review reproduction): a server host `x$(touch M)y` that resolves on the target must
    not run `touch`. A fake getent resolves every name, as the review's /etc/netns hosts line did."""
    from labrunner.executor.facts import facts_script

    marker = tmp_path / "pwned"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "getent").write_text("#!/bin/sh\necho '10.77.125.3     STREAM x'\n")
    (bindir / "getent").chmod(0o755)
    evil = f"x$(touch {marker})y"
    script = facts_script(["mail.lab.test", evil])
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, check=False).stdout
    assert "lr-ahosts mail.lab.test 10.77.125.3" in out
    assert not marker.exists()
    # and even a script built from the name (bypassing the host-name check) keeps it as data
    import labrunner.executor.facts as facts_mod

    real = facts_mod.host_problem
    try:
        facts_mod.host_problem = lambda _h: None  # type: ignore[assignment]
        script = facts_script([evil])
    finally:
        facts_mod.host_problem = real
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, check=False).stdout
    assert f"lr-ahosts {evil} 10.77.125.3" in out and not marker.exists()


class _Ended:
    """A tcpdump wrapper that has already exited with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def wait(self, timeout: float) -> int:
        return self.code


@pytest.mark.parametrize(("lines", "code", "error", "words"), [
    (["sh: 1: /usr/bin/tcpdump: Permission denied"], 126, CaptureError,
     ["the SSH user may not run tcpdump: sh: 1: /usr/bin/tcpdump: Permission denied", "cap_net_raw"]),
    (["sh: 1: tcpdump: not found"], 127, ToolMissing, ["tcpdump is not installed (command not found)", "apt-get"]),
    ([], 127, ToolMissing, ["tcpdump is not installed"]),
    (["tcpdump: eth9: No such device exists", "(SIOCGIFHWADDR: No such device)"], 1, CaptureError,
     ["capture interface 'eth9' does not exist (there: ", "lo", "fix capture.interface"]),
    (["tcpdump: eth9: You don't have permission to capture on that device"], 1, CaptureError,
     ["tcpdump is not permitted to capture on eth9: tcpdump: eth9: You don't", "CAP_NET_RAW"]),
    (["tcpdump: syntax error in filter expression: syntax error"], 1, CaptureError,
     ["the capture filter is not valid: tcpdump: syntax error", "(filter: port 25)", "tcpdump/BPF syntax"]),
    (["tcpdump: something else went wrong"], 1, CaptureError, ["tcpdump stopped at once: tcpdump: something else"]),
])
def test_why_tcpdump_did_not_start_is_read_from_its_error_output(
    tmp_path: Path, lines: list[str], code: int, error: type, words: list[str]
) -> None:
    """Each row of the table of start errors (capture/tcpdump._START_ERRORS), in its order."""
    from labrunner.capture import Capture
    from labrunner.executor.local import LocalExecutor

    cap = Capture(LocalExecutor(), tmp_path, interface="eth9", bpf="port 25")
    cap._stderr.extend(lines)
    cap._proc = _Ended(code)  # type: ignore[assignment]
    err = cap._start_error()
    assert type(err) is error
    shown = f"{err} {err.hint}"
    assert str(err).startswith("local: ") and "\n" not in str(err)
    for w in words:
        assert w in shown, shown
