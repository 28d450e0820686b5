"""textsafe.safe: what a server or a capture says reaches the terminal as inert text."""

from __future__ import annotations

from labrunner.textsafe import safe


def test_terminal_controls_are_escaped() -> None:
    hostile = "550 \x1b[2J\x1b[H\x1b]0;PWNED\x07\x1b[31mRED\x00\x08\x7f\x9b\u202eevil\u2066x\ud800"
    out = safe(hostile)
    assert out == ("550 \\x1b[2J\\x1b[H\\x1b]0;PWNED\\x07\\x1b[31mRED\\x00\\x08\\x7f\\x9b\\u202eevil"
                   "\\u2066x\\ud800")
    assert all(ch.isprintable() for ch in out)
    out.encode("utf-8")  # no lone surrogate left


def test_ordinary_text_is_unchanged_and_newlines_optional() -> None:
    text = "实验5 telnet 测试 — 250 OK «redacted» tab\there"
    assert safe(text) == text.replace("\t", "\\t")
    assert safe("a\r\nb") == "a\\r\\nb"
    assert safe("a\r\nb", newlines=True) == "a\\r\nb"
    assert safe(42) == "42"
