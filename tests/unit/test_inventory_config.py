"""An inventory of sandbox targets: `sandbox: N` and `secret: {sandbox: N}` in lab.yaml."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from labrunner.config.load import inventory_profile, load_lab
from labrunner.errors import ConfigError, SandboxError, UsageError
from labrunner.sandbox import layout

HEAD = """\
profiles:
  sandbox: {from_sandbox: true, instance: klass}
  qq:
    target: {host: h}
    servers: {smtp: {host: smtp.qq.com, tls: 465}}
    account: {address: a@qq.com, secret: {env: QQ}}
inventory:
"""


def lab_file(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(entries), "  "), encoding="utf-8")
    return path


def problems(tmp_path: Path, entries: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_lab(lab_file(tmp_path, entries))
    return exc.value.problems


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A state file as `sandbox up --targets 2` writes it, in a private run root."""
    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path / "run")
    targets = [{"name": n, "host": h, "port": 22, "user": "labrunner-lab", "key": "/k", "host_key": f"SHA256:{n}",
                "known_hosts": f"/kh-{n}", "netns": f"lr-klass-{n}", "interface": "eth0"}
               for n, h in (("ecs", "10.77.1.2"), ("ecs2", "10.77.1.12"))]
    accounts = [{"address": a, "user": a, "password": f"pw-{a}"} for a in ("student@lab.test", "student2@lab.test")]
    data = {
        "instance": "klass", "ecs": {k: v for k, v in targets[0].items() if k != "name"},
        "servers": {"smtp": {"host": "smtp.lab.test", "ports": {"plain": 25}}},
        "account": accounts[0], "ca_file": "/ca.crt", "targets": targets, "accounts": accounts,
    }
    folder = tmp_path / "run" / "sandbox-klass"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps(data))
    return data


def test_sandbox_entry_takes_target_and_account_n_from_the_state(tmp_path: Path, state: dict) -> None:
    lab = load_lab(lab_file(tmp_path, """\
        - {name: s2, sandbox: 2, report: {student: {name: 李四}}}
        """))
    (entry,) = lab.inventory
    assert entry.sandbox == 2 and entry.profile == "sandbox"
    prof = inventory_profile(lab, entry)
    t = prof.target
    assert (t.host, t.host_key, t.known_hosts) == ("10.77.1.12", "SHA256:ecs2", "/kh-ecs2")
    assert prof.account.address == "student2@lab.test"
    # the password stays in the state: only where to find it is in the profile
    assert prof.account.secret.sandbox == 2 and prof.account.secret.state == "password"
    assert "pw-" not in repr(prof)
    assert prof.servers["smtp"].host == "smtp.lab.test" and prof.from_sandbox


def test_account_secret_from_the_sandbox_with_an_own_target(tmp_path: Path, state: dict) -> None:
    lab = load_lab(lab_file(tmp_path, """\
        - name: s2
          target: {host: 10.77.1.12, host_key: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
          account: {address: student2@lab.test, secret: {sandbox: 2}}
        """))
    prof = inventory_profile(lab, lab.inventory[0])
    assert prof.target.host_key == "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    assert prof.account.secret.sandbox == 2


def test_secret_of_another_account_is_one_clear_error(tmp_path: Path, state: dict) -> None:
    lab = load_lab(lab_file(tmp_path, """\
        - {name: s1, target: {host: h}, account: {address: student@lab.test, secret: {sandbox: 2}}}
        """))
    with pytest.raises(UsageError, match=r"secret \{sandbox: 2\} is the password of student2@lab.test, "
                                         r"not of student@lab.test"):
        inventory_profile(lab, lab.inventory[0])


def test_more_targets_than_the_sandbox_has_says_how_to_start_them(tmp_path: Path, state: dict) -> None:
    lab = load_lab(lab_file(tmp_path, "- {name: s3, sandbox: 3}\n"))
    with pytest.raises(SandboxError) as exc:
        inventory_profile(lab, lab.inventory[0])
    assert str(exc.value) == "inventory entry 's3' wants sandbox target 3, but the sandbox `klass` has 2"
    assert exc.value.hint == "start a class of 3 or more: `labrunner sandbox up --instance klass --targets 3`"


def test_sandbox_entry_problems_are_found_at_load_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = problems(tmp_path, """\
        - {name: a, sandbox: 0}
        - {name: b, sandbox: 2, target: {host: h}}
        - {name: c}
        - {name: d, profile: qq, sandbox: 1}
        - {name: e, profile: qq, target: {host: h}, account: {address: x@y.z, secret: {sandbox: 1}}}
        - {name: f, target: {host: i}, account: {address: x@y.z, secret: {sandbox: 1, env: X}}}
        - {name: g, target: {host: j}, account: {address: x@y.z, secret: {sandbox: many}}}
        """)
    assert found == [
        "lab.yaml:8:24: inventory[1].sandbox: 0 is out of range: allowed 1 to 40",
        "lab.yaml:9:27: inventory[2].target: `sandbox: N` takes this from target N of "
        "`labrunner sandbox up --targets`; remove it",
        "lab.yaml:10:5: inventory[3].target: missing required key (or set sandbox: N for a sandbox target)",
        "lab.yaml:10:5: inventory[3].account: missing required key (or set sandbox: N for a sandbox target)",
        "lab.yaml:11:37: inventory[4].sandbox: the profile 'qq' is not a sandbox profile (from_sandbox: true), "
        "so there is no sandbox target or account to use; set profile: to a from_sandbox one",
        "lab.yaml:12:91: inventory[5].account.secret.sandbox: the profile 'qq' is not a sandbox profile "
        "(from_sandbox: true), so there is no sandbox target or account to use; set profile: to a from_sandbox one",
        "lab.yaml:13:81: inventory[6].account.secret.env: give sandbox or env/prompt, not both",
        "lab.yaml:14:78: inventory[7].account.secret.sandbox: expected the number of a sandbox account, "
        "1 to 40 (1 = student@lab.test, 2 = student2@lab.test ...)",
    ]


def test_a_profile_account_cannot_name_a_sandbox_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lab.yaml"
    path.write_text("default_profile: qq\nprofiles:\n  qq:\n    target: {host: h}\n"
                    "    servers: {smtp: {host: s, tls: 465}}\n"
                    "    account: {address: a@b.c, secret: {sandbox: 1}}\n")
    with pytest.raises(ConfigError) as exc:
        load_lab(path)
    assert exc.value.problems == [
        "lab.yaml:6:40: profiles.qq.account.secret: unknown key (not shown: it may be the secret); "
        "allowed: env, prompt"]


def test_two_students_on_one_host_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F8 refused them (they would capture each other's sessions and passwords at once); a class
    run now takes them one after the other on their host (run/turns.py), as a teaching assistant
    with 10 hosts for 30 students does, so `validate` accepts them."""
    monkeypatch.chdir(tmp_path)
    lab = load_lab(lab_file(tmp_path, """\
        - {name: alice, sandbox: 1}
        - {name: bob, sandbox: 1}
        - {name: carol, profile: qq, target: {host: 203.0.113.7}, account: {address: c@q.cn, secret: {env: C}}}
        - {name: dave, profile: qq, target: {host: 203.0.113.7, port: 22}, account: {address: d@q.cn, secret: {env: D}}}
        """))
    assert [e.name for e in lab.inventory] == ["alice", "bob", "carol", "dave"]
