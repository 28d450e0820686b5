"""Secrets: resolved in memory at run time, and redacted from everything we write.

A secret (mail authorization code, SSH password) comes from the environment, a prompt or the
sandbox state file. It never goes into a file the project writes (captures aside, which are
0600 and flagged in the report). :class:`Redactor` knows every form in which a secret can
show up in a transcript or a dissected capture: as it is, in base64 (AUTH LOGIN), inside the
AUTH PLAIN blob, and base64 of ``user:secret`` (HTTP Basic).
"""

from __future__ import annotations

import base64
import getpass
import os
import re
import sys
from collections.abc import Iterable

from labrunner.config.model import SecretRef
from labrunner.errors import UsageError

REDACTED = "«redacted»"


def _from_state(ref: SecretRef, state: dict | None) -> str | None:
    value = (state or {}).get(ref.state) if ref.state is not None else None
    return value if isinstance(value, str) and value else None


def _can_ask(ref: SecretRef) -> bool:
    return ref.prompt and sys.stdin is not None and sys.stdin.isatty()


def missing(ref: SecretRef) -> tuple[str, str]:
    """Why ``ref`` gives no secret, and the fix: ("not set: it is read from …", hint), or for
    the sandbox ("the sandbox state has no …", hint). One wording for run and doctor."""
    if ref.state is not None:
        return f"the sandbox state has no {ref.state!r}", "start the sandbox first: `labrunner sandbox up`"
    where = f"the environment variable {ref.env}" if ref.env else "a prompt"
    return (f"not set: it is read from {where}",
            f"export {ref.env}=... (for QQ Mail: the authorization code from Settings → Accounts → "
            "POP3/SMTP service), then run again" if ref.env else "run in a terminal to be asked")


def source(ref: SecretRef, state: dict | None = None) -> str | None:
    """Where :func:`resolve` will find the secret, without asking for it; None: nowhere."""
    if ref.state is not None:
        return "the sandbox's state" if _from_state(ref, state) else None
    if ref.env and os.environ.get(ref.env):
        return f"the environment variable {ref.env}"
    return "a prompt at the start of the run" if _can_ask(ref) else None


def resolve(ref: SecretRef, *, what: str, state: dict | None = None) -> str:
    """The secret's value, from the sandbox state, the environment, or a prompt."""
    if ref.state is not None:
        value = _from_state(ref, state)
        if value:
            return value
        reason, hint = missing(ref)
        raise UsageError(f"{what}: {reason}", hint=hint)
    if ref.env:
        value = os.environ.get(ref.env)
        if value:
            return value
    if _can_ask(ref):
        value = getpass.getpass(f"{what}: ")
        if value:
            return value
    reason, hint = missing(ref)
    raise UsageError(f"{what} is {reason}", hint=hint)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_forms(secret: str, users: Iterable[str] = ()) -> list[str]:
    """Every string that would reveal ``secret``: the plain text and its base64 encodings."""
    raw = secret.encode("utf-8")
    forms = {secret, _b64(raw)}
    for user in users:
        u = user.encode("utf-8")
        forms.add(_b64(b"\0" + u + b"\0" + raw))  # AUTH PLAIN, no authorization identity
        forms.add(_b64(u + b"\0" + u + b"\0" + raw))  # AUTH PLAIN with authzid = user
        forms.add(_b64(u + b":" + raw))  # HTTP Basic
    # base64 of the secret at each offset mod 3 inside a longer blob: the middle characters
    # stay the same whatever precedes it, so match the stable core too.
    for pad in (b"", b"\0", b"\0\0"):
        enc = _b64(pad + raw)
        start = (len(pad) * 4 + 2) // 3 + 1
        core = enc[start:-4] if len(enc) - start > 8 else ""
        if len(core) >= 8:
            forms.add(core)
    return sorted((f for f in forms if f), key=len, reverse=True)


class Redactor:
    """Replaces every known form of every registered secret with «redacted»."""

    def __init__(self) -> None:
        self._forms: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | None, users: Iterable[str] = ()) -> None:
        if not secret:
            return
        for form in secret_forms(secret, users):
            if form not in self._forms:
                self._forms.append(form)
        self._forms.sort(key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(f) for f in self._forms))

    @property
    def forms(self) -> list[str]:
        return list(self._forms)

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def contains_secret(self, text: str) -> bool:
        return self._pattern is not None and bool(self._pattern.search(text))
