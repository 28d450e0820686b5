"""`labrunner COMMAND --help` in the user's language (issue 15)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from labrunner.cli import build_parser
from labrunner.cli_help import HELP_ZH, chinese_locale

CJK = re.compile(r"[\u4e00-\u9fff]")


def help_strings(parser: argparse.ArgumentParser) -> list[str]:
    found = [parser.description or ""]
    for action in parser._actions:
        found.append(action.help or "")
        if isinstance(action, argparse._SubParsersAction):
            found += [c.help or "" for c in action._choices_actions]
            for sub in action.choices.values():
                found += help_strings(sub)
    return found


def test_no_translation_has_gone_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    english = set(help_strings(build_parser()))
    assert [key for key in HELP_ZH if key not in english] == []


@pytest.mark.parametrize("command", ["run", "report", "doctor", "validate", "sandbox", "analyze"])
def test_every_option_is_explained_in_chinese_in_a_chinese_locale(command: str) -> None:
    env = {"LANG": "zh_CN.UTF-8", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "labrunner", command, "--help"], capture_output=True, text=True,
                         env=env, check=True).stdout
    options = out[out.index("options:"):]
    # each option's help (the text after the option, on its line or the next) has Chinese in it
    entries = re.split(r"\n  (?=-)", options)[1:]
    assert entries and all(CJK.search(entry) for entry in entries), out
    english = subprocess.run([sys.executable, "-m", "labrunner", command, "--help"], capture_output=True, text=True,
                             env={**env, "LANG": "en_US.UTF-8"}, check=True).stdout
    assert not CJK.search(english[english.index("options:"):])


def test_locale_order_is_gettexts() -> None:
    assert chinese_locale({"LANG": "zh_CN.UTF-8"})
    assert not chinese_locale({"LC_ALL": "C", "LANG": "zh_CN.UTF-8"})  # LC_ALL wins
    assert chinese_locale({"LANGUAGE": "zh_TW:en", "LANG": "en_US.UTF-8"})
    assert not chinese_locale({})


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("zh", [False, True], ids=["en", "zh"])
def test_a_command_parsed_alone_is_the_same_as_in_the_whole_line(monkeypatch: pytest.MonkeyPatch, zh: bool) -> None:
    """main() builds only the command typed first (cli.COMMANDS): every command is there, and
    alone its parser says and accepts what it does among all of them."""
    from labrunner.cli import COMMANDS

    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8" if zh else "C.UTF-8")
    whole = _subcommands(build_parser())
    assert sorted(whole) == sorted(COMMANDS)
    for name in COMMANDS:
        alone = _subcommands(build_parser(name))
        assert list(alone) == [name]
        assert alone[name].format_help() == whole[name].format_help()
        assert alone[name].format_usage() == whole[name].format_usage()
