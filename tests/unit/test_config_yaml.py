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
    # PyYAML notices it at the end of the file; the student's mistake is the `{` left open.
    assert exc.value.mark == Mark(3, 11)
    assert "never closed" in exc.value.message


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


# --- syntax errors a student makes, in words they can act on (#9) ---------------------------


def _problem(text: str) -> YamlProblem:
    with pytest.raises(YamlProblem) as exc:
        parse(text)
    assert exc.value.what == "yaml syntax"
    return exc.value


def test_a_tab_in_the_indentation_says_to_use_spaces_at_the_tab() -> None:
    err = _problem("report:\n  school: x\n\tcourse: y\n")
    assert err.mark == Mark(3, 1)
    assert err.message == "a tab character: YAML indents with spaces only; replace the tab with spaces"


@pytest.mark.parametrize(("text", "mark", "spaces", "around"), [
    # PyYAML stops on line 3 (`course` looks deeper than `school`); the slip is on line 2.
    ("report:\n school: x\n  course: y\n  lab: z\n", Mark(2, 2), "1 space", 2),
    ("report:\n school: x  # a comment\n  course: y\n", Mark(2, 2), "1 space", 2),
    ("steps:\n  - lines:\n      port: 25\n     server: smtp\n      security: plain\n", Mark(4, 6), "5 spaces", 6),
    ("steps:\n  - lines:\n      port: 25\n       server: smtp\n      security: plain\n", Mark(4, 8), "7 spaces", 6),
    ("a:\n  b: 1\n    c: 2\n  d: 3\n", Mark(3, 5), "4 spaces", 2),
    ("a:\n  b: 1\n  c: 2\n d: 3\n", Mark(4, 2), "1 space", 2),
])
def test_a_key_out_of_line_is_named_with_its_siblings_indentation(
        text: str, mark: Mark, spaces: str, around: int) -> None:
    err = _problem(text)
    assert (err.mark, err.message) == (mark, (
        f"indentation: this line is indented {spaces}, the lines around it {around}; "
        "keys of one mapping must line up"))


def test_a_list_item_out_of_line_is_compared_with_the_item_before_it() -> None:
    err = _problem("steps:\n  - a: 1\n    b: 2\n   - c: 3\n")
    assert err.mark == Mark(4, 4)
    assert err.message == ("indentation: this line is indented 3 spaces, the lines around it 2; "
                           "items of one list must line up")


def test_a_key_of_a_list_item_lines_up_with_the_key_after_the_dash() -> None:
    err = _problem("s:\n  - m:\n      subject: x\n      text: y\n   expect: 250\n  - q: 1\n")
    assert err.mark == Mark(5, 4)
    assert "indented 3 spaces, the lines around it 4;" in err.message


def test_two_values_on_one_line_are_not_called_an_indentation_slip() -> None:
    # ... but a value holding `: ` (student-ta D11), with the quoted value to write instead
    assert _problem("a: b: c\n").message == 'the value of `a` holds `: `, which YAML reads as a new key; ' \
        'quote the value: a: "b: c"'


@pytest.mark.parametrize("quote", ['"', "'"])
def test_an_unclosed_quote_is_shown_where_it_opened(quote: str) -> None:
    err = _problem(f"a: 1\nb: {quote}hello\nc: 2\n")
    assert err.mark == Mark(2, 4)
    assert err.message == f"the quote `{quote}` opened here is never closed; add the closing `{quote}`"


def test_an_unclosed_quote_closed_by_a_later_line_is_shown_where_it_opened() -> None:
    err = _problem('script:\n  - {send: "MAIL FROM:<a@b>, expect: 250}\n  - {send: "QUIT", expect: 221}\n')
    assert err.mark == Mark(2, 12)
    assert err.message == "the quote `\"` opened here is closed only on line 3; add the closing `\"` on this line"


@pytest.mark.parametrize(("text", "mark", "pair"), [
    ("title: x\nsteps:\n  - smtp: {security: plain\n", Mark(3, 11), ("{", "}")),
    ("script:\n  - {send: HELO, expect: 250\n  - {send: QUIT, expect: 221}\n", Mark(2, 5), ("{", "}")),
    ("a: [1, 2\nb: 2\n", Mark(1, 4), ("[", "]")),
])
def test_an_unclosed_bracket_is_shown_where_it_opened(text: str, mark: Mark, pair: tuple[str, str]) -> None:
    err = _problem(text)
    assert (err.mark, err.message) == (mark, (
        f"the `{pair[0]}` opened here is never closed; add the closing `{pair[1]}` after its last item "
        "(items are separated by `,`)"))


def test_a_syntax_error_we_do_not_know_keeps_pyyaml_words() -> None:
    err = _problem("a: {x: 1 y: 2}\n")
    assert err.mark == Mark(1, 11)
    assert err.message == "expected ',' or '}', but got ':' (while parsing a flow mapping)"
