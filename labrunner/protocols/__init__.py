"""Reply codes and commands of the mail protocols, with explanations in Chinese and English.

Each protocol module (smtp, pop3, imap) is data: named constants for the replies the code
checks, one table of reply explanations, one table of command explanations and one table of
hints for well-known providers. Sessions, analysis and the report all read these tables, so a
student sees the same words for a code everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from labrunner.text import Text


@dataclass(frozen=True)
class ProviderHint:
    """Advice for a reply from a known provider (host name ends with ``host_suffix``)."""

    host_suffix: str
    reply: int | str  # a code (SMTP) or a status/response code word (POP3/IMAP)
    hint: Text


def lookup(table: Mapping[str, Text], key: str, lang: str) -> str:
    entry = table.get(key.upper())
    return entry.get(lang) if entry else ""


def explain_word(replies: Mapping[str, Text], commands: Mapping[str, Text], word: str, lang: str) -> str:
    """POP3/IMAP: a status or response code from ``replies``, else a command from ``commands``."""
    key = word.strip().strip("[]").upper()
    first = key.split()[0] if key else key
    return lookup(replies, first, lang) or lookup(commands, first, lang)


def explain_command_word(commands: Mapping[str, Text], word: str, lang: str) -> str:
    """POP3/IMAP: a command from ``commands`` only (AUTH is a command and, in POP3, also a response
    code meaning a failed login: a command line must not read as the failure)."""
    key = word.strip().upper()
    return lookup(commands, key.split()[0] if key else key, lang)


def command_hint(verb: str, host: str, lang: str, *, login_verbs: tuple[str, ...], refusal: str,
                 providers: tuple[ProviderHint, ...], generic: Mapping[str, Text]) -> str:
    """Advice when ``verb`` was refused: for a login, the provider's first; then the generic one."""
    if verb.upper() in login_verbs:
        found = provider_hint(providers, host, refusal, lang)
        if found:
            return found
    entry = generic.get(verb.upper())
    return entry.get(lang) if entry else ""


def provider_hint(hints: tuple[ProviderHint, ...], host: str, reply: int | str, lang: str) -> str:
    host = host.lower().rstrip(".")
    for item in hints:
        suffix = item.host_suffix.lower()
        if item.reply == reply and (host == suffix or host.endswith("." + suffix)):
            return item.hint.get(lang)
    return ""
