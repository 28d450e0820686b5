"""Capture on the sandbox's `ecs` over SSH: tcpdump really runs there (through its file capabilities:
the lab user is not root), packets come back over the channel, and nothing is left on the target.

Every test puts a unique port in its filter, so `pgrep` on the target finds only its own
tcpdump and wrapper, whatever else runs on this machine.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labfiles import small_tmpfs  # type: ignore[import-not-found]  # same folder

from labrunner.capture import Capture, derive_filter
from labrunner.config.model import TargetSpec
from labrunner.errors import CaptureError, ToolMissing
from labrunner.executor.base import Stream
from labrunner.executor.ssh import SSHExecutor

pytestmark = pytest.mark.integration


def ecs_target(state: dict[str, Any]) -> TargetSpec:
    e = state["ecs"]
    return TargetSpec(host=e["host"], port=e["port"], user=e["user"], key=e["key"],
                      known_hosts=e["known_hosts"])


@pytest.fixture(scope="module")
def ex(sandbox: dict[str, Any]) -> Iterator[SSHExecutor]:
    with SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent/known_hosts")) as executor:
        yield executor


@pytest.fixture(scope="module")
def mail_addr(ex: SSHExecutor) -> str:
    return ex.facts.resolve("mail.lab.test")[0]


def _unique_port() -> int:
    return 40000 + uuid.uuid4().int % 20000


def _leftovers(ex: SSHExecutor, port: int) -> str:
    """tcpdump or wrapper processes of this capture still on the target ("" when none)."""
    res = ex.run(["pgrep", "-af", f"[p]ort {port}"], check=False, timeout=15)
    return res.text()


def https_get(stream: Stream, ca_file: str, keylog: Path, host: str = "mail.lab.test") -> bytes:
    """An HTTPS request over a stream from the target, with Python's ssl and a key log."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.keylog_filename = str(keylog)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)

    def flush() -> None:
        data = outgoing.read()
        if data:
            stream.sendall(data)

    def fill() -> bool:
        data = stream.recv(65536)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return bool(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush()
            fill()
    flush()
    tls.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    flush()
    body = b""
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLWantReadError:
            if not fill():
                break
            continue
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        body += chunk
    stream.close()
    return body


def tshark(path: Path, *args: str) -> str:
    res = subprocess.run(["tshark", "-r", str(path), *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


# --- the happy path ---------------------------------------------------------------------------


def test_tls_capture_opens_decrypted_with_no_options(
    ex: SSHExecutor, sandbox: dict[str, Any], mail_addr: str, tmp_path: Path
) -> None:
    port = _unique_port()
    keylog = tmp_path / "tls-keys.log"
    bpf = derive_filter([(mail_addr, 443), (mail_addr, port)], ex.session_tuple())
    iface = ex.facts.route_interface("mail.lab.test")
    assert iface == sandbox["ecs"]["interface"]
    old = os.umask(0)  # the capture must be 0600 whatever the umask
    try:
        with Capture(ex, tmp_path, interface=iface, bpf=bpf, keylog=keylog) as cap:
            assert "tcpdump" in _leftovers(ex, port)
            body = https_get(ex.open_connection("mail.lab.test", 443, 10), sandbox["ca_file"], keylog)
    finally:
        os.umask(old)
    assert body.startswith(b"HTTP/1.1 200")
    res = cap.result
    assert res is not None and res.path == tmp_path / "capture.pcapng" and not res.partial
    assert res.packets > 6 and res.tcpdump_stats.get("captured") == res.packets
    assert stat.S_IMODE(res.path.stat().st_mode) == 0o600
    assert not (tmp_path / "capture.pcap").exists()
    # Plain `tshark -r`: the key log travels inside the pcapng.
    requests = tshark(res.path, "-Y", "http.request", "-T", "fields", "-e", "http.request.method",
                      "-e", "http.host")
    assert requests.split() == ["GET", "mail.lab.test"]
    assert "HTTP/1.1 200" in tshark(res.path, "-Y", "http.response")
    # The SSH connection carrying the capture is not in it.
    assert tshark(res.path, "-Y", "tcp.port == 22") == ""
    assert _leftovers(ex, port) == ""


def _smtp_capture(ex: SSHExecutor, folder: Path, mail_addr: str, port: int, **kw: Any) -> Capture:
    """A capture of SMTP (port 25) and of this test's own port, by which _leftovers finds its
    processes on the target."""
    return Capture(ex, folder, interface="eth0", bpf=f"host {mail_addr} and (port 25 or port {port})", **kw)


def test_packets_reach_the_file_while_capturing(ex: SSHExecutor, mail_addr: str, tmp_path: Path) -> None:
    port = _unique_port()
    seen: list[tuple[int, int]] = []
    cap = _smtp_capture(ex, tmp_path, mail_addr, port,
                  progress=lambda p, b: seen.append((p, b)))
    cap.start()
    try:
        s = ex.open_connection("smtp.lab.test", 25, 10)
        assert s.recv(512).startswith(b"220")
        deadline = time.monotonic() + 10
        while (tmp_path / "capture.pcap").stat().st_size <= 24 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "capture.pcap").stat().st_size > 24  # streamed, not held back
        s.close()
    finally:
        res = cap.stop()
    assert seen and seen[-1][1] == res.bytes
    assert "220" in tshark(res.path, "-Y", "smtp.response.code == 220") if res.path else False
    assert _leftovers(ex, port) == ""


def _smtp_quits(ex: SSHExecutor, n: int) -> None:
    """``n`` short SMTP sessions from the target: greeting, QUIT, close."""
    for _ in range(n):
        s = ex.open_connection("smtp.lab.test", 25, 10)
        assert s.recv(512).startswith(b"220")
        s.sendall(b"QUIT\r\n")
        assert s.recv(512).startswith(b"221")
        s.close()


def test_drain_stops_once_every_connection_has_ended_and_loses_nothing(
    ex: SSHExecutor, mail_addr: str, tmp_path: Path
) -> None:
    port = _unique_port()
    cap = _smtp_capture(ex, tmp_path, mail_addr, port)
    cap.start()
    try:
        _smtp_quits(ex, 3)
        cap.drain(connections=3)  # at once, as the runner does: the last FINs may still be on their way
    finally:
        res = cap.stop()
    assert cap.settled == "ends" and not res.partial and res.path is not None
    # Every packet the filter took was written by tcpdump (none left in its buffer at SIGTERM)
    # and reached the file.
    stats = res.tcpdump_stats
    assert stats["received"] == stats["captured"] == res.packets, stats
    rows = [line.split("\t") for line in tshark(res.path, "-T", "fields", "-e", "tcp.stream", "-e", "tcp.flags.fin",
                                                 "-e", "tcp.flags.reset").split("\n") if line]
    streams = {r[0] for r in rows}
    ended = {r[0] for r in rows if "1" in (r[1], r[2]) or "True" in (r[1], r[2])}
    assert len(streams) == 3 and ended == streams
    assert _leftovers(ex, port) == ""


def test_drain_falls_back_to_the_counters_while_a_connection_is_open(
    ex: SSHExecutor, mail_addr: str, tmp_path: Path
) -> None:
    port = _unique_port()
    cap = _smtp_capture(ex, tmp_path, mail_addr, port)
    cap.start()
    s = ex.open_connection("smtp.lab.test", 25, 10)
    try:
        assert s.recv(512).startswith(b"220")
        _smtp_quits(ex, 1)
        cap.drain(connections=2)  # one of the two is still open: its end is not in the capture
    finally:
        s.close()
        res = cap.stop()
    assert cap.settled == "counters" and not res.partial
    assert res.tcpdump_stats["received"] == res.tcpdump_stats["captured"] == res.packets
    assert _leftovers(ex, port) == ""


def _tcpdumps(ex: SSHExecutor, port: int) -> str:
    """tcpdump processes (not their wrapper, whose script names tcpdump too) of this capture."""
    return ex.run(["pgrep", "-af", f"^tcpdump .*[p]ort {port}"], check=False, timeout=15).text()


def test_a_capture_starts_only_once_the_one_stopping_before_it_has_ended(
    ex: SSHExecutor, mail_addr: str, tmp_path: Path
) -> None:
    """The runner stops a capture (drain) and starts the next at once: both filters take port
    25, so the next scenario's sessions must not begin while the first tcpdump still runs."""
    pa, pb = _unique_port(), _unique_port()
    a = _smtp_capture(ex, tmp_path / "a", mail_addr, pa)
    b = _smtp_capture(ex, tmp_path / "b", mail_addr, pb)
    a.start()
    try:
        _smtp_quits(ex, 1)
        a.drain(connections=1)
        b.start()
        assert _tcpdumps(ex, pa) == ""  # a's tcpdump had exited when b's start returned
        _smtp_quits(ex, 2)
        b.drain(connections=2)
    finally:
        rb = b.stop()
        ra = a.stop()
    streams = [len(set(tshark(r.path, "-T", "fields", "-e", "tcp.stream").split())) if r.path else 0 for r in (ra, rb)]
    assert streams == [1, 2]
    assert _leftovers(ex, pa) == _leftovers(ex, pb) == ""


def test_a_prepared_capture_runs_tcpdump_only_from_start_on(
    ex: SSHExecutor, mail_addr: str, tmp_path: Path
) -> None:
    port = _unique_port()
    cap = _smtp_capture(ex, tmp_path, mail_addr, port)
    cap.prepare()
    try:
        assert _leftovers(ex, port) != "" and _tcpdumps(ex, port) == ""  # the wrapper waits
        assert not (tmp_path / "capture.pcap").exists()
        cap.start()
        assert _tcpdumps(ex, port) != ""
        _smtp_quits(ex, 2)
        cap.drain(connections=2)
    finally:
        res = cap.stop()
    assert not res.partial and res.path is not None and res.packets > 0
    assert res.tcpdump_stats["received"] == res.tcpdump_stats["captured"] == res.packets
    assert tshark(res.path, "-Y", "smtp.req.command == \"QUIT\"").count("\n") == 2
    assert _leftovers(ex, port) == ""


def test_a_prepared_capture_given_up_leaves_nothing(ex: SSHExecutor, mail_addr: str, tmp_path: Path) -> None:
    port = _unique_port()
    cap = Capture(ex, tmp_path, interface="eth0", bpf=f"host {mail_addr} and port {port}")
    cap.prepare()
    assert _leftovers(ex, port) != ""
    cap.discard()
    assert _leftovers(ex, port) == ""
    assert not (tmp_path / "capture.pcap").exists()


# --- failures: nothing left behind ---------------------------------------------------------------


def test_dropped_connection_keeps_a_readable_partial_capture_and_leaves_nothing(
    sandbox: dict[str, Any], mail_addr: str, tmp_path: Path
) -> None:
    port = _unique_port()
    ex1 = SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent"))
    received: list[int] = []
    cap = _smtp_capture(ex1, tmp_path, mail_addr, port,
                  progress=lambda packets, _bytes: received.append(packets))
    cap.start()
    for _ in range(3):
        s = ex1.open_connection("smtp.lab.test", 25, 10)
        s.recv(512)
        s.sendall(b"QUIT\r\n")
        s.recv(512)
        s.close()
    deadline = time.monotonic() + 10  # until the packets have come back over the SSH channel
    while (not received or received[-1] < 9) and time.monotonic() < deadline:
        time.sleep(0.05)
    ex1.drop()  # the network goes away under us
    res = cap.stop()
    assert res.partial and res.problem and "connection" in res.problem
    assert res.path is not None and res.packets >= 9
    frames = tshark(res.path, "-T", "fields", "-e", "frame.number").split()
    assert len(frames) == res.packets
    assert "QUIT" in tshark(res.path, "-Y", "smtp.req.command == \"QUIT\"")
    with SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent")) as ex2:
        deadline = time.monotonic() + 10
        while _leftovers(ex2, port) and time.monotonic() < deadline:
            time.sleep(0.2)  # sshd notices the closed socket on its own schedule
        assert _leftovers(ex2, port) == ""


def test_interrupt_inside_the_block_saves_and_cleans_up(ex: SSHExecutor, mail_addr: str, tmp_path: Path) -> None:
    port = _unique_port()
    with pytest.raises(KeyboardInterrupt), _smtp_capture(ex, tmp_path, mail_addr, port) as cap:
        s = ex.open_connection("smtp.lab.test", 25, 10)
        s.recv(512)
        s.close()
        raise KeyboardInterrupt
    assert cap.result is not None and cap.result.path is not None and cap.result.packets >= 3
    assert _leftovers(ex, port) == ""


def test_stop_timeout_still_kills_tcpdump(ex: SSHExecutor, mail_addr: str, tmp_path: Path) -> None:
    port = _unique_port()
    cap = Capture(ex, tmp_path, interface="eth0", bpf=f"host {mail_addr} and port {port}")
    cap.start()
    res = cap.stop(timeout=0)  # no time to flush: the process group is killed instead
    assert res.partial and "killed" in (res.problem or "")
    assert _leftovers(ex, port) == ""


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"interface": "eth9"}, CaptureError, ["'eth9' does not exist", "eth0", "lo"]),
    ({"bpf": "port and and"}, CaptureError, ["capture filter is not valid"]),
    ({"tcpdump": "tcpdump-not-installed"}, ToolMissing, ["tcpdump-not-installed is not installed"]),
])
def test_start_failures_are_one_line_and_leave_nothing(
    ex: SSHExecutor, tmp_path: Path, kwargs: dict, error: type, words: list[str]
) -> None:
    port = _unique_port()
    args: dict = {"interface": "eth0", "bpf": f"port {port}"}
    args.update(kwargs)
    if "bpf" in kwargs:
        args["bpf"] = f"{kwargs['bpf']} port {port}"
    with pytest.raises(error) as info:
        Capture(ex, tmp_path, **args).start()
    assert "\n" not in str(info.value)
    for w in words:
        assert w in str(info.value)
    assert not (tmp_path / "capture.pcap").exists()
    assert _leftovers(ex, port) == ""


def test_no_route_is_a_capture_error(ex: SSHExecutor) -> None:
    with pytest.raises(CaptureError, match="cannot be resolved"):
        ex.facts.route_interface("no-such-host.lab.test")
    with pytest.raises(CaptureError, match=r"no route to 2001:db8::1 .*Network is unreachable"):
        ex.facts.route_interface("2001:db8::1")  # IPv6 is off in the sandbox


# --- disk full locally ---------------------------------------------------------------------------


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "tiny", "size=16k,mode=0700") as mnt:
        yield mnt


def test_disk_full_says_how_much_was_kept_and_where(
    ex: SSHExecutor, sandbox: dict[str, Any], mail_addr: str, tiny_disk: Path
) -> None:
    port = _unique_port()
    out = tiny_disk / "scenario"
    cap = Capture(ex, out, interface="eth0", bpf=f"host {mail_addr} and (port 443 or port {port})")
    cap.start()
    with contextlib.suppress(Exception):
        for _ in range(20):  # ~5 KB each: far more than 16 KB
            https_get(ex.open_connection("mail.lab.test", 443, 10), sandbox["ca_file"], out / "k.log")
    with pytest.raises(CaptureError) as info:
        cap.stop()
    msg = str(info.value)
    assert msg.startswith("disk full while writing the capture: kept ")
    raw = out / "capture.pcap"
    assert str(raw) in msg
    kept = cap.result.packets if cap.result else -1
    assert f"kept {kept} packets ({raw.stat().st_size} bytes)" in msg and kept > 0
    # What was kept is a valid capture: cut at the last whole packet.
    assert len(tshark(raw, "-T", "fields", "-e", "frame.number").split()) == kept
    assert _leftovers(ex, port) == ""


@pytest.mark.parametrize("prepared", [False, True], ids=["running", "prepared"])
def test_a_silently_dead_network_stops_tcpdump_on_its_own(
    sandbox: dict[str, Any], mail_addr: str, tmp_path: Path, prepared: bool
) -> None:
    """No FIN, no RST: packets of our SSH connection just vanish, so sshd notices nothing.
    A prepared capture's wrapper, still waiting for "go", ends the same way."""
    port = _unique_port()
    ex1 = SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent"))
    client, cport, _server, _sport = ex1.session_tuple() or ("", 0, "", 0)
    netns = sandbox["ecs"]["netns"]
    rules = [["INPUT", "-p", "tcp", "-s", client, "--sport", str(cport)],
             ["OUTPUT", "-p", "tcp", "-d", client, "--dport", str(cport)]]
    tag = ["-m", "comment", "--comment", f"lrt-silence-{port}", "-j", "DROP"]
    cap = Capture(ex1, tmp_path, interface="eth0", bpf=f"host {mail_addr} and port {port}", liveness=3)
    if prepared:
        cap.prepare()
    else:
        cap.start()
    try:
        for r in rules:
            subprocess.run(["ip", "netns", "exec", netns, "iptables", "-I", *r, *tag], check=True)
        with SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent")) as ex2:
            assert "tcpdump" in _leftovers(ex2, port)
            deadline = time.monotonic() + 20
            while _leftovers(ex2, port) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _leftovers(ex2, port) == ""
            assert ex2.run(["pgrep", "-af", "[s]leep 3$"], check=False).text() == ""
    finally:
        for r in rules:
            subprocess.run(["ip", "netns", "exec", netns, "iptables", "-D", *r, *tag], check=False)
        ex1.drop()
        if prepared:
            cap.discard()
        else:
            cap.stop(timeout=2)


CHILD = """
import sys, time
from pathlib import Path
from labrunner.capture import Capture
from labrunner.config.model import TargetSpec
from labrunner.executor.ssh import SSHExecutor
host, user, key, kh, port, out = sys.argv[1:]
ex = SSHExecutor(TargetSpec(host=host, user=user, key=key, known_hosts=kh), user_known_hosts=Path("/nonexistent"))
Capture(ex, Path(out), interface="eth0", bpf=f"port {port}").start()
print("ready", flush=True)
time.sleep(600)
"""


def test_labrunner_killed_outright_leaves_nothing_on_the_target(
    ex: SSHExecutor, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    """kill -9 of our own process: no finally runs, only the target-side lifeline is left."""
    import signal
    import sys

    port = _unique_port()
    e = sandbox["ecs"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, e["host"], e["user"], e["key"], e["known_hosts"],
                              str(port), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert "tcpdump" in _leftovers(ex, port)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 15
        while _leftovers(ex, port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _leftovers(ex, port) == ""
        # What had arrived is on disk, 0600, even though nobody stopped the capture.
        raw = tmp_path / "capture.pcap"
        assert raw.exists() and stat.S_IMODE(raw.stat().st_mode) == 0o600
    finally:
        if child.poll() is None:
            child.kill()
