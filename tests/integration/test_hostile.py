"""Hostile input against the sandbox: scenario values that try shell injection, and a real
hostile mail server (endless line, invalid UTF-8, a 10 MB banner, a server too slow for every
deadline) running in the mail namespace, reached through the real SSH executor by `labrunner run`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_faults import no_leftovers  # type: ignore[import-not-found]  # same folder, put on sys.path by pytest

from labrunner import sandbox as sb
from labrunner.config.model import TargetSpec
from labrunner.executor.ssh import SSHExecutor

pytestmark = pytest.mark.integration

HOSTILE_SERVER = r'''
"""A mail server that misbehaves on purpose, one way per port (started by test_hostile.py)."""
import socket, sys, threading, time

def endless(c):  # a reply line that never ends
    c.sendall(b"220 ")
    while True:
        c.sendall(b"A" * 65536)

def bad_utf8(c):  # every reply holds bytes that are not UTF-8; the codes themselves are right
    c.sendall(b"220 \xff\xfe mail.lab.test \xc3\x28 <script>alert(1)</script> \"><img src=x onerror=alert(2)>"
              b" ESMTP \xed\xa0\x80\r\n")
    f = c.makefile("rb")
    in_data = False
    for line in f:
        if in_data:
            if line in (b".\r\n", b".\n"):
                in_data = False
                c.sendall(b"250 queued \xff\xfe\r\n")
            continue
        cmd = line[:4].upper()
        if cmd == b"DATA":
            in_data = True
            c.sendall(b"354 go ahead \xc3\x28\r\n")
        elif cmd == b"QUIT":
            c.sendall(b"221 bye \x80\x80\r\n")
            return
        elif cmd == b"EHLO":
            c.sendall(b"250-hello \xff\r\n250-\xfe\xfe\xfe\r\n250 8BITMIME\r\n")
        else:
            c.sendall(b"250 ok \xf0\x28\x8c\x28\r\n")

def huge(c):  # a 10 MB multi-line banner
    line = b"220-" + b"x" * 94 + b"\r\n"
    for _ in range(10 * 1024 * 1024 // len(line)):
        c.sendall(line)
    c.sendall(b"220 ready\r\n")
    time.sleep(30)

def slow(c):  # a greeting one byte every half second, for ever
    while True:
        c.sendall(b"2")
        time.sleep(0.5)

def escapes(c):  # terminal escapes in a refusal (clear screen, window title, bell, colour, NUL)
    c.sendall(b"220 mail.lab.test ESMTP\r\n")
    c.makefile("rb").readline()
    c.sendall(b"550 \x1b[2J\x1b[H\x1b]0;PWNED-TITLE\x07\x1b[31;1mRED\x1b[0m\x00 no\r\n")

MODES = {"endless": endless, "bad-utf8": bad_utf8, "huge": huge, "slow": slow, "escapes": escapes}

def serve(sock, fn):
    while True:
        c, _ = sock.accept()
        def one(c=c):
            try:
                fn(c)
            except OSError:
                pass
            finally:
                c.close()
        threading.Thread(target=one, daemon=True).start()

for spec in sys.argv[2:]:
    mode, port = spec.split("=")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port)))
    s.listen(16)
    threading.Thread(target=serve, args=(s, MODES[mode]), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin
'''
PORTS = {"endless": 2601, "bad-utf8": 2602, "huge": 2603, "slow": 2604, "escapes": 2605}


@pytest.fixture(scope="module")
def hostile_server(sandbox: dict[str, Any], sandbox_instance: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    script = tmp_path_factory.mktemp("hostile") / "hostile_server.py"
    script.write_text(HOSTILE_SERVER)
    argv = sb.netns_exec(sandbox_instance, "mail", [sys.executable, str(script), sandbox["mail"]["host"],
                                                    *(f"{m}={p}" for m, p in PORTS.items())])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield PORTS
    finally:
        proc.kill()
        proc.wait(10)


def write_lab(folder: Path, instance: str, scenarios: dict[str, str], student: str = "N") -> Path:
    sc_dir = folder / "scenarios"
    sc_dir.mkdir(parents=True, exist_ok=True)
    for name, body in scenarios.items():
        (sc_dir / f"{name}.yaml").write_text(textwrap.dedent(body), encoding="utf-8")
    lab = folder / "lab.yaml"
    lab.write_text(f"""default_profile: sandbox
scenarios_dir: scenarios
output_dir: output
report: {{school: S, course: C, lab: L, student: {{name: {json.dumps(student)}, id: "1", class: K}}, lang: en}}
profiles:
  sandbox: {{from_sandbox: true, instance: {instance}}}
""", encoding="utf-8")
    return lab


def cli(lab: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labrunner", *args, "-c", str(lab)], capture_output=True,
                          text=True, timeout=timeout, cwd=lab.parent, stdin=subprocess.DEVNULL)


def smtp_scenario(title: str, port: int, timeout: int = 60, **step: str) -> str:
    extra = "".join(f"\n      {k}: {v}" for k, v in step.items())
    return f"""
title: {{en: "{title} <img src=x onerror=alert(4)>"}}
objective: {{en: a hostile server}}
notes: {{en: "<iframe src=javascript:alert(5)></iframe> **bold** [x](javascript:alert(6))"}}
timeout: {timeout}
steps:
  - smtp:
      security: plain
      port: {port}
      auth: none{extra}
      message: {{subject: hostile, text: hello}}
"""


def run_entries(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    run_dir = Path(json.loads(res.stdout)["run"])
    return {e["name"]: e for e in json.loads((run_dir / "manifest.json").read_text("utf-8"))["scenarios"]}


def test_a_hostile_mail_server_cannot_hang_or_crash_a_run(sandbox: dict[str, Any], sandbox_instance: str,
                                                         hostile_server: dict[str, int], tmp_path: Path) -> None:
    lab = write_lab(tmp_path, sandbox_instance, {
        "a-endless": smtp_scenario("endless line", hostile_server["endless"]),
        "b-bad-utf8": smtp_scenario("invalid UTF-8", hostile_server["bad-utf8"]),
        "c-huge": smtp_scenario("10 MB banner", hostile_server["huge"]),
        "d-slow": smtp_scenario("too slow", hostile_server["slow"], timeout=6),
        "e-normal": smtp_scenario("the real Postfix", 25),
    }, student="<script>alert(3)</script>")
    res = cli(lab, "run", "--json", "--no-pdf")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    got = run_entries(res)
    for name in ("a-endless", "c-huge", "d-slow"):
        assert got[name]["status"] == "failed", got[name]
        assert got[name]["error"] and "\n" not in got[name]["error"], got[name]
    assert "64 KiB" in got["a-endless"]["error"] or "too long" in got["a-endless"]["error"], got["a-endless"]
    assert "time" in got["d-slow"]["error"] or "deadline" in got["d-slow"]["error"], got["d-slow"]
    # Bytes that are not UTF-8 are shown, not fatal: the dialogue completes with the right codes.
    assert got["b-bad-utf8"]["status"] == "passed", got["b-bad-utf8"]
    assert got["e-normal"]["status"] == "passed", got["e-normal"]
    run_dir = Path(json.loads(res.stdout)["run"])
    for name in got:
        for f in ("transcript.json", "analysis.json"):
            json.loads((run_dir / name / f).read_text("utf-8"))  # written, and valid UTF-8 JSON
    html = (run_dir / "report.html").read_text("utf-8")
    assert "invalid UTF-8" in html and "\ufffd" in html
    # What the server sent, the scenario's title and notes and the student's name reach the
    # report as text, never as markup.
    assert "<script" not in html and "<iframe" not in html and "<img src=x" not in html
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "alert(2)" in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(4)&gt;" in html and "<strong>bold</strong>" in html
    assert no_leftovers(sandbox_instance) == []
    res = cli(lab, "run", "e-normal", "--json", "--no-pdf")
    assert res.returncode == 0, res.stdout + res.stderr


def test_server_text_reaches_the_terminal_escaped(sandbox: dict[str, Any], sandbox_instance: str,
                                                 hostile_server: dict[str, int], tmp_path: Path) -> None:
    """F10: a reply full of terminal escapes is shown, not obeyed, in the progress line, the
    summary and `list` (a scenario title with escapes)."""
    lab = write_lab(tmp_path, sandbox_instance, {
        "esc": smtp_scenario("\\e]0;TITLE\\a\\e[2J fake", hostile_server["escapes"]),
    })
    res = cli(lab, "run", "--no-pdf")
    assert res.returncode == 1, res.stdout + res.stderr
    shown = res.stdout + res.stderr
    assert "\\x1b[2J\\x1b[H\\x1b]0;PWNED-TITLE\\x07" in res.stderr  # the progress line
    assert "PWNED-TITLE" in res.stdout  # the summary
    listing = cli(lab, "list")
    assert "\\x1b]0;TITLE\\x07\\x1b[2J fake" in listing.stdout
    for text in (shown, listing.stdout):
        assert not [c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0], text


# --- shell injection -------------------------------------------------------------------------------


@pytest.fixture()
def target(sandbox: dict[str, Any]) -> Iterator[SSHExecutor]:
    e = sandbox["ecs"]
    spec = TargetSpec(host=e["host"], port=e["port"], user=e["user"], key=e["key"], known_hosts=e["known_hosts"])
    with SSHExecutor(spec, user_known_hosts=Path("/nonexistent/known_hosts")) as ex:
        yield ex


def canaries(ex: SSHExecutor, tag: str) -> list[str]:
    """Canary files with this tag, as the target's shell sees them and as this machine does."""
    there = ex.run(f"ls -d /tmp/lr-canary-{tag}-* 2>/dev/null", check=False, timeout=15).text().split()
    here = [str(p) for p in Path("/tmp").glob(f"lr-canary-{tag}-*")]
    return sorted(set(there + here))


def test_the_canary_check_sees_a_file_the_target_shell_creates(target: SSHExecutor) -> None:
    tag = uuid.uuid4().hex[:8]
    target.run(f"touch /tmp/lr-canary-{tag}-control", timeout=15)
    try:
        assert canaries(target, tag) == [f"/tmp/lr-canary-{tag}-control"]
    finally:
        target.run(f"rm -f /tmp/lr-canary-{tag}-control", timeout=15)


def test_shell_injection_in_scenario_values_reaches_the_target_only_as_data(
        sandbox: dict[str, Any], sandbox_instance: str, target: SSHExecutor, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    c = f"/tmp/lr-canary-{tag}"
    subject = f"$(touch {c}-subject) `touch {c}-tick`; rm -rf ~ ; touch {c}-semi"
    scenarios = {
        "filter": f"""
            title: {{en: injection in the capture filter}}
            objective: {{en: x}}
            capture: {{filter: "port 25; touch {c}-filter1 ; rm -rf ~", interface: eth0}}
            steps: [{{smtp: {{security: plain, auth: none}}}}]
            """,
        "filter2": f"""
            title: {{en: injection in the capture filter}}
            objective: {{en: x}}
            capture: {{filter: "port 25 $(touch {c}-filter2) `touch {c}-filter3`"}}
            steps: [{{smtp: {{security: plain, auth: none}}}}]
            """,
        "iface": f"""
            title: {{en: injection in the interface}}
            objective: {{en: x}}
            capture: {{interface: "eth0;touch${{IFS}}{c}-iface1", filter: "port 25"}}
            steps: [{{smtp: {{security: plain, auth: none}}}}]
            """,
        "iface2": f"""
            title: {{en: injection in the interface}}
            objective: {{en: x}}
            capture: {{interface: "$(touch {c}-iface2)"}}
            steps: [{{smtp: {{security: plain, auth: none}}}}]
            """,
        "wire": f"""
            title: {{en: injection in what is sent}}
            objective: {{en: x}}
            steps:
              - smtp:
                  security: plain
                  auth: none
                  helo: lab-client
                  message: {{subject: {json.dumps(subject)}, text: "line one\\n$(touch {c}-text)\\n.\\nQUIT"}}
            """,
    }
    # An interface name is checked when the files are read: a located error, exit 2, nothing run.
    interfaces = {name: scenarios.pop(name) for name in ("iface", "iface2")}
    res = cli(write_lab(tmp_path / "iface", sandbox_instance, interfaces), "run", "--json", "--no-pdf")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "scenarios/iface.yaml:4:22: capture.interface:" in res.stderr
    assert "scenarios/iface2.yaml:4:22: capture.interface:" in res.stderr
    lab = write_lab(tmp_path, sandbox_instance, scenarios)
    res = cli(lab, "run", "--json", "--no-pdf")
    assert "Traceback" not in res.stderr, res.stderr
    assert canaries(target, tag) == []
    assert res.returncode == 1, res.stdout + res.stderr
    got = run_entries(res)
    # The capture filter and interface are tcpdump's arguments, never shell text: tcpdump itself
    # refuses them, with its own message.
    for name in ("filter", "filter2"):
        assert got[name]["status"] == "failed" and "filter" in got[name]["error"], got[name]
    # What is sent on the wire is data for the server: the session completes, the mail arrives
    # with the subject as written and the dot line of the text stuffed.
    assert got["wire"]["status"] == "passed", got["wire"]
    run_dir = Path(json.loads(res.stdout)["run"])
    transcript = json.loads((run_dir / "wire" / "transcript.json").read_text("utf-8"))
    sent = [e["text"] for s in transcript["steps"] for e in s["events"] if e["dir"] == "C"]
    assert any(f"rm -rf ~ ; touch {c}-semi" in t for t in sent), sent
    assert "QUIT" in sent and sent.count("QUIT") == 1  # the QUIT in the text was not a command
    mails = delivered(Path(sandbox["maildir"]), tag)
    assert len(mails) == 1, "the mail did not arrive"
    # the text's line "." was stuffed: it did not end the DATA, so what follows stayed text
    assert mails[0].replace(b"\r\n", b"\n").endswith(b"\n.\nQUIT\n")
    assert no_leftovers(sandbox_instance) == []


def delivered(maildir: Path, tag: str, wait: float = 30) -> list[bytes]:
    """The mails in ``maildir`` that contain ``tag``, once one has arrived: Postfix delivers
    after its 250 to the session, on its own schedule, through tmp/ (never read half-written)."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for path in [*maildir.glob("new/*"), *maildir.glob("cur/*")]:
            with contextlib.suppress(FileNotFoundError):  # a reader moved it from new/ to cur/
                if tag.encode() in (data := path.read_bytes()):
                    found.append(data)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


@pytest.mark.parametrize(("step", "problem"), [
    ('helo: "$(touch${{IFS}}{canary})`id`"',
     "scenarios/x.yaml:4:52: steps[1].smtp.helo: must be one word (letters, digits, - _ .), no spaces"),
    ('message: {{subject: "hi\\r\\nX-Injected: {canary}"}}',
     "scenarios/x.yaml:4:65: steps[1].smtp.message.subject: must be one line (no line break): "
     "it becomes a mail header"),
])
def test_protocol_injection_is_refused_before_anything_runs(sandbox: dict[str, Any], sandbox_instance: str,
                                                            target: SSHExecutor, tmp_path: Path,
                                                            step: str, problem: str) -> None:
    """A HELO name with shell text, a subject with a line break (a header of its own): refused
    with the place to fix, before any connection (a line break used to be an internal error)."""
    tag = uuid.uuid4().hex[:8]
    value = step.format(canary=f"/tmp/lr-canary-{tag}-x")
    lab = write_lab(tmp_path, sandbox_instance, {"x": f"""
        title: {{en: injection}}
        objective: {{en: x}}
        steps: [{{smtp: {{security: plain, auth: none, {value}}}}}]
        """})
    res = cli(lab, "run", "--json", "--no-pdf")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [problem]
    assert not any((tmp_path / "output").glob("2*"))
    assert canaries(target, tag) == []
