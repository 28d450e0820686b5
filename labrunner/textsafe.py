"""Text that is safe to print on a terminal.

Server replies, capture contents, scenario titles and error messages that quote them can hold
ESC, BEL, NUL, backspaces, C1 controls or bidi overrides: printed raw, a hostile mail server
(or anyone on a plain-text path) could clear the screen, set the window title, hide text or
make a line read backwards. Every string that comes from a server, a capture or a file someone
else wrote goes through :func:`safe` before it reaches the terminal; the escapes it writes
(``\\x1b``, ``\\u202e``) show what was there without acting on it.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; the bidi embeddings, overrides and isolates; lone surrogates
# (which a terminal cannot encode: printing one would raise UnicodeEncodeError).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_IN_PAGE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, *, newlines: bool = False) -> str:
    """``text`` (str() of it) with every control character escaped; with ``newlines`` a
    line feed is kept as it is (multi-line text such as a rendered analysis)."""
    s = text if isinstance(text, str) else str(text)
    return (_UNSAFE_KEEP_NL if newlines else _UNSAFE).sub(_escape, s)


def in_page(text: str) -> str:
    """``text`` for the report's pages: control characters, bidi overrides and lone surrogates
    escaped as :func:`safe` does, tabs and line feeds kept (F22: a server's ESC, BEL or NUL
    reached report.html raw)."""
    return _UNSAFE_IN_PAGE.sub(_escape, text)
