"""The two YAML slips that got PyYAML's own words (student-ta D11), said as a student can act on
them, at the line and column to fix, through `labrunner validate` as a student meets them."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from labrunner.config.yaml import Mark, YamlProblem, parse


def problem(text: str) -> YamlProblem:
    with pytest.raises(YamlProblem) as exc:
        parse(text)
    return exc.value


def test_a_colon_in_an_unquoted_value_says_to_quote_it() -> None:
    err = problem("title:\n  zh: 实验4.4: 使用 telnet\n  en: Lab 4.4\n")
    assert err.mark == Mark(2, 7)
    assert err.message == ('the value of `zh` holds `: `, which YAML reads as a new key; quote the value: '
                           'zh: "实验4.4: 使用 telnet"')
    err = problem('lab: 实验5: "电子" 邮件\n')
    assert err.message.endswith('quote the value: lab: "实验5: \\\\"电子\\\\" 邮件"'.replace("\\\\", "\\"))


def test_a_shallow_line_inside_a_block_text_says_how_far_to_indent_it() -> None:
    err = problem("report:\n  reflections:\n    zh: |\n      第一行\n      第二行\n    第三行少了缩进\n      第四行\n"
                  "  lang: zh\n")
    assert err.mark == Mark(6, 5)
    assert err.message == ("this line is indented 4 spaces, less than the text of `zh: |` (line 3), whose lines "
                           "are indented 6: indent it 6 spaces like them (a shallower line ends the text)")


def test_validate_prints_them_with_file_line_and_column(tmp_path: Path) -> None:
    from labrunner import cli

    (tmp_path / "scenarios").mkdir()
    lab = tmp_path / "lab.yaml"
    lab.write_text("report:\n  reflections: |\n    学到了很多\n  还有这一行\n"
                   "profiles:\n  sandbox: {from_sandbox: true}\n", encoding="utf-8")

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["validate", "-c", str(lab)]) == 2
    first = next(line for line in err.getvalue().splitlines() if "yaml syntax" in line)
    assert first.startswith(f"{lab}:4:3: ")
    assert first.endswith("yaml syntax: this line is indented 2 spaces, less than the text of "
                          "`reflections: |` (line 2), whose lines are indented 4: indent it 4 spaces like them "
                          "(a shallower line ends the text)"), first
