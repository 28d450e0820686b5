"""What labrunner's own protocol clients say in a session record, in Chinese and English.

A session (labrunner/sessions) writes each of its notes into transcript.json as an event with
a key of this catalogue and the note's fields, beside the English text for whoever reads the
raw file (docs/transcript.md)::

    {"conn": 1, "dir": "*", "time": 0.41, "tls": false, "note": "pipelining", "fields": {},
     "text": "PIPELINING: sending MAIL, RCPT and DATA without waiting"}

The report says the note in its own language from the key and the fields (``say``). Run
folders written before the keys existed hold the English text only: ``parse`` finds the key and
the fields in it again, with patterns made from the English templates below (one catalogue, no
second list of patterns to keep in step with it).

``*`` notes are the client's remarks; the ``S`` and ``C`` entries are the few lines a client
writes in place of what it did not record line by line (a retrieved message, an HTTP body, the
DATA payload). A field given as None is missing (``MISSING`` says so in words).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache

from labrunner.text import Text

# ruff: noqa: E501  (one entry per line, zh beside en, reads better than wrapped text)

NOTES: dict[str, Text] = {
    "connecting": Text("正在从目标主机连接 {where}", "connecting to {where} from the target"),
    "connected": Text("已连接到 {where}", "connected to {where}"),
    "tls_starting": Text("开始 TLS 握手（SNI {sni}）", "TLS handshake starting (SNI {sni})"),
    "tls_done": Text("TLS 握手完成：{version} {cipher}", "TLS handshake done: {version} {cipher}"),
    "tls": Text("TLS 握手：{version} {cipher}", "TLS handshake: {version} {cipher}"),  # older run folders
    "closed": Text("连接已关闭", "connection closed"),
    "step_failed": Text("步骤失败：{error}", "step failed: {error}"),
    "redirect": Text("{status} {reason}：跟随重定向到 {path}", "{status} {reason}: following the redirect to {path}"),
    "no_apop": Text("问候语中没有 APOP 时间戳：改用 USER/PASS 登录", "the greeting has no APOP timestamp: logging in with USER/PASS"),
    "not_yet": Text("{mid} 尚未到达邮箱", "{mid} is not in the mailbox yet"),
    "expected_reply": Text("{phase}：收到实验预期的应答 {code}", "{phase}: got {code} as the scenario expects"),
    "helo_fallback": Text("EHLO 被拒绝：改用 HELO（没有 ESMTP 扩展）", "EHLO refused: falling back to HELO (no ESMTP extensions)"),
    "pipelining": Text("PIPELINING：连续发送 MAIL、RCPT 和 DATA，不等待应答", "PIPELINING: sending MAIL, RCPT and DATA without waiting"),
    "no_pipelining": Text("服务器不支持 PIPELINING：逐条发送命令", "the server does not offer PIPELINING: sending commands one by one"),
    # a webmail step (sessions/webmail.py): what each request of the browser's walk does
    "web_redirect": Text("{status}：跟随重定向到 {path}", "{status}: following the redirect to {path}"),
    "web_login_page": Text("登录页：服务器设置了会话 Cookie（{cookies}），并在表单中放入 CSRF 令牌 _token",
                           "login page: the server set the session cookie ({cookies}) and put the CSRF token _token in the form"),
    "web_log_in": Text("登录：POST 提交表单（{names}）；密码在 TLS 内传送，Cookie 证明会话",
                       "log in: POST the form with {names}; the password goes inside TLS, the cookie proves the session"),
    "web_logged_in": Text("已登录：新的会话 Cookie（{cookies}），重定向到邮箱", "logged in: a new session cookie ({cookies}), redirected to the mailbox"),
    "web_send": Text("发送：带着会话 Cookie POST 提交写信表单（_token、_id {id}、_from、_to、_subject、_message）；网页邮件把邮件交给它的 SMTP 服务器",
                     "send: POST the compose form (_token, _id {id}, _from, _to, _subject, _message) with the session cookie; the web mail hands the mail to its SMTP server"),
    "web_sent": Text("网页邮件提示：邮件已成功发送", "the web mail says: message sent successfully"),
    "web_log_out": Text("退出登录：会话结束，其 Cookie 被删除", "log out: the session ends, its cookie is deleted"),
    "web_sent_mail": Text("发出的邮件是“已发送”中的第 {uid} 封；其源码给出后续步骤要查找的 Message-ID",
                          "the sent mail is message {uid} of Sent; its source gives the Message-ID a later step looks for"),
}

SERVER_LINES: dict[str, Text] = {
    "message_data": Text("邮件数据，{size} 字节，{lines} 行：{mid}", "message data, {size} bytes, {lines} lines: {mid}"),
    "headers": Text("第 {n} 封邮件的头部，{size} 字节：{mid}", "headers of message {n}, {size} bytes: {mid}"),
    "more_lines": Text("…… 另有 {n} 行，共 {size} 字节", "… {n} more lines, {size} bytes in all"),
    "body": Text("正文，{size} 字节（{type}）", "body, {size} bytes ({type})"),
    "literal": Text("«IMAP 字面量，{size} 字节»", "«literal, {size} bytes»"),
}

CLIENT_LINES: dict[str, Text] = {
    "data_fragment": Text("DATA 邮件内容，{size} 字节：{summary}", "DATA fragment, {size} bytes: {summary}"),
    "body_sent": Text("请求体，{size} 字节", "body, {size} bytes"),
}

# A field given as None: what is missing, in words.
MISSING: dict[str, Text] = {
    "mid": Text("无 Message-ID", "no Message-ID"),
    "type": Text("无内容类型", "no content type"),
}

BY_DIRECTION: dict[str, dict[str, Text]] = {"*": NOTES, "S": SERVER_LINES, "C": CLIENT_LINES}
CATALOGUE: dict[str, Text] = {**NOTES, **SERVER_LINES, **CLIENT_LINES}
_NUMBERS = frozenset({"size", "lines", "n", "code", "status"})  # fields that are whole numbers
_FIELD = re.compile(r"\{(\w+)\}")


def say(key: str, fields: Mapping[str, object], lang: str) -> str | None:
    """The note ``key`` with its ``fields`` in ``lang``; None when the catalogue has no such key or
    the fields do not fit it (a damaged or foreign transcript: the caller shows its text)."""
    entry = CATALOGUE.get(key)
    if entry is None:
        return None
    values: dict[str, str] = {}
    for name in _FIELD.findall(entry.en):
        value = fields.get(name)
        if value is None:
            missing = MISSING.get(name)
            if missing is None:
                return None
            value = missing.get(lang)
        values[name] = str(value)
    return entry.get(lang).format_map(values)


def english(key: str, **fields: object) -> str:
    """The English text of a note, as a session writes it beside the key."""
    text = say(key, fields, "en")
    if text is None:
        raise KeyError(f"note {key!r} with fields {sorted(fields)}: not in labrunner/protocols/notes.py")
    return text


@cache
def _pattern(template: str) -> re.Pattern[str]:
    parts = _FIELD.split(template)  # literal, name, literal, name, ..., literal
    return re.compile("".join(re.escape(part) if i % 2 == 0 else
                              (rf"(?P<{part}>\d+)" if part in _NUMBERS else rf"(?P<{part}>.*?)")
                              for i, part in enumerate(parts)))


def parse(direction: str, text: str) -> tuple[str, dict[str, str | None]] | None:
    """(key, fields) of a note a run folder holds as English text only, or None when ``text`` is
    not one (a line a server sent stays as it is)."""
    for key, entry in BY_DIRECTION.get(direction, {}).items():
        m = _pattern(entry.en).fullmatch(text)
        if m:
            return key, {name: None if name in MISSING and value == MISSING[name].en else value
                         for name, value in m.groupdict().items()}
    return None
