"""Faults the sandbox's own sshd cannot show, on a second real sshd in the sandbox's `ecs` namespace.

That sshd runs with CAP_NET_RAW removed from its bounding set (like root in a restricted
container), lets root in with a passphrase-protected key, and lets in a user who has no sudo
rights and a password. So: capture not permitted, sudo wanting a password, key passphrases and
password authentication are all met for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner.capture import Capture, setup_command
from labrunner.config.model import SecretRef, TargetSpec
from labrunner.errors import CaptureError, ConnectError, HostKeyError, UsageError
from labrunner.executor.ssh import SSHExecutor

pytestmark = pytest.mark.integration

PORT = 2201
PASSPHRASE = "correct horse battery staple"
NOSUDO_USER = "lrt-nosudo"


def _free(host: str, port: int, netns: str) -> bool:
    res = subprocess.run(["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
                         capture_output=True, text=True, check=False)
    return res.stdout.strip() == ""


@pytest.fixture(scope="module")
def second_sshd(sandbox: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_NET_RAW")
    # Not under pytest's 0700 tmp folder: sshd reads authorized_keys as the logging-in user.
    d = Path(tempfile.mkdtemp(prefix="lrt-sshd2-"))
    os.chmod(d, 0o755)
    host = sandbox["ecs"]["host"]
    netns = sandbox["ecs"]["netns"]
    if not _free(host, PORT, netns):
        pytest.skip(f"port {PORT} is taken in {netns}")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(d / "host_key_ecdsa")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(d / "root_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "user_key")], check=True)
    for user, key in (("root", "root_key"), (NOSUDO_USER, "user_key")):
        (d / f"authorized_keys_{user}").write_text((d / f"{key}.pub").read_text())
        os.chmod(d / f"authorized_keys_{user}", 0o644)
    created = subprocess.run(["id", NOSUDO_USER], capture_output=True, check=False).returncode != 0
    if created:
        subprocess.run(["useradd", "--system", "--shell", "/bin/sh", "--home-dir", "/nonexistent",
                        "--no-create-home", NOSUDO_USER], check=True)
    user_password = "pw-" + uuid.uuid4().hex[:12]
    subprocess.run(["chpasswd"], input=f"{NOSUDO_USER}:{user_password}\n", text=True, check=True)
    (d / "sshd_config").write_text(
        f"Port {PORT}\nListenAddress {host}\nHostKey {d / 'host_key'}\nHostKey {d / 'host_key_ecdsa'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d}/authorized_keys_%u\nPermitRootLogin prohibit-password\n"
        f"AllowUsers root {NOSUDO_USER}\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nAllowTcpForwarding no\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "setpriv", "--bounding-set", "-net_raw", "--",
         "/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "wb"),  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 10
        while _free(host, PORT, netns):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.05)
        pub = (d / "host_key.pub").read_text().split()
        (d / "known_hosts").write_text(f"[{host}]:{PORT} {pub[0]} {pub[1]}\n")
        yield {"dir": d, "host": host, "known_hosts": str(d / "known_hosts"), "password": user_password}
    finally:
        proc.terminate()
        proc.wait(10)
        if created:
            # Only this module's sessions run as this user; userdel refuses while one lingers.
            subprocess.run(["pkill", "-KILL", "-u", NOSUDO_USER], check=False)
            time.sleep(0.2)
            subprocess.run(["userdel", NOSUDO_USER], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _target(s: dict[str, Any], user: str, key: str | None, **kw: Any) -> TargetSpec:
    kw.setdefault("known_hosts", s["known_hosts"])
    return TargetSpec(host=s["host"], port=PORT, user=user, key=str(s["dir"] / key) if key else None,
                      connect_timeout=10, **kw)


def _ex(target: TargetSpec) -> SSHExecutor:
    return SSHExecutor(target, user_known_hosts=Path("/nonexistent/known_hosts"))


@pytest.fixture()
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.mark.usefixtures("_isolated_home")
def test_passphrase_protected_key(second_sshd: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConnectError, match="protected by a passphrase") as info:
        _ex(_target(second_sshd, "root", "root_key"))
    assert "target.password" in (info.value.hint or "") and "ssh-add" in (info.value.hint or "")
    monkeypatch.setenv("LRT_PASSPHRASE", "not it")
    with pytest.raises(UsageError, match="wrong passphrase"):
        _ex(_target(second_sshd, "root", "root_key", password=SecretRef(env="LRT_PASSPHRASE", prompt=False)))
    monkeypatch.setenv("LRT_PASSPHRASE", PASSPHRASE)
    with _ex(_target(second_sshd, "root", "root_key",
                     password=SecretRef(env="LRT_PASSPHRASE", prompt=False))) as ex:
        assert ex.run("id -u").text().strip() == "0"


@pytest.mark.usefixtures("_isolated_home")
def test_password_authentication(second_sshd: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ref = SecretRef(env="LRT_SSH_PASSWORD", prompt=False)
    monkeypatch.setenv("LRT_SSH_PASSWORD", second_sshd["password"])
    with _ex(_target(second_sshd, NOSUDO_USER, None, password=ref)) as ex:
        assert ex.run("whoami").text().strip() == NOSUDO_USER
    monkeypatch.setenv("LRT_SSH_PASSWORD", "wrong")
    with pytest.raises(ConnectError, match=r"authentication refused \(tried password\)"):
        _ex(_target(second_sshd, NOSUDO_USER, None, password=ref))


@pytest.mark.usefixtures("_isolated_home")
def test_user_outside_the_capture_group_is_told_the_setup_line(second_sshd: dict[str, Any], tmp_path: Path) -> None:
    """A plain user (no sudo, not in labrunner-cap) cannot run the 0750 tcpdump: one line, with
    the exact command that lets it capture without root."""
    with _ex(_target(second_sshd, NOSUDO_USER, "user_key")) as ex:
        with pytest.raises(CaptureError, match="the SSH user may not run tcpdump") as info:
            Capture(ex, tmp_path, interface="eth0", bpf="port 25").start()
        assert setup_command(NOSUDO_USER) in (info.value.hint or "")
        assert not (tmp_path / "capture.pcap").exists()


@pytest.mark.usefixtures("_isolated_home")
def test_capture_not_permitted(second_sshd: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                               tmp_path: Path) -> None:
    monkeypatch.setenv("LRT_PASSPHRASE", PASSPHRASE)
    t = _target(second_sshd, "root", "root_key", password=SecretRef(env="LRT_PASSPHRASE", prompt=False))
    with _ex(t) as ex:
        port = 40000 + uuid.uuid4().int % 20000
        with pytest.raises(CaptureError, match="not permitted to capture on eth0") as info:
            Capture(ex, tmp_path, interface="eth0", bpf=f"port {port}").start()
        assert "CAP_NET_RAW" in (info.value.hint or "")
        assert ex.run(["pgrep", "-af", f"[p]ort {port}"], check=False).text() == ""


@pytest.mark.usefixtures("_isolated_home")
def test_forwarding_refused_by_sshd(second_sshd: dict[str, Any]) -> None:
    with _ex(_target(second_sshd, NOSUDO_USER, "user_key")) as ex:
        with pytest.raises(ConnectError, match="administratively prohibited") as info:
            ex.open_connection("smtp.lab.test", 465, 5)
        assert "AllowTcpForwarding" in (info.value.hint or "")


def test_lost_connection_during_a_command_stops_it(second_sshd: dict[str, Any], _isolated_home: None) -> None:
    ex = _ex(_target(second_sshd, NOSUDO_USER, "user_key"))
    token = str(40000 + uuid.uuid4().int % 20000)
    threading.Timer(0.5, ex.drop).start()
    with pytest.raises(ConnectError, match="connection was lost"):
        ex.run(f"sleep {token}", timeout=30)
    with _ex(_target(second_sshd, NOSUDO_USER, "user_key")) as ex2:
        deadline = time.monotonic() + 10
        while ex2.run(["pgrep", "-f", f"[s]leep {token}"], check=False).ok and time.monotonic() < deadline:
            time.sleep(0.2)  # sshd notices the closed socket on its own schedule
        assert ex2.run(["pgrep", "-af", f"[s]leep {token}"], check=False).text() == ""


def _fp(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.mark.usefixtures("_isolated_home")
def test_a_pin_of_the_servers_other_key_type_is_found(second_sshd: dict[str, Any]) -> None:
    ecdsa = _fp(second_sshd["dir"] / "host_key_ecdsa.pub")
    with _ex(_target(second_sshd, NOSUDO_USER, "user_key", known_hosts=None, host_key=ecdsa)) as ex:
        assert ex.run("whoami").text().strip() == NOSUDO_USER
    with pytest.raises(HostKeyError) as info:
        _ex(_target(second_sshd, NOSUDO_USER, "user_key", known_hosts=None, host_key="SHA256:" + "B" * 43))
    # Every key the server has is shown, so the user can compare with the console.
    assert ecdsa in str(info.value) and _fp(second_sshd["dir"] / "host_key.pub") in str(info.value)


def test_a_locked_key_in_the_agent_is_used(second_sshd: dict[str, Any], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual setup: the key file needs a passphrase, ssh-agent holds it unlocked."""
    monkeypatch.setenv("HOME", str(tmp_path))
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        # It prints its environment lines once its socket listens: ssh-add may connect then.
        assert agent.stdout is not None and agent.stdout.readline().startswith("SSH_AUTH_SOCK=")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        key = second_sshd["dir"] / "root_key"
        subprocess.run(["ssh-add", "-q", str(key)], input=PASSPHRASE + "\n", text=True, check=True,
                       capture_output=True, env={**os.environ, "SSH_ASKPASS_REQUIRE": "never",
                                                 "DISPLAY": ""}, start_new_session=True)
        with _ex(_target(second_sshd, "root", "root_key")) as ex:
            assert ex.run("id -u").text().strip() == "0"
    finally:
        agent.terminate()
        agent.wait(5)
