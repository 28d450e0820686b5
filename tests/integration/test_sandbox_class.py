"""A class of targets (`labrunner sandbox up --targets N`): ecs, ecs2, ecs3 and three accounts.

Each target is its own host: its own namespace, address, sshd and host key. Each account
sends and receives its own mail. `down` removes every target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner import sandbox as sb
from labrunner.sandbox import netns_exec, network, services
from labrunner.sandbox.layout import Layout, read_allocations

pytestmark = pytest.mark.integration

State = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]


def _ssh(target: State, known_hosts: str) -> Any:
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(known_hosts)
    client.connect(target["host"], port=target["port"], username=target["user"], key_filename=target["key"],
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def test_each_target_is_its_own_host_reached_with_host_key_verification(sandbox_class: State) -> None:
    import paramiko

    targets = sandbox_class["targets"][:3]
    assert [t["name"] for t in targets] == ["ecs", "ecs2", "ecs3"]
    assert len({t["host"] for t in targets}) == 3 and len({t["host_key"] for t in targets}) == 3
    assert len({t["netns"] for t in targets}) == 3
    for t in targets:
        client = _ssh(t, t["known_hosts"])
        try:
            _, out, _ = client.exec_command("hostname -I; getent hosts ecs ecs2 ecs3 smtp.lab.test", timeout=20)
            text = out.read().decode()
        finally:
            client.close()
        assert text.split()[0] == t["host"], text  # the session runs on that target, not another
        for other in sandbox_class["targets"][:3]:
            assert f"{other['host']} " in text or f"{other['host']}\t" in text  # names resolve
        assert sandbox_class["mail"]["host"] in text
    # a target's known_hosts does not vouch for another target: the host keys differ
    with pytest.raises(paramiko.SSHException):
        _ssh(targets[1], targets[2]["known_hosts"])


SEND_AND_READ = r"""
import json, os, poplib, smtplib, ssl, sys, time
user, token = sys.argv[1], sys.argv[2]
pw = os.environ["LAB_PASSWORD"]
ctx = ssl.create_default_context(cafile=os.environ["LAB_CA"])
s = smtplib.SMTP("smtp.lab.test", 587, timeout=10)
s.ehlo("me"); s.starttls(context=ctx); s.ehlo("me"); s.login(user, pw)
s.sendmail(user, [user], "From: %s\r\nTo: %s\r\nSubject: class %s\r\n\r\nbody\r\n" % (user, user, token))
local = s.sock.getsockname()[0]
s.quit()
texts = []
for _ in range(100):
    c = poplib.POP3_SSL("pop.lab.test", 995, timeout=10, context=ctx)
    c.user(user); c.pass_(pw)
    texts = [b"\n".join(c.retr(i)[1]).decode() for i in range(1, len(c.list()[1]) + 1)]
    c.quit()
    if any(token in t for t in texts):
        break
    time.sleep(0.1)
print(json.dumps({"local": local, "texts": texts}))
"""


def test_each_account_sends_and_receives_its_own_mail_from_its_own_target(sandbox_class: State) -> None:
    tokens: dict[int, str] = {}
    try:
        _send_and_read_each(sandbox_class, tokens)
    finally:
        # Other tests read these mailboxes and expect the lab's own mails only.
        for account in sandbox_class["accounts"][:3]:
            for d in ("new", "cur"):
                for p in (Path(account["maildir"]) / d).iterdir():
                    if any(t in p.read_text(errors="replace") for t in tokens.values()):
                        p.unlink()


def _send_and_read_each(sandbox_class: State, tokens: dict[int, str]) -> None:
    for k, (target, account) in enumerate(zip(sandbox_class["targets"][:3], sandbox_class["accounts"][:3],
                                              strict=True), 1):
        assert account["address"] == ("student@lab.test" if k == 1 else f"student{k}@lab.test")
        token = tokens[k] = uuid.uuid4().hex
        argv = netns_exec(sandbox_class["instance"], target["name"],
                          ["/usr/bin/python3", "-c", SEND_AND_READ, account["user"], token])
        env = dict(os.environ, LAB_PASSWORD=account["password"], LAB_CA=sandbox_class["ca_file"])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        assert out["local"] == target["host"]
        assert any(f"Subject: class {token}" in t for t in out["texts"]), f"{account['address']} got no mail"
        maildir = Path(account["maildir"])
        assert maildir.parent.name == ("student" if k == 1 else f"student{k}")
    # each mailbox holds only its own mail
    for k, account in enumerate(sandbox_class["accounts"][:3], 1):
        folder = Path(account["maildir"])
        texts = [p.read_text(errors="replace") for d in ("new", "cur") for p in (folder / d).iterdir()]
        for j, token in tokens.items():
            assert any(token in t for t in texts) == (j == k)
    # another account's password does not open a mailbox
    wrong = dict(os.environ, LAB_PASSWORD=sandbox_class["accounts"][1]["password"], LAB_CA=sandbox_class["ca_file"])
    proc = subprocess.run(netns_exec(sandbox_class["instance"], "ecs3", [
        "/usr/bin/python3", "-c", SEND_AND_READ, sandbox_class["accounts"][2]["user"], "x"]),
        capture_output=True, text=True, timeout=60, env=wrong, check=False)
    assert proc.returncode != 0 and "535" in proc.stderr


@pytest.fixture()
def throwaway(sandbox_instance: str) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (network namespaces): run the integration tests as root")
    name = (sandbox_instance[:6] + "cl")[:8]
    sb.down(name, progress=lambda _m: None)
    yield name
    sb.down(name, progress=lambda _m: None)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, stdin=subprocess.DEVNULL, check=False)


def test_up_targets_is_idempotent_rebuilds_on_another_count_and_down_removes_every_target(throwaway: str) -> None:
    name = throwaway
    res = _cli("sandbox", "up", "--instance", name, "--targets", "3", "--json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    state = sb.read_state(name)
    assert [a["address"] for a in state["accounts"]] == ["student@lab.test", "student2@lab.test", "student3@lab.test"]
    for a in state["accounts"]:
        assert a["password"] not in res.stdout
    assert all(a["password"].startswith("(in ") for a in shown["accounts"])
    assert len({a["password"] for a in state["accounts"]}) == 3
    # Dovecot's users file has one salted hash per account, never a password
    users = (Path(state["srv_dir"]) / "dovecot/users").read_text()
    assert users.count("{SSHA256}") == 3 and not any(a["password"] in users for a in state["accounts"])

    # same count, or none: nothing changes
    before = sb.state_path(name).read_bytes()
    again: list[str] = []
    assert sb.up(name, targets=3, progress=again.append) == state
    assert sb.up(name, progress=again.append) == state
    assert sb.state_path(name).read_bytes() == before
    assert sum("nothing changed" in m for m in again) == 2

    # a stray process on ecs3 (a tcpdump left by a run, say) goes with `down` too
    stray = subprocess.Popen(netns_exec(name, "ecs3", ["sleep", "300"]), start_new_session=True)
    pids = [*state["pids"].values(), stray.pid]

    # another count rebuilds: two targets, new keys, and ecs3 is gone
    said: list[str] = []
    smaller = sb.up(name, targets=2, progress=said.append)
    assert any("running with 3 target(s), 2 asked; rebuilding it (target ecs3 and its account, mail included, go)"
               in m for m in said)
    assert [t["name"] for t in smaller["targets"]] == ["ecs", "ecs2"]
    assert smaller["targets"][0]["host_key"] != state["targets"][0]["host_key"]
    assert not network.netns_exists(Layout(name).target_ns(3))
    assert stray.wait(timeout=10) is not None
    assert sb.status(name)["healthy"]
    pids += list(smaller["pids"].values())

    bad = _cli("sandbox", "up", "--instance", name, "--targets", "0")
    assert bad.returncode == 2 and "bad number of sandbox targets 0" in bad.stderr
    assert "Traceback" not in bad.stderr

    res = _cli("sandbox", "down", "--instance", name)
    assert res.returncode == 0, res.stderr
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"lr-{name}-" not in links
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"lr-{name}-" not in netns
    assert not list(Path("/etc/netns").glob(f"lr-{name}-*"))
    for pid in pids:
        assert not services.pid_alive(pid), f"process {pid} survived `down`"
    assert not Layout(name).state_dir.exists() and not Layout(name).srv_dir.exists()
    assert name not in read_allocations()
    fdb = subprocess.run(["bridge", "fdb", "show"], capture_output=True, text=True, check=False).stdout
    assert f"lr-{name}-" not in fdb


def test_down_without_a_state_file_removes_every_target(throwaway: str) -> None:
    sb.up(throwaway, targets=3, progress=lambda _m: None)
    sb.state_path(throwaway).unlink()  # as after a crash between building and writing the state
    sb.down(throwaway, progress=lambda _m: None)
    for k in (1, 2, 3):
        assert not network.netns_exists(Layout(throwaway).target_ns(k))
        assert not network.link_exists(Layout(throwaway).veth_target(k))
