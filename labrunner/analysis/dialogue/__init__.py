"""From the in-order bytes of a stream to the annotated dialogue of its protocol.

One ``Conversation`` per TCP stream receives the bytes of each direction (plain, or decrypted
by Wireshark) and groups them into entries by the protocol's own rules: multi-line replies,
SMTP DATA, POP3 multi-line responses, IMAP literals, HTTP headers and bodies. Credentials are
redacted by their position in the protocol, whatever their value.

One module per protocol, as in ``labrunner/sessions/``: ``base`` (the ``Conversation`` and the
helpers every protocol shares), ``smtp``, ``pop3``, ``imap``, ``http``.
"""

from __future__ import annotations

from typing import Any

from labrunner.analysis.dialogue.base import (
    _BODY_END,
    MAX_ENTRIES,
    MAX_LINE,
    MAX_LINES_PER_ENTRY,
    REDACTED,
    Conversation,
    Encrypted,
    Entry,
    Generic,
    b64text,
    body_end,
    is_command,
    lone_token,
    mask_query,
    tr,
)
from labrunner.analysis.dialogue.http import BODY_KEEP, Http
from labrunner.analysis.dialogue.imap import IMAP_VERBS, Imap, fetch_item
from labrunner.analysis.dialogue.pop3 import POP3_VERBS, Pop3
from labrunner.analysis.dialogue.smtp import SMTP_VERBS, Smtp

__all__ = [
    "BODY_KEEP", "IMAP_VERBS", "MAX_ENTRIES", "MAX_LINE", "MAX_LINES_PER_ENTRY", "POP3_VERBS", "PROTOCOLS",
    "REDACTED", "SMTP_VERBS", "_BODY_END", "Conversation", "Encrypted", "Entry", "Generic", "Http", "Imap",
    "Pop3", "Smtp", "b64text", "body_end", "conversation", "fetch_item", "is_command", "lone_token",
    "mask_query", "tr",
]

PROTOCOLS: dict[str, type[Conversation]] = {"SMTP": Smtp, "POP3": Pop3, "IMAP": Imap, "HTTP": Http,
                                             "HTTPS": Http}


def conversation(protocol: str, **kw: Any) -> Conversation:
    return PROTOCOLS.get(protocol, Generic)(**kw)
