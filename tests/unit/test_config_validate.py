"""Validation of scenario files and lab.yaml: every problem, each at its exact line:col."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from labrunner.config.load import load_lab, load_scenarios
from labrunner.errors import ConfigError, UsageError

LAB = """\
default_profile: sandbox
profiles:
  sandbox: {from_sandbox: true}
"""

GOOD_STEP = "steps:\n  - smtp: {security: plain}\n"


@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "lab.yaml").write_text(LAB)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(lab_dir: Path, name: str, text: str) -> None:
    (lab_dir / "scenarios" / name).write_text(textwrap.dedent(text), encoding="utf-8")


def problems(names: list[str] | None = None) -> list[str]:
    lab = load_lab("lab.yaml")
    with pytest.raises(ConfigError) as exc:
        load_scenarios(lab, names)
    return exc.value.problems


def lab_problems(text: str, lab_dir: Path) -> list[str]:
    (lab_dir / "lab.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_lab("lab.yaml")
    return exc.value.problems


def test_yaml_syntax_error(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp: {security: plain
        """)
    # Shown where the `{` opened, not at the end of the file where PyYAML noticed it.
    assert problems() == [
        "scenarios/x.yaml:3:11: yaml syntax: the `{` opened here is never closed; add the closing `}` "
        "after its last item (items are separated by `,`)"
    ]


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("file", "line", "old", "new", "expected"), [
    ("lab.yaml", 14, "  school:", " school:",
     "lab.yaml:14:2: yaml syntax: indentation: this line is indented 1 space, the lines around it 2; "
     "keys of one mapping must line up"),
    ("lab.yaml", 15, "  course:", "\tcourse:",
     "lab.yaml:15:1: yaml syntax: a tab character: YAML indents with spaces only; replace the tab with spaces"),
    ("scenarios/telnet-smtp.yaml", 21, "      server:", "     server:",
     "scenarios/telnet-smtp.yaml:21:6: yaml syntax: indentation: this line is indented 5 spaces, "
     "the lines around it 6; keys of one mapping must line up"),
])
def test_the_reviews_slips_in_the_shipped_files_point_at_the_slip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        file: str, line: int, old: str, new: str, expected: str) -> None:
    from labrunner.config.load import validate

    (tmp_path / "scenarios").mkdir()
    for name in ("lab.yaml", "scenarios/telnet-smtp.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text(encoding="utf-8"), encoding="utf-8")
    lines = (tmp_path / file).read_text(encoding="utf-8").split("\n")
    assert lines[line - 1].startswith(old), "the shipped file changed: update this test's line"
    lines[line - 1] = new + lines[line - 1][len(old):]
    (tmp_path / file).write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        validate("lab.yaml")
    assert expected in exc.value.problems


def test_wrong_type(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp: {port: "25"}
        """)
    assert problems() == [
        "scenarios/x.yaml:3:18: steps[1].smtp.port: expected a port number (1-65535), got a string ('25')"
    ]


def test_unknown_key_with_did_you_mean(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\n" + GOOD_STEP + "captrue: {enabled: false}\n")
    (line,) = problems()
    assert line.startswith("scenarios/x.yaml:4:1: captrue: unknown key (did you mean 'capture'?); allowed: ")


def test_unknown_key_deep_inside_a_step(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp:
              message: {subjet: hi}
        """)
    (line,) = problems()
    assert line.startswith("scenarios/x.yaml:4:17: steps[1].smtp.message.subjet: unknown key "
                           "(did you mean 'subject'?)")


def test_missing_required_key(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\n")
    (line,) = problems()
    assert line.startswith("scenarios/x.yaml:1:1: steps: missing required key")


def test_bad_enum_value_lists_the_allowed_ones(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp:
              security: starttsl
        """)
    assert problems() == [
        "scenarios/x.yaml:4:17: steps[1].smtp.security: 'starttsl' is not one of: plain, starttls, tls "
        "(did you mean 'starttls'?)"
    ]


def test_two_errors_in_one_file_are_both_reported_in_order(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: {zh: 标题, en: 5}
        steps:
          - https: {tls_version: "TLS1.3"}
        """)
    assert problems() == [
        "scenarios/x.yaml:1:21: title.en: expected a string, got a number (5)",
        "scenarios/x.yaml:3:26: steps[1].https.tls_version: 'TLS1.3' is not one of: 1.2, 1.3 "
        "(did you mean '1.3'?)",
    ]


def test_problems_of_several_files_come_together(lab_dir: Path) -> None:
    write(lab_dir, "a.yaml", "title: a\nsteps: []\n")
    write(lab_dir, "b.yaml", "title: b\nsteps:\n  - ftp: {}\n")
    assert problems() == [
        "scenarios/a.yaml:2:8: steps: must not be empty",
        "scenarios/b.yaml:3:5: steps[1].ftp: unknown step kind; allowed: smtp, pop3, imap, lines, https, webmail, "
        "import",
    ]


def test_duplicate_keys(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\n" + GOOD_STEP + "title: y\n")
    assert problems() == ["scenarios/x.yaml:4:1: title: duplicate key (first at line 1); keep only one"]


def test_unknown_server_lists_the_known_ones(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - pop3: {server: pop}\n")
    assert problems() == [
        "scenarios/x.yaml:3:20: steps[1].pop3.server: unknown server 'pop'; the profiles have: "
        "imap, pop3, smtp, web (did you mean 'pop3'?)"
    ]


def test_find_must_name_an_earlier_step_that_sent_a_mail(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - pop3: {find: sent}
          - smtp: {id: sent}
          - imap: {find: snt}
          - smtp: {id: sent}
          - https: {id: page}
          - pop3: {find: page}
          - lines: {id: typed, script: [{send_message: {text: hi}, expect: 250}]}
          - imap: {find: typed}
        """)
    assert problems() == [
        "scenarios/x.yaml:3:18: steps[1].pop3.find: no earlier step that sends a mail has id 'sent'; "
        "give the smtp (or lines) step that sends it an id",
        "scenarios/x.yaml:5:18: steps[3].imap.find: no earlier step that sends a mail has id 'snt'; "
        "earlier ones: sent (did you mean 'sent'?)",
        "scenarios/x.yaml:6:16: steps[4].smtp.id: id 'sent' is used by an earlier step",
        "scenarios/x.yaml:8:18: steps[6].pop3.find: no earlier step that sends a mail has id 'page'; "
        "earlier ones: sent",
    ]


def test_lines_placeholders_and_replies(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - lines:
              script:
                - expect: 220
                - {send: "AUTH LOGIN", expect: 33}
                - {send: "{account.pass|base64}", expect: 334}
                - {send: "{account.secret}", expect: 235}
                - {send: "{account.user|hex}"}
                - {send: "a { b"}
          - lines:
              protocol: pop3
              script:
                - {send: "PASS {account.secret}", expect: +ok}
                - {send: "STAT", expect: OK}
                - {send: x, send_message: {text: t}}
                - {}
        """)
    assert problems() == [
        "scenarios/x.yaml:6:40: steps[1].lines.script[2].expect: an SMTP reply is a code from 200 to 599 "
        "(or a class 2 to 5), got 33",
        "scenarios/x.yaml:7:18: steps[1].lines.script[3].send: unknown placeholder {account.pass|base64}; "
        "allowed: {account.address}, {account.user}, {account.secret}, {auth.plain} (add |base64 to encode)",
        "scenarios/x.yaml:8:18: steps[1].lines.script[4].send: {account.secret} would send the secret as it "
        "is; SMTP AUTH LOGIN sends it base64-encoded: write {account.secret|base64}",
        "scenarios/x.yaml:9:18: steps[1].lines.script[5].send: unknown filter |hex in {account.user|hex}; "
        "allowed: base64",
        "scenarios/x.yaml:10:18: steps[1].lines.script[6].send: unmatched '{' at character 3; write '{{' "
        "for a literal brace",
        "scenarios/x.yaml:15:34: steps[2].lines.script[2].expect: a POP3 reply is one of: +OK, -ERR, got 'OK' "
        "(did you mean '+OK'?)",
        "scenarios/x.yaml:16:21: steps[2].lines.script[3].send_message: a line sends either send or "
        "send_message, not both",
        "scenarios/x.yaml:16:21: steps[2].lines.script[3].send_message: send_message is the body after SMTP "
        "DATA; it needs protocol: smtp",
        "scenarios/x.yaml:17:11: steps[2].lines.script[4]: an empty line item: give send, send_message or expect",
    ]


def test_smtp_expect_stages(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp: {security: tls, extra: [NOOP], expect: {rcpt: 550, noop: 250, rctp: 550, starttls: 220}}
        """)
    found = problems()
    assert len(found) == 2
    assert found[0].startswith("scenarios/x.yaml:3:73: steps[1].smtp.expect.rctp: unknown stage; allowed: "
                               "greeting, ehlo, helo, starttls, auth, mail, rcpt, data, message, quit, noop")
    assert found[0].endswith("(did you mean 'rcpt'?)")
    assert found[1] == ("scenarios/x.yaml:3:84: steps[1].smtp.expect.starttls: security is tls: "
                        "there is no STARTTLS stage")


def test_ciphers_need_tls_12(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - https: {ciphers: ECDHE-RSA-AES128-GCM-SHA256}\n")
    (line,) = problems()
    assert line.startswith("scenarios/x.yaml:3:13: steps[1].https.ciphers: ciphers applies to TLS 1.2 only")


def test_numbers_where_a_student_would_not_quote(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\nsection: 4.2\nsteps:\n  - https: {tls_version: 1.2, ciphers: X}\n")
    (sc,) = load_scenarios(load_lab("lab.yaml"), None)
    assert sc.section == "4.2"
    assert sc.steps[0].tls_version == "1.2"  # type: ignore[union-attr]


def test_the_document_must_be_a_mapping(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "- title: x\n")
    write(lab_dir, "y.yaml", "")
    assert problems() == [
        "scenarios/x.yaml:1:1: (top level): expected a mapping of keys (title:, steps:, ...), got a list",
        "scenarios/y.yaml:1:1: (top level): expected a mapping of keys (title:, steps:, ...), got an empty file",
    ]


def test_non_utf8_and_binary_files(lab_dir: Path) -> None:
    (lab_dir / "scenarios" / "gbk.yaml").write_bytes("title: 电子邮件\n".encode("gbk"))
    (lab_dir / "scenarios" / "png.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    assert problems() == [
        "scenarios/gbk.yaml:1:8: encoding: not UTF-8 text (byte 0xb5); save the file as UTF-8",
        "scenarios/png.yaml:1:1: encoding: this is a binary file, not YAML text; check the file name",
    ]


def test_an_alias_bomb_in_a_scenario_is_one_line(lab_dir: Path) -> None:
    from tests.unit.test_config_yaml import BILLION_LAUGHS

    write(lab_dir, "x.yaml", BILLION_LAUGHS)
    (line,) = problems()
    assert line.startswith("scenarios/x.yaml:")
    assert "expands to more than 100000 values" in line


def test_attachment_path_must_exist(lab_dir: Path) -> None:
    (lab_dir / "scenarios" / "note.txt").write_text("hello")
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp:
              message:
                attachments:
                  - {name: a.txt, path: note.txt}
                  - {name: b.txt, path: missing.txt}
        """)
    (line,) = problems()
    assert line == ("scenarios/x.yaml:7:33: steps[1].smtp.message.attachments[2].path: "
                    "no such file: scenarios/missing.txt")
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - smtp: {message: {attachments: [{name: a, path: note.txt}]}}\n")
    (sc,) = load_scenarios(load_lab("lab.yaml"), None)
    assert sc.steps[0].message.attachments[0].path == str(lab_dir / "scenarios" / "note.txt")  # type: ignore[union-attr]


# --- scenario names -------------------------------------------------------------------------


def test_unknown_scenario_name_lists_the_available_ones(lab_dir: Path) -> None:
    write(lab_dir, "telnet-smtp.yaml", "title: x\n" + GOOD_STEP)
    write(lab_dir, "pop3.yaml", "title: x\n" + GOOD_STEP)
    with pytest.raises(UsageError) as exc:
        load_scenarios(load_lab("lab.yaml"), ["telnet-smpt"])
    assert not isinstance(exc.value, ConfigError)
    assert str(exc.value) == ("no scenario named 'telnet-smpt' (did you mean 'telnet-smtp'?); "
                              "available: pop3, telnet-smtp")


def test_only_the_named_scenarios_are_read(lab_dir: Path) -> None:
    write(lab_dir, "good.yaml", "title: x\n" + GOOD_STEP)
    write(lab_dir, "broken.yaml", "title: [\n")
    (sc,) = load_scenarios(load_lab("lab.yaml"), ["good.yaml"])
    assert sc.name == "good"


def test_order_key_then_name(lab_dir: Path) -> None:
    write(lab_dir, "b.yaml", "title: x\norder: 2\n" + GOOD_STEP)
    write(lab_dir, "a.yaml", "title: x\norder: 1\n" + GOOD_STEP)
    write(lab_dir, "c.yaml", "title: x\n" + GOOD_STEP)
    write(lab_dir, "aa.yaml", "title: x\n" + GOOD_STEP)
    assert [s.name for s in load_scenarios(load_lab("lab.yaml"), None)] == ["a", "b", "aa", "c"]


# --- lab.yaml ------------------------------------------------------------------------------


def test_lab_problems_all_at_once(lab_dir: Path) -> None:
    found = lab_problems("""\
        default_profile: qqq
        report:
          lang: cn
          student: {name: 张三, id: 2020123456, clas: 1}
        profiles:
          sandbox: {from_sandbox: true, target: {host: x}}
          qq:
            target: {host: 203.0.113.7, port: 70000, host_key: "SHA256:abc"}
            servers:
              smtp: {host: smtp.qq.com}
            account: {address: not-an-address, secret: hunter2-secret}
        """, lab_dir)
    assert found == [
        "lab.yaml:1:18: default_profile: no profile named 'qqq'; profiles: sandbox, qq (did you mean 'qq'?)",
        "lab.yaml:3:9: report.lang: 'cn' is not one of: zh, en",
        "lab.yaml:4:39: report.student.clas: unknown key (did you mean 'class'?); allowed: name, id, class",
        "lab.yaml:6:33: profiles.sandbox.target: a from_sandbox profile takes this from `labrunner sandbox up`; "
        "remove it",
        "lab.yaml:8:39: profiles.qq.target.port: 70000 is out of range: allowed 1 to 65535",
        "lab.yaml:8:56: profiles.qq.target.host_key: expected a fingerprint as `ssh-keygen -lf` prints it, "
        '"SHA256:" and 43 base64 characters (get it with: ssh-keyscan HOST | ssh-keygen -lf -)',
        "lab.yaml:10:13: profiles.qq.servers.smtp: give at least one port: plain, starttls or tls",
        "lab.yaml:11:24: profiles.qq.account.address: 'not-an-address' is not a mail address (name@domain)",
        "lab.yaml:11:48: profiles.qq.account.secret: write where the secret comes from, not the secret: "
        "{env: QQ_AUTH_CODE} (then `export QQ_AUTH_CODE=...`), or {prompt: true}",
    ]


def test_a_secret_written_in_the_file_is_never_repeated(lab_dir: Path) -> None:
    found = lab_problems("""\
        profiles:
          qq:
            target: {host: h}
            servers: {smtp: {host: s, tls: 465}}
            account: {address: a@b.c, secret: {value: zujnuhmaarpybbbb, env: "zujnuhmaarpybbbb!"}}
          qq2:
            target: {host: h}
            servers: {smtp: {host: s, tls: 465}}
            account: {address: a@b.c, secret: {zujnuhmaarpybbbb}}
            password: zujnuhmaarpybbbb
        """, lab_dir)
    # default_profile is missing, the two secrets are wrong, and qq2 has an unknown key.
    assert len(found) == 5
    assert not any("zujnuhmaarpybbbb" in line for line in found)
    assert found[3] == ("lab.yaml:9:40: profiles.qq2.account.secret: unknown key (not shown: it may be the "
                        "secret); allowed: env, prompt")


def test_non_sandbox_profile_needs_target_servers_account(lab_dir: Path) -> None:
    found = lab_problems("default_profile: qq\nprofiles:\n  qq: {account: {address: a@b.c}}\n", lab_dir)
    assert found == [
        "lab.yaml:3:7: profiles.qq.target: missing required key (or set from_sandbox: true)",
        "lab.yaml:3:7: profiles.qq.servers: missing required key (or set from_sandbox: true)",
    ]


def test_sandbox_instance_name_follows_the_sandbox_rule(lab_dir: Path) -> None:
    (line,) = lab_problems("profiles:\n  sandbox: {from_sandbox: true, instance: My Lab}\n", lab_dir)
    assert line.startswith("lab.yaml:2:43: profiles.sandbox.instance: bad sandbox instance name 'My Lab'")


def test_inventory_names_unique_and_profiles_known(lab_dir: Path) -> None:
    found = lab_problems("""\
        profiles:
          sandbox: {from_sandbox: true}
        inventory:
          - {name: s1, target: {host: h1}, account: {address: a@b.c}}
          - {name: s1, profile: qqq, target: {host: h2}, account: {address: d@b.c}}
        """, lab_dir)
    assert found == [
        "lab.yaml:5:12: inventory[2].name: duplicate name 's1' (first at line 4)",
        "lab.yaml:5:25: inventory[2].profile: no profile named 'qqq'; profiles: sandbox",
    ]


def test_missing_lab_file_is_one_usage_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as exc:
        load_lab("lab.yaml")
    assert str(exc.value) == (f"lab.yaml not found in {tmp_path}: create one (see README) or pass -c FILE")


def test_title_must_say_something(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: {zh: '', en: ' '}\n" + GOOD_STEP)
    assert problems() == ["scenarios/x.yaml:1:8: title: must not be empty: give zh, en or both"]


def test_two_files_with_one_name_and_hidden_files(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\n" + GOOD_STEP)
    write(lab_dir, "x.yml", "title: x\n" + GOOD_STEP)
    write(lab_dir, ".#x.yaml", "not: [yaml\n")  # an editor's lock file
    assert problems() == [
        "scenarios/x.yaml:1:1: (top level): x.yml gives the same scenario name 'x'; rename or remove one"
    ]


def test_validate_reports_lab_and_scenario_problems_together(lab_dir: Path) -> None:
    from labrunner.config.load import validate

    (lab_dir / "lab.yaml").write_text("report: {lang: fr}\nprofiles:\n  sandbox: {from_sandbox: true}\n")
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - smtp: {server: smpt}\n")
    with pytest.raises(ConfigError) as exc:
        validate("lab.yaml")
    assert exc.value.problems == [
        "lab.yaml:1:16: report.lang: 'fr' is not one of: zh, en",
        "scenarios/x.yaml:3:20: steps[1].smtp.server: unknown server 'smpt'; the profiles have: "
        "imap, pop3, smtp, web (did you mean 'smtp'?)",
    ]


def test_validate_with_an_unreadable_lab_still_checks_scenarios(lab_dir: Path) -> None:
    from labrunner.config.load import validate

    (lab_dir / "lab.yaml").write_text("profiles: [\n")
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - smtp: {server: anything, security: tsl}\n")
    with pytest.raises(ConfigError) as exc:
        validate("lab.yaml")
    # Without readable profiles no server name can be judged; the other problems still show.
    assert exc.value.problems == [
        "lab.yaml:2:1: yaml syntax: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)",
        "scenarios/x.yaml:3:40: steps[1].smtp.security: 'tsl' is not one of: plain, starttls, tls "
        "(did you mean 'tls'?)",
    ]


def test_odd_keys_and_values_stay_on_one_line(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", 'title: x\nsteps:\n  - lines: {script: [{send: "a\\nb {x\\ty}"}]}\n"a.b\\nc": 1\n')
    found = problems()
    assert found == [
        'scenarios/x.yaml:3:29: steps[1].lines.script[1].send: one line only: CRLF is added when it is sent',
        "scenarios/x.yaml:3:29: steps[1].lines.script[1].send: unknown placeholder {x\\ty}; allowed: "
        "{account.address}, {account.user}, {account.secret}, {auth.plain} (add |base64 to encode)",
        'scenarios/x.yaml:4:1: ["a.b\\nc"]: unknown key; allowed: title, section, order, objective, steps, '
        "capture, timeout, notes",
    ]


def test_a_huge_file_is_refused_without_reading_it_all(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\nnotes: |\n" + "  lorem ipsum\n" * 90_000)
    assert problems() == ["scenarios/x.yaml:1:1: file: larger than 1000 kB; a lab or scenario file is far smaller"]


def test_unquoted_numbers_keep_the_text_as_written(lab_dir: Path) -> None:
    # YAML 1.1 reads 0123 as octal 83 and 4.10 as 4.1; a string option takes what was typed.
    (lab_dir / "lab.yaml").write_text(LAB + "report: {student: {id: 0123, class: 2001}}\n")
    write(lab_dir, "x.yaml", "title: x\nsection: 4.10\nsteps:\n  - https: {tls_version: 1.30}\n")
    lab = load_lab("lab.yaml")
    assert (lab.report.student.id, lab.report.student.klass) == ("0123", "2001")
    assert problems() == ["scenarios/x.yaml:4:26: steps[1].https.tls_version: '1.30' is not one of: 1.2, 1.3 "
                          "(did you mean '1.3'?)"]
    write(lab_dir, "x.yaml", "title: x\nsection: 4.10\nsteps:\n  - smtp: {port: 0x24b}\n")
    (sc,) = load_scenarios(lab, None)
    assert sc.section == "4.10"
    assert type(sc.steps[0].port) is int and sc.steps[0].port == 587  # type: ignore[union-attr]


def test_smtp_expect_codes_and_classes(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - smtp: {expect: {rcpt: 5, auth: 99, mail: 250}}\n")
    assert problems() == [
        "scenarios/x.yaml:3:36: steps[1].smtp.expect.auth: 99 is not a reply code: 200 to 599, or 2 to 5 for a class"
    ]
    write(lab_dir, "x.yaml", "title: x\nsteps:\n  - smtp: {expect: {rcpt: 5, mail: 250}}\n")
    (sc,) = load_scenarios(load_lab("lab.yaml"), None)
    assert sc.steps[0].expect == {"rcpt": 5, "mail": 250}  # type: ignore[union-attr]


def test_windows_line_ends_and_bom_keep_positions(lab_dir: Path) -> None:
    # Notepad on Windows writes a BOM and CRLF; positions must still match the editor's.
    text = "\ufefftitle: 标题\r\nsteps:\r\n  - smtp: {security: tsl}\r\n"
    (lab_dir / "scenarios" / "x.yaml").write_bytes(text.encode("utf-8"))
    assert problems() == [
        "scenarios/x.yaml:3:22: steps[1].smtp.security: 'tsl' is not one of: plain, starttls, tls "
        "(did you mean 'tls'?)"
    ]


def test_commands_and_addresses_of_steps(lab_dir: Path) -> None:
    write(lab_dir, "x.yaml", """\
        title: x
        steps:
          - smtp: {helo: my pc, rcpt_to: <a@b.c>, extra: [NOOP, QUIT, VRFYY x]}
          - pop3: {commands: [STAT, LIST 1, stls, UIDLL]}
        """)
    assert problems() == [
        "scenarios/x.yaml:3:18: steps[1].smtp.helo: must be one word (letters, digits, - _ .), no spaces",
        "scenarios/x.yaml:3:34: steps[1].smtp.rcpt_to: '<a@b.c>': write the bare address, name@domain; "
        "the <> are added where SMTP needs them",
        "scenarios/x.yaml:3:57: steps[1].smtp.extra[2]: QUIT is sent by the smtp step itself; "
        "list only: NOOP, RSET, VRFY, EXPN, HELP",
        "scenarios/x.yaml:3:63: steps[1].smtp.extra[3]: 'VRFYY x' is not one of the commands: "
        "NOOP, RSET, VRFY, EXPN, HELP (did you mean 'VRFY'?)",
        "scenarios/x.yaml:4:37: steps[2].pop3.commands[3]: STLS is sent by the pop3 step itself; "
        "list only: STAT, LIST, UIDL, TOP, RETR, DELE, NOOP, RSET, CAPA",
        "scenarios/x.yaml:4:43: steps[2].pop3.commands[4]: 'UIDLL' is not one of the commands: "
        "STAT, LIST, UIDL, TOP, RETR, DELE, NOOP, RSET, CAPA (did you mean 'UIDL'?)",
    ]


def test_server_host_names_and_capture_options_are_data_never_code(lab_dir: Path) -> None:
    """F7/F11: a server host is a host name or an IP literal; capture.interface is an interface
    name and capture.filter can never become a tcpdump option. Each refusal is located."""
    got = lab_problems("""\
        default_profile: p
        profiles:
          p:
            target: {host: 192.0.2.1, user: u}
            servers:
              smtp: {host: "x$(id>/tmp/lr-pwned)y", plain: 25}
              pop3: {host: "pop.qq.com\\n", plain: 110}
              imap: {host: "imap.qq.com; id", plain: 143}
              web: {host: "2001:db8::1", tls: 443}
              ok: {host: smtp.qq.com., plain: 25}
            account: {address: a@example.com, secret: {env: X}}
        """, lab_dir)
    assert len(got) == 3, got
    assert got[0].startswith("lab.yaml:6:20: profiles.p.servers.smtp.host: 'x$(id>/tmp/lr-pwned)y' is not a host "
                             "name or an IP address"), got
    assert got[1].startswith("lab.yaml:7:20:") and "'pop.qq.com\\n'" in got[1]
    assert got[2].startswith("lab.yaml:8:20:")
    (lab_dir / "lab.yaml").write_text(LAB)
    write(lab_dir, "f.yaml", """\
        title: f
        steps:
          - smtp: {security: plain}
        capture: {filter: "-w/tmp/evil.pcap", interface: "eth0 -w /tmp/x"}
        """)
    write(lab_dir, "g.yaml", """\
        title: g
        steps:
          - smtp: {security: plain}
        capture: {filter: "tcp port 25\\u001b[2J"}
        """)
    got = problems()
    assert got[0].startswith("scenarios/f.yaml:4:19: capture.filter: the capture filter starts with '-'"), got
    assert got[1].startswith("scenarios/f.yaml:4:50: capture.interface: 'eth0 -w /tmp/x' is not a network "
                             "interface name"), got
    assert got[2].startswith("scenarios/g.yaml:4:19: capture.filter: the capture filter contains a control "
                             "character"), got
