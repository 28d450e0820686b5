"""Pipeline-level faults against the sandbox: the whole `labrunner run` under a broken network,
a server that dies, a full disk and a second run at the same time.

Each test checks the four guarantees of issue 9 after the fault: one clear message, earlier
results intact (files and their checksums in the manifest), nothing left running on the
target, and the next run works. Faults are real (an sshd process killed, a server stopped, a
16 KiB tmpfs); only the *moment* is chosen by a hook on the transcript or the progress line,
so the fault lands in the middle of a dialogue instead of racing a timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labfiles import cli, small_tmpfs, write_lab  # type: ignore[import-not-found]  # same folder

from labrunner import runfolder
from labrunner import sandbox as sb

pytestmark = pytest.mark.integration



def target_leftovers(instance: str) -> list[str]:
    """tcpdump, sudo or shell wrappers of the lab user still running in the target's namespace."""
    state = sb.load_state(instance)
    pids = subprocess.run(["ip", "netns", "pids", state.ecs.netns], capture_output=True, text=True,
                          check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if "tcpdump" in cmd or (uid == state.document["ecs"]["uid"] and not cmd.startswith("sshd")):
            found.append(cmd)
    return found


def no_leftovers(instance: str, wait: float = 15) -> list[str]:
    """Leftovers after sshd had time to notice a closed connection (it does so on its own schedule)."""
    deadline = time.monotonic() + wait
    while (found := target_leftovers(instance)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def checksums_hold(run_dir: Path) -> list[str]:
    """Files of the run whose size or sha256 differ from what its manifest recorded."""
    bad = []
    for entry in json.loads((run_dir / "manifest.json").read_text("utf-8"))["scenarios"]:
        if entry.get("run_id") != run_dir.name:
            continue
        for name, meta in entry["files"].items():
            path = run_dir / entry["name"] / name
            if not path.is_file() or runfolder.file_entry(path) != meta:
                bad.append(str(path))
    return bad


def intact_after_fault(lab: Path, instance: str, run_dir: Path, earlier: Path, before: dict[str, bytes]) -> None:
    """What every fault test ends with: results kept, nothing left on the target, the next run works."""
    assert checksums_hold(run_dir) == []
    assert snapshot(earlier) == before and checksums_hold(earlier) == []
    assert no_leftovers(instance) == []
    next_run_passes(lab)


def one_clear_line(text: str | None) -> bool:
    return bool(text) and "\n" not in text and "Traceback" not in text  # type: ignore[operator]


def next_run_passes(lab: Path) -> None:
    res = cli(lab, "run", "plain-smtp", "--json", "--no-pdf")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [r["status"] for r in json.loads(res.stdout)["scenarios"]] == ["passed"]


def cut_ssh(instance: str, client_port: int) -> None:
    """Kill the sshd processes serving one client connection: the TCP connection dies for real."""
    netns = sb.load_state(instance).ecs.netns
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-tnpH", "state", "established",
                          f"( sport = :22 and dport = :{client_port} )"],
                         capture_output=True, text=True, check=True).stdout
    pids = {int(p) for p in re.findall(r"pid=(\d+)", out)}
    assert pids, f"no sshd serves client port {client_port}: {out!r}"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # the unprivileged child dies with its parent
            os.kill(pid, signal.SIGKILL)


class InProcessRun:
    """run_lab in this process, with the executor it connects kept, and a fault hook."""

    def __init__(self, lab_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from labrunner import executor as executors
        from labrunner.sessions.context import SessionContext

        self.lab_path = lab_path
        self.lines: list[str] = []
        self.executors: list[Any] = []
        self.on_record: Callable[[str], None] | None = None
        self.on_progress: Callable[[str], None] | None = None
        real_connect = executors.connect
        real_record = SessionContext.record

        def connect(*args: Any, **kwargs: Any) -> Any:
            ex = real_connect(*args, **kwargs)
            self.executors.append(ex)
            return ex

        def record(ctx: SessionContext, result: Any, conn: int, direction: Any, text: str,
                   **kwargs: Any) -> None:
            real_record(ctx, result, conn, direction, text, **kwargs)
            if self.on_record is not None:
                self.on_record(f"{direction} {text}")

        monkeypatch.setattr(executors, "connect", connect)
        monkeypatch.setattr(SessionContext, "record", record)

    def progress(self, line: str) -> None:
        self.lines.append(line)
        if self.on_progress is not None:
            self.on_progress(line)

    def __call__(self, *names: str) -> Any:
        from labrunner.config.load import load_lab
        from labrunner.run.lab import run_lab
        from labrunner.run.outcome import RunOptions

        return run_lab(load_lab(self.lab_path),
                       RunOptions(scenarios=names, pdf=False, progress=self.progress))


def once(fn: Callable[[], None]) -> Callable[[], None]:
    done: list[bool] = []

    def wrapper() -> None:
        if not done:
            done.append(True)
            fn()
    return wrapper


@pytest.fixture()
def lab(sandbox: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> Path:
    return write_lab(tmp_path, sandbox_instance)


@pytest.fixture()
def earlier_run(lab: Path) -> Path:
    """A passed run in the same output folder, which no later fault may touch."""
    res = cli(lab, "run", "plain-smtp", "--json", "--no-pdf")
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(json.loads(res.stdout)["run"])
    assert checksums_hold(run_dir) == []
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


# --- the SSH connection cut -----------------------------------------------------------------------


def test_ssh_cut_in_the_middle_of_an_smtp_dialogue(lab: Path, earlier_run: Path, sandbox_instance: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(earlier_run)
    run = InProcessRun(lab, monkeypatch)

    def fault(line: str) -> None:
        if line.startswith("C MAIL FROM") and any("[2/3]" in x for x in run.lines):
            cut()

    cut = once(lambda: cut_ssh(sandbox_instance, run.executors[0].session_tuple()[1]))
    run.on_record = fault
    outcome = run("plain-smtp", "telnet-smtp", "pop3")  # run in the scenarios' order
    got = {o.name: o for o in outcome.outcomes}
    assert [o.name for o in outcome.outcomes] == ["plain-smtp", "telnet-smtp", "pop3"]
    assert got["plain-smtp"].status == "passed"
    assert got["telnet-smtp"].status == "failed" and one_clear_line(got["telnet-smtp"].error)
    assert got["pop3"].status == "failed" and one_clear_line(got["pop3"].error)
    # the SSH connection died, not the mail server: the message says which
    assert "the SSH connection was lost after MAIL FROM" in (got["telnet-smtp"].error or ""), got["telnet-smtp"]
    assert "SSH connection was lost" in (got["pop3"].error or "")
    # the report still renders from what was finished, and the finished scenario is intact
    assert outcome.report_html is not None and outcome.report_html.is_file()
    assert (outcome.run_dir / "plain-smtp" / "analysis.json").is_file()
    intact_after_fault(lab, sandbox_instance, outcome.run_dir, earlier_run, before)


class HeldThread:
    """An SSH executor to the sandbox's target whose paramiko thread can be held at one point,
    as a busy machine may hold it, until ``release`` is set."""

    def __init__(self, ex: Any) -> None:
        self.ex = ex
        self.transport = ex.transport
        self.client_port: int = ex.session_tuple()[1]
        self.arm, self.held, self.release = threading.Event(), threading.Event(), threading.Event()

    def hold_here(self) -> None:
        if self.arm.is_set() and threading.current_thread() is self.transport:
            self.held.set()
            self.release.wait(60)


@contextlib.contextmanager
def held_thread(sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch, where: str) -> Iterator[HeldThread]:
    """``where``: "unlink" holds the thread right after it closed a channel of a dead connection,
    before it clears ``active`` (always armed); "read" holds it before its next read once
    ``arm`` is set. On leaving, the thread is released and must end the dead connection."""
    import paramiko

    from labrunner.config.model import TargetSpec
    from labrunner.executor.ssh import SSHExecutor

    e = sandbox["ecs"]
    spec = TargetSpec(host=e["host"], port=e["port"], user=e["user"], key=e["key"], known_hosts=e["known_hosts"])
    with SSHExecutor(spec, user_known_hosts=Path("/nonexistent/known_hosts")) as ex:
        h = HeldThread(ex)
        if where == "unlink":
            h.arm.set()
            real_unlink = paramiko.Channel._unlink

            def unlink(chan: paramiko.Channel) -> None:
                real_unlink(chan)
                h.hold_here()

            monkeypatch.setattr(paramiko.Channel, "_unlink", unlink)
        else:
            real_read_all = paramiko.Packetizer.read_all

            def read_all(packetizer: Any, n: int, check_rekey: bool = False) -> bytes:
                h.hold_here()
                return real_read_all(packetizer, n, check_rekey)

            monkeypatch.setattr(paramiko.Packetizer, "read_all", read_all)
        try:
            yield h
        finally:
            h.release.set()
        h.transport.join(10)
        assert not h.transport.is_active(), "paramiko's thread never ended the dead connection"


def test_a_channel_closed_by_the_dying_connection_blames_the_connection(
        sandbox: dict[str, Any], sandbox_instance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race CI once lost: paramiko closes a dead connection's channels before it marks the
    transport inactive. Its thread is held right there, as a busy machine may hold it, and the
    channel's end must still be blamed on the SSH connection, not on the mail server."""
    with held_thread(sandbox, monkeypatch, "unlink") as h:
        chan = h.ex.open_connection(sandbox["mail"]["host"], 25, 10)
        cut_ssh(sandbox_instance, h.client_port)
        assert h.held.wait(60), "paramiko never closed the channel of the dead connection"
        assert chan.closed and h.transport.is_active()  # inside the window
        lost = h.ex.link_lost()
        assert lost is not None and lost.message == f"{h.ex.host_label}: the SSH connection was lost"


def test_a_send_that_finds_the_connection_dead_blames_the_connection(
        sandbox: dict[str, Any], sandbox_instance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other order: our own send hits the dead socket while paramiko's thread, held before
    its next read as a busy machine may hold it, has not noticed anything yet."""
    with held_thread(sandbox, monkeypatch, "read") as h:
        chan = h.ex.open_connection(sandbox["mail"]["host"], 25, 10)
        assert chan.recv(512).startswith(b"220")
        h.arm.set()
        chan.sendall(b"NOOP\r\n")  # its reply wakes paramiko's thread, which is then held
        assert h.held.wait(60)
        cut_ssh(sandbox_instance, h.client_port)
        failure: BaseException | None = None
        deadline = time.monotonic() + 30
        while failure is None and time.monotonic() < deadline:  # the first send after the cut may still be taken
            try:
                chan.sendall(b"NOOP\r\n")
            except (OSError, EOFError) as exc:
                failure = exc
            time.sleep(0.05)
        assert isinstance(failure, EOFError) and h.transport.is_active()  # the thread knows nothing yet
        lost = h.ex.link_lost(failure)
        assert lost is not None and lost.message == f"{h.ex.host_label}: the SSH connection was lost"


def test_a_command_ended_by_the_dying_connection_blames_the_connection(
        sandbox: dict[str, Any], sandbox_instance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same window for a command: its channel closes (exit status -1) while paramiko's
    thread, held there, has not yet marked the transport inactive."""
    from labrunner.errors import ConnectError

    marker = f"sleep {600 + os.getpid() % 300}.{time.time_ns() % 10**6}"  # this test's own command
    with held_thread(sandbox, monkeypatch, "unlink") as h:
        outcome: list[Any] = []

        def command() -> None:
            try:
                outcome.append(h.ex.run(marker, timeout=120))
            except Exception as exc:  # what it raised is the subject
                outcome.append(exc)

        runner = threading.Thread(target=command)
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(["pgrep", "-f", f"^{marker}$"], capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, "the command never started on the target"
                time.sleep(0.05)
            cut_ssh(sandbox_instance, h.client_port)
            assert h.held.wait(60), "paramiko never closed the channels of the dead connection"
            runner.join(30)
            assert h.transport.is_active() and outcome, "run() did not return inside the window"
        finally:
            h.release.set()
            runner.join(30)
        got = outcome[0]
        assert isinstance(got, ConnectError), got
        assert got.message == f"{h.ex.host_label}: the SSH connection was lost while running `{marker}`"
    assert no_leftovers(sandbox_instance) == []


def test_ssh_cut_while_the_capture_is_downloaded(lab: Path, earlier_run: Path, sandbox_instance: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(earlier_run)
    run = InProcessRun(lab, monkeypatch)
    cut = once(lambda: cut_ssh(sandbox_instance, run.executors[0].session_tuple()[1]))
    run.on_progress = lambda line: cut() if line.endswith("pop3: stopping capture") else None
    outcome = run("pop3", "imap")
    got = {o.name: o for o in outcome.outcomes}
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text("utf-8"))
    pop3 = next(e for e in manifest["scenarios"] if e["name"] == "pop3")
    # The sessions had finished: what arrived of the capture is kept, and marked as partial
    # with the reason, instead of being passed off as the whole capture.
    assert pop3["capture"]["partial"] is True and one_clear_line(pop3["capture"]["problem"])
    assert got["pop3"].status == "failed" and one_clear_line(got["pop3"].error), got["pop3"]
    assert (got["pop3"].error or "").startswith("the capture is incomplete: the connection to the target was lost")
    assert "pop3: failed" in run.lines[-2] or any("pop3: failed" in x for x in run.lines)
    assert got["imap"].status == "failed" and one_clear_line(got["imap"].error)
    assert outcome.report_html is not None and outcome.report_html.is_file()
    intact_after_fault(lab, sandbox_instance, outcome.run_dir, earlier_run, before)


# --- a server that dies ---------------------------------------------------------------------------


def test_mail_server_stopped_in_the_middle_of_a_session(lab: Path, earlier_run: Path, sandbox_instance: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(earlier_run)
    run = InProcessRun(lab, monkeypatch)
    stop = once(lambda: sb.stop_service(sandbox_instance, "postfix"))
    run.on_record = lambda line: stop() if line.startswith("C RCPT TO") else None
    try:
        outcome = run("plain-smtp", "webmail-tls")
    finally:
        sb.start_service(sandbox_instance, "postfix")
    got = {o.name: o for o in outcome.outcomes}
    assert got["plain-smtp"].status == "failed" and one_clear_line(got["plain-smtp"].error)
    # one dead server does not take the run down: webmail-tls runs; its HTTPS steps pass, and
    # its web mail, which hands the mail to the stopped Postfix, says so in one line
    web = got["webmail-tls"]
    assert web.status == "failed" and one_clear_line(web.error) and "did not send the mail" in (web.error or "")
    web_steps = json.loads((outcome.run_dir / "webmail-tls" / "transcript.json").read_text("utf-8"))["steps"]
    assert [s["kind"] for s in web_steps] == ["https", "https", "webmail"]
    assert [s["ok"] for s in web_steps] == [True, True, False]
    transcript = json.loads((outcome.run_dir / "plain-smtp" / "transcript.json").read_text("utf-8"))
    texts = [e["text"] for s in transcript["steps"] for e in s["events"]]
    assert any(t.startswith("RCPT TO") for t in texts)  # the dialogue up to the fault is kept
    intact_after_fault(lab, sandbox_instance, outcome.run_dir, earlier_run, before)


# --- the local disk fills up ----------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "size=2m") as mnt:
        yield mnt


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` until ``leave`` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_disk_full_while_the_capture_is_written(sandbox: dict[str, Any], sandbox_instance: str,
                                                tmp_path: Path, small_disk: Path) -> None:
    lab = write_lab(tmp_path / "lab", sandbox_instance, output=str(small_disk / "output"))
    res = cli(lab, "run", "plain-smtp", "--json", "--no-pdf")
    assert res.returncode == 0, res.stdout + res.stderr
    earlier = Path(json.loads(res.stdout)["run"])
    before = snapshot(earlier)
    filler = fill(small_disk, 24 * 1024)  # room for the manifest, not for mail-client's capture
    res = cli(lab, "run", "mail-client", "--json", "--no-pdf")
    assert res.returncode == 3, res.stderr  # the environment, not the scenario, failed
    assert "Traceback" not in res.stderr
    problem = [line for line in res.stderr.splitlines() if "disk full" in line]
    assert len(problem) == 1 and problem[0].startswith("labrunner: error: disk full while writing "), res.stderr
    assert problem[0].endswith("earlier results are intact") and "hint: free some space" in res.stderr
    assert snapshot(earlier) == before and checksums_hold(earlier) == []
    # `latest` is the newest run with a report: the run that stopped on the full disk has none
    output = small_disk / "output"
    assert [p for p in runfolder.runs(output) if p != earlier]  # it did start a run folder
    assert (output / "latest").resolve() == earlier
    assert no_leftovers(sandbox_instance) == []
    filler.unlink()
    next_run_passes(lab)
    newest = runfolder.runs(output)[-1]
    assert (output / "latest").resolve() == newest != earlier and (newest / "report.html").is_file()


# --- two runs at once -----------------------------------------------------------------------------


def test_a_second_run_is_refused_while_one_is_running(lab: Path, sandbox_instance: str) -> None:
    first = subprocess.Popen([sys.executable, "-m", "labrunner", "run", "-c", str(lab), "--no-pdf", "--json",
                              "plain-smtp", "pop3"], cwd=lab.parent, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert first.stderr is not None
    seen = []
    for line in first.stderr:
        seen.append(line)
        if "sessions" in line:
            break
    # Hold the first run where it is (lock taken, sessions under way) while the second one
    # starts: on a busy machine the first could otherwise finish before the second asks.
    first.send_signal(signal.SIGSTOP)
    try:
        second = cli(lab, "run", "imap", "--no-pdf", "--json")
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, "".join(seen) + err
    assert second.returncode == 3, second.stderr  # the environment's state, not bad input
    lines = [x for x in second.stderr.splitlines() if x.strip()]
    assert lines[0].startswith("labrunner: error: another labrunner run is writing to"), second.stderr
    assert f"(pid {first.pid})" in lines[0] and "Traceback" not in second.stderr
    # the refused run made no run folder and did not move `latest`
    output = lab.parent / "output"
    assert [p.name for p in runfolder.runs(output)] == [Path(json.loads(out)["run"]).name]
    assert (output / "latest").resolve() == Path(json.loads(out)["run"])
    assert checksums_hold(Path(json.loads(out)["run"])) == []
    assert no_leftovers(sandbox_instance) == []
    next_run_passes(lab)

