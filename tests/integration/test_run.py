"""The whole pipeline against the sandbox: `labrunner run`, re-runs, --failed, Ctrl-C, doctor.

Each test drives the real CLI in a subprocess, as a student would, on a lab.yaml of its own
whose output folder is a temporary directory and whose scenarios are the shipped ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from labfiles import cli, write_lab  # type: ignore[import-not-found]  # same folder

from labrunner import sandbox as sb
from labrunner.secrets import secret_forms

pytestmark = pytest.mark.integration

ALL = ["mail-client", "plain-smtp", "webmail-tls", "telnet-smtp", "pop3", "imap"]


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text("utf-8"))


def entries(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in manifest(run_dir)["scenarios"]}


def target_processes(instance: str) -> list[str]:
    """Commands of tcpdump or shell wrappers still running inside the target's namespace."""
    netns = sb.load_state(instance).ecs.netns
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tcpdump" in cmd:
            found.append(cmd)
    return found


@pytest.fixture(scope="module")
def full_run(sandbox: dict[str, Any], sandbox_instance: str, tmp_path_factory: pytest.TempPathFactory):
    """One full run of every scenario, shared by the tests that only read its results."""
    lab = write_lab(tmp_path_factory.mktemp("lab"), sandbox_instance)
    res = cli(lab, "run", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return lab, json.loads(res.stdout), res


def test_full_run_passes_every_scenario_and_writes_the_report(full_run, sandbox):
    lab, summary, res = full_run
    assert [r["scenario"] for r in summary["scenarios"]] == ALL
    assert all(r["status"] == "passed" for r in summary["scenarios"]), summary
    run_dir = Path(summary["run"])
    assert (lab.parent / "output" / "latest").resolve() == run_dir
    assert Path(summary["report_pdf"]).stat().st_size > 10_000
    assert Path(summary["report_html"]).is_file()
    for name, entry in entries(run_dir).items():
        folder = run_dir / name
        assert entry["frames"] and entry["frames"] > 5, name
        for f in ("capture.pcapng", "transcript.json", "analysis.json"):
            assert entry["files"][f]["size"] == (folder / f).stat().st_size
        assert oct((folder / "capture.pcapng").stat().st_mode & 0o777) == "0o600"
        # each capture was stopped once every connection of its sessions had ended in it
        assert entry["capture"]["settled"] == "ends" and not entry["capture"]["partial"], name
    # the progress display names each stage of each scenario
    for stage in ("starting capture", "sessions", "analysing", "rendering the report"):
        assert stage in res.stderr
    assert target_processes(lab_instance(lab)) == []


def lab_instance(lab: Path) -> str:
    for line in lab.read_text().splitlines():
        if line.strip().startswith("instance:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no instance in lab.yaml")


def test_no_secret_in_any_file_written_or_printed(full_run, sandbox):
    lab, _summary, res = full_run
    account = sandbox["account"]
    forms = secret_forms(account["password"], [account["address"], account["user"]])
    printed = res.stdout + res.stderr
    assert not [f for f in forms if f in printed]
    for path in (lab.parent / "output").rglob("*"):
        if not path.is_file() or path.name in ("capture.pcapng", "keylog.txt"):
            continue
        data = path.read_bytes()
        leaked = [f for f in forms if f.encode() in data]
        assert not leaked, f"{path} holds a form of the password"
    # the exempted files really are private
    for path in (lab.parent / "output").rglob("*"):
        if path.name in ("capture.pcapng", "keylog.txt"):
            assert path.stat().st_mode & 0o077 == 0, path


def test_rerun_one_scenario_reuses_the_others(full_run):
    lab, summary, _ = full_run
    first = Path(summary["run"])
    res = cli(lab, "run", "telnet-smtp", "--json", check=True)
    again = json.loads(res.stdout)
    second = Path(again["run"])
    assert second != first and [r["scenario"] for r in again["scenarios"]] == ["telnet-smtp"]
    got = entries(second)
    assert list(got) == ALL  # the report still covers every scenario, in the usual order
    assert got["telnet-smtp"]["run_id"] == second.name and not got["telnet-smtp"].get("reused")
    for name in ALL:
        if name != "telnet-smtp":
            assert got[name]["run_id"] == first.name and got[name]["reused"] is True
    # the older run is untouched, and the new report is a new file
    assert entries(first)["telnet-smtp"]["status"] == "passed"
    assert (second / "report.pdf").is_file() and (first / "report.pdf").is_file()


def test_failed_reruns_only_what_failed(sandbox, sandbox_instance, tmp_path):
    lab = write_lab(tmp_path, sandbox_instance)
    sb.block_port(sandbox_instance, 993)  # IMAP over implicit TLS fails; POP3 (110, 995) does not
    try:
        res = cli(lab, "run", "pop3", "imap", "--json", "--no-pdf")
    finally:
        sb.unblock_port(sandbox_instance, 993)
    assert res.returncode == 1, res.stderr
    first = {r["scenario"]: r for r in json.loads(res.stdout)["scenarios"]}
    assert first["pop3"]["status"] == "passed"
    assert first["imap"]["status"] == "failed" and "993" in first["imap"]["error"]
    res = cli(lab, "run", "--failed", "--json", "--no-pdf")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [r["scenario"] for r in json.loads(res.stdout)["scenarios"]] == ["imap"]
    listing = {r["name"]: r["status"] for r in json.loads(cli(lab, "list", "--json", check=True).stdout)}
    assert listing["imap"] == "passed" and listing["pop3"] == "passed" and listing["plain-smtp"] == "never run"
    res = cli(lab, "run", "--failed", "--json", "--no-pdf")  # nothing failed any more
    assert res.returncode == 0 and json.loads(res.stdout)["scenarios"] == []


def test_interrupted_run_leaves_nothing_on_the_target_and_the_report_renders(sandbox, sandbox_instance, tmp_path):
    lab = write_lab(tmp_path, sandbox_instance)
    proc = subprocess.Popen([sys.executable, "-m", "labrunner", "run", "-c", str(lab), "--no-pdf"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stderr is not None
    seen = []
    # Wait until the third scenario's capture is running, then press Ctrl-C: the terminal sends
    # SIGINT to the whole process group, labrunner's tshark and editcap included.
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("[3/6]") and "sessions" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + err
    deadline = time.monotonic() + 15  # the target's sshd ends the interrupted session on its own schedule
    while target_processes(sandbox_instance) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target_processes(sandbox_instance) == []
    run_dir = (tmp_path / "output" / "latest").resolve()
    got = entries(run_dir)
    said = "".join(seen) + err + out
    assert got["mail-client"]["status"] == "passed" and got["plain-smtp"]["status"] == "passed", said
    assert got["webmail-tls"]["status"] == "interrupted", said
    # the scenarios it never reached are listed as interrupted (the summary, the report and
    # `run --failed` know them), in their order, not left out
    assert list(got) == ALL and all(got[n]["status"] == "interrupted" for n in ALL[3:]), said
    assert [ln.split()[:2] for ln in out.splitlines()[1:7]] == [
        [n, "passed" if n in ALL[:2] else "interrupted"] for n in ALL], said
    assert (run_dir / "mail-client" / "capture.pcapng").is_file()
    res = cli(lab, "report", check=True)
    assert "report.pdf" in res.stdout and (run_dir / "report.pdf").is_file()


def test_doctor_on_a_healthy_target(sandbox, sandbox_instance, tmp_path):
    lab = write_lab(tmp_path, sandbox_instance)
    res = cli(lab, "doctor", "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["ok"], res.stdout
    names = [c["name"] for c in doc["checks"]]
    for port in (25, 465, 587, 110, 995, 143, 993, 443):
        assert any(n.endswith(f":{port} from the target") for n in names), port
    assert any("host key verified" in c["detail"] for c in doc["checks"])
    # one real login to each mail service, the certificate checked against the sandbox's CA
    logins = [c for c in doc["checks"] if c["name"].startswith("log in to ")]
    assert len(logins) == 3 and all(c["ok"] and "certificate verified with" in c["detail"] for c in logins), logins
    cap = next(c for c in doc["checks"] if c["name"] == "capture permitted")
    assert cap["ok"] and "without root" in cap["detail"], cap


def test_doctor_gives_the_setup_line_to_a_user_outside_the_capture_group(sandbox, sandbox_instance, tmp_path):
    """The target's sshd sees an /etc/group where the lab user is not in labrunner-cap (its own
    mount namespace: this machine's groups stay as they are): doctor says the exact line to run."""
    from labrunner.capture import CAPTURE_GROUP, setup_command

    lab = write_lab(tmp_path, sandbox_instance)
    groups = tmp_path / "group"
    lines = Path("/etc/group").read_text().splitlines(keepends=True)
    groups.write_text("".join(":".join(line.split(":")[:3]) + ":\n" if line.startswith(CAPTURE_GROUP + ":") else line
                              for line in lines))
    os.chmod(tmp_path, 0o755)
    sshd = str(sandbox["pids"]["sshd"])
    subprocess.run(["nsenter", "-t", sshd, "-m", "mount", "--bind", str(groups), "/etc/group"], check=True)
    try:
        res = cli(lab, "doctor", "--json")
    finally:
        subprocess.run(["nsenter", "-t", sshd, "-m", "umount", "/etc/group"], check=True)
    assert res.returncode == 1
    failed = {c["name"]: c for c in json.loads(res.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {"tcpdump on the target"}, failed
    assert "may not run it" in failed["tcpdump on the target"]["detail"]
    assert setup_command(sandbox["ecs"]["user"]) in failed["tcpdump on the target"]["fix"]


def test_doctor_reports_a_blocked_port_with_its_fix(sandbox, sandbox_instance, tmp_path):
    lab = write_lab(tmp_path, sandbox_instance)
    sb.block_port(sandbox_instance, 25, how="drop")  # what Alibaba Cloud does to outbound 25
    try:
        res = cli(lab, "doctor", "--json")
    finally:
        sb.unblock_port(sandbox_instance, 25)
    assert res.returncode == 1
    failed = [c for c in json.loads(res.stdout)["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["reach smtp.lab.test:25 from the target"]
    assert "465" in failed[0]["fix"] and "587" in failed[0]["fix"]


def test_doctor_refuses_an_unknown_host_key(sandbox, sandbox_instance, tmp_path):
    ecs = sandbox["ecs"]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    profile = f"""  stranger:
    target: {{host: {ecs['host']}, user: {ecs['user']}, key: {ecs['key']}, known_hosts: {empty}}}
    servers:
      smtp: {{host: smtp.lab.test, plain: 25, starttls: 587, tls: 465}}
      pop3: {{host: pop.lab.test, plain: 110, tls: 995}}
      imap: {{host: imap.lab.test, plain: 143, tls: 993}}
      web: {{host: mail.lab.test, tls: 443}}
    account: {{address: student@lab.test, secret: {{env: LR_TEST_UNUSED}}}}
"""
    lab = write_lab(tmp_path, sandbox_instance, profiles=profile)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home)}  # no ~/.ssh/known_hosts of the developer's
    res = subprocess.run([sys.executable, "-m", "labrunner", "doctor", "-c", str(lab), "-p", "stranger", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1
    checks = json.loads(res.stdout)["checks"]
    ssh = [c for c in checks if c["name"].startswith("SSH to")]
    assert len(ssh) == 1 and not ssh[0]["ok"]
    assert ecs["host_key"] in ssh[0]["detail"] + ssh[0]["fix"]  # the fingerprint, to compare
    assert "trust_on_first_use" in ssh[0]["detail"] + ssh[0]["fix"]


def test_doctor_reports_missing_tcpdump(sandbox, sandbox_instance, tmp_path):
    """Hide tcpdump from the target's sshd only (its own mount namespace), not from this machine."""
    lab = write_lab(tmp_path, sandbox_instance)
    sshd_pid = sandbox["pids"]["sshd"]
    tcpdump = subprocess.run(["sh", "-c", "command -v tcpdump"], capture_output=True, text=True).stdout.strip()
    hide = ["nsenter", "-t", str(sshd_pid), "-m", "mount", "--bind", "/dev/null", tcpdump]
    subprocess.run(hide, check=True)
    try:
        res = cli(lab, "doctor", "--json")
    finally:
        subprocess.run(["nsenter", "-t", str(sshd_pid), "-m", "umount", tcpdump], check=True)
    assert res.returncode == 1
    failed = {c["name"]: c for c in json.loads(res.stdout)["checks"] if not c["ok"]}
    assert "tcpdump on the target" in failed or "capture permitted" in failed, failed
    assert "apt-get install tcpdump" in json.dumps(failed)


def test_unreachable_target_leaves_output_as_it_was(full_run, sandbox, tmp_path):
    """A refused connection or a missing password must not create a run or move `latest`."""
    lab, _summary, _ = full_run
    output = lab.parent / "output"
    before = sorted(p.name for p in output.iterdir())
    latest = (output / "latest").resolve()
    bad = write_lab(tmp_path / "bad", "unused", profiles=f"""  closed:
    target: {{host: {sandbox['mail']['host']}, port: 2, user: x, trust_on_first_use: true}}
    servers: {{smtp: {{host: smtp.lab.test, plain: 25}}}}
    account: {{address: student@lab.test, secret: {{env: LR_TEST_PASSWORD, prompt: false}}}}
""").read_text()
    lab2 = lab.parent / "lab-closed.yaml"
    lab2.write_text(bad.replace("output_dir: output", f"output_dir: {output}"))
    env = {**os.environ, "LR_TEST_PASSWORD": "x"}
    res = subprocess.run([sys.executable, "-m", "labrunner", "run", "telnet-smtp", "-p", "closed", "-c", str(lab2)],
                         capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3  # the error and its hint
    env.pop("LR_TEST_PASSWORD")
    res = subprocess.run([sys.executable, "-m", "labrunner", "run", "telnet-smtp", "-p", "closed", "-c", str(lab2)],
                         capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "LR_TEST_PASSWORD" in res.stderr
    assert sorted(p.name for p in output.iterdir()) == before
    assert (output / "latest").resolve() == latest


def test_ctrl_c_while_the_report_renders_says_how_to_render_it(sandbox, sandbox_instance, tmp_path):
    """Every result is in the run folder when the report starts: a Ctrl-C then keeps them and
    says the command that renders the report, and `latest` stays where it was."""
    from labrunner.config.load import load_lab
    from labrunner.run.lab import run_lab
    from labrunner.run.outcome import RunOptions

    lab = load_lab(write_lab(tmp_path, sandbox_instance))
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("rendering the report"):
            raise KeyboardInterrupt  # as the terminal's Ctrl-C lands in the main thread

    outcome = run_lab(lab, RunOptions(scenarios=["telnet-smtp"], pdf=False, progress=progress))
    assert outcome.interrupted and outcome.run_dir is not None
    assert outcome.report_error == ("interrupted while rendering the report; the results are kept: "
                                    f"labrunner report {outcome.run_dir}")
    assert lines[-1] == outcome.report_error
    assert entries(outcome.run_dir)["telnet-smtp"]["status"] == "passed"
    assert not (tmp_path / "output" / "latest").exists()
    res = cli(tmp_path / "lab.yaml", "report", str(outcome.run_dir), "--no-pdf")
    assert res.returncode == 0 and (outcome.run_dir / "report.html").is_file(), res.stderr


def test_a_run_ends_with_the_path_of_its_report(sandbox, sandbox_instance, tmp_path):
    """What `make demo` promises: the last line a student sees is where the report is; the
    reminder about the template's placeholder text comes just before."""
    lab = write_lab(tmp_path, sandbox_instance)
    res = subprocess.run([sys.executable, "-m", "labrunner", "run", "telnet-smtp", "--no-pdf", "-c", str(lab)],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL, timeout=600)
    assert res.returncode == 0, res.stdout
    lines = res.stdout.splitlines()
    assert lines[-1].startswith("report.html: ") and lines[-1].endswith("/report.html"), res.stdout
    assert lines[-2].startswith("提示：报告中还有 ") and "labrunner report" in lines[-2], res.stdout
