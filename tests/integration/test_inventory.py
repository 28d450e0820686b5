"""A teaching assistant's class run: `labrunner run --inventory --parallel 3` on a sandbox class.

The session's sandbox has three targets (ecs, ecs2, ecs3) with an account each; the lab.yaml
here names them with `sandbox: N`, so the run needs no environment variable. Each test drives
the real CLI in a subprocess, as a teaching assistant would.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import labfiles  # type: ignore[import-not-found]  # same folder
import pytest

from labrunner.secrets import secret_forms

pytestmark = pytest.mark.integration

ALL = ["mail-client", "plain-smtp", "webmail-tls", "telnet-smtp", "pop3", "imap"]
STUDENTS = [("2020000001", "张三"), ("2020000002", "李四"), ("2020000003", "王五")]


def write_lab(folder: Path, instance: str, entries: str) -> Path:
    return labfiles.write_lab(folder, instance, student=("助教", "0000", "计科2001"), inventory=entries)


def class_entries() -> str:
    return "".join(f'  - {{name: "{sid}", sandbox: {k}, report: {{student: {{name: {name}, id: "{sid}"}}}}}}\n'
                   for k, (sid, name) in enumerate(STUDENTS, 1))


def cli(lab: Path, *args: str, timeout: float = 600, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    # No LABRUNNER_* or password variable reaches the run: everything comes from lab.yaml + state.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABRUNNER_")}
    if home is not None:  # a teaching assistant's ~/.ssh/config; tshark's cache stays where it was
        env.update(HOME=str(home), XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))
    return subprocess.run([sys.executable, "-m", "labrunner", *args, "-c", str(lab)], capture_output=True,
                          text=True, timeout=timeout, cwd=lab.parent, stdin=subprocess.DEVNULL, env=env)


def target_leftovers(state: dict[str, Any]) -> dict[str, list[str]]:
    """tcpdumps and the lab user's SSH sessions still running on any target."""
    found: dict[str, list[str]] = {}
    for t in state["targets"]:
        pids = subprocess.run(["ip", "netns", "pids", t["netns"]], capture_output=True, text=True,
                              check=True).stdout.split()
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "tcpdump" in cmd or "labrunner-lab@" in cmd:
                found.setdefault(t["name"], []).append(cmd)
    return found


def no_target_leftovers(state: dict[str, Any], wait: float = 15) -> dict[str, list[str]]:
    """Leftovers once every target's sshd had time to notice the closed connections: it ends a
    session's processes on its own schedule, after the run has already exited."""
    deadline = time.monotonic() + wait
    while (found := target_leftovers(state)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def pcap_addresses(pcap: Path) -> set[str]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "ip.dst"],
                         capture_output=True, text=True, check=True).stdout
    return {a for line in out.splitlines() for a in line.split() if a}


@pytest.fixture(scope="module")
def class_run(sandbox_class: dict[str, Any], sandbox_instance: str, tmp_path_factory: pytest.TempPathFactory):
    lab = write_lab(tmp_path_factory.mktemp("class"), sandbox_instance, class_entries())
    res = cli(lab, "run", "--inventory", "--parallel", "3", "--json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return lab, json.loads(res.stdout), res


def test_every_student_has_a_passing_row_in_the_overview(class_run, sandbox_class) -> None:
    lab, doc, _res = class_run
    rows = doc["students"]
    assert [r["name"] for r in rows] == [sid for sid, _ in STUDENTS]
    for row, (sid, name), target in zip(rows, STUDENTS, sandbox_class["targets"], strict=False):
        assert row["student"] == {"name": name, "id": sid, "class": "计科2001"}
        assert row["target"] == target["host"]
        assert row["error"] is None and not row["interrupted"]
        assert row["scenarios"] == dict.fromkeys(ALL, "passed"), row
        assert row["verify"]["status"] == "ok", row["verify"]  # each report matches its captures
    folder = Path(doc["overview"])
    assert folder.parent == lab.parent / "output" / "class"
    assert json.loads((folder / "overview.json").read_text("utf-8"))["students"] == rows
    html = (folder / "overview.html").read_text("utf-8")
    for sid, name in STUDENTS:
        assert sid in html and name in html
    assert html.count('class="passed"') == 3 * len(ALL)
    # the report links are relative to the overview, and lead to the reports
    for row in rows:
        assert f'href="{row["report_pdf"]}"' in html
        assert (folder / row["report_pdf"]).resolve().is_file()


def test_each_report_carries_its_own_student(class_run) -> None:
    lab, doc, _res = class_run
    folder = Path(doc["overview"])
    for row, (sid, name) in zip(doc["students"], STUDENTS, strict=True):
        pdf = (folder / row["report_pdf"]).resolve()
        assert pdf.parent.parent == lab.parent / "output" / "students" / sid
        text = subprocess.run(["pdftotext", "-l", "2", str(pdf), "-"], capture_output=True, text=True,
                              check=True).stdout
        assert name in text and sid in text
        others = [s for s in STUDENTS if s[0] != sid]
        assert not any(n in text or i in text for i, n in others), f"{sid}'s report names another student"


def test_each_run_captured_only_its_own_target(class_run, sandbox_class) -> None:
    _lab, doc, _res = class_run
    folder = Path(doc["overview"])
    mail = sandbox_class["mail"]["host"]
    for row, target in zip(doc["students"], sandbox_class["targets"], strict=False):
        run_dir = (folder / row["run"]).resolve()
        manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
        assert any(a.startswith(f"eth0 {target['host']}/") for a in manifest["target"]["addresses"])
        for scenario in ALL:
            seen = pcap_addresses(run_dir / scenario / "capture.pcapng")
            assert target["host"] in seen, scenario
            assert seen <= {target["host"], mail}, f"{row['name']}/{scenario} captured {seen}"


def test_no_account_secret_in_any_file_written_or_printed(class_run, sandbox_class) -> None:
    lab, _doc, res = class_run
    forms = [f for a in sandbox_class["accounts"] for f in secret_forms(a["password"], [a["user"], a["address"]])]
    assert forms
    checked = 0
    for path in (lab.parent / "output").rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.name in ("capture.pcapng", "keylog.txt"):
            # captures hold the plain-text logins of the lab on purpose: readable by the owner only
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        for form in forms:
            assert form not in text and form.encode() not in data, f"a password form is in {path}"
        checked += 1
    assert checked > 20
    for form in forms:
        assert form not in res.stdout and form not in res.stderr


def test_progress_lines_name_the_student_and_no_tcpdump_is_left(class_run, sandbox_class) -> None:
    _lab, _doc, res = class_run
    names = tuple(f"{sid}: " for sid, _ in STUDENTS)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith(names) for ln in lines), [ln for ln in lines if not ln.startswith(names)]
    for sid, _ in STUDENTS:
        assert f"{sid}: [6/6] imap: passed" in res.stderr
    assert no_target_leftovers(sandbox_class) == {}


def test_a_target_with_a_wrong_host_key_is_an_error_row_and_the_others_pass(
        sandbox_class: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> None:
    t3 = sandbox_class["targets"][2]
    wrong = "SHA256:" + "A" * 43
    entries = class_entries() + (
        f'  - name: impostor\n'
        f'    target: {{host: {t3["host"]}, user: {t3["user"]}, key: {t3["key"]}, host_key: "{wrong}"}}\n'
        f'    account: {{address: student3@lab.test, secret: {{sandbox: 3}}}}\n'
        f'    report: {{student: {{name: 赵六, id: "2020000009"}}}}\n')
    lab = write_lab(tmp_path, sandbox_instance, entries)
    res = cli(lab, "run", "--inventory", "--parallel", "3", "--no-pdf", "--json", "plain-smtp")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["students"]}
    bad = rows.pop("impostor")
    assert bad["scenarios"] == {} and bad["target"] == t3["host"]
    assert bad["error"].startswith(f"host key of {t3['host']} has CHANGED or is not the pinned one")
    assert wrong in bad["error"]
    for row in rows.values():
        assert row["error"] is None and row["scenarios"] == {"plain-smtp": "passed"}
    html = (Path(json.loads(res.stdout)["overview"]) / "overview.html").read_text("utf-8")
    assert 'class="error"' in html and "赵六" in html and "has CHANGED" in html
    assert "impostor: failed: host key of" in res.stderr
    assert no_target_leftovers(sandbox_class) == {}


def test_ctrl_c_stops_every_student_and_leaves_nothing_on_any_target(
        sandbox_class: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> None:
    lab = write_lab(tmp_path, sandbox_instance, class_entries())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABRUNNER_")}
    proc = subprocess.Popen([sys.executable, "-m", "labrunner", "run", "--inventory", "--parallel", "3", "--no-pdf",
                             "--json", "-c", str(lab)], cwd=tmp_path, stdin=subprocess.DEVNULL, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    # Wait until every student is inside a capture of its second scenario, then press Ctrl-C.
    seen: list[str] = []
    capturing: set[str] = set()
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        seen.append(line)
        if "[2/6] plain-smtp: sessions" in line:
            capturing.add(line.split(":", 1)[0])
        if len(capturing) == 3 or time.monotonic() > deadline:
            break
    assert len(capturing) == 3, "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + err
    assert "Traceback" not in err
    assert "interrupted: stopping every student's run" in err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    for row in doc["students"]:
        assert row["interrupted"], row
        assert row["scenarios"]["mail-client"] == "passed"  # the finished scenario is kept
        # stopped in its second scenario or soon after (the others run on while Ctrl-C travels):
        # what passed comes first, the rest — the scenarios it never reached included — is
        # listed as interrupted, nothing failed
        statuses = [row["scenarios"].get(name) for name in ALL]
        assert "interrupted" in statuses, row
        first = statuses.index("interrupted")
        assert statuses == ["passed"] * first + ["interrupted"] * (len(ALL) - first), row
        assert (Path(doc["overview"]) / row["report_html"]).resolve().is_file()  # rendered from what finished
    assert no_target_leftovers(sandbox_class) == {}


def test_a_second_run_on_a_busy_target_is_refused(sandbox_class, sandbox_instance, tmp_path) -> None:
    """F8: two runs capturing on one host at once would each record the other's sessions and
    passwords. The second is refused (exit 3) before it writes anything; the first passes."""
    first = labfiles.write_lab(tmp_path / "a", sandbox_instance)
    second = labfiles.write_lab(tmp_path / "b", sandbox_instance)
    proc = subprocess.Popen([sys.executable, "-m", "labrunner", "run", "plain-smtp", "pop3", "--no-pdf", "-c",
                             str(first)], cwd=first.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[1/2] plain-smtp: sessions"):
            break
    try:
        res = cli(second, "run", "plain-smtp", "--no-pdf")
    finally:
        _out, err = proc.communicate(timeout=120)
    assert res.returncode == 3, res.stderr
    assert "another labrunner run is capturing on this host now" in res.stderr
    out_b = second.parent / "output"
    assert not out_b.exists() or not [p for p in out_b.iterdir() if not p.name.startswith(".")]
    assert proc.returncode == 0, "".join(seen) + err
    # once the first has ended, the host is free again
    assert cli(second, "run", "plain-smtp", "--no-pdf").returncode == 0


def test_students_sharing_a_host_take_turns_on_it(sandbox_class, sandbox_instance, tmp_path) -> None:
    """A TA with fewer hosts than students (10 for 30) lists them all in one inventory: those on
    one host run one after the other there (never capturing at once), the others side by side,
    and every one gets its report and its row."""
    entries = "".join(f'  - {{name: "{sid}", sandbox: {k}, report: {{student: {{name: {name}, id: "{sid}"}}}}}}\n'
                      for sid, name, k in (("2020000011", "甲", 1), ("2020000012", "乙", 1), ("2020000013", "丙", 2)))
    lab = write_lab(tmp_path, sandbox_instance, entries)
    res = cli(lab, "run", "--inventory", "--parallel", "3", "--no-pdf", "--json", "plain-smtp")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(res.stdout)["students"]}
    assert {name: row["scenarios"] for name, row in rows.items()} == {
        name: {"plain-smtp": "passed"} for name in ("2020000011", "2020000012", "2020000013")}
    assert rows["2020000011"]["target"] == rows["2020000012"]["target"] == sandbox_class["targets"][0]["host"]
    lines = res.stderr.splitlines()

    def at(line: str) -> int:
        return lines.index(line)

    # The second on ecs connects only once the first's scenario is over.
    first, second = sorted(("2020000011", "2020000012"), key=lambda n: at(f"{n}: connecting to "
                                                                          f"{rows[n]['target']} ..."))
    assert at(f"{second}: connecting to {rows[second]['target']} ...") > max(
        i for i, line in enumerate(lines) if line.startswith(f"{first}: [1/1] plain-smtp: passed"))
    assert no_target_leftovers(sandbox_class) == {}


def test_students_on_one_host_written_two_ways_take_turns(sandbox_class, sandbox_instance, tmp_path) -> None:
    """One machine is one host however the inventory names it: by its address (``sandbox: 1``)
    and by an alias of the TA's ~/.ssh/config. Both students get their turn, one after the
    other; neither is refused by the host's lock as if another run held it."""
    t1 = sandbox_class["targets"][0]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host lab1\n  HostName {t1['host']}\n  User {t1['user']}\n")
    entries = ('  - {name: "2020000021", sandbox: 1, report: {student: {name: 甲, id: "2020000021"}}}\n'
               f'  - name: "2020000022"\n'
               f'    target: {{host: lab1, key: {t1["key"]}, host_key: "{t1["host_key"]}"}}\n'
               f'    account: {{address: {sandbox_class["accounts"][1]["address"]}, secret: {{sandbox: 2}}}}\n'
               f'    report: {{student: {{name: 乙, id: "2020000022"}}}}\n')
    lab = write_lab(tmp_path, sandbox_instance, entries)
    res = cli(lab, "run", "--inventory", "--parallel", "2", "--no-pdf", "--json", "plain-smtp", home=home)
    assert "another labrunner run is capturing" not in res.stdout + res.stderr
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(res.stdout)["students"]}
    for row in rows.values():
        assert row["error"] is None and row["scenarios"] == {"plain-smtp": "passed"}, row
        assert row["report_html"]
    assert rows["2020000022"]["target"] == "lab1"
    lines = res.stderr.splitlines()
    assert not [line for line in lines if "waiting for" in line]  # turns, not the lock, kept them apart
    starts = {n: lines.index(f"{n}: connecting to {rows[n]['target']} ...") for n in rows}
    first, second = sorted(rows, key=starts.__getitem__)
    done = f"{first}: [1/1] plain-smtp: passed"
    assert starts[second] > min(i for i, line in enumerate(lines) if line.startswith(done))
    assert no_target_leftovers(sandbox_class) == {}


@contextlib.contextmanager
def held(state: dict[str, Any]) -> Iterator[None]:
    """Target 1's capture lock, held as another labrunner run (one outside the class) holds it."""
    from labrunner import capture
    from labrunner.config.model import TargetSpec
    from labrunner.executor.ssh import SSHExecutor

    t = state["targets"][0]
    target = TargetSpec(host=t["host"], port=t["port"], user=t["user"], key=t["key"], known_hosts=t["known_hosts"])
    with SSHExecutor(target, user_known_hosts=Path("/nonexistent/known_hosts")) as ex:
        holder = capture.hold_target(ex)
        assert holder is not None
        try:
            yield
        finally:
            holder.kill()


def start_class(lab: Path, parallel: int = 2) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABRUNNER_")}
    return subprocess.Popen([sys.executable, "-m", "labrunner", "run", "--inventory", "--parallel", str(parallel),
                             "--no-pdf",
                             "--json", "plain-smtp", "-c", str(lab)], cwd=lab.parent, stdin=subprocess.DEVNULL,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen[str], words: str) -> list[str]:
    """The class run's progress lines up to the first one holding ``words`` (all of them if none does)."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if words in line:
            break
    return seen


def test_a_student_whose_host_another_run_holds_waits_for_it(sandbox_class, sandbox_instance, tmp_path) -> None:
    """Another run (not of this class) captures on a student's host: the student waits there,
    saying so, and runs once the host is free, instead of an error row; the others go on."""
    entries = ('  - {name: "2020000031", sandbox: 1, report: {student: {name: 甲, id: "2020000031"}}}\n'
               '  - {name: "2020000032", sandbox: 2, report: {student: {name: 乙, id: "2020000032"}}}\n')
    lab = write_lab(tmp_path, sandbox_instance, entries)
    with held(sandbox_class):
        proc = start_class(lab)
        seen = read_until(proc, "2020000031: waiting for ")
        assert "another labrunner run is capturing there now" in seen[-1], "".join(seen)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(seen) + err
    rows = {r["name"]: r for r in json.loads(out)["students"]}
    for row in rows.values():
        assert row["error"] is None and row["scenarios"] == {"plain-smtp": "passed"}, row
    assert f"2020000031: labrunner-lab@{sandbox_class['targets'][0]['host']} is free now" in err
    assert no_target_leftovers(sandbox_class) == {}


@pytest.mark.slow
def test_a_student_waiting_for_its_host_lets_the_others_run_meanwhile(sandbox_class, sandbox_instance,
                                                                       tmp_path) -> None:
    """Finding 5: with `--parallel 1`, the first student's host is held by another run until the
    second student has passed. The first gives its place back while it waits (it kept it, and the
    class stood still for up to 30 min); once the host is free it runs too."""
    entries = ('  - {name: "2020000051", sandbox: 1, report: {student: {name: 甲, id: "2020000051"}}}\n'
               '  - {name: "2020000052", sandbox: 2, report: {student: {name: 乙, id: "2020000052"}}}\n')
    lab = write_lab(tmp_path, sandbox_instance, entries)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # its progress lines, read while the hang guard below counts
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    seen: list[str] = []
    with held(sandbox_class):
        proc = start_class(lab, parallel=1)
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        hang_guard = time.monotonic() + 120  # (before the fix: the second never started)
        while not (seen and re.match(r"2020000052: \[1/1\] plain-smtp: \w+ \(", seen[-1])):
            try:
                line = lines.get(timeout=max(hang_guard - time.monotonic(), 0))
            except queue.Empty:
                proc.send_signal(signal.SIGINT)
                proc.wait(120)
                pytest.fail("the second student did not run while the first waited for its host:\n" + "".join(seen))
            if line is None:
                break
            seen.append(line)
        assert seen[-1].startswith("2020000052: [1/1] plain-smtp: passed"), "".join(seen)
        assert any(line.startswith("2020000051: waiting for ") for line in seen), "".join(seen)
    assert proc.stdout is not None
    out = proc.stdout.read()
    code = proc.wait(300)
    reader.join(60)
    seen += iter(lines.get_nowait, None)
    assert code == 0, "".join(seen)
    rows = {r["name"]: r for r in json.loads(out)["students"]}
    for row in rows.values():
        assert row["error"] is None and row["scenarios"] == {"plain-smtp": "passed"}, row
    host = sandbox_class["targets"][0]["host"]
    said = "".join(seen).splitlines()
    assert said.count(f"2020000051: connecting to {host} ...") == 1, said  # not again on each try
    assert f"2020000051: labrunner-lab@{host} is free now" in said
    assert no_target_leftovers(sandbox_class) == {}


def test_ctrl_c_ends_the_wait_for_a_host_at_once(sandbox_class, sandbox_instance, tmp_path) -> None:
    entries = '  - {name: "2020000041", sandbox: 1, report: {student: {name: 甲, id: "2020000041"}}}\n'
    lab = write_lab(tmp_path, sandbox_instance, entries)
    with held(sandbox_class):
        proc = start_class(lab)
        seen = read_until(proc, "2020000041: waiting for ")
        assert "waiting for" in seen[-1], "".join(seen)
        proc.send_signal(signal.SIGINT)
        # still held: the run ends because of Ctrl-C, not because the host came free
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + err
    assert "Traceback" not in err
    [row] = json.loads(out)["students"]
    assert row["interrupted"] and row["scenarios"] == {} and row["run"] is None, row
    assert "another labrunner run" not in (row["error"] or ""), row


def test_a_wait_for_a_host_has_an_end(sandbox_class) -> None:
    """The class run's wait is bounded: past it the student is refused as a single run is."""
    from labrunner.capture import TargetBusy
    from labrunner.config.model import TargetSpec
    from labrunner.executor.ssh import SSHExecutor
    from labrunner.run.lab import _hold_target
    from labrunner.run.outcome import HostWait, RunOptions, TryLater

    t = sandbox_class["targets"][0]
    said: list[str] = []
    target = TargetSpec(host=t["host"], port=t["port"], user=t["user"], key=t["key"], known_hosts=t["known_hosts"])
    with held(sandbox_class), SSHExecutor(target, user_known_hosts=Path("/nonexistent/known_hosts")) as ex:
        wait = HostWait(1.0)
        with pytest.raises(TryLater) as later:  # its place goes to another student meanwhile
            _hold_target(ex, RunOptions(host_wait=wait), said.append)
        time.sleep(max(later.value.at - time.monotonic(), 0))  # the class run tries it again then
        with pytest.raises(TargetBusy, match=r"another labrunner run is capturing on this host now.*\(waited 1 s"):
            _hold_target(ex, RunOptions(host_wait=wait), said.append)
        assert said == [f"waiting for {ex.host_label}: another labrunner run is capturing there now; "
                        "this one starts when it ends"]
        with pytest.raises(TargetBusy) as refused:  # a single run: at once, as before
            _hold_target(ex, RunOptions(), said.append)
        assert "waited" not in str(refused.value) and len(said) == 1
