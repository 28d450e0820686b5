"""Secrets: resolved in memory at run time, and redacted from everything we write.

A secret (mail authorization code, SSH password) comes from the environment, a prompt or the
sandbox state file. It never goes into a file the project writes (captures aside, which are
0600 and flagged in the report). :class:`Redactor` knows every form in which a secret can
show up in a transcript or a dissected capture: as it is, in base64 (AUTH LOGIN), inside the
AUTH PLAIN blob, and base64 of ``user:secret`` (HTTP Basic); and as an error message or a file
can spell it: JSON-, repr-, HTML- and URL-escaped, in hex.

A secret with a control character in it (a CR left by a `.env` file saved with Windows line
ends) is refused by :func:`resolve` before it is used: no protocol can carry it, and an error
quoting the line it is in would escape it past any redactor. Errors that quote a line go
through :func:`quoted`, which redacts the whole line before it is cut and escaped.
"""

from __future__ import annotations

import base64
import getpass
import html
import json
import os
import re
import sys
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Protocol

from labrunner.config.model import SecretRef
from labrunner.errors import UsageError


class MailAccount(Protocol):
    """A sandbox account as secrets reads it (labrunner.sandbox.state.MailAccount; not imported:
    secrets stands below the sandbox)."""

    def secret(self, key: str) -> str | None: ...

REDACTED = "«redacted»"


def _from_state(ref: SecretRef, account: MailAccount | None) -> str | None:
    """The secret a sandbox account holds (``account``: the profile's, from sandbox.State)."""
    return account.secret(ref.state) if account is not None and ref.state is not None else None


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


def source(ref: SecretRef, state: MailAccount | None = None) -> str | None:
    """Where :func:`resolve` will find the secret, without asking for it; None: nowhere."""
    if ref.state is not None:
        return "the sandbox's state" if _from_state(ref, state) else None
    if ref.env and os.environ.get(ref.env):
        return f"the environment variable {ref.env}"
    return "a prompt at the start of the run" if _can_ask(ref) else None


_CHAR_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\t": "a tab",
               "\0": "a NUL byte"}


def unusable(value: str) -> str | None:
    """Why ``value`` cannot be a password ("ends with a carriage return (CR)"), without quoting
    it; None: it can. A control character (Unicode category Cc) goes in no protocol's line, and a
    lone surrogate (bytes that were not UTF-8 in the environment) in no encoding."""
    # the last character first: a CR LF left by a .env file is named by how it ends
    for i in (len(value) - 1, *range(len(value))):
        ch = value[i]
        category = unicodedata.category(ch)
        if category not in ("Cc", "Cs"):
            continue
        name = ("a byte that is not UTF-8" if category == "Cs"
                else _CHAR_NAMES.get(ch, f"the control character U+{ord(ch):04X}"))
        at = "ends with" if i == len(value) - 1 else "starts with" if i == 0 else "contains"
        return f"{at} {name}"
    return None


def _unusable_hint(problem: str) -> str:
    return ("a .env file saved with Windows line ends (CRLF) leaves a CR at the end of each value: "
            "save it with LF line ends (or `sed -i 's/\\r$//' .env`), load it again and run again"
            if "(CR)" in problem or "(LF)" in problem else
            "type the password again without it (no mail server accepts it), then run again")


def _checked(value: str, what: str, where: str) -> str:
    problem = unusable(value)
    if problem is None:
        return value
    raise UsageError(f"{what} from {where} {problem}; it was not used", hint=_unusable_hint(problem))


def refused(ref: SecretRef, state: MailAccount | None = None) -> tuple[str, str] | None:
    """(why, fix) when the secret is there but :func:`resolve` would refuse it (a control
    character), without asking for it or showing it; None otherwise. For `doctor`."""
    env = os.environ.get(ref.env) if ref.env else None
    value = _from_state(ref, state) if ref.state is not None else env
    problem = unusable(value) if value else None
    if problem is None:
        return None
    return f"the value from {source(ref, state)} {problem}", _unusable_hint(problem)


def resolve(ref: SecretRef, *, what: str, state: MailAccount | None = None) -> str:
    """The secret's value, from the sandbox state, the environment, or a prompt.

    A value with a control character is refused (:func:`unusable`), before anything uses it."""
    if ref.state is not None:
        value = _from_state(ref, state)
        if value:
            return _checked(value, what, "the sandbox state")
        reason, hint = missing(ref)
        raise UsageError(f"{what}: {reason}", hint=hint)
    if ref.env:
        value = os.environ.get(ref.env)
        if value:
            return _checked(value, what, f"the environment variable {ref.env}")
    if _can_ask(ref):
        value = getpass.getpass(f"{what}: ")
        if value:
            return _checked(value, what, "the prompt")
    reason, hint = missing(ref)
    raise UsageError(f"{what} is {reason}", hint=hint)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def escaped_forms(text: str) -> set[str]:
    """``text`` as a file or a message may spell it: JSON (\\u escapes or not), Python's repr
    and ascii() (either quote), bytes' repr, HTML, URL-encoded, hex. The escaped text alone,
    without the quotes around it."""
    raw = text.encode("utf-8", "surrogatepass")
    forms = {
        json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1], ascii(text)[1:-1], repr(raw)[2:-1],
        # repr() of a text holding both quotes escapes the single one: the same text in such a line
        repr(text + "'\"")[1:-4], ascii(text + "'\"")[1:-4],
        text.encode("unicode_escape").decode("ascii"),
        html.escape(text), html.escape(text, quote=False),
        urllib.parse.quote(raw, safe=""), urllib.parse.quote(raw), urllib.parse.quote_plus(raw),
        raw.hex(), raw.hex().upper(),
    }
    return {f for f in forms if f}


def secret_forms(secret: str, users: Iterable[str] = ()) -> list[str]:
    """Every string that would reveal ``secret``: the plain text, its base64 encodings, and
    each of them escaped as JSON, repr, HTML or a URL would (:func:`escaped_forms`)."""
    raw = secret.encode("utf-8", "surrogatepass")
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
    for form in list(forms - {secret}):  # base64: "/", "+" and "=" are all that may be escaped
        forms.update((urllib.parse.quote(form, safe=""), urllib.parse.quote_plus(form), form.replace("/", "\\/")))
    forms.update(escaped_forms(secret))
    return sorted((f for f in forms if f), key=len, reverse=True)


def quoted(text: str, redact: Callable[[str], str] | None, limit: int = 60) -> str:
    """``text`` quoted for an error message: redacted whole first (a secret cut in two, or
    escaped by repr(), would no longer be recognised), then shortened, then repr()'d."""
    shown = redact(text) if redact is not None else text
    return repr(shown[:limit] + ("…" if len(shown) > limit else ""))


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
