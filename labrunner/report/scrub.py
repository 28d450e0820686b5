"""Passwords out of dialogue lines, by the shape of the protocol rather than by the secret.

The writers of transcript.json and analysis.json already redact, and the report redacts again:
the report is rendered offline, where the secret is not known, so the client line after a
"334 UGFzc3dvcmQ6" challenge, ``PASS``, the ``AUTH PLAIN`` blob, IMAP ``LOGIN``'s password and
HTTP Basic credentials are replaced whatever they contain.

:func:`scrub_text` does the same for free text a student writes (notes, reflections): a
dialogue pasted into the notes, an AUTH PLAIN blob on its own, "授权码：..." — by shape too,
for the report a teaching assistant renders from a handed-in folder without the secret.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from labrunner.secrets import REDACTED

_PASS_PROMPT_B64 = {"UGFzc3dvcmQ6", "cGFzc3dvcmQ6", "UGFzc3dvcmQ"}
_SMTP_AUTH_PLAIN = re.compile(r"^(\s*AUTH\s+PLAIN\s+)\S+", re.IGNORECASE)
_POP_PASS = re.compile(r"^(\s*PASS\s+).+$", re.IGNORECASE)
_TSHARK_PASS = re.compile(r"^(\s*Pass(?:word)?:\s*).+$", re.IGNORECASE)
_IMAP_LOGIN = re.compile(r"^(\s*\S+\s+LOGIN\s+(?:\"(?:[^\"\\]|\\.)*\"|\S+)\s+).+$", re.IGNORECASE)
_BASIC_AUTH = re.compile(r"((?:Proxy-)?Authorization:\s*Basic\s+)\S+", re.IGNORECASE)
_AUTH_START = re.compile(r"^\s*(?:\S+\s+)?(?:AUTH|AUTHENTICATE)\s+(PLAIN|LOGIN)\s*$", re.IGNORECASE)
_AUTH_LOGIN_INITIAL = re.compile(r"^\s*(?:\S+\s+)?(?:AUTH|AUTHENTICATE)\s+LOGIN\s+\S+\s*$", re.IGNORECASE)


def _b64decode(blob: str) -> bytes | None:
    try:
        return base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _asks_password(server_text: str) -> bool:
    """A SASL challenge ("334 <b64>" or "+ <b64>") that decodes to a password prompt."""
    # a pipelined reply can put the challenge after other lines: "250 ok\n334 UGFzc3dvcmQ6"
    parts = server_text.strip().rsplit("\n", 1)[-1].split()
    if len(parts) < 2 or parts[0] not in ("334", "+"):
        return False
    blob = parts[1]
    if blob in _PASS_PROMPT_B64:
        return True
    decoded = _b64decode(blob)
    return decoded is not None and "password" in decoded.decode("utf-8", "replace").lower()


_HTTP_HEAD = re.compile(r"^(?:[A-Z]+ \S+ HTTP/\d|HTTP/\d)")
_FORM = re.compile(r"^\[(?:body: \d+ bytes\] form fields:|消息体：\d+ 字节\] 表单字段：)")
_FORM_SECRET = re.compile(r"pass|pwd|secret|token|auth|code", re.IGNORECASE)


def _http(text: str) -> str:
    """An HTTP head (cookies, secret query parameters) or a form's fields, as the analyser hides them."""
    from labrunner.analysis.dialogue import mask_query

    lines = text.split("\n")
    if _FORM.match(lines[0]):
        for i, line in enumerate(lines[1:], 1):
            name, _, value = line.partition("=")
            if value and _FORM_SECRET.search(name):
                lines[i] = f"{name}={REDACTED}"
        return "\n".join(lines)
    if not _HTTP_HEAD.match(lines[0]):
        return text
    out = [mask_query(lines[0])]
    for line in lines[1:]:
        name, sep, _value = line.partition(":")
        # (Authorization: Basic is left to _BASIC_AUTH below, which keeps the scheme)
        out.append(f"{name}: {REDACTED}" if sep and name.strip().lower() in ("cookie", "set-cookie")
                   else mask_query(line))
    return "\n".join(out)


def scrub_lines(lines: list[dict[str, Any]], redact: Callable[[str], str] | None = None) -> list[dict[str, Any]]:
    """A copy of a dialogue with every password-bearing client line redacted.

    Works on shapes, not on the secret: the report is rendered offline, where the secret is
    not known. ``redact`` (a :class:`labrunner.secrets.Redactor`) is applied on top when the
    caller has the secret.
    """
    out: list[dict[str, Any]] = []
    expect_password = False  # the next client line answers a password prompt
    plain_pending = False  # AUTH PLAIN without an initial response: the next client line is the blob
    # AUTH LOGIN: client lines answered so far; only the first (without an initial response) is
    # the user name, whatever the prompts say: a client that does not wait sends both at once.
    login_lines: int | None = None
    for line in lines:
        text = str(line.get("text", ""))
        explanation = line.get("explanation")
        if redact is not None:
            text = redact(text)
        direction = line.get("dir")
        text = _http(text)
        if direction == "C":
            first = text.split("\n", 1)[0]
            login_secret = login_lines is not None and login_lines >= 1
            if login_lines is not None:
                login_lines += 1
            if expect_password or plain_pending or login_secret:
                label = _TSHARK_PASS.match(first)
                if text != (label.group(1) if label else "") + REDACTED:
                    explanation = REDACTED  # a decoded credential may sit in the explanation too
                text = (label.group(1) if label else "") + REDACTED
            else:
                for pattern in (_SMTP_AUTH_PLAIN, _POP_PASS, _TSHARK_PASS, _IMAP_LOGIN):
                    if pattern.match(first):
                        text = pattern.sub(lambda m: m.group(1) + REDACTED, first)
                        break
                text = _BASIC_AUTH.sub(lambda m: m.group(1) + REDACTED, text)
            start = _AUTH_START.match(first)
            plain_pending = bool(start and start.group(1).upper() == "PLAIN")
            if start and start.group(1).upper() == "LOGIN":
                login_lines = 0
            elif _AUTH_LOGIN_INITIAL.match(first):
                login_lines = 1  # the user name came with the command
            expect_password = False
        elif direction == "S":
            expect_password = _asks_password(text)
            if text.strip().rsplit("\n", 1)[-1].split(" ", 1)[0] not in ("334", "+"):
                plain_pending = False
                login_lines = None
        copy = dict(line)
        copy["text"] = text
        if explanation is not None:
            copy["explanation"] = redact(str(explanation)) if redact is not None else explanation
        out.append(copy)
    return out


# --- free text ------------------------------------------------------------------------------

# What may stand before a pasted protocol line: Markdown (quote, list, code), a "C:"/"S:" label.
_PREFIX = re.compile(r"^[\s>*\-+`|#]*(?:\d+[.)]\s+)?[\s`]*(?:(?:C|S|Client|Server|客户端|服务器)\s*[:：]\s*)?",
                     re.IGNORECASE)
_B64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{8,}={0,2}(?![A-Za-z0-9+/=])")
_TEXT_PASS = re.compile(r"^(PASS\s+)\S.*$")  # POP3's PASS: the rest of the line
_TEXT_PASS_WORD = re.compile(r"^(pass\s+)\S+\s*$", re.IGNORECASE)  # "pass x" typed in lower case: one word
_TEXT_IMAP_LOGIN = re.compile(r"^([A-Za-z]*\d+\s+LOGIN\s+(?:\"(?:[^\"\\]|\\.)*\"|\S+)\s+)\S.*$", re.IGNORECASE)
_TEXT_LABELLED = re.compile(
    r"((?<![A-Za-z])(?:pass(?:word|wd)?|auth(?:orization)?[ _-]?code|授权码|密码|口令)\s*[:：=]\s*[\"'`]?)"
    r"([^\s，。,;；、()（）\"'`]{4,})", re.IGNORECASE)
# "授权码 zujnuhmaarpybbbb", "密码是 abc12345": a Chinese label, then a code of 8+ ASCII characters
_TEXT_LABELLED_ZH = re.compile(r"((?:授权码|密码|口令)\s*[是为]?\s*)([A-Za-z0-9][!-~]{7,})")
_PROMPT = re.compile(r"^(?:334|\+)\s+(\S.*)$")


def _credential_blob(token: str) -> bool:
    """An AUTH PLAIN response ("authzid\\0user\\0password" in base64), whatever it holds."""
    decoded = _b64decode(token.rstrip("="))
    return decoded is not None and decoded.count(b"\0") >= 2


def scrub_text(text: str) -> str:
    """Free text (a student's notes) with every credential-shaped part replaced by «redacted».

    By shape, without the secret: an AUTH PLAIN blob anywhere; the line after a password
    prompt (``334 UGFzc3dvcmQ6``, ``+ <base64 of Password:>``, ``334 Password:``); ``PASS``
    lines; IMAP ``a1 LOGIN user password``; ``Authorization: Basic``; and "password: ...",
    "授权码：..." written out. Markdown around a pasted line ("> C: PASS ...") is kept.
    """
    if not text:
        return text
    out: list[str] = []
    after_prompt = False
    for line in text.split("\n"):
        prefix = _PREFIX.match(line)
        head, body = (line[:prefix.end()], line[prefix.end():]) if prefix else ("", line)
        stripped = body.strip().strip("`")
        if after_prompt and stripped:
            after_prompt = False
            if len(stripped.split()) == 1:  # the answer to the prompt: one token
                out.append(head + REDACTED)
                continue
        # "+ UGFzc3dvcmQ6" (IMAP) lost its "+" to the prefix, as a Markdown list marker would
        prompt = _PROMPT.match(stripped) or _PROMPT.match(line.strip().lstrip(">` "))
        if prompt:
            asked = prompt.group(1)
            decoded = _b64decode(asked.split()[0])
            after_prompt = "password" in asked.lower() or asked.split()[0] in _PASS_PROMPT_B64 or (
                decoded is not None and "password" in decoded.decode("utf-8", "replace").lower())
        for pattern in (_TEXT_PASS, _TEXT_PASS_WORD, _TEXT_IMAP_LOGIN):
            if pattern.match(body):
                body = pattern.sub(lambda m: m.group(1) + REDACTED, body)
                break
        body = _BASIC_AUTH.sub(lambda m: m.group(1) + REDACTED, body)
        body = _TEXT_LABELLED.sub(lambda m: m.group(1) + REDACTED, body)
        body = _TEXT_LABELLED_ZH.sub(lambda m: m.group(1) + REDACTED, body)
        body = _B64_TOKEN.sub(lambda m: REDACTED if _credential_blob(m.group(0)) else m.group(0), body)
        out.append(head + body)
    return "\n".join(out)
