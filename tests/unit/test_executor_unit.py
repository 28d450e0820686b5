"""Executors without a server: host-key decisions, config parsing, the shell wrapping, and the
LocalExecutor (real processes and sockets on this machine)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from labrunner.config.model import TargetSpec
from labrunner.errors import CommandError, CommandTimeout, ConnectError, HostKeyError, ToolMissing, UsageError
from labrunner.executor import _wire, connect
from labrunner.executor.local import LocalExecutor
from labrunner.executor.ssh import (
    HostKeyCheck,
    SSHExecutor,
    _channel_error,
    fingerprint,
    known_hosts_name,
    normalize_fingerprint,
    parse_jump,
    ssh_config_lookup,
)

paramiko = pytest.importorskip("paramiko")


def _keygen(tmp: Path, name: str, kind: str = "ed25519") -> tuple[object, Path]:
    path = tmp / name
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return paramiko.PKey.from_path(str(path)), path


def _keygen_fp(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


# --- fingerprints ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_fingerprint_matches_ssh_keygen(tmp_path: Path, kind: str) -> None:
    key, path = _keygen(tmp_path, f"k_{kind}", kind)
    assert fingerprint(key) == _keygen_fp(path.with_suffix(".pub"))


def test_normalize_fingerprint_accepts_what_users_paste() -> None:
    fp = "SHA256:j4tRvjQ1LNkIcVhAu2Xh4ltYoUY+eS7VOnFk95P7m+g"
    assert normalize_fingerprint(fp) == fp
    assert normalize_fingerprint(fp + "=") == fp
    assert normalize_fingerprint(f"256 {fp} root@vm (ED25519)") == fp
    with pytest.raises(UsageError, match="not a SHA256 fingerprint"):
        normalize_fingerprint("MD5:aa:bb")


def test_known_hosts_name_uses_brackets_for_other_ports() -> None:
    assert known_hosts_name("203.0.113.7", 22) == "203.0.113.7"
    assert known_hosts_name("203.0.113.7", 2222) == "[203.0.113.7]:2222"


# --- host key decisions ---------------------------------------------------------------


def _check(tmp: Path, **kw: object) -> HostKeyCheck:
    args: dict = {"host": "203.0.113.7", "port": 22, "pinned": None, "files": [tmp / "known_hosts"],
                  "record_to": None}
    args.update(kw)
    return HostKeyCheck(**args)


def test_unknown_key_is_refused_with_its_fingerprint_and_how_to_trust_it(tmp_path: Path) -> None:
    key, _ = _keygen(tmp_path, "server")
    with pytest.raises(HostKeyError) as info:
        _check(tmp_path).verify(key)
    fp = fingerprint(key)
    assert "unknown" in str(info.value) and fp in str(info.value)
    assert f'target.host_key: "{fp}"' in (info.value.hint or "")
    assert "trust_on_first_use" in (info.value.hint or "")


def test_changed_key_is_refused_even_with_trust_on_first_use(tmp_path: Path) -> None:
    old, _ = _keygen(tmp_path, "old")
    new, _ = _keygen(tmp_path, "new")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"203.0.113.7 {old.get_name()} {old.get_base64()}\n")
    check = _check(tmp_path, record_to=kh)
    check.verify(old)
    with pytest.raises(HostKeyError) as info:
        check.verify(new)
    assert "CHANGED" in str(info.value)
    assert fingerprint(new) in str(info.value) and fingerprint(old) in str(info.value)
    assert "ssh-keygen -R '203.0.113.7'" in (info.value.hint or "")
    assert kh.read_text().count("\n") == 1  # nothing recorded


def test_hashed_known_hosts_entries_are_found(tmp_path: Path) -> None:
    key, _ = _keygen(tmp_path, "server")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[203.0.113.7]:2222 {key.get_name()} {key.get_base64()}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "203.0.113.7" not in kh.read_text()
    _check(tmp_path, port=2222).verify(key)


def test_pinned_fingerprint_decides_alone(tmp_path: Path) -> None:
    key, _ = _keygen(tmp_path, "server")
    other, _ = _keygen(tmp_path, "other")
    _check(tmp_path, pinned=fingerprint(key)).verify(key)
    with pytest.raises(HostKeyError, match="not the pinned one"):
        _check(tmp_path, pinned=fingerprint(other)).verify(key)


def test_known_hosts_markers_are_understood(tmp_path: Path) -> None:
    """F18: an `@cert-authority` line blocks neither a pinned key nor the file's other entries;
    a `@revoked` key is refused, known or pinned; a bad line is named with its number."""
    key, _ = _keygen(tmp_path, "server")
    ca, _ = _keygen(tmp_path, "ca")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"# comment\n@cert-authority *.example.com {ca.get_name()} {ca.get_base64()}\n"
                  f"203.0.113.7 {key.get_name()} {key.get_base64()}\n")
    _check(tmp_path).verify(key)
    _check(tmp_path, pinned=fingerprint(key)).verify(key)
    kh.write_text(kh.read_text() + f"@revoked * {key.get_name()} {key.get_base64()}\n")
    for check in (_check(tmp_path), _check(tmp_path, pinned=fingerprint(key))):
        with pytest.raises(HostKeyError, match="REVOKED") as info:
            check.verify(key)
        assert fingerprint(key) in str(info.value)
    kh.write_text(kh.read_text() + "203.0.113.8 ssh-ed25519 !!not-base64!!\n")
    with pytest.raises(UsageError, match=r"known_hosts:5: cannot read this known_hosts line"):
        _check(tmp_path)


def test_trust_on_first_use_records_a_0600_line_ssh_understands(tmp_path: Path) -> None:
    key, _ = _keygen(tmp_path, "server")
    kh = tmp_path / "sub" / "known_hosts"
    old = os.umask(0)
    try:
        _check(tmp_path, port=2200, files=[kh], record_to=kh).verify(key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    found = subprocess.run(["ssh-keygen", "-F", "[203.0.113.7]:2200", "-f", str(kh)],
                           capture_output=True, text=True)
    assert found.returncode == 0 and key.get_base64() in found.stdout
    _check(tmp_path, port=2200, files=[kh]).verify(key)  # known now, without TOFU


def test_known_key_type_is_asked_for_first(tmp_path: Path) -> None:
    rsa, _ = _keygen(tmp_path, "rsa", "rsa")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"203.0.113.7 ssh-rsa {rsa.get_base64()}\n")
    order = _check(tmp_path).preferred_algorithms(["ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512",
                                                   "rsa-sha2-256"])
    assert order[:2] == ["rsa-sha2-512", "rsa-sha2-256"] and len(order) == 4


def test_unreadable_known_hosts_is_a_usage_error(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("203.0.113.7 ssh-ed25519 !!!notbase64\n")
    with pytest.raises(UsageError, match="known_hosts"):
        _check(tmp_path).known_types()  # constructing already reads it


# --- ~/.ssh/config and ProxyJump ------------------------------------------------------------


def test_ssh_config_lookup(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Host ecs\n  HostName 203.0.113.7\n  User root\n  Port 2222\n"
                   "  IdentityFile ~/.ssh/lab_key\n  ProxyJump jump@bastion:2200\n")
    opts = ssh_config_lookup("ecs", cfg)
    assert opts["hostname"] == "203.0.113.7" and opts["user"] == "root" and opts["port"] == "2222"
    assert opts["identityfile"][0].endswith("/.ssh/lab_key")
    assert parse_jump(opts["proxyjump"]) == ("jump", "bastion", 2200)
    assert ssh_config_lookup("ecs", tmp_path / "missing") == {}


def test_ssh_config_runs_no_command(tmp_path: Path) -> None:
    """F19: `Match exec` is never run (its block does not apply), and a ProxyCommand is refused
    with the way out instead of being ignored (a direct connection would bypass it)."""
    marker = tmp_path / "match-exec-ran"
    cfg = tmp_path / "config"
    cfg.write_text(f'Match host ecs exec "touch {marker}"\n  User fromexec\n'
                   f'Match !exec "touch {marker}"\n  Port 2201\n'
                   "Host ecs\n  HostName 203.0.113.7\n  User root\n"
                   "Host viaproxy\n  HostName 203.0.113.8\n  ProxyCommand nc -x proxy:1080 %h %p\n"
                   "Host direct\n  ProxyCommand none\n")
    opts = ssh_config_lookup("ecs", cfg)
    assert not marker.exists()
    assert opts["user"] == "root" and opts["port"] == "2201"  # exec counts as failed, !exec as passed
    with pytest.raises(UsageError, match="ProxyCommand is set for 'viaproxy'") as info:
        SSHExecutor(TargetSpec(host="viaproxy"), ssh_config=cfg, user_known_hosts=tmp_path / "kh")
    assert "ProxyJump" in (info.value.hint or "") and "ProxyCommand none" in (info.value.hint or "")
    assert "proxycommand-from" not in ssh_config_lookup("direct", cfg)
    assert not marker.exists()


@pytest.mark.parametrize(("spec", "expected"), [
    ("bastion", (None, "bastion", None)),
    ("u@b:2200,u2@c", ("u", "b", 2200)),
    ("ssh://u@[2001:db8::1]:22", ("u", "2001:db8::1", 22)),
])
def test_parse_jump(spec: str, expected: tuple) -> None:
    assert parse_jump(spec) == expected


def test_missing_key_file_is_one_clear_line(tmp_path: Path) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    threading.Thread(target=lambda: srv.accept()[0].sendall(b"SSH-2.0-x\r\n"), daemon=True).start()
    target = TargetSpec(host="127.0.0.1", port=port, key=str(tmp_path / "nope"), connect_timeout=2)
    with pytest.raises((UsageError, ConnectError)):
        connect(target)
    srv.close()


# --- channel failure wording ----------------------------------------------------------------


def test_channel_errors_say_what_to_fix() -> None:
    e = _channel_error(2, "Connection refused", "smtp.qq.com:25", "root@ecs")
    assert "connection refused" in str(e) and "465 or 587" in (e.hint or "")
    e = _channel_error(1, "open failed", "imap.qq.com:993", "root@ecs")
    assert "administratively prohibited" in str(e) and "AllowTcpForwarding" in (e.hint or "")
    e = _channel_error(2, "Name or service not known", "nosuch:25", "root@ecs")
    assert "cannot be resolved on root@ecs" in str(e)


# --- the shell wrapping ----------------------------------------------------------------------


def test_stderr_splitter_takes_only_the_marker() -> None:
    s = _wire.StderrSplitter()
    assert s.feed(b"labrunner-pg") == b""
    assert s.feed(b"id 4242\nwarn") == b"warn"
    assert s.pgid == 4242 and s.feed(b"ing\n") == b"ing\n"
    s = _wire.StderrSplitter()
    assert s.feed(b"sh: 1: oops\n") == b"sh: 1: oops\n" and s.pgid is None


def test_wrapped_command_reports_its_process_group() -> None:
    line = _wire.wrap("echo out; echo err >&2")
    p = subprocess.run(["/bin/sh", "-c", line], capture_output=True, start_new_session=True)
    split = _wire.StderrSplitter()
    rest = split.feed(p.stderr)
    assert p.stdout == b"out\n" and rest == b"err\n" and split.pgid and split.pgid > 1


def test_kill_command_stops_a_whole_group() -> None:
    token = str(300 + uuid.uuid4().int % 600)
    p = subprocess.Popen(["/bin/sh", "-c", f"sleep {token}1 & sleep {token}2; :"], start_new_session=True)
    time.sleep(0.2)
    reaper = threading.Thread(target=p.wait)  # as sshd does: a zombie leader would look alive
    reaper.start()
    subprocess.run(["/bin/sh", "-c", _wire.kill_command(p.pid)], check=True, timeout=10)
    reaper.join(5)
    left = subprocess.run(["pgrep", "-f", f"sleep {token}[12]"], capture_output=True)
    assert left.returncode == 1, left.stdout


# --- LocalExecutor: real processes ------------------------------------------------------------


@pytest.fixture()
def local() -> LocalExecutor:
    return LocalExecutor(TargetSpec(host="localhost", local=True, command_timeout=30))


def test_local_run_collects_both_streams(local: LocalExecutor) -> None:
    r = local.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(CommandError) as info:
        local.run("echo bad thing >&2; exit 4")
    assert "exit code 4" in str(info.value) and "bad thing" in str(info.value)
    assert info.value.exit_code == 4


def test_local_missing_program_is_tool_missing(local: LocalExecutor) -> None:
    with pytest.raises(ToolMissing, match="no-such-tool-xyz is not installed"):
        local.run("no-such-tool-xyz --version")


def test_local_large_output_and_input(local: LocalExecutor) -> None:
    r = local.run("head -c 20971520 /dev/zero; head -c 3000000 /dev/zero >&2")
    assert len(r.stdout) == 20 * 1024 * 1024 and len(r.stderr) == 3000000
    data = os.urandom(3_000_000)
    r = local.run("wc -c", input=data)
    assert r.stdout.strip() == b"3000000"


def test_local_deadline_stops_the_whole_tree(local: LocalExecutor) -> None:
    token = str(300 + uuid.uuid4().int % 600)
    with pytest.raises(CommandTimeout, match="deadline"):
        local.run(f"sleep {token}3 & sleep {token}4; echo", timeout=0.5)
    left = subprocess.run(["pgrep", "-f", f"sleep {token}[34]"], capture_output=True)
    assert left.returncode == 1, left.stdout


def test_local_deadline_stops_a_child_left_holding_the_output(local: LocalExecutor) -> None:
    """The shell has exited, but a child it started in the background keeps stdout open: the
    deadline passes waiting for EOF, and the child goes with its group. What a command leaves
    running on purpose after a normal end (its output closed) stays."""
    token = str(300 + uuid.uuid4().int % 600)
    with pytest.raises(CommandTimeout):
        local.run(f"sleep {token}5 & echo started", timeout=1.0)
    left = subprocess.run(["pgrep", "-f", f"sleep {token}5"], capture_output=True)
    assert left.returncode == 1, left.stdout
    local.run(f"sleep {token}6 >/dev/null 2>&1 </dev/null & echo started", timeout=5)
    left = subprocess.run(["pgrep", "-f", f"sleep {token}6"], capture_output=True)
    try:
        assert left.returncode == 0
    finally:
        subprocess.run(["pkill", "-f", f"sleep {token}6"])


@pytest.mark.parametrize(("script", "what"), [
    ("yes labrunner-flood-{t} | head -c 40000000", "MiB of output"),
    ("yes labrunner-flood-{t} | head -c 40000000 >&2", "MiB of error output"),
])
def test_local_command_printing_without_end_is_stopped(local: LocalExecutor, script: str, what: str) -> None:
    """F16 holds for the local executor too (run() is the SSH executor's): what a command prints
    is capped, it is stopped with one clear error, and the executor still works."""
    from labrunner.executor.command import MAX_STDERR, MAX_STDOUT

    assert MAX_STDOUT < 40_000_000 and MAX_STDERR < 40_000_000
    t = uuid.uuid4().hex[:12]
    with pytest.raises(CommandError, match=what) as info:
        local.run(script.format(t=t), timeout=60)
    assert "stopped" in str(info.value) and "~/.bashrc" in (info.value.hint or "")
    left = subprocess.run(["pgrep", "-f", f"labrunner-flood-{t}"], capture_output=True)
    assert left.returncode == 1, left.stdout
    assert local.run("echo still-here").text() == "still-here\n"


def test_local_process_streams_and_kill(local: LocalExecutor) -> None:
    p = local.start("echo one; echo warn >&2; cat; echo done")
    assert p.read_stdout(100, 5) == b"one\n"
    assert p.read_stderr_line(5) == "warn"
    with pytest.raises(TimeoutError):
        p.read_stdout(100, 0.2)
    p.close_stdin()
    assert p.read_stdout(100, 5) == b"done\n"
    assert p.wait(5) == 0 and p.read_stderr_line(5) is None
    q = local.start("sleep 600")
    q.kill()
    assert q.wait(5) != 0


def test_local_open_connection(local: LocalExecutor) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    conn = local.open_connection("127.0.0.1", port, 5)
    peer, _ = srv.accept()
    peer.sendall(b"220 hi\r\n")
    assert conn.recv(100) == b"220 hi\r\n"
    conn.close()
    peer.close()
    srv.close()
    with pytest.raises(ConnectError, match="connection refused"):
        local.open_connection("127.0.0.1", port, 5)
