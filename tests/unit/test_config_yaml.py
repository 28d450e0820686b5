"""The safe, marked YAML reader: positions, duplicate keys, hostile documents, encodings."""

from __future__ import annotations

import pytest

from labrunner.config.yaml import (
    MAX_ALIASES,
    Mark,
    MarkedList,
    MarkedMap,
    YamlProblem,
    decode,
    parse,
)


def test_marks_are_one_based_as_an_editor_shows_them() -> None:
    value, problems = parse("a: 1\nb:\n  - x\n  - {c: 标题, d: 2}\n")
    assert problems == []
    assert isinstance(value, MarkedMap)
    assert value.key_mark("a") == Mark(1, 1)
    assert value.value_mark("a") == Mark(1, 4)
    items = value["b"]
    assert isinstance(items, MarkedList)
    assert items.item_mark(0) == Mark(3, 5)
    inner = items[1]
    # Columns count characters, so the two CJK characters before `d` count as two.
    assert inner.value_mark("c") == Mark(4, 9)
    assert inner.key_mark("d") == Mark(4, 13)


def test_scalars_keep_their_yaml_types() -> None:
    value, _ = parse("i: 25\nf: 1.2\nt: true\nF: False\ns: '25'\nn:\n")
    assert value == {"i": 25, "f": 1.2, "t": True, "F": False, "s": "25", "n": None}


def test_yes_and_no_stay_words() -> None:
    # YAML 1.1 would read these as booleans; a student means the words.
    value, _ = parse("a: yes\nb: no\nc: on\nd: off\n")
    assert value == {"a": "yes", "b": "no", "c": "on", "d": "off"}


def test_duplicate_key_is_reported_at_the_second_one_and_the_first_kept() -> None:
    value, problems = parse("title: a\nsteps: []\ntitle: b\n")
    assert value["title"] == "a"
    assert len(problems) == 1
    assert problems[0].mark == Mark(3, 1)
    assert problems[0].path == ("title",)
    assert "duplicate key (first at line 1)" in problems[0].message


def test_duplicate_key_in_a_nested_flow_mapping() -> None:
    _, problems = parse("s:\n  - smtp: {port: 25, port: 26}\n")
    assert [(p.mark, p.path) for p in problems] == [(Mark(2, 22), ("s", 0, "smtp", "port"))]


def test_syntax_error_has_the_position_of_the_problem() -> None:
    with pytest.raises(YamlProblem) as exc:
        parse("title: x\nsteps:\n  - smtp: {security: plain\n")
    assert exc.value.what == "yaml syntax"
    assert exc.value.mark == Mark(4, 1)
    assert "expected ',' or '}'" in exc.value.message


def test_bad_indentation_is_a_syntax_error() -> None:
    with pytest.raises(YamlProblem) as exc:
        parse("a:\n  b: 1\n c: 2\n")
    assert exc.value.mark == Mark(3, 2)


BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
) + "\n"


@pytest.mark.timeout(10)  # a guard only: without the checks this would need ~10^9 values
def test_billion_laughs_is_refused_before_it_expands() -> None:
    with pytest.raises(YamlProblem) as exc:
        parse(BILLION_LAUGHS)
    assert "expands to more than" in exc.value.message
    assert exc.value.mark.line <= 10


def test_a_flood_of_aliases_is_refused() -> None:
    doc = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(YamlProblem) as exc:
        parse(doc)
    assert f"more than {MAX_ALIASES} aliases" in exc.value.message


def test_a_few_aliases_and_merge_keys_are_fine() -> None:
    value, problems = parse("base: &m {subject: hi, text: t}\nmsg:\n  <<: *m\n  text: own\n")
    assert problems == []
    assert value["msg"] == {"subject": "hi", "text": "own"}
    # The merged key points at where it was written, the own key at its own line.
    assert value["msg"].value_mark("subject") == Mark(1, 20)
    assert value["msg"].value_mark("text") == Mark(4, 9)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(YamlProblem) as exc:
        parse("a: &a [1, *a]\n")
    assert "loop" in exc.value.message


def test_deep_nesting_is_refused_without_a_traceback() -> None:
    with pytest.raises(YamlProblem) as exc:
        parse("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than 64 levels" in exc.value.message
    # level 1 is the top mapping, so the 64th bracket (at column 3 + 64) is one too many
    assert exc.value.mark == Mark(1, 3 + 64)


def test_non_utf8_is_refused_with_the_position_of_the_bad_byte() -> None:
    data = "title: 电子邮件\nnotes: x\n".encode("gbk")
    with pytest.raises(YamlProblem) as exc:
        decode(data)
    assert exc.value.what == "encoding"
    assert exc.value.mark == Mark(1, 8)
    assert "not UTF-8" in exc.value.message


def test_binary_is_refused() -> None:
    with pytest.raises(YamlProblem) as exc:
        decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    assert "binary" in exc.value.message


def test_utf8_bom_is_accepted() -> None:
    assert decode("\ufefftitle: x\n".encode()) == "title: x\n"


def test_empty_document() -> None:
    assert parse("# only a comment\n") == (None, [])


def test_python_tags_are_refused() -> None:
    with pytest.raises(YamlProblem):
        parse("a: !!python/object/apply:os.system ['true']\n")


def test_control_characters_are_located() -> None:
    with pytest.raises(YamlProblem) as exc:
        parse("title: x\nsteps: a\x01b\n")
    assert exc.value.what == "encoding"
    assert exc.value.mark == Mark(2, 9)
    assert "U+0001" in exc.value.message
