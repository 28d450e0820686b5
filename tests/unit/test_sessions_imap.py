"""How LOGIN's arguments go on the wire: quoted when RFC 3501 allows it, else a literal."""

from __future__ import annotations

import pytest

from labrunner.sessions.imap import astring


@pytest.mark.parametrize("text", ["student@lab.test", "abc DEF-123_~!#", ""])
def test_plain_ascii_is_quoted(text: str) -> None:
    assert astring(text) == f'"{text}"'


@pytest.mark.parametrize("text", ["pässword", "密码", 'say "hi"', "back\\slash", "tab\there", "cr\rlf\n"])
def test_what_quoting_cannot_carry_plainly_is_a_utf8_literal(text: str) -> None:
    assert astring(text) == text.encode("utf-8")
