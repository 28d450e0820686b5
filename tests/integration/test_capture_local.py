"""Capture through the LocalExecutor: the same wrapper and tcpdump, on this machine's loopback.

Needs root and tcpdump, not the sandbox.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from labrunner.capture import Capture
from labrunner.config.model import TargetSpec
from labrunner.errors import CaptureError
from labrunner.executor import connect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("tcpdump") is None, reason="needs root and tcpdump"),
]


def _leftovers(port: int) -> str:
    return subprocess.run(["pgrep", "-af", f"[p]ort {port}"], capture_output=True, text=True).stdout


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(conn.recv(1024).upper())

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_local_capture_of_a_loopback_dialogue(tmp_path: Path) -> None:
    ex = connect(TargetSpec(host="localhost", local=True))
    srv, port = _echo_server()
    assert ex.facts.route_interface("127.0.0.1") == "lo"
    with Capture(ex, tmp_path, interface="lo", bpf=f"tcp port {port}") as cap:
        assert "tcpdump" in _leftovers(port)
        conn = ex.open_connection("127.0.0.1", port, 5)
        conn.sendall(b"hello capture")
        assert conn.recv(100) == b"HELLO CAPTURE"
        conn.close()
    srv.close()
    res = cap.result
    assert res is not None and res.path is not None and not res.partial
    assert res.packets >= 8 and res.tcpdump_stats["captured"] == res.packets
    out = subprocess.run(["tshark", "-r", str(res.path), "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.payload"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert [bytes.fromhex(x) for x in out] == [b"hello capture", b"HELLO CAPTURE"]
    assert _leftovers(port) == ""


def test_local_start_failure_leaves_nothing(tmp_path: Path) -> None:
    ex = connect(TargetSpec(host="localhost", local=True))
    port = 40000 + uuid.uuid4().int % 20000
    with pytest.raises(CaptureError, match="'nosuchif0' does not exist"):
        Capture(ex, tmp_path, interface="nosuchif0", bpf=f"port {port}").start()
    assert _leftovers(port) == ""


def test_local_prepared_capture_stops_on_the_end_of_the_dialogue(tmp_path: Path) -> None:
    ex = connect(TargetSpec(host="localhost", local=True))
    srv, port = _echo_server()
    cap = Capture(ex, tmp_path, interface="lo", bpf=f"tcp port {port}")
    cap.prepare()
    try:
        assert cap.waiting and "tcpdump" in _leftovers(port)
        assert subprocess.run(["pgrep", "-f", f"^tcpdump .*[p]ort {port}"], capture_output=True).returncode == 1
        cap.start()
        conn = ex.open_connection("127.0.0.1", port, 5)
        conn.sendall(b"hello capture")
        assert conn.recv(100) == b"HELLO CAPTURE"
        conn.close()
        cap.drain(connections=1)
    finally:
        res = cap.stop()
        srv.close()
    assert cap.settled == "ends" and not res.partial
    # on loopback "received by filter" counts each packet twice (libpcap drops the outgoing copy)
    assert res.tcpdump_stats["received"] == 2 * res.tcpdump_stats["captured"] == 2 * res.packets
    assert _leftovers(port) == ""


def test_local_prepared_capture_given_up_leaves_nothing(tmp_path: Path) -> None:
    ex = connect(TargetSpec(host="localhost", local=True))
    port = 40000 + uuid.uuid4().int % 20000
    cap = Capture(ex, tmp_path, interface="lo", bpf=f"tcp port {port}")
    cap.prepare()
    assert "tcpdump" in _leftovers(port)
    cap.discard()
    assert _leftovers(port) == "" and not (tmp_path / "capture.pcap").exists()


def test_local_filter_is_never_a_tcpdump_option(tmp_path: Path) -> None:
    """F11: with `target.local: true` there is no SSH clause around the filter; one starting with
    '-' (the review's `-w FILE`, run as root here) is refused, and nothing is written."""
    ex = connect(TargetSpec(host="localhost", local=True))
    marker = tmp_path / "evil-w.pcap"
    for bpf in (f"-w{marker}", f" -w {marker}", f"-r{marker}", "-Vx"):
        with pytest.raises(CaptureError, match="starts with '-'"):
            Capture(ex, tmp_path / "cap", interface="lo", bpf=bpf).start()
    assert not marker.exists()
