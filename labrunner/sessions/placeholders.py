"""Placeholders in the lines of the telnet exercise, filled in at run time.

``{account.user|base64}`` is the login in base64, ``{account.secret|base64}`` the secret in
base64: the scenario file never holds a credential or its encoding. ``{{`` and ``}}`` are
literal braces.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from labrunner.config.model import AccountSpec
from labrunner.errors import UsageError

_PATTERN = re.compile(r"\{\{|\}\}|\{([^{}|]*)(?:\|([^{}]*))?\}")

FIELDS = ("account.address", "account.user", "account.secret", "auth.plain")
FILTERS = ("base64",)
# Values that reveal the secret: lines using them are redacted in the transcript.
SECRET_FIELDS = frozenset({"account.secret", "auth.plain"})


@dataclass(frozen=True)
class Expanded:
    text: str
    sensitive: bool  # holds the secret in some form


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def expand(template: str, account: AccountSpec, secret: str, *, where: str = "line") -> Expanded:
    sensitive = False

    def replace(match: re.Match[str]) -> str:
        nonlocal sensitive
        whole = match.group(0)
        if whole == "{{":
            return "{"
        if whole == "}}":
            return "}"
        name = (match.group(1) or "").strip()
        flt = (match.group(2) or "").strip() or None
        if name == "account.address":
            value = account.address
        elif name == "account.user":
            value = account.login
        elif name == "account.secret":
            value = secret
        elif name == "auth.plain":  # the AUTH PLAIN initial response, already base64
            value = _b64(f"\0{account.login}\0{secret}")
        else:
            raise UsageError(f"{where}: unknown placeholder {whole} in {template!r}",
                             hint=f"known: {', '.join('{' + f + '}' for f in FIELDS)}; write {{{{ for a literal brace")
        if flt == "base64":
            value = _b64(value)
        elif flt is not None:
            raise UsageError(f"{where}: unknown filter |{flt} in {whole}", hint="known filters: |base64")
        sensitive = sensitive or name in SECRET_FIELDS
        return value

    text = _PATTERN.sub(replace, template)
    return Expanded(text, sensitive)
