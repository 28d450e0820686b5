"""SSHExecutor against the sandbox's real OpenSSH server on `ecs` (user with passwordless sudo).

Each point of the issue is exercised for real: host keys (pinned, known_hosts, unknown,
changed, trust on first use), ~/.ssh/config and ProxyJump, authentication refused,
unreachable/refused hosts, a silent server (connect deadline), 20 MiB of output, deadlines
that stop the command on the target (checked with pgrep there), sudo, and TCP connections
that leave from the target (names resolved there, refused, blocked port 25).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner import sandbox as sb
from labrunner.config.model import TargetSpec
from labrunner.errors import CommandError, CommandTimeout, ConnectError, HostKeyError
from labrunner.executor import connect
from labrunner.executor.ssh import SSHExecutor

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own: the user's ~/.ssh (known_hosts, config, agent) must not take part."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def ecs_target(state: dict[str, Any], **changes: Any) -> TargetSpec:
    e = state["ecs"]
    base = TargetSpec(host=e["host"], port=e["port"], user=e["user"], key=e["key"],
                      known_hosts=e["known_hosts"], connect_timeout=10, command_timeout=60)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def ex(sandbox: dict[str, Any]) -> Iterator[SSHExecutor]:
    with SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent/known_hosts")) as executor:
        yield executor


def _token() -> str:
    return str(40000 + uuid.uuid4().int % 20000)


def _running(ex: SSHExecutor, pattern: str) -> str:
    """Processes on the target whose command line matches; the [x] keeps pgrep from seeing itself."""
    res = ex.run(["pgrep", "-af", f"[{pattern[0]}]{pattern[1:]}"], check=False, timeout=15)
    return res.text()


# --- commands ---------------------------------------------------------------------------


def test_run_gives_output_status_and_clean_stderr(ex: SSHExecutor) -> None:
    r = ex.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(CommandError) as info:
        ex.run(["ls", "/no/such/dir"])
    assert "exit code 2" in str(info.value) and "No such file" in str(info.value)


def test_a_command_printing_20_mib_completes(ex: SSHExecutor) -> None:
    # Both streams at once: a reader that drained only stdout would hang here.
    r = ex.run("head -c 20971520 /dev/urandom | tee /dev/stderr | sha256sum", timeout=120)
    assert len(r.stderr) == 20 * 1024 * 1024
    assert r.stdout.split()[0].decode() == hashlib.sha256(r.stderr).hexdigest()
    big = ex.run("head -c 20971520 /dev/zero", timeout=120)
    assert big.stdout == bytes(20 * 1024 * 1024)


def test_a_started_command_streams_more_than_one_ssh_window(ex: SSHExecutor) -> None:
    """tcpdump's stream comes through start(): reading it must give the SSH window back, else
    the target stops sending once one window (16 MiB) has come and a long capture stalls."""
    from labrunner.executor.ssh import _WINDOW

    size = _WINDOW + (4 << 20)
    proc = ex.start(f"head -c {size} /dev/zero")
    got = 0
    try:
        while data := proc.read_stdout(1 << 16, 30):  # a stalled stream: TimeoutError
            got += len(data)
        assert got == size and proc.wait(10) == 0
    finally:
        proc.kill()


def test_input_is_sent_while_output_is_read(ex: SSHExecutor) -> None:
    data = os.urandom(8 * 1024 * 1024)
    r = ex.run("cat", input=data, timeout=120)
    assert r.stdout == data


def test_deadline_stops_the_command_on_the_target(ex: SSHExecutor) -> None:
    t = _token()
    with pytest.raises(CommandTimeout, match="deadline of 1 s"):
        ex.run(f"sleep {t}1 & sleep {t}2; echo never", timeout=1)
    assert _running(ex, f"sleep {t}") == ""


def test_started_process_is_killed_with_its_children(ex: SSHExecutor) -> None:
    t = _token()
    p = ex.start(f"sh -c 'sleep {t}5' & sleep {t}6; echo never")
    ex.run("sleep 0.3")
    assert _running(ex, f"sleep {t}") != ""
    p.kill()
    assert _running(ex, f"sleep {t}") == ""


def test_session_tuple_is_this_connection(ex: SSHExecutor, sandbox: dict[str, Any]) -> None:
    client, cport, server, sport = ex.session_tuple() or ("", 0, "", 0)
    assert (server, sport) == (sandbox["ecs"]["host"], 22)
    assert client == sandbox["gateway"]
    local = ex.transport.sock.getsockname()  # type: ignore[union-attr]
    assert cport == local[1]


def test_the_runs_questions_come_in_one_round_trip(sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """TargetFacts.ask learns our SSH connection, the addresses of the servers and the routes to
    them at once: what the capture then asks (session_tuple, resolve, route_interface) costs no
    round trip more; the answers belong to this connection only."""
    with SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent/known_hosts")) as fresh:
        commands: list[str] = []
        run = fresh.run
        monkeypatch.setattr(fresh, "run", lambda cmd, **kw: commands.append(str(cmd)) or run(cmd, **kw))
        fresh.facts.ask(["mail.lab.test"])
        tup = fresh.session_tuple()
        assert tup is not None and tup[2:] == (sandbox["ecs"]["host"], 22)
        assert fresh.facts.resolve("mail.lab.test") and fresh.facts.route_interface("mail.lab.test") == "eth0"
        assert len(commands) == 1, commands
    with SSHExecutor(ecs_target(sandbox), user_known_hosts=Path("/nonexistent/known_hosts")) as other:
        assert other.facts.ssh_connection() != fresh.facts.ssh_connection()  # its own, asked anew


# --- TCP connections from the target ----------------------------------------------------------


def test_open_connection_leaves_from_the_target_and_resolves_there(ex: SSHExecutor) -> None:
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("smtp.lab.test", 25)  # only the target knows this name
    s = ex.open_connection("smtp.lab.test", 25, 10)
    try:
        assert s.recv(512).startswith(b"220 ")
        s.sendall(b"QUIT\r\n")
        assert s.recv(512).startswith(b"221")
    finally:
        s.close()


def test_open_connection_refused_and_unknown_names(ex: SSHExecutor, sandbox: dict[str, Any]) -> None:
    with pytest.raises(ConnectError, match="connection refused") as info:
        ex.open_connection(sandbox["mail"]["host"], 2, 10)
    assert "2" in str(info.value)
    with pytest.raises(ConnectError, match="cannot be resolved on"):
        ex.open_connection("no-such-host.lab.test", 25, 10)


def test_blocked_port_25_names_the_cloud_rule(ex: SSHExecutor, sandbox_instance: str) -> None:
    sb.block_port(sandbox_instance, 25, how="reject")
    try:
        with pytest.raises(ConnectError) as info:
            ex.open_connection("smtp.lab.test", 25, 5)
        assert "smtp.lab.test:25" in str(info.value) and "465 or 587" in (info.value.hint or "")
        sb.block_port(sandbox_instance, 25, how="drop")
        with pytest.raises(ConnectError) as info:
            ex.open_connection("smtp.lab.test", 25, 2)
        assert "no answer" in str(info.value) and "465 or 587" in (info.value.hint or "")
        s = ex.open_connection("smtp.lab.test", 465, 5)  # the way around it works
        s.close()
    finally:
        sb.unblock_port(sandbox_instance, 25)


# --- host keys ----------------------------------------------------------------------------


def test_pinned_fingerprint_is_enough(sandbox: dict[str, Any], tmp_path: Path) -> None:
    t = ecs_target(sandbox, known_hosts=str(tmp_path / "empty"), host_key=sandbox["ecs"]["host_key"])
    with connect(t) as ex2:
        assert ex2.run("echo ok").text() == "ok\n"


def test_unknown_host_key_is_refused_with_the_way_to_trust_it(sandbox: dict[str, Any], tmp_path: Path) -> None:
    t = ecs_target(sandbox, known_hosts=str(tmp_path / "known_hosts"))
    with pytest.raises(HostKeyError) as info:
        connect(t)
    fp = sandbox["ecs"]["host_key"]
    assert "unknown" in str(info.value) and fp in str(info.value)
    assert f'target.host_key: "{fp}"' in (info.value.hint or "")


def test_changed_host_key_is_refused(sandbox: dict[str, Any], tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{sandbox['ecs']['host']} {other[0]} {other[1]}\n")
    with pytest.raises(HostKeyError, match="CHANGED") as info:
        connect(ecs_target(sandbox, known_hosts=str(kh), trust_on_first_use=True))
    assert sandbox["ecs"]["host_key"] in str(info.value)
    assert "ssh-keygen -R" in (info.value.hint or "")
    with pytest.raises(HostKeyError, match="not the pinned one") as info:
        connect(ecs_target(sandbox, host_key="SHA256:" + "A" * 43))
    # the key that says so, by its name in the profile (an inventory's file is not lab.yaml)
    assert f"target.host_key pins SHA256:{'A' * 43}" in str(info.value)


def test_trust_on_first_use_records_then_verifies(sandbox: dict[str, Any], tmp_path: Path) -> None:
    kh = tmp_path / "ssh" / "known_hosts"
    with connect(ecs_target(sandbox, known_hosts=str(kh), trust_on_first_use=True)) as ex2:
        ex2.run("true")
    assert oct(kh.stat().st_mode & 0o777) == "0o600"
    listed = subprocess.run(["ssh-keygen", "-lf", str(kh)], capture_output=True, text=True, check=True)
    assert sandbox["ecs"]["host_key"] in listed.stdout
    with connect(ecs_target(sandbox, known_hosts=str(kh))) as ex3:
        ex3.run("true")


# --- ~/.ssh/config, ProxyJump, authentication ------------------------------------------------


def test_ssh_config_and_proxy_jump_are_honoured(sandbox: dict[str, Any], _home: Path) -> None:
    e = sandbox["ecs"]
    ssh = _home / ".ssh"
    ssh.mkdir(exist_ok=True)
    (ssh / "config").write_text(
        f"Host labecs\n  HostName {e['host']}\n  User {e['user']}\n  Port {e['port']}\n"
        f"  IdentityFile {e['key']}\n"
        f"Host viajump\n  HostName 127.0.0.1\n  User {e['user']}\n  IdentityFile {e['key']}\n"
        f"  ProxyJump labecs\n"
    )
    kh = Path(e["known_hosts"]).read_text().split()
    (ssh / "known_hosts").write_text(f"{e['host']} {kh[1]} {kh[2]}\n127.0.0.1 {kh[1]} {kh[2]}\n")
    with connect(TargetSpec(host="labecs")) as direct:
        assert direct.run("whoami").text().strip() == e["user"]
    # Through the jump host, the target's sshd sees us coming from itself (127.0.0.1).
    with connect(TargetSpec(host="viajump")) as jumped:
        assert (jumped.session_tuple() or ("",))[0] == "127.0.0.1"


def test_inline_proxy_jump_chain_uses_every_hop(sandbox_class: dict[str, Any], _home: Path) -> None:
    # ecs → ecs3 → ecs2: ecs2's sshd must see the connection come from ecs3, the last hop. With
    # only the first hop used it would come from ecs.
    ecs, ecs2, ecs3 = sandbox_class["targets"][:3]
    ssh = _home / ".ssh"
    ssh.mkdir(exist_ok=True)
    # The hops are named inline only; their key comes from ~/.ssh/config, as OpenSSH's -J does.
    (ssh / "config").write_text(f"Host {ecs['host']} {ecs3['host']}\n  IdentityFile {ecs['key']}\n")
    (ssh / "known_hosts").write_text("".join(
        f"{t['host']} {' '.join(Path(t['known_hosts']).read_text().split()[1:3])}\n" for t in (ecs, ecs2, ecs3)))
    chain = f"{ecs['user']}@{ecs['host']}:{ecs['port']},{ecs3['user']}@{ecs3['host']}"
    target = TargetSpec(host=ecs2["host"], user=ecs2["user"], key=ecs2["key"], proxy_jump=chain,
                        connect_timeout=10, command_timeout=60)
    with connect(target) as jumped:
        assert (jumped.session_tuple() or ("",))[0] == ecs3["host"]
        assert jumped.run("hostname -I").text().split()[0] == ecs2["host"]


def test_authentication_refused_is_one_line(sandbox: dict[str, Any], tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    with pytest.raises(ConnectError, match="authentication refused") as info:
        connect(ecs_target(sandbox, key=str(tmp_path / "stranger")))
    assert str(tmp_path / "stranger") in str(info.value) and "authorized_keys" in (info.value.hint or "")


def test_connection_refused_and_unreachable(sandbox: dict[str, Any]) -> None:
    with pytest.raises(ConnectError, match="connection refused"):
        connect(ecs_target(sandbox, port=2))
    # An address of the sandbox subnet nobody has: ARP gets no answer.
    nobody = sandbox["subnet"].rsplit(".", 1)[0] + ".250"
    with pytest.raises(ConnectError) as info:
        connect(ecs_target(sandbox, host=nobody, connect_timeout=2))
    assert nobody in str(info.value)
    assert "no answer" in str(info.value) or "unreachable" in str(info.value)


def test_a_silent_server_hits_the_connect_deadline(sandbox: dict[str, Any]) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True).start()
    try:
        with pytest.raises(ConnectError, match="did not finish within 1 s"):
            connect(TargetSpec(host="127.0.0.1", port=srv.getsockname()[1], user="x", connect_timeout=1))
    finally:
        srv.close()
        for s in held:
            s.close()


def test_agent_keys_are_used(sandbox: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            threading.Event().wait(0.02)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", sandbox["ecs"]["key"]], check=True, capture_output=True)
        with connect(ecs_target(sandbox, key=None)) as ex2:
            assert ex2.run("whoami").text().strip() == sandbox["ecs"]["user"]
    finally:
        agent.terminate()
        agent.wait(5)


def test_input_a_command_does_not_read_is_dropped(ex: SSHExecutor) -> None:
    r = ex.run("echo ignored", input=os.urandom(4 * 1024 * 1024), timeout=60)
    assert r.stdout == b"ignored\n"


@pytest.mark.parametrize(("script", "what"), [
    ("yes labrunner-flood-{t} | head -c 200000000", "MiB of output"),
    ("yes labrunner-flood-{t} | head -c 50000000 >&2", "MiB of error output"),
])
def test_a_command_printing_without_end_is_stopped(ex: SSHExecutor, script: str, what: str) -> None:
    """F16: what a target prints is bounded (a shell printing 300 MB per command took 1.5 GB
    here): one clear error, the command stopped on the target, the connection still usable."""
    from labrunner.errors import CommandError
    from labrunner.executor.command import MAX_STDERR, MAX_STDOUT

    t = _token()
    with pytest.raises(CommandError, match=what) as info:
        ex.run(script.format(t=t), timeout=60)
    assert "stopped" in str(info.value) and "~/.bashrc" in (info.value.hint or "")
    assert MAX_STDOUT < 200_000_000 and MAX_STDERR < 50_000_000
    assert _running(ex, f"labrunner-flood-{t}") == ""
    assert ex.run("echo still-here").text() == "still-here\n"
