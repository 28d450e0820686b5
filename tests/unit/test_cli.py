import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labrunner import cli
from labrunner.errors import ConfigError, ExitStatus, LabError


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "labrunner", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


def test_help_lists_subcommands_and_exit_statuses():
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("validate", "list", "run", "exit status", "实验"):
        assert word in res.stdout


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("labrunner ")


def test_no_command_prints_help_and_exits_2():
    res = run_cli()
    assert res.returncode == ExitStatus.USAGE and "usage:" in res.stdout


def test_unknown_command_is_usage_error():
    res = run_cli("frobnicate")
    assert res.returncode == 2 and "invalid choice" in res.stderr and "Traceback" not in res.stderr


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from labrunner import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('paramiko', 'weasyprint', 'yaml', 'jinja2') if m in sys.modules]\n"
            "print('heavy=' + ','.join(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "heavy="


def _fake_handler(exc):
    def handler(args):
        raise exc
    return handler


@pytest.mark.parametrize(("exc", "status", "expected"), [
    (LabError("host unreachable", hint="check the address"), ExitStatus.ENVIRONMENT,
     ["labrunner: error: host unreachable", "  hint: check the address"]),
    (ConfigError(["a.yaml:1:2: x: bad", "a.yaml:3:4: y: worse"]), ExitStatus.USAGE,
     ["a.yaml:1:2: x: bad", "a.yaml:3:4: y: worse"]),
    (RuntimeError("boom"), ExitStatus.BUG, ["labrunner: internal error: RuntimeError: boom"]),
])
def test_errors_are_one_line_without_traceback(monkeypatch, capsys, exc, status, expected):
    monkeypatch.setattr(cli, "cmd_validate", _fake_handler(exc))
    monkeypatch.setattr(cli, "ADDERS", [cli._add_validate])
    parser_validate = cli._add_validate

    def add(sub):
        parser_validate(sub)
        sub.choices["validate"].set_defaults(handler=_fake_handler(exc))

    monkeypatch.setattr(cli, "ADDERS", [add])
    assert cli.main(["validate"]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for line in expected:
        assert line in err.splitlines() or any(line in e for e in err.splitlines())


def test_debug_shows_traceback(monkeypatch):
    def add(sub):
        cli._add_validate(sub)
        sub.choices["validate"].set_defaults(handler=_fake_handler(RuntimeError("boom")))

    monkeypatch.setattr(cli, "ADDERS", [add])
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--debug", "validate"])


def test_validate_ok_line_names_the_lab_file_as_given(tmp_path):
    # From another folder, a relative -c path: the ok line repeats it, not the resolved absolute path.
    repo = Path(__file__).resolve().parents[2]
    work = tmp_path / "elsewhere"
    work.mkdir()
    given = os.path.relpath(repo / "lab.yaml", work)
    res = run_cli("validate", "-c", given, cwd=work)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(rf"ok: {re.escape(given)} and \d+ scenario\(s\) are valid\n", res.stdout)


def test_parallel_without_inventory_is_refused_not_ignored(tmp_path):
    res = run_cli("run", "--parallel", "2", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == "labrunner: error: --parallel 2 only applies to a class run"
    assert "--inventory" in res.stderr and "Traceback" not in res.stderr


def test_a_report_with_template_text_left_says_where_to_write(tmp_path):
    import json
    from types import SimpleNamespace

    from labrunner.cli import _template_text_left

    run = tmp_path / "run"
    run.mkdir()
    own = {"zh": "我自己的体会", "en": "my own words"}
    template = {"zh": "（在此写下你的体会。）", "en": "(Write your reflections here.)"}
    (run / "manifest.json").write_text(json.dumps({"scenarios": [
        {"name": "pop3", "notes": template}, {"name": "imap", "notes": own}, {"name": "telnet-smtp"}]}))
    lab = SimpleNamespace(path=tmp_path / "lab.yaml", report=SimpleNamespace(reflections=SimpleNamespace(**template)))
    assert _template_text_left(lab, run, "en") == (
        "to do: 2 places in the report still hold the template's text (\"(Write your ...)\"); write your own "
        "words in lab.yaml: report.reflections.en, pop3.yaml: notes.en, then run `labrunner report`")
    assert "2 处模板文字" in (_template_text_left(lab, run, "zh") or "")
    lab.report.reflections = SimpleNamespace(**own)
    (run / "manifest.json").write_text(json.dumps({"scenarios": [{"name": "imap", "notes": own}]}))
    assert _template_text_left(lab, run, "zh") is None


def test_the_lab_file_may_be_given_before_the_command_too(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    res = run_cli("-c", str(repo / "lab.yaml"), "validate", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"ok: {repo / 'lab.yaml'} and ")


def test_list_lines_up_its_columns_before_the_titles(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    res = run_cli("list", "-c", str(repo / "lab.yaml"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) >= 6
    # the titles (CJK, two columns a character) come last and all start in one column
    starts = {len(line) - len(line.split("  ")[-1]) for line in lines}
    assert len(starts) == 1, res.stdout


def test_validate_checks_the_key_file_of_the_profile_asked_for(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    lab = tmp_path / "lab.yaml"
    (tmp_path / "scenarios").symlink_to(repo / "scenarios")
    text = (repo / "lab.yaml").read_text("utf-8")
    lab.write_text(text.replace("~/.ssh/id_ed25519", str(tmp_path / "no-such-key")), "utf-8")
    assert run_cli("validate", "-c", str(lab), cwd=tmp_path).returncode == 0  # the sandbox profile: no key file
    res = run_cli("validate", "-c", str(lab), "-p", "qq", cwd=tmp_path)
    assert res.returncode == 2 and "profiles.qq.target.key: the key file" in res.stderr, res.stderr
