"""Least privilege of the capture (security review F4, F11): tcpdump runs as the SSH user
through its file capabilities (no sudo, no root), and nothing a scenario writes in
capture.filter or capture.interface can make it run another program or write a chosen file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner.capture import Capture
from labrunner.errors import CaptureError
from labrunner.executor.base import to_shell
from labrunner.executor.ssh import SSHExecutor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ex(sandbox: dict[str, Any]) -> Iterator[SSHExecutor]:
    from labrunner.config.model import TargetSpec

    e = sandbox["ecs"]
    target = TargetSpec(host=e["host"], port=e["port"], user=e["user"], key=e["key"], known_hosts=e["known_hosts"])
    with SSHExecutor(target, user_known_hosts=Path("/nonexistent/known_hosts")) as executor:
        yield executor


def test_tcpdump_runs_as_the_ssh_user_not_root(ex: SSHExecutor, sandbox: dict[str, Any], tmp_path: Path) -> None:
    port = 40000 + uuid.uuid4().int % 20000
    cap = Capture(ex, tmp_path, interface="eth0", bpf=f"tcp port {port}")
    cap.start()
    try:
        owners = ex.run(f"ps -eo user:32=,args= | grep '[t]cpdump .*port {port}'", check=False).text().split()
    finally:
        cap.stop()
    assert owners and owners[0] == sandbox["ecs"]["user"] != "root"
    # and the lab user has no sudo rule from the sandbox: nothing it runs goes through sudo
    assert "sudo" not in ex.run("id -Gn").text()
    assert "labrunner-cap" in ex.run("id -Gn").text().split()


def _hostile(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"-w{m}",                                  # an option glued to its argument
        f"-w {m}",
        f"  -w{m}",
        f"-z /bin/touch -G 1 -w {m}",
        f"port 25 -w {m}",                         # options after an expression
        f"port 25 -z /bin/touch -C 1 -w {m}",
        f"port 25' -w '{m}",                       # quotes
        f'port 25" -w "{m}',
        f"port 25 $(touch {m})",                   # shell substitutions
        f"port 25 `touch {m}`; touch {m}",
        f"port 25\n-w {m}",                        # a newline
        f"port 25\r-w{m}",
        "port 25 and " + " and ".join(["port 25"] * 900) + f" -w {m}",  # very long
        f"-F {m}", f"-r {m}", "-Z root",
    ]


def test_no_filter_or_interface_can_run_a_program_or_write_a_file(ex: SSHExecutor, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"lr-inject-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "cap"
    try:
        for bpf in _hostile(marker):
            with pytest.raises(CaptureError) as info:  # refused here, or tcpdump's syntax error
                Capture(ex, out, interface="eth0", bpf=bpf).start()
            assert "\n" not in str(info.value), bpf
            assert not marker.exists(), bpf
        for iface in (f"-w{marker}", f"eth0 -w {marker}", f"$(touch {marker})", "eth0;id", "e" * 16, ""):
            with pytest.raises(CaptureError, match="not a network interface name"):
                Capture(ex, out, interface=iface or "-", bpf="port 25").start()
        assert ex.run(to_shell(["ls", "-d", str(marker)]), check=False).exit_code != 0
        assert not marker.exists()  # the target shares this machine's /tmp
    finally:
        marker.unlink(missing_ok=True)
