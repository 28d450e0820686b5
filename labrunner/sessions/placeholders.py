"""Placeholders in the lines of the telnet exercise, filled in at run time.

``{account.user|base64}`` is the login in base64, ``{account.secret|base64}`` the secret in
base64: the scenario file never holds a credential or its encoding. The grammar is
config/template.py's, the one validation checks; this module only supplies the values.
"""

from __future__ import annotations

from dataclasses import dataclass

from labrunner.config.model import AccountSpec
from labrunner.config.template import FIELDS, SECRET_FIELDS, TemplateError, placeholders, render
from labrunner.errors import UsageError


@dataclass(frozen=True)
class Expanded:
    text: str
    sensitive: bool  # holds the secret in some form


def expand(template: str, account: AccountSpec, secret: str, *, where: str = "line") -> Expanded:
    try:
        used = placeholders(template)
    except TemplateError as err:
        known = ", ".join("{" + f + "}" for f in FIELDS)
        raise UsageError(f"{where}: {err} in {template!r}",
                         hint=f"known: {known}; write {{{{ or }}}} for a literal brace") from None
    values = {"account.address": account.address, "account.user": account.login, "account.secret": secret}
    return Expanded(render(template, values), any(name in SECRET_FIELDS for name, _ in used))
