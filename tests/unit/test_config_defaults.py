"""Each configuration key is declared once (config/model.py): a profile written in lab.yaml, a
sandbox profile and a class (inventory) profile get the same defaults, and the Sections that
check the files are the model's declarations, not a second copy of them."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from labrunner.config import model, schema
from labrunner.config.load import inventory_profile, load_lab, resolve_profile
from labrunner.config.options import FIELD_OPTION, Section
from labrunner.sandbox import layout

LAB = """\
profiles:
  sandbox: {from_sandbox: true, instance: dflt}
  qq:
    target: {host: h.example}
    servers: {smtp: {host: smtp.qq.com, tls: 465}}
    account: {address: a@qq.com, secret: {env: QQ}}
inventory:
  - {name: s1, sandbox: 1}
"""


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> model.Lab:
    """lab.yaml with a written profile, a sandbox profile and a class entry, and the sandbox's state."""
    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path / "run")
    target = {"host": "10.77.1.2", "port": 22, "user": "labrunner-lab", "key": "/k", "host_key": "SHA256:x",
              "known_hosts": "/kh", "netns": "lr-dflt-ecs", "interface": "eth0"}
    account = {"address": "student@lab.test", "user": "student@lab.test", "password": "pw"}
    state = {"instance": "dflt", "ecs": target, "servers": {"smtp": {"host": "smtp.lab.test", "ports": {"plain": 25}}},
             "account": account, "ca_file": "/ca.crt", "targets": [{"name": "ecs", **target}], "accounts": [account]}
    folder = tmp_path / "run" / "sandbox-dflt"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps(state))
    (tmp_path / "lab.yaml").write_text(LAB, encoding="utf-8")
    return load_lab(tmp_path / "lab.yaml")


def _targets(lab: model.Lab) -> dict[str, model.TargetSpec]:
    return {"lab.yaml": resolve_profile(lab, "qq").target, "sandbox": resolve_profile(lab, "sandbox").target,
            "class": inventory_profile(lab, lab.inventory[0]).target}


# keys neither lab.yaml above nor the sandbox state gives: each must have its declared default everywhere
NOT_GIVEN = [f.name for f in dataclasses.fields(model.TargetSpec)
             if f.name not in ("host", "port", "user", "key", "host_key", "known_hosts")]
OTHER = {"trust_on_first_use": True, "password": model.SecretRef(env="SSH_PW"), "proxy_jump": "jump@bastion",
         "local": True, "connect_timeout": 3.5, "command_timeout": 7.25}


def test_every_kind_of_profile_gets_the_declared_defaults(lab: model.Lab) -> None:
    assert set(NOT_GIVEN) == set(OTHER)
    for kind, target in _targets(lab).items():
        for name in NOT_GIVEN:
            declared = next(f for f in dataclasses.fields(model.TargetSpec) if f.name == name).default
            assert getattr(target, name) == declared, (kind, name)


@pytest.mark.parametrize("name", NOT_GIVEN)
def test_a_changed_default_reaches_lab_yaml_sandbox_and_class_profiles_alike(
        lab: model.Lab, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # the one declaration of the key, changed: every kind of profile must follow it (before, a sandbox
    # or class target was built with the dataclass's own copy of the timeouts and kept the old value)
    changed = copy.copy(schema.TARGET.fields[name])
    changed.default = OTHER[name]
    monkeypatch.setitem(schema.TARGET.fields, name, changed)
    lab = load_lab(lab.path)
    assert {kind: getattr(t, name) for kind, t in _targets(lab).items()} == dict.fromkeys(
        ("lab.yaml", "sandbox", "class"), OTHER[name])


def _sections() -> list[tuple[type, Section]]:
    return [(model.TargetSpec, schema.TARGET), (model.AccountSpec, schema.ACCOUNT), (model.Profile, schema.PROFILE),
            (model.Student, schema.STUDENT), (model.ReportMeta, schema.REPORT), (model.CaptureSpec, schema.CAPTURE),
            (model.InventoryEntry, schema.INVENTORY_ENTRY), (model.Scenario, schema.SCENARIO),
            (model.Attachment, schema.ATTACHMENT), (model.MessageSpec, schema.MESSAGE),
            (model.LineItem, schema.LINE_ITEM), (model.SmtpStep, schema.SMTP_STEP), (model.Pop3Step, schema.POP3_STEP),
            (model.ImapStep, schema.IMAP_STEP), (model.LinesStep, schema.LINES_STEP),
            (model.HttpsStep, schema.HTTPS_STEP), (model.WebmailStep, schema.WEBMAIL_STEP),
            (model.ImportStep, schema.IMPORT_STEP)]


@pytest.mark.parametrize(("cls", "section"), _sections(), ids=lambda x: getattr(x, "__name__", ""))
def test_each_key_of_a_section_is_its_model_field_and_has_the_fields_default(cls: type, section: Section) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, option in section.fields.items():
        f = fields[option.attr or key]
        if FIELD_OPTION in f.metadata:  # declared by its option: the default and help are that option's
            assert option.help == f.metadata[FIELD_OPTION].help, (cls.__name__, key)
        if f.default is not dataclasses.MISSING and option.default is not None:
            assert option.default == f.default, (cls.__name__, key)
        elif f.default_factory is not dataclasses.MISSING and option.default is not None:
            assert option.default == f.default_factory(), (cls.__name__, key)


def test_a_new_key_is_one_field(tmp_path: Path) -> None:
    # declared once, as a field: the Section checks it, documents it and builds the model with it
    from labrunner.config.options import Ctx, Float, opt
    from labrunner.config.yaml import parse

    @dataclasses.dataclass(frozen=True)
    class Thing:
        delay: float = opt(Float(2.5, "seconds to wait"))

    section = Section.from_dataclass(Thing, "thing")
    empty, _ = parse("{}")
    assert section.validate(empty, empty.mark, (), Ctx(tmp_path / "x.yaml")) == Thing(2.5)
    wrong, _ = parse("delay: -1")
    ctx = Ctx(tmp_path / "x.yaml")
    section.validate(wrong, wrong.mark, (), ctx)
    assert [(p.mark.line, p.mark.column, p.path, p.message) for p in ctx.problems] == [
        (1, 8, "delay", "-1 must be greater than 0")]
    assert "| `delay` | a number | `2.5` | seconds to wait |" in schema.describe(section)
