"""The shipped lab.yaml and scenarios, the CLI's output for bad files, and profile resolution."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labrunner.config import load_lab, load_scenarios, profile_from_state, resolve_profile
from labrunner.config.load import inventory_profile, known_servers, validate
from labrunner.config.model import HttpsStep, LinesStep, Pop3Step, SecretRef, SmtpStep, Text, WebmailStep
from labrunner.config.template import render
from labrunner.errors import ConfigError, SandboxError, UsageError

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "fixtures" / "config" / "bad"
PROBLEM_LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<path>\S+(?: \S+)?): (?P<msg>.+)$")


# --- the shipped files ----------------------------------------------------------------------


def test_shipped_lab_and_every_scenario_validate() -> None:
    lab = load_lab(ROOT / "lab.yaml")
    assert lab.default_profile == "sandbox"
    assert lab.scenarios_dir == ROOT / "scenarios"
    assert lab.output_dir == ROOT / "output"
    scenarios = load_scenarios(lab, None)
    files = sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    assert sorted(s.name for s in scenarios) == files
    # The run follows the seed's sections: client, plain SMTP, web mail, telnet, then POP3, IMAP.
    assert [s.name for s in scenarios] == [
        "mail-client", "plain-smtp", "webmail-tls", "telnet-smtp", "pop3", "imap"]
    for sc in scenarios:
        assert sc.title.zh and sc.title.en, sc.name
        assert sc.objective.zh and sc.objective.en, sc.name
        assert sc.notes.zh and sc.notes.en, sc.name


def test_shipped_qq_profile_is_the_seed_lab() -> None:
    qq = load_lab(ROOT / "lab.yaml").profiles["qq"]
    assert qq.servers["smtp"].host == "smtp.qq.com"
    assert qq.servers["smtp"].ports == {"plain": 25, "starttls": 587, "tls": 465}
    assert qq.servers["pop3"].ports == {"plain": 110, "tls": 995}
    assert qq.servers["imap"].ports == {"plain": 143, "tls": 993}
    assert qq.servers["web"].ports == {"tls": 443}
    assert qq.account.secret == SecretRef(env="QQ_AUTH_CODE", prompt=True)
    assert qq.target.key == str(Path("~/.ssh/id_ed25519").expanduser())


def test_shipped_inventory_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    # The commented example is what a TA copies: both kinds of entry must load as written.
    text = (ROOT / "lab.yaml").read_text(encoding="utf-8")
    head, sep, example = text.partition("# inventory:\n")
    assert sep, "lab.yaml lost its inventory example"
    lines = ["inventory:"] + [line.removeprefix("# ") for line in example.splitlines() if line.startswith("#   ")]
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "lab.yaml"
    path.write_text(head + "\n".join(lines) + "\n", encoding="utf-8")
    lab = load_lab(path)
    assert [(e.name, e.profile, e.sandbox) for e in lab.inventory] == [
        ("2020123456", "qq", None), ("2020000002", "sandbox", 2)]
    assert lab.inventory[1].report.student.name == Text(zh="王五", en="王五")


def test_shipped_scenarios_match_the_seed() -> None:
    lab = load_lab(ROOT / "lab.yaml")
    by_name = {s.name: s for s in load_scenarios(lab, None)}
    plain = by_name["plain-smtp"].steps[0]
    assert isinstance(plain, SmtpStep) and plain.security == "plain" and plain.auth == "login"
    assert plain.expect == {"greeting": 220, "ehlo": 250, "auth": 235, "mail": 250, "rcpt": 250,
                            "data": 354, "message": 250, "quit": 221}
    tls12, tls13, web, fetch = by_name["webmail-tls"].steps
    assert isinstance(tls12, HttpsStep) and isinstance(tls13, HttpsStep)
    # the web mail's login and send, the mail fetched back with POP3
    assert isinstance(web, WebmailStep) and isinstance(fetch, Pop3Step) and fetch.find == web.id
    # a browser-like offer: the server chooses the suite, as QQ Mail did
    assert (tls12.tls_version, tls12.ciphers) == ("1.2", None)
    assert tls13.tls_version == "1.3"
    # mail.qq.com answers 302 at /: both steps follow it to the page.
    assert tls12.follow_redirects == tls13.follow_redirects == 5
    (telnet,) = by_name["telnet-smtp"].steps
    assert isinstance(telnet, LinesStep) and telnet.port == "plain"
    sends = [item.send for item in telnet.script if item.send]
    assert "{account.user|base64}" in sends and "{account.secret|base64}" in sends
    assert [item.expect for item in telnet.script] == [220, 250, 334, 334, 235, 250, 250, 354, 250, 221]
    pop = by_name["pop3"].steps[1:]
    assert [s.security for s in pop if isinstance(s, Pop3Step)] == ["starttls", "tls"]
    imap_steps = by_name["imap"].steps[1:]
    # QQ Mail's IMAP on 143 offers no STARTTLS: the shipped scenario logs in in clear text there.
    assert [s.security for s in imap_steps] == ["plain", "tls"]  # type: ignore[union-attr]


def test_no_shipped_file_holds_a_credential() -> None:
    # The seed's leaked AUTH LOGIN lines must never be copied into a file we ship.
    for path in [ROOT / "lab.yaml", *sorted((ROOT / "scenarios").glob("*.yaml"))]:
        text = path.read_text(encoding="utf-8")
        assert "enVqbnVobWFhcnB5YmJiYg" not in text, path
        assert "ODc3MjYxNzkzQHFxLmNvbQ" not in text, path
        assert not re.search(r"(?m)^\s*(password|secret|auth_code)\s*:\s*['\"]?\w", text), path


# --- the command line -----------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LABRUNNER_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "labrunner", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_validate_cli_prints_each_problem_and_exits_2() -> None:
    proc = run_cli("validate", cwd=BAD)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [
        "scenarios/laughs.yaml:6:4: yaml: the document expands to more than 100000 values "
        "(aliases inside aliases?); refusing it",
        "scenarios/telnet-typo.yaml:6:7: steps[1].lines.prot: unknown key (did you mean 'port'?); "
        "allowed: server, security, port, protocol, script, id",
        "scenarios/telnet-typo.yaml:9:45: steps[1].lines.script[2].expect: an SMTP reply is a code from "
        "200 to 599 (or a class 2 to 5), got '25O'",
        "3 problems found; fix them and run `labrunner validate` again.",
    ]
    for line in lines[:-1]:
        assert PROBLEM_LINE.match(line), line


def test_validate_cli_from_another_folder_shows_paths_below_it(tmp_path: Path) -> None:
    proc = run_cli("validate", "-c", "tests/fixtures/config/bad/lab.yaml", "telnet-typo", cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith(
        "tests/fixtures/config/bad/scenarios/telnet-typo.yaml:6:7: steps[1].lines.prot: ")
    # Outside the project the path is shown as it is, absolute.
    proc = run_cli("validate", "-c", str(BAD / "lab.yaml"), "telnet-typo", cwd=tmp_path)
    assert proc.stderr.splitlines()[0].startswith(f"{BAD}/scenarios/telnet-typo.yaml:6:7: ")


def test_validate_cli_unknown_scenario_name() -> None:
    proc = run_cli("validate", "telnet-typp", cwd=BAD)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "labrunner: error: no scenario named 'telnet-typp' (did you mean 'telnet-typo'?); "
        "available: laughs, telnet-typo",
        "  hint: `labrunner list` shows them with their titles",
    ]


def test_validate_cli_missing_lab_file(tmp_path: Path) -> None:
    proc = run_cli("validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (f"labrunner: error: lab.yaml not found in {tmp_path}: create one (see README) "
                           "or pass -c FILE\n")


def test_validate_cli_on_the_shipped_files() -> None:
    proc = run_cli("validate", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok: lab.yaml and 6 scenario(s) are valid\n"  # the path as given (the default)


# --- profiles -------------------------------------------------------------------------------

STATE = {
    "instance": "cfgtest",
    "ecs": {"host": "10.77.9.2", "port": 22, "user": "labrunner", "key": "/run/x/id_ed25519",
            "host_key": "SHA256:" + "A" * 43, "known_hosts": "/run/x/known_hosts",
            "netns": "lr-cfgtest-ecs", "interface": "eth0"},
    "servers": {
        "smtp": {"host": "smtp.lab.test", "ports": {"plain": 25, "starttls": 587, "tls": 465}},
        "pop3": {"host": "pop.lab.test", "ports": {"plain": 110, "tls": 995}},
        "imap": {"host": "imap.lab.test", "ports": {"plain": 143, "tls": 993}},
        "web": {"host": "mail.lab.test", "ports": {"tls": 443}},
    },
    "account": {"address": "student@lab.test", "user": "student@lab.test", "password": "pw-in-state"},
    "ca_file": "/run/x/ca.crt",
    "maildir": "/run/x/Maildir",
}


@pytest.fixture
def sandbox_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state file where the sandbox keeps it, under a temporary run folder."""
    from labrunner.sandbox import layout

    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path)
    path = layout.Layout("cfgtest").state_file
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(STATE))
    return path


def test_resolve_sandbox_profile_from_the_state_file(sandbox_state: Path) -> None:
    lab = load_lab(ROOT / "lab.yaml")
    prof = resolve_profile(lab, None, instance="cfgtest")
    assert prof.name == "sandbox" and prof.from_sandbox
    assert prof.target.host == "10.77.9.2" and prof.target.user == "labrunner"
    assert prof.target.host_key == STATE["ecs"]["host_key"]  # type: ignore[index]
    assert prof.servers["smtp"].port("starttls") == 587
    assert prof.servers["pop3"].port("starttls") == 110  # STLS on the plain port
    assert prof.account.secret == SecretRef(state="password", prompt=False)
    assert prof.ca_file == "/run/x/ca.crt"
    assert "pw-in-state" not in repr(prof)  # the password stays in the state


def test_resolve_sandbox_profile_uses_the_instance_in_lab_yaml(
        sandbox_state: Path, tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text("profiles:\n  sandbox: {from_sandbox: true, instance: cfgtest}\n")
    assert resolve_profile(load_lab(tmp_path / "lab.yaml"), "sandbox").target.host == "10.77.9.2"


def test_sandbox_not_running_is_one_line(sandbox_state: Path) -> None:
    with pytest.raises(SandboxError) as exc:
        resolve_profile(load_lab(ROOT / "lab.yaml"), "sandbox", instance="other")
    assert "not running" in str(exc.value)


def test_incomplete_state_is_a_sandbox_error() -> None:
    prof = load_lab(ROOT / "lab.yaml").profiles["sandbox"]
    broken = {**STATE, "servers": {"smtp": {"host": "x"}}}
    with pytest.raises(SandboxError, match=r"servers\.smtp"):
        profile_from_state(prof, broken)
    with pytest.raises(SandboxError, match=r"ecs\.host"):
        profile_from_state(prof, {**STATE, "ecs": {}})


def test_static_profile_and_unknown_profile() -> None:
    lab = load_lab(ROOT / "lab.yaml")
    assert resolve_profile(lab, "qq") is lab.profiles["qq"]
    with pytest.raises(UsageError) as exc:
        resolve_profile(lab, "QQ")
    assert "no profile named 'QQ'" in str(exc.value) and "profiles: sandbox, qq" in str(exc.value)


def test_known_servers_come_from_every_profile(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(
        "default_profile: p\nprofiles:\n  p:\n    target: {host: h}\n"
        "    servers: {smtp: {host: s, tls: 465}, submission: {host: s, starttls: 587}}\n"
        "    account: {address: a@b.c}\n")
    assert known_servers(load_lab(tmp_path / "lab.yaml")) == {"smtp", "submission"}


def test_inventory_entries_inherit_the_lab_report(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text("""\
report: {school: 示例大学, course: 计算机网络, lang: en, student: {name: 老师, class: 计科2001}}
profiles:
  qq:
    target: {host: h}
    servers: {smtp: {host: smtp.qq.com, tls: 465}}
    account: {address: a@qq.com, secret: {env: QQ_AUTH_CODE}}
default_profile: qq
inventory:
  - name: 2020123456
    target: {host: 198.51.100.21, user: root}
    account: {address: b@qq.com, secret: {env: QQ_B}}
    report: {student: {name: 李四, id: 2020123456}}
""")
    lab = load_lab(tmp_path / "lab.yaml")
    (entry,) = lab.inventory
    assert entry.name == "2020123456" and entry.profile == "qq"
    assert entry.report.school == Text(zh="示例大学", en="示例大学") and entry.report.lang == "en"
    assert (entry.report.student.name.zh, entry.report.student.id, entry.report.student.klass) == (
        "李四", "2020123456", "计科2001")
    prof = inventory_profile(lab, entry)
    assert prof.target.host == "198.51.100.21"
    assert prof.account.secret.env == "QQ_B"
    assert prof.servers["smtp"].host == "smtp.qq.com"


def test_paths_are_relative_to_the_lab_file(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(
        "scenarios_dir: mine\noutput_dir: /tmp/out\nreport: {templates: tpl}\n"
        "profiles:\n  sandbox: {from_sandbox: true}\n")
    lab = load_lab(tmp_path / "lab.yaml")
    assert lab.scenarios_dir == tmp_path / "mine"
    assert lab.output_dir == Path("/tmp/out")
    assert lab.report.templates == str(tmp_path / "tpl")


# --- placeholders ---------------------------------------------------------------------------


def test_render_fills_placeholders_in_memory() -> None:
    values = {"account.address": "s@lab.test", "account.user": "s@lab.test", "account.secret": "pw"}
    assert render("{account.user|base64}", values) == "c0BsYWIudGVzdA=="
    assert render("{account.secret|base64}", values) == "cHc="
    assert render("MAIL FROM:<{account.address}> {{x}}", values) == "MAIL FROM:<s@lab.test> {x}"
    assert render("AUTH PLAIN {auth.plain}", values) == "AUTH PLAIN AHNAbGFiLnRlc3QAcHc="


def test_each_script_line_knows_where_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The position names the scenario folder and file, whatever folder labrunner runs from, so
    # a failure in the report points at the line without an absolute path.
    monkeypatch.chdir(tmp_path)
    lab = load_lab(ROOT / "lab.yaml")
    (telnet,) = load_scenarios(lab, ["telnet-smtp"])
    step = telnet.steps[0]
    assert isinstance(step, LinesStep)
    lines = (ROOT / "scenarios" / "telnet-smtp.yaml").read_text(encoding="utf-8").split("\n")
    quit_line = next(n for n, text in enumerate(lines, 1) if '{send: "QUIT"' in text)
    assert step.script[-1].send == "QUIT"
    assert step.script[-1].where == f"scenarios/telnet-smtp.yaml:{quit_line}:11"
    assert all(item.where.startswith("scenarios/telnet-smtp.yaml:") for item in step.script)


# --- the SSH key of the profile a run would use (#11) ---------------------------------------


def _qq_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None = None,
            default: str = "qq") -> Path:
    """The shipped lab.yaml and scenarios in tmp_path, with HOME there too (no key yet)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scenarios").mkdir()
    for scenario in (ROOT / "scenarios").glob("*.yaml"):
        (tmp_path / "scenarios" / scenario.name).write_text(scenario.read_text(encoding="utf-8"), encoding="utf-8")
    text = (ROOT / "lab.yaml").read_text(encoding="utf-8")
    text = text.replace("default_profile: sandbox", f"default_profile: {default}")
    if key is not None:
        text = text.replace("key: ~/.ssh/id_ed25519 ", f"key: {key} ")
    (tmp_path / "lab.yaml").write_text(text, encoding="utf-8")
    return home


def _key_line(text: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), 1) if line.strip().startswith("key: "))


def test_validate_reports_the_missing_key_of_the_profile_in_use(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _qq_lab(tmp_path, monkeypatch)
    line = _key_line((tmp_path / "lab.yaml").read_text(encoding="utf-8"))
    with pytest.raises(ConfigError) as exc:
        validate("lab.yaml")
    assert exc.value.problems == [
        f"lab.yaml:{line}:12: profiles.qq.target.key: the key file ~/.ssh/id_ed25519 does not exist; give the "
        "path of the private key you log in with, or make one with `ssh-keygen -t ed25519`"]


def test_validate_accepts_the_key_once_it_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _qq_lab(tmp_path, monkeypatch)
    (home / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    lab, scenarios = validate("lab.yaml")
    assert lab.profiles["qq"].target.key == str(home / ".ssh" / "id_ed25519") and len(scenarios) == 6


@pytest.mark.parametrize(("key", "content", "expected"), [
    ("~/.ssh/id_ed25519.pub", "ssh-ed25519 AAAAC3Nza student@pc\n",
     "this is a public key; give the private key (the same name without .pub: id_ed25519)"),
    ("~/.ssh/mykey", "ssh-rsa AAAAB3Nza student@pc\n", "this is a public key; give the private key"),
])
def test_validate_refuses_a_public_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       key: str, content: str, expected: str) -> None:
    home = _qq_lab(tmp_path, monkeypatch, key=key)
    (home / key.removeprefix("~/")).write_text(content)
    with pytest.raises(ConfigError) as exc:
        validate("lab.yaml")
    assert [p.split(": ", 2)[2] for p in exc.value.problems] == [expected]


def test_only_the_profile_in_use_has_its_key_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The sandbox profile is the default: the qq profile's key may belong to another machine.
    _qq_lab(tmp_path, monkeypatch, default="sandbox")
    _, scenarios = validate("lab.yaml")
    assert len(scenarios) == 6
    with pytest.raises(ConfigError) as exc:
        validate("lab.yaml", profile="qq")
    assert "profiles.qq.target.key: the key file ~/.ssh/id_ed25519 does not exist" in exc.value.problems[0]


def test_a_missing_key_and_scenario_problems_are_shown_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _qq_lab(tmp_path, monkeypatch)
    telnet = tmp_path / "scenarios" / "telnet-smtp.yaml"
    telnet.write_text(telnet.read_text(encoding="utf-8").replace("protocol: smtp", "protocl: smtp"), encoding="utf-8")
    proc = run_cli("validate", cwd=tmp_path)  # HOME is the test's, set above
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("lab.yaml:") and "profiles.qq.target.key: the key file" in lines[0]
    assert lines[1].startswith("scenarios/telnet-smtp.yaml:") and "protocl: unknown key" in lines[1]
    assert lines[2] == "2 problems found; fix them and run `labrunner validate` again."
