"""The client's notes in a session record: written as catalogue keys with fields (and the
English text), said by the report in its language from the key (labrunner/protocols/notes.py).

The sessions run against the scripted peer of test_sessions_faults (a socket pair): no sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_sessions_faults import make_ctx, smtp_server  # type: ignore[import-not-found]

from labrunner.config.model import SmtpStep
from labrunner.protocols import notes
from labrunner.report.context import _transcript_lines
from labrunner.report.i18n import catalogue, event_text
from labrunner.report.transcript import Event, Transcript
from labrunner.secrets import REDACTED, Redactor
from labrunner.sessions import StepResult, run_step


def _rows(events: list[dict[str, Any]], lang: str) -> list[str]:
    transcript = Transcript.from_json({"steps": [{"events": events}]})
    assert transcript is not None
    return [row["text"] for row in _transcript_lines(transcript, None, catalogue(lang))]


def said(event: dict[str, Any], lang: str) -> str:
    return event_text(Event.from_json(event), lang)


def test_an_smtp_session_writes_its_notes_as_keys_and_the_report_says_them_in_chinese(tmp_path: Path) -> None:
    server = smtp_server({"EHLO": b"502 5.5.2 Error: command not recognized\r\n", "HELO": b"250 fake\r\n"})
    result = run_step(SmtpStep(security="plain", auth="none"), make_ctx(tmp_path, server))
    assert result.ok, result.error
    keyed = [e for e in result.events if "note" in e]
    assert [e["note"] for e in keyed] == ["connecting", "connected", "helo_fallback", "data_fragment", "closed"]
    for e in keyed:  # the English text beside the key is the catalogue's, with the same fields
        assert e["text"] == notes.english(e["note"], **e["fields"])
    assert keyed[0]["fields"] == {"where": "smtp.fake.test:25"} and keyed[0]["dir"] == "*"
    assert keyed[3]["dir"] == "C" and keyed[3]["fields"]["size"] > 0
    zh = _rows(result.events, "zh")
    assert "正在从目标主机连接 smtp.fake.test:25" in zh
    assert "EHLO 被拒绝：改用 HELO（没有 ESMTP 扩展）" in zh
    assert "连接已关闭" in zh
    assert any(row.startswith("DATA 邮件内容，") for row in zh)
    # English: exactly what the client wrote
    assert _rows(result.events, "en") == [e["text"] for e in result.events]


def test_the_report_says_a_note_from_its_key_and_fields_not_from_its_text() -> None:
    # the text of a later labrunner may word a note differently: the key decides
    event = {"dir": "*", "note": "not_yet", "fields": {"mid": "<1.2@lab.test>"}, "text": "<1.2@lab.test>: not there"}
    assert said(event, "zh") == "<1.2@lab.test> 尚未到达邮箱"
    assert said(event, "en") == "<1.2@lab.test> is not in the mailbox yet"
    missing = {"dir": "S", "note": "message_data", "fields": {"size": 9, "lines": 1, "mid": None}, "text": ""}
    assert said(missing, "zh") == "邮件数据，9 字节，1 行：无 Message-ID"


@pytest.mark.parametrize("event", [
    {"dir": "*", "note": "no_such_note", "fields": {}, "text": "kept as written"},
    {"dir": "*", "note": "connecting", "fields": {}, "text": "kept as written"},  # a field missing
    {"dir": "*", "note": "connecting", "fields": "where", "text": "kept as written"},
])
def test_a_damaged_note_shows_its_text(event: dict[str, Any]) -> None:
    assert said(event, "zh") == "kept as written"


def test_a_note_field_holding_the_secret_is_redacted(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, smtp_server({}))
    ctx.redactor = Redactor()
    ctx.redactor.add("s3cret-Value!")
    result = StepResult(kind="smtp", id=None, server="smtp", host="h", port=25, security="plain", started=0.0,
                        started_wall=0.0)
    ctx.note(result, 1, "step_failed", error="login with s3cret-Value! refused")
    event = result.events[0]
    assert "s3cret" not in str(event)
    assert event["fields"]["error"] == f"login with {REDACTED} refused" and event["note"] == "step_failed"


# Run folders written before the notes had keys hold their English text only (the fixtures
# under tests/fixtures/run, sandbox-run): the key and fields are found in it again.
@pytest.mark.parametrize(("direction", "line", "zh"), [
    ("*", "step failed: SMTP smtp.lab.test:25: RCPT TO → 550 no such user",
     "步骤失败：SMTP smtp.lab.test:25: RCPT TO → 550 no such user"),
    ("*", "302 Found: following the redirect to /login", "302 Found：跟随重定向到 /login"),
    ("*", "the greeting has no APOP timestamp: logging in with USER/PASS",
     "问候语中没有 APOP 时间戳：改用 USER/PASS 登录"),
    ("*", "<1.2@lab.test> is not in the mailbox yet", "<1.2@lab.test> 尚未到达邮箱"),
    ("*", "rcpt: got 550 as the scenario expects", "rcpt：收到实验预期的应答 550"),
    ("*", "EHLO refused: falling back to HELO (no ESMTP extensions)", "EHLO 被拒绝：改用 HELO（没有 ESMTP 扩展）"),
    ("*", "the server does not offer PIPELINING: sending commands one by one", "服务器不支持 PIPELINING：逐条发送命令"),
    ("*", "TLS handshake: TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384", "TLS 握手：TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384"),
    ("S", "… 120 more lines, 9000 bytes in all", "…… 另有 120 行，共 9000 字节"),
    ("S", "message data, 900 bytes, 20 lines: no Message-ID", "邮件数据，900 字节，20 行：无 Message-ID"),
    ("S", "body, 0 bytes (no content type)", "正文，0 字节（无内容类型）"),
])
def test_an_old_folders_notes_are_translated_and_round_trip_in_english(direction: str, line: str, zh: str) -> None:
    assert said({"dir": direction, "text": line}, "zh") == zh
    assert said({"dir": direction, "text": line}, "en") == line


def test_a_server_line_shaped_like_a_note_is_left_alone() -> None:
    assert said({"dir": "S", "text": "connection closed"}, "zh") == "connection closed"
    assert said({"dir": "C", "text": "body, 3 bytes (x)"}, "zh") == "body, 3 bytes (x)"


@pytest.mark.parametrize("key", sorted(notes.CATALOGUE))
def test_every_note_is_found_again_in_its_english_text(key: str) -> None:
    """The patterns made from the templates read each note back (no two templates collide)."""
    direction = next(d for d, table in notes.BY_DIRECTION.items() if key in table)
    names = notes._FIELD.findall(notes.CATALOGUE[key].en)
    fields = {name: "42" if name in notes._NUMBERS else f"<{name}>" for name in names}
    assert notes.parse(direction, notes.english(key, **fields)) == (key, fields)
    assert notes.say(key, fields, "zh")  # and the Chinese template has the same fields
    assert set(notes._FIELD.findall(notes.CATALOGUE[key].zh)) == set(names)
