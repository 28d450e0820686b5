"""The sandbox's real servers, driven the way the lab drives them: from inside `ecs`.

Every client here runs in ecs's network namespace (`ip netns exec`), so its traffic leaves
from ecs as in the lab; TLS is always verified against the sandbox CA.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from labrunner.sandbox import block_port, netns_exec, unblock_port

pytestmark = pytest.mark.integration

State = dict[str, Any]


def in_ecs(state: State, code: str, *, secret: str = "", timeout: float = 30) -> Any:
    """Run Python code in ecs's namespace with ecs's python3; returns what it prints as JSON.

    The password goes through the environment, not argv, so it is not in the process list.
    """
    argv = netns_exec(state["instance"], "ecs", ["/usr/bin/python3", "-c", code])
    env = dict(os.environ, LAB_PASSWORD=secret, LAB_CA=state["ca_file"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert proc.returncode == 0, f"ecs python failed: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- SSH -------------------------------------------------------------------------------


def _ssh(state: State, known_hosts: str) -> Any:
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(known_hosts)
    client.connect(
        state["ecs"]["host"], port=state["ecs"]["port"], username=state["ecs"]["user"],
        key_filename=state["ecs"]["key"], look_for_keys=False, allow_agent=False, timeout=10,
    )
    return client


def _exec(client: Any, command: str) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(command, timeout=20)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out + err


def test_ssh_login_with_host_key_verification(sandbox: State) -> None:
    client = _ssh(sandbox, sandbox["ecs"]["known_hosts"])
    try:
        key = client.get_transport().get_remote_server_key()
        digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
        assert f"SHA256:{digest}" == sandbox["ecs"]["host_key"]
        code, out = _exec(client, "id -un")
        assert (code, out.strip()) == (0, sandbox["ecs"]["user"])
        # No sudo (the target shares this machine's files: root there is root here); tcpdump
        # captures through its file capabilities, for the group labrunner-cap (security review F4).
        code, out = _exec(client, "sudo -n id -u")
        assert code != 0 and out.strip() != "0", out
        code, out = _exec(client, "id -nG; /usr/sbin/getcap $(command -v tcpdump)")
        assert code == 0 and "labrunner-cap" in out.split("\n")[0].split() and "cap_net_raw" in out, out
        # The lab names resolve in sessions under sshd (ip netns exec's /etc/hosts bind mount).
        code, out = _exec(client, "getent hosts smtp.lab.test pop.lab.test imap.lab.test mail.lab.test")
        assert code == 0
        assert {line.split()[0] for line in out.splitlines()} == {sandbox["mail"]["host"]}
        code, out = _exec(client, "ip -o -4 addr show dev eth0; cat /sys/class/net/eth0/mtu")
        assert sandbox["ecs"]["host"] + "/24" in out and out.split()[-1] == "1500"
        code, out = _exec(client, "command -v tcpdump python3")
        assert code == 0 and "tcpdump" in out and "python3" in out
    finally:
        client.close()


def test_ssh_rejects_unknown_host_key(sandbox: State, tmp_path: Path) -> None:
    import paramiko

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _ssh(sandbox, str(empty))


def test_ssh_refuses_a_key_it_does_not_know(sandbox: State, tmp_path: Path) -> None:
    import paramiko

    from labrunner.sandbox.keys import new_ssh_key

    stranger = tmp_path / "stranger"
    stranger.write_bytes(new_ssh_key("stranger").private_openssh)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(sandbox["ecs"]["known_hosts"])
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(sandbox["ecs"]["host"], username=sandbox["ecs"]["user"],
                       pkey=paramiko.Ed25519Key.from_private_key_file(str(stranger)),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


# --- mail ------------------------------------------------------------------------------

SEND = r"""
import json, os, smtplib, ssl, sys
token, mode, mech = sys.argv[1:4]
user, pw = "student@lab.test", os.environ["LAB_PASSWORD"]
ctx = ssl.create_default_context(cafile=os.environ["LAB_CA"])
msg = ("From: student@lab.test\r\nTo: student@lab.test\r\nSubject: lab " + token +
       "\r\n\r\nbody " + token + "\r\n")
if mode == "starttls":
    s = smtplib.SMTP("smtp.lab.test", 587, timeout=10)
    s.ehlo("ecs"); s.starttls(context=ctx); s.ehlo("ecs")
else:
    s = smtplib.SMTP_SSL("smtp.lab.test", 465, timeout=10, context=ctx)
    s.ehlo("ecs")
s.user, s.password = user, pw
code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()), initial_response_ok=False)
refused = s.sendmail(user, [user], msg)
print(json.dumps({"auth": code, "refused": refused, "cipher": s.sock.version(),
                  "local": s.sock.getsockname()[0]}))
s.quit()
"""


def _send(state: State, mode: str, mech: str = "LOGIN") -> str:
    token = uuid.uuid4().hex
    code = SEND.replace("sys.argv[1:4]", repr([token, mode, mech]))
    out = in_ecs(state, code, secret=state["account"]["password"])
    assert out["auth"] == 235 and out["refused"] == {}
    assert out["local"] == state["ecs"]["host"]  # the mail left from ecs
    return token


def _wait_delivered(state: State, tokens: list[str], timeout: float = 15) -> None:
    new = Path(state["maildir"]) / "new"
    cur = Path(state["maildir"]) / "cur"
    deadline = time.monotonic() + timeout
    while True:
        texts = [p.read_text(errors="replace") for d in (new, cur) for p in d.iterdir()]
        if all(any(t in x for x in texts) for t in tokens):
            return
        assert time.monotonic() < deadline, f"not delivered to {state['maildir']} within {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sent(sandbox: State) -> dict[str, str]:
    tokens = {"587": _send(sandbox, "starttls", "LOGIN"), "465": _send(sandbox, "tls", "PLAIN")}
    _wait_delivered(sandbox, list(tokens.values()))
    return tokens


READ = r"""
import imaplib, json, os, poplib, ssl
proto, port, tls = ARGS
user, pw = "student@lab.test", os.environ["LAB_PASSWORD"]
ctx = ssl.create_default_context(cafile=os.environ["LAB_CA"])
texts, secured = [], None
if proto == "pop3":
    if port == 995:
        c = poplib.POP3_SSL("pop.lab.test", 995, timeout=10, context=ctx)
    else:
        c = poplib.POP3("pop.lab.test", 110, timeout=10)
        if tls:
            c.stls(context=ctx)
    secured = hasattr(c.sock, "version") and c.sock.version()
    c.user(user); c.pass_(pw)
    for i in range(1, len(c.list()[1]) + 1):
        texts.append(b"\n".join(c.retr(i)[1]).decode(errors="replace"))
    c.quit()
else:
    if port == 993:
        c = imaplib.IMAP4_SSL("imap.lab.test", 993, timeout=10, ssl_context=ctx)
    else:
        c = imaplib.IMAP4("imap.lab.test", 143, timeout=10)
        if tls:
            c.starttls(ssl_context=ctx)
    secured = hasattr(c.sock, "version") and c.sock.version()
    c.login(user, pw)
    c.select("INBOX", readonly=True)
    for num in c.search(None, "ALL")[1][0].split():
        texts.append(c.fetch(num, "(RFC822)")[1][0][1].decode(errors="replace"))
    c.logout()
print(json.dumps({"texts": texts, "tls": secured}))
"""


@pytest.mark.parametrize(("proto", "port", "tls"), [
    ("pop3", 110, False), ("pop3", 110, True), ("pop3", 995, True),
    ("imap", 143, False), ("imap", 143, True), ("imap", 993, True),
])
def test_mail_sent_from_ecs_is_read_back(sandbox: State, sent: dict[str, str], proto: str, port: int,
                                          tls: bool) -> None:
    out = in_ecs(sandbox, READ.replace("ARGS", repr((proto, port, tls))), secret=sandbox["account"]["password"])
    assert bool(out["tls"]) == tls
    for via, token in sent.items():
        assert any(f"Subject: lab {token}" in t and f"body {token}" in t for t in out["texts"]), \
            f"the mail sent over {via} is not in {proto}:{port}"


def test_submission_requires_starttls_and_the_right_password(sandbox: State) -> None:
    code = r"""
import json, os, smtplib, ssl
ctx = ssl.create_default_context(cafile=os.environ["LAB_CA"])
s = smtplib.SMTP("smtp.lab.test", 587, timeout=10); s.ehlo("ecs")
before = s.has_extn("auth")
mail = s.mail("student@lab.test")[0]
s.rset(); s.starttls(context=ctx); s.ehlo("ecs")
try:
    s.login("student@lab.test", os.environ["LAB_PASSWORD"] + "x"); wrong = 235
except smtplib.SMTPAuthenticationError as e:
    wrong = e.smtp_code
print(json.dumps({"auth_before_tls": before, "mail_before_tls": mail, "wrong_password": wrong,
                  "auth_after_tls": s.has_extn("auth")}))
"""
    out = in_ecs(sandbox, code, secret=sandbox["account"]["password"])
    assert out == {"auth_before_tls": False, "mail_before_tls": 530, "wrong_password": 535,
                   "auth_after_tls": True}


def test_port_25_offers_auth_login_without_tls_like_the_seed(sandbox: State) -> None:
    # The telnet exercise: AUTH LOGIN by hand on port 25, base64 user and password.
    code = r"""
import base64, json, os, smtplib
s = smtplib.SMTP("smtp.lab.test", 25, timeout=10)
banner = s.ehlo("lab-client")[0]
auth = s.esmtp_features.get("auth", "")
r1 = s.docmd("AUTH LOGIN")
r2 = s.docmd(base64.b64encode(b"student@lab.test").decode())
r3 = s.docmd(base64.b64encode(os.environ["LAB_PASSWORD"].encode()).decode())
print(json.dumps({"ehlo": banner, "auth": auth, "codes": [r1[0], r2[0], r3[0]],
                  "prompts": [base64.b64decode(r1[1]).decode(), base64.b64decode(r2[1]).decode()]}))
s.quit()
"""
    out = in_ecs(sandbox, code, secret=sandbox["account"]["password"])
    assert out["ehlo"] == 250 and "LOGIN" in out["auth"].split()
    assert out["codes"] == [334, 334, 235]
    assert out["prompts"] == ["Username:", "Password:"]


def test_logs_and_files_do_not_hold_the_password(sandbox: State, sent: dict[str, str]) -> None:
    pw = sandbox["account"]["password"]
    forms = {pw, base64.b64encode(pw.encode()).decode(),
             base64.b64encode(b"\0student@lab.test\0" + pw.encode()).decode()}
    srv = Path(sandbox["srv_dir"])
    files = [p for p in srv.rglob("*") if p.is_file() and "Maildir" not in p.parts]
    assert any(p.name == "postfix.log" for p in files)
    for p in files:
        try:
            data = p.read_text(errors="replace")
        except OSError:
            continue  # sockets and fifos
        for f in forms:
            assert f not in data, f"the password (or its base64) is in {p}"
    state_file = Path(sandbox["ecs"]["key"]).parent / "state.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    assert state_file.parent.stat().st_mode & 0o777 == 0o700


# --- HTTPS -----------------------------------------------------------------------------

HTTPS = r"""
import json, os, socket, ssl
version, ciphers = ARGS
ctx = ssl.create_default_context(cafile=os.environ["LAB_CA"])
ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
if ciphers:
    ctx.set_ciphers(ciphers)
with socket.create_connection(("mail.lab.test", 443), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="mail.lab.test") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: mail.lab.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        print(json.dumps({"version": s.version(), "cipher": s.cipher()[0],
                          "status": data.split(b"\r\n", 1)[0].decode(),
                          "body": data.split(b"\r\n\r\n", 1)[1].decode()}))
"""


@pytest.mark.parametrize(("version", "ciphers", "expect_cipher"), [
    ("TLSv1_2", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("TLSv1_3", "", None),
])
def test_https_webmail_with_verified_tls(sandbox: State, version: str, ciphers: str,
                                         expect_cipher: str | None) -> None:
    out = in_ecs(sandbox, HTTPS.replace("ARGS", repr((version, ciphers))))
    assert out["version"] == version.replace("_", ".")
    if expect_cipher:
        assert out["cipher"] == expect_cipher
    assert out["status"] == "HTTP/1.1 200 OK"
    assert "<form" in out["body"] and 'type="password"' in out["body"]


def test_https_fails_without_the_sandbox_ca(sandbox: State) -> None:
    # Shows verification is really on: the same request with only the system CAs is refused.
    code = r"""
import json, socket, ssl
ctx = ssl.create_default_context()
try:
    with socket.create_connection(("mail.lab.test", 443), timeout=10) as raw:
        ctx.wrap_socket(raw, server_hostname="mail.lab.test")
    print(json.dumps("connected"))
except ssl.SSLCertVerificationError as e:
    print(json.dumps(e.verify_message))
"""
    assert "unable to get local issuer certificate" in in_ecs(sandbox, code)


# --- network ---------------------------------------------------------------------------


def test_links_have_mtu_1500_and_offloads_off(sandbox: State) -> None:
    from labrunner.sandbox import network

    for ns in (sandbox["ecs"]["netns"], sandbox["mail"]["netns"]):
        assert network.offloads("eth0", ns) == dict.fromkeys(network.OFFLOADS, False)
        mtu = subprocess.run(["ip", "-n", ns, "-o", "link", "show", "eth0"], capture_output=True,
                             text=True, check=True).stdout
        assert " mtu 1500 " in mtu
    assert network.offloads(sandbox["bridge"]) == dict.fromkeys(network.OFFLOADS, False)


def _frame_bytes(pcap: Path) -> int:
    """The length of the frames in the complete records of a pcap file tcpdump is still writing."""
    data = pcap.read_bytes()
    total, at = 0, 24  # after the file header
    while at + 16 <= len(data):
        captured, length = struct.unpack_from("=II", data, at + 8)
        if at + 16 + captured > len(data):
            break
        total += length
        at += 16 + captured
    return total


def test_capture_on_ecs_shows_segments_no_bigger_than_the_mtu(sandbox: State, tmp_path: Path) -> None:
    # With offloads on, a capture shows 64 KB "super-packets"; a 200 KB mail must arrive as
    # frames of at most 1514 bytes (1500 + Ethernet header).
    pcap = tmp_path / "big.pcap"
    ns = sandbox["ecs"]["netns"]
    # Streamed to stdout, as labrunner captures: tcpdump drops to its own user before it would
    # open a -w file, and pytest's tmp dirs are 0700.
    with pcap.open("wb") as sink:
        # --immediate-mode: without it packets still in the kernel's ring buffer are lost when
        # tcpdump is stopped right after the traffic.
        dump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "eth0", "-U", "--immediate-mode",
                                 "-n", "-w", "-", "tcp port 25"], stdout=sink, stderr=subprocess.PIPE)
    try:
        assert dump.stderr is not None
        assert "listening on eth0" in dump.stderr.readline().decode()
        code = r"""
import json, smtplib
s = smtplib.SMTP("smtp.lab.test", 25, timeout=20)
big = "x" * 76 + "\r\n"
s.sendmail("student@lab.test", ["student@lab.test"], "Subject: big\r\n\r\n" + big * 2600)
s.quit()
print(json.dumps("ok"))
"""
        assert in_ecs(sandbox, code) == "ok"
        # SIGTERM drops what tcpdump has not written yet: wait until the mail is in the file
        deadline = time.monotonic() + 10
        while _frame_bytes(pcap) <= 200_000 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dump.terminate()
        dump.communicate(timeout=10)
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.len"],
                         capture_output=True, text=True, check=True).stdout
    lengths = [int(x) for x in out.split()]
    assert sum(lengths) > 200_000, "the capture is missing the mail"
    assert max(lengths) <= 1514


def test_block_port_rejects_outbound_25_from_ecs_only(sandbox: State) -> None:
    code = r"""
import json, socket
res = {}
for port in (25, 587):
    try:
        socket.create_connection(("smtp.lab.test", port), timeout=5).close(); res[port] = "open"
    except OSError as e:
        res[port] = type(e).__name__
print(json.dumps(res))
"""
    block_port(sandbox["instance"], 25)
    try:
        assert in_ecs(sandbox, code) == {"25": "ConnectionRefusedError", "587": "open"}
        block_port(sandbox["instance"], 25)  # twice: still one rule, removed by one unblock
    finally:
        unblock_port(sandbox["instance"], 25)
    assert in_ecs(sandbox, code) == {"25": "open", "587": "open"}


def test_nothing_outside_the_lab_is_reachable_from_ecs(sandbox: State) -> None:
    # No Internet in the sandbox: a connection elsewhere fails at once instead of hanging.
    code = r"""
import errno, json, socket, time
t = time.monotonic()
try:
    socket.create_connection(("203.0.113.9", 25), timeout=10).close(); res = "connected"
except OSError as e:
    res = errno.errorcode.get(e.errno, str(e))
print(json.dumps([res, time.monotonic() - t < 2]))
"""
    assert in_ecs(sandbox, code) == ["ENETUNREACH", True]
