"""Placeholders in the telnet exercise's lines: ``{account.user|base64}`` and friends.

The scenario file names what to send; the values (the secret above all) are filled in at run
time, in memory. The grammar lives here so that validation and the sessions agree on it.
``{{`` and ``}}`` stand for literal braces.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

# The names labrunner/sessions/placeholders.py fills in at run time. {auth.plain} is the
# AUTH PLAIN initial response ("\0user\0secret", already base64).
FIELDS = ("account.address", "account.user", "account.secret", "auth.plain")
FILTERS = ("base64",)
# Values that reveal the secret: lines using them are redacted in the transcript.
SECRET_FIELDS = frozenset({"account.secret", "auth.plain"})
# The secret as it is appears on the wire only in protocols that send it so (POP3 PASS,
# IMAP LOGIN); SMTP AUTH LOGIN sends it base64-encoded.
PLAIN_SECRET_PROTOCOLS = ("pop3", "imap")

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A line whose placeholders cannot be filled; the message says how to fix it."""


def placeholders(text: str) -> list[tuple[str, str | None]]:
    """The ``(field, filter)`` pairs of a line, in order; raises TemplateError."""
    found: list[tuple[str, str | None]] = []
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(f"unmatched {token!r} at character {m.start() + 1}; "
                                f"write {token * 2!r} for a literal brace")
        name, _, filt = (part.strip() for part in m.group(1).partition("|"))
        if name not in FIELDS:
            raise TemplateError(f"unknown placeholder {{{m.group(1)}}}; allowed: "
                                + ", ".join(f"{{{f}}}" for f in FIELDS)
                                + " (add |base64 to encode)")
        if filt and filt not in FILTERS:
            raise TemplateError(f"unknown filter |{filt} in {{{m.group(1)}}}; allowed: "
                                + ", ".join(FILTERS))
        found.append((name, filt or None))
    return found


def check_line(text: str, protocol: str) -> str | None:
    """Why a ``send`` line is not acceptable for ``protocol``, or None."""
    try:
        used = placeholders(text)
    except TemplateError as err:
        return str(err)
    for name, filt in used:
        if name == "account.secret" and filt is None and protocol not in PLAIN_SECRET_PROTOCOLS:
            return ("{account.secret} would send the secret as it is; SMTP AUTH LOGIN sends it "
                    "base64-encoded: write {account.secret|base64}")
    return None


def render(text: str, values: Mapping[str, str]) -> str:
    """The line with its placeholders filled from ``values`` (keys as in :data:`FIELDS`)."""
    placeholders(text)  # the same errors validation reports

    def fill(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name, _, filt = (part.strip() for part in m.group(1).partition("|"))
        if name == "auth.plain":
            value = base64.b64encode(f"\0{values['account.user']}\0{values['account.secret']}".encode()).decode()
        else:
            value = values[name]
        if filt == "base64":
            value = base64.b64encode(value.encode("utf-8")).decode("ascii")
        return value

    return _TOKEN.sub(fill, text)
