"""The sandbox state file, typed (sandbox/state.py): what the rest of labrunner reads of it."""

from __future__ import annotations

import copy

import pytest

from labrunner.errors import SandboxError
from labrunner.sandbox.state import MailAccount, SshHost, State

TARGETS = [{"name": n, "host": h, "port": 22, "user": "labrunner-lab", "key": "/k", "host_key": f"SHA256:{n}",
            "known_hosts": f"/kh-{n}", "netns": f"lr-t-{n}", "interface": "eth0"}
           for n, h in (("ecs", "10.77.1.2"), ("ecs2", "10.77.1.12"))]
ACCOUNTS = [{"address": a, "user": a, "password": f"pw-{a}", "maildir": f"/srv/{a}"}
            for a in ("student@lab.test", "student2@lab.test")]
# the shape lifecycle._state writes (version 2)
DOC = {
    "instance": "t", "version": 2, "created": "2026-12-05T20:00:00+00:00", "subnet": "10.77.1.0/24",
    "ecs": {**{k: v for k, v in TARGETS[0].items() if k != "name"}, "uid": 1000, "gid": 1000},
    "mail": {"host": "10.77.1.3", "netns": "lr-t-mail", "interface": "eth0"},
    "servers": {"smtp": {"host": "smtp.lab.test", "ports": {"plain": 25, "starttls": 587, "tls": 465}},
                "web": {"host": "mail.lab.test", "ports": {"tls": 443}}},
    "account": {k: v for k, v in ACCOUNTS[0].items() if k != "maildir"}, "ca_file": "/srv/certs/ca.crt",
    "pids": {}, "targets": TARGETS, "accounts": ACCOUNTS,
}


def test_a_state_file_reads_into_typed_parts() -> None:
    state = State.from_json(DOC)
    assert state.instance == "t" and state.version == 2 and state.created == DOC["created"]
    assert state.ecs == SshHost(name="ecs", host="10.77.1.2", port=22, user="labrunner-lab", key="/k",
                                host_key="SHA256:ecs", known_hosts="/kh-ecs", netns="lr-t-ecs", interface="eth0")
    assert [t.host for t in state.targets] == ["10.77.1.2", "10.77.1.12"] and state.targets[1].name == "ecs2"
    assert state.servers["smtp"].ports == {"plain": 25, "starttls": 587, "tls": 465}
    assert state.account.address == "student@lab.test" and state.account.secret("password") == "pw-student@lab.test"
    assert state.account_number(None) is state.account
    assert state.account_number(2) == MailAccount("student2@lab.test", "student2@lab.test",
                                                  "pw-student2@lab.test", "/srv/student2@lab.test")
    assert state.account_number(3) is None and state.account_number(0) is None
    assert state.ca_file == "/srv/certs/ca.crt"
    assert state.document == DOC  # the sandbox's own code still has the whole file


def test_the_password_is_in_no_repr() -> None:
    state = State.from_json(DOC)
    assert "pw-" not in repr(state) and "pw-" not in str(state.accounts)


def test_a_state_of_one_target_without_the_class_lists() -> None:
    older = {k: v for k, v in DOC.items() if k not in ("targets", "accounts")}
    state = State.from_json(older)
    assert state.targets == (state.ecs,) and state.accounts == (state.account,)


@pytest.mark.parametrize(("path", "named"), [
    (("ecs", "host"), "ecs.host"), (("servers",), "servers.smtp"), (("servers", "smtp", "ports"), "servers.smtp"),
    (("account", "address"), "account.address"), (("targets", 1, "host"), "targets[2].host"),
    (("accounts", 0, "address"), "accounts[1].address"),
])
def test_a_missing_part_is_one_sandbox_error_naming_it(path: tuple, named: str) -> None:
    doc = copy.deepcopy(DOC)
    part = doc
    for key in path[:-1]:
        part = part[key]
    del part[path[-1]]
    with pytest.raises(SandboxError) as info:
        State.from_json(doc)
    assert str(info.value) == f"the sandbox state has no usable {named}"
    assert "labrunner sandbox up" in (info.value.hint or "")
    with pytest.raises(SandboxError, match="not a JSON object"):
        State.from_json(["not", "a", "state"])
