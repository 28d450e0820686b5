"""up / down / status of a throwaway instance: idempotence, repair, and that down leaves nothing.

These tests use their own instance (derived from the session's), because they take it down.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner import sandbox as sb
from labrunner.errors import SandboxError
from labrunner.sandbox import layout, lifecycle, network, services, system
from labrunner.sandbox.layout import Layout, read_allocations

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture()
def instance(sandbox_instance: str) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (network namespaces): run the integration tests as root")
    name = (sandbox_instance[:6] + "lc")[:8]
    sb.down(name, progress=lambda _m: None)
    yield name
    sb.down(name, progress=lambda _m: None)


def _pids_in(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _assert_gone(name: str, pids: list[int]) -> None:
    layout = Layout(name)
    for ns in (layout.ecs_ns, layout.mail_ns):
        assert not network.netns_exists(ns), f"namespace {ns} is still there"
        assert not layout.netns_hosts_dir(ns).exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"lr-{name}-" not in links
    for pid in pids:
        assert not services.pid_alive(pid), f"process {pid} survived `down`"
    assert not layout.state_dir.exists() and not layout.srv_dir.exists()
    assert name not in read_allocations()
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=False).stdout
    assert f"labrunner-sandbox-{name}" not in rules


def test_up_twice_changes_nothing_and_down_removes_everything(instance: str) -> None:
    messages: list[str] = []
    state = sb.up(instance, progress=messages.append)
    layout = Layout(instance)
    before = layout.state_file.read_bytes()
    mtime = layout.state_file.stat().st_mtime_ns
    assert json.loads(before) == state
    assert all(services.pid_alive(p) for p in state["pids"].values())

    again: list[str] = []
    assert sb.up(instance, progress=again.append) == state
    assert any("already running and healthy; nothing changed" in m for m in again)
    assert layout.state_file.read_bytes() == before and layout.state_file.stat().st_mtime_ns == mtime
    assert {s: services.pid_of(layout, s) for s in services.SERVICES} == state["pids"]

    info = sb.status(instance)
    assert info["running"] and info["healthy"]
    assert {s["name"]: all(s["ports"].values()) for s in info["services"]} == dict.fromkeys(services.SERVICES, True)
    assert "the system user labrunner-lab (it captures through tcpdump's capabilities, no sudo) goes with the " \
        "last sandbox's `down`" in sb.format_status(info)

    # Things a run leaves behind: a stray process in ecs and an open SSH session.
    stray = subprocess.Popen(sb.netns_exec(instance, "ecs", ["sleep", "300"]), start_new_session=True)
    ssh = subprocess.Popen(
        ["ssh", "-i", state["ecs"]["key"], "-o", f"UserKnownHostsFile={state['ecs']['known_hosts']}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{state['ecs']['user']}@{state['ecs']['host']}",
         "echo in; sleep 300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert ssh.stdout is not None and ssh.stdout.readline() == b"in\n"
    pids = _pids_in(state["ecs"]["netns"]) + _pids_in(state["mail"]["netns"])
    assert stray.pid in pids and len(pids) > 6
    # the lab user captures through tcpdump's capabilities: in the group, and no sudo rule of ours
    assert system.LAB_USER in grp.getgrnam("labrunner-cap").gr_mem

    sb.down(instance, progress=lambda _m: None)
    assert stray.wait(timeout=10) is not None
    ssh.wait(timeout=10)
    _assert_gone(instance, pids + list(state["pids"].values()))
    with pytest.raises(SandboxError, match=f"the sandbox `{instance}` is not running"):
        sb.load_state(instance)
    assert not sb.status(instance)["running"]

    # down on nothing is fine and says so
    said: list[str] = []
    sb.down(instance, progress=said.append)
    assert said == [f"sandbox {instance}: not running; nothing to remove"]


def test_up_restarts_a_stopped_server_and_keeps_the_secrets(instance: str) -> None:
    state = sb.up(instance, progress=lambda _m: None)
    sb.stop_service(instance, "dovecot")
    assert any("dovecot" in p for p in sb.problems(state))
    assert not sb.status(instance)["healthy"]
    said: list[str] = []
    fixed = sb.up(instance, progress=said.append)
    assert any("restarting dovecot" in m for m in said)
    assert fixed["account"] == state["account"] and fixed["ecs"] == state["ecs"]
    assert fixed["pids"]["dovecot"] != state["pids"]["dovecot"]
    assert fixed["pids"]["postfix"] == state["pids"]["postfix"]
    assert sb.problems(fixed) == []

    sb.stop_service(instance, "nginx")
    assert not services.port_open(state["mail"]["host"], 443)
    sb.start_service(instance, "nginx")
    assert services.port_open(state["mail"]["host"], 443)


def test_up_rebuilds_when_the_network_is_gone(instance: str) -> None:
    state = sb.up(instance, progress=lambda _m: None)
    subprocess.run(["ip", "link", "del", Layout(instance).bridge], check=True)
    said: list[str] = []
    rebuilt = sb.up(instance, progress=said.append)
    assert any("rebuilding" in m for m in said)
    assert sb.problems(rebuilt) == []
    assert not any(services.pid_alive(p) for p in state["pids"].values())

    # A damaged state file is no reason to fail: the instance is rebuilt from scratch.
    Layout(instance).state_file.write_text("{damaged")
    said.clear()
    again = sb.up(instance, progress=said.append)
    assert any("unreadable state" in m and "rebuilding" in m for m in said)
    assert sb.problems(again) == [] and sb.read_state(instance) == again
    assert not any(services.pid_alive(p) for p in rebuilt["pids"].values())


def test_failed_up_leaves_nothing_behind(instance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real fault: Postfix refuses a bad setting. sshd is already running by then.
    real_template = services.template

    def broken_postfix(name: str, values: dict[str, str]) -> str:
        text = real_template(name, values)
        return text + "inet_protocols = ipv5\n" if name == "postfix-main.cf" else text

    monkeypatch.setattr(services, "template", broken_postfix)
    with pytest.raises(SandboxError) as info:
        sb.up(instance, progress=lambda _m: None)
    message = str(info.value)
    assert message.startswith("postfix did not start: ")
    assert "its log says:" in message and "ipv5" in message
    assert info.value.hint == f"see {Layout(instance).srv_dir / 'logs/postfix.log'}"
    _assert_gone(instance, [])
    assert not subprocess.run(["pgrep", "-f", f"srv-{instance}/"], capture_output=True, check=False).stdout


def test_down_cleans_a_half_made_instance(instance: str) -> None:
    layout = Layout(instance)
    subprocess.run(["ip", "netns", "add", layout.ecs_ns], check=True)
    subprocess.run(["ip", "link", "add", layout.bridge, "type", "bridge"], check=True)
    layout.srv_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", layout.ecs_ns, "sleep", "300"], start_new_session=True)
    # `down` must find it inside the namespace: wait until `ip netns exec` has moved it there
    deadline = time.monotonic() + 10
    while str(sleeper.pid) not in subprocess.run(["ip", "netns", "pids", layout.ecs_ns], capture_output=True,
                                                 text=True, check=True).stdout.split():
        assert time.monotonic() < deadline, "the sleeper never entered the namespace"
        time.sleep(0.05)
    sb.down(instance, progress=lambda _m: None)
    assert sleeper.wait(timeout=10) is not None
    _assert_gone(instance, [sleeper.pid])


@pytest.fixture()
def throwaway_user() -> Iterator[str]:
    """A system user name of our own: removing the real lab user would cut off every sandbox
    running on this machine (other test sessions', a person's)."""
    if os.geteuid() != 0:
        pytest.skip("useradd and userdel need root")
    name = f"lrt{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


def test_remove_lab_user_only_removes_the_user_up_created(throwaway_user: str) -> None:
    uid, _gid = system.ensure_lab_user(throwaway_user)
    assert pwd.getpwnam(throwaway_user).pw_uid == uid and Path(f"/home/{throwaway_user}").is_dir()
    assert system.remove_lab_user(throwaway_user) == f"removed the user {throwaway_user}"
    with pytest.raises(KeyError):
        pwd.getpwnam(throwaway_user)
    assert not Path(f"/home/{throwaway_user}").exists()
    assert system.remove_lab_user(throwaway_user) == f"no user {throwaway_user}"
    # One an administrator made by hand (no sandbox comment) is left alone.
    subprocess.run(["useradd", "--system", throwaway_user], check=True)
    assert system.remove_lab_user(throwaway_user) == f"the user {throwaway_user} stays (not created by the sandbox)"
    assert pwd.getpwnam(throwaway_user)


def test_down_removes_the_lab_user_with_the_last_instance(throwaway_user: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A private run root and sudoers file, and the throwaway user as the lab user: `down` runs
    # for real (userdel included) without touching the sandboxes that run on this machine.
    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path / "run")
    monkeypatch.setattr(system, "LAB_USER", throwaway_user)
    monkeypatch.setattr(system, "SUDOERS_FILE", tmp_path / "sudoers-lab")
    # tcpdump's capture group is this machine's, in use by the running sandboxes: only recorded
    restored: list[bool] = []
    monkeypatch.setattr(lifecycle, "restore_tcpdump", lambda: restored.append(True) and None)
    system.ensure_lab_user()
    system.SUDOERS_FILE.write_text(system.SUDOERS_MARKER + "\n")
    layout.ensure_run_root()
    (layout.RUN_ROOT / "sandbox-lrother").mkdir()  # another instance still there
    layout.write_allocations({"lrdown": 200, "lrother": 201})
    said: list[str] = []
    sb.down("lrdown", progress=said.append)
    assert said[-1].endswith("; the user labrunner-lab stays (another sandbox runs)")
    assert pwd.getpwnam(throwaway_user) and system.SUDOERS_FILE.exists()
    (layout.RUN_ROOT / "sandbox-lrother").rmdir()
    layout.write_allocations({"lrother": 201})
    sb.down("lrother", progress=said.append)
    assert said[-1].endswith(f"; removed the user {throwaway_user}")
    with pytest.raises(KeyError):
        pwd.getpwnam(throwaway_user)
    assert not system.SUDOERS_FILE.exists() and restored == [True]


def test_two_instances_get_different_subnets(instance: str, sandbox: dict[str, Any]) -> None:
    other = sb.up(instance, progress=lambda _m: None)
    assert other["subnet"] != sandbox["subnet"]
    assert other["ecs"]["netns"] != sandbox["ecs"]["netns"]
    # Both are reachable at once, each with its own sshd.
    assert services.port_open(other["ecs"]["host"], 22) and services.port_open(sandbox["ecs"]["host"], 22)


def test_state_file_matches_the_contract(sandbox: dict[str, Any]) -> None:
    s = sandbox
    assert set(s) >= {"instance", "ecs", "mail", "servers", "account", "ca_file", "maildir", "logs", "pids"}
    assert set(s["ecs"]) >= {"host", "port", "user", "key", "host_key", "known_hosts", "netns", "interface"}
    assert s["ecs"]["host_key"].startswith("SHA256:") and s["ecs"]["interface"] == "eth0"
    assert s["servers"]["smtp"]["ports"] == {"plain": 25, "starttls": 587, "tls": 465}
    assert s["servers"]["pop3"]["ports"] == {"plain": 110, "tls": 995}
    assert s["servers"]["imap"]["ports"] == {"plain": 143, "tls": 993}
    assert s["servers"]["web"] == {"host": "mail.lab.test", "ports": {"tls": 443}}
    assert s["account"]["address"] == s["account"]["user"] == "student@lab.test"
    assert len(s["account"]["password"]) >= 16
    assert Path(s["ecs"]["key"]).stat().st_mode & 0o777 == 0o600
    assert Path(s["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert set(s["logs"]) == {"postfix", "dovecot", "php-fpm", "nginx"} | {f"sshd{k}" if k > 1 else "sshd"
                                                               for k in range(1, len(s["targets"]) + 1)}
    kh = Path(s["ecs"]["known_hosts"]).read_text().split()
    assert kh[0] == s["ecs"]["host"] and kh[1] == "ssh-ed25519"
    # a class's lists start with the one-target keys above
    assert {k: v for k, v in s["targets"][0].items() if k != "name"} == \
        {k: v for k, v in s["ecs"].items() if k not in ("uid", "gid")}
    assert s["targets"][0]["name"] == "ecs"
    assert {k: v for k, v in s["accounts"][0].items() if k != "maildir"} == s["account"]
    assert s["accounts"][0]["maildir"] == s["maildir"]


def test_a_host_firewall_does_not_cut_the_lab_in_two(instance: str) -> None:
    # With br_netfilter, frames between ecs and mail cross the root namespace's FORWARD chain.
    # A firewall that drops them (here only for this instance's bridge, so other sandboxes on
    # the machine are untouched) must not break the lab; `up` lets its own bridge through.
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() != "1":
        pytest.skip("br_netfilter is not active here, so the host firewall never sees bridged frames")
    br = Layout(instance).bridge
    drop = ["FORWARD", "-i", br, "-o", br, "-j", "DROP"]
    subprocess.run(["iptables", "-A", *drop], check=True)
    try:
        state = sb.up(instance, progress=lambda _m: None)
        code = "import socket; socket.create_connection(('smtp.lab.test', 25), timeout=5).close(); print('ok')"
        out = subprocess.run(sb.netns_exec(instance, "ecs", ["python3", "-c", code]),
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.stdout.strip() == "ok", out.stderr
        assert services.port_open(state["ecs"]["host"], 22)
        sb.down(instance, progress=lambda _m: None)
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
        assert f"labrunner-sandbox-{instance}" not in rules
        assert f"-A FORWARD -i {br} -o {br} -j DROP" in rules  # the host's own rule is left alone
    finally:
        subprocess.run(["iptables", "-D", *drop], check=False)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "labrunner", "sandbox", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_prints_no_secret_and_status_shows_every_port(sandbox: dict[str, Any]) -> None:
    name = sandbox["instance"]
    pw = sandbox["account"]["password"]
    up = _cli("up", "--instance", name)
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[-1] == f"state: {Layout(name).state_file}"
    js = _cli("up", "--instance", name, "--json")
    assert js.returncode == 0
    shown = json.loads(js.stdout)
    assert shown["ecs"] == sandbox["ecs"] and shown["account"]["password"] != pw
    st = _cli("status", "--instance", name)
    assert st.returncode == 0
    for port in (22, 25, 587, 465, 110, 995, 143, 993, 443):
        assert f"{port}:listening" in st.stdout
    st_json = json.loads(_cli("status", "--instance", name, "--json").stdout)
    assert st_json["healthy"] is True
    for out in (up, js, st):
        assert pw not in out.stdout + out.stderr


def test_concurrent_ups_of_one_instance_agree(instance: str) -> None:
    import sys

    procs = [subprocess.Popen([sys.executable, "-m", "labrunner", "sandbox", "up", "--instance", instance],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = "".join(o for o, _ in outs)
    assert said.count(f"sandbox {instance}: up in") == 1
    assert said.count("already running and healthy; nothing changed") == 1
    assert sb.problems(sb.read_state(instance)) == []


def test_restore_tcpdump_undoes_the_capture_rights(tmp_path: Path) -> None:
    """What the last `down` does to tcpdump, on a copy (the real one serves the running sandboxes):
    the group's 0750 file with capabilities becomes root:root 0755 without them, and the group goes."""
    if os.geteuid() != 0:
        pytest.skip("chgrp, setcap and groupdel need root")
    group = f"lrt{uuid.uuid4().hex[:8]}"
    copy = Path("/usr/local/lib") / f"{group}-tcpdump"  # a disk file system (file capabilities)
    subprocess.run(["groupadd", group], check=True)
    try:
        shutil.copy("/usr/bin/tcpdump", copy)
        subprocess.run(["chgrp", group, str(copy)], check=True)
        copy.chmod(0o750)
        subprocess.run(["setcap", "cap_net_raw,cap_net_admin=eip", str(copy)], check=True)
        assert system.restore_tcpdump(str(copy), "no-such-group-here") is None  # not ours: untouched
        assert "cap_net_raw" in subprocess.run(["getcap", str(copy)], capture_output=True, text=True).stdout
        assert system.restore_tcpdump(str(copy), group) == f"{copy} is root:root 0755 again, without capabilities"
        st = copy.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755)
        assert subprocess.run(["getcap", str(copy)], capture_output=True, text=True).stdout.strip() == ""
        with pytest.raises(KeyError):
            grp.getgrnam(group)
    finally:
        copy.unlink(missing_ok=True)
        subprocess.run(["groupdel", group], capture_output=True, check=False)
