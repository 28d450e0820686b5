"""The message a session sends: MIME structure, encodings, dot-stuffing, recognising it again."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labrunner.config.model import Attachment, MessageSpec
from labrunner.errors import UsageError
from labrunner.mime import (
    build_message,
    dot_stuff,
    dot_unstuff,
    header_value,
    same_message,
    strip_trace_headers,
)

SENDER = "877261793@qq.com"


def build(spec: MessageSpec, tmp_path: Path, recipients: tuple[str, ...] = (SENDER,)):
    return build_message(spec, sender=SENDER, recipients=recipients, scenario_dir=tmp_path)


def test_full_message_structure(tmp_path: Path) -> None:
    (tmp_path / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    spec = MessageSpec(subject="实验5 测试邮件", text="你好，实验。\nsecond line", html="<p>你好</p>",
                       attachments=(Attachment(name="pic.png", path="pic.png"),
                                    Attachment(name="a.txt", content="附件", content_type="text/plain")))
    built = build(spec, tmp_path, recipients=("a@x.test", "b@x.test"))
    data = built.data
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert max(data) < 128  # 7-bit clean: no 8BITMIME needed anywhere
    assert b"=?utf-8?" in data  # the Chinese subject is RFC 2047 encoded
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["Subject"] == "实验5 测试邮件"
    assert msg["To"] == "a@x.test, b@x.test"
    assert msg["Message-ID"] == built.message_id and built.message_id.endswith("@qq.com>")
    assert built.parts == ["text/plain", "text/html", "image/png", "text/plain"]
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().startswith("你好，实验。")
    html = msg.get_body(("html",))
    assert html is not None and "<p>你好</p>" in html.get_content()
    attachments = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
    assert attachments["pic.png"] == (tmp_path / "pic.png").read_bytes()
    assert attachments["a.txt"].strip() == "附件"
    assert built.summary() == ("from: <877261793@qq.com>, subject: 实验5 测试邮件, "
                               "(text/plain) (text/html) (image/png) (text/plain)")
    assert len(built.sha256) == 64


def test_each_message_gets_a_new_message_id(tmp_path: Path) -> None:
    spec = MessageSpec(subject="x", text="y")
    assert build(spec, tmp_path).message_id != build(spec, tmp_path).message_id


def test_missing_attachment_is_a_usage_error(tmp_path: Path) -> None:
    spec = MessageSpec(attachments=(Attachment(name="gone.pdf", path="gone.pdf"),))
    with pytest.raises(UsageError, match=r"attachment 'gone.pdf': cannot read .*gone.pdf"):
        build(spec, tmp_path)


def test_dot_stuffing_and_terminator() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuff(b".") == b"..\r\n.\r\n"
    assert dot_stuff(b"no newline at end") == b"no newline at end\r\n.\r\n"
    assert dot_stuff(b"lf\nonly\n") == b"lf\r\nonly\r\n.\r\n"


LINE = st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(LINE, max_size=20))
def test_stuffing_round_trips(lines: list[str]) -> None:
    data = b"".join(line.encode() + b"\r\n" for line in lines)
    stuffed = dot_stuff(data)
    wire_lines = stuffed.split(b"\r\n")[:-1]
    assert wire_lines[-1] == b"."
    assert b"." not in wire_lines[:-1]  # no early terminator inside the body
    assert dot_unstuff(wire_lines[:-1]) == data


def test_trace_headers_are_stripped_only_at_the_top() -> None:
    sent = b"From: a@b\r\nReceived: inside the message\r\nSubject: s\r\n\r\nbody\r\n"
    delivered = (b"Return-Path: <a@b>\nX-Original-To: a@b\nDelivered-To: a@b\n"
                 b"Received: from lab-client (unknown [10.0.0.2])\n\t(using TLSv1.3)\n\tby smtp\n"
                 + sent.replace(b"\r\n", b"\n"))
    message, trace = strip_trace_headers(delivered)
    assert trace == ["Return-Path", "X-Original-To", "Delivered-To", "Received"]
    assert message == sent
    assert same_message(sent, delivered)
    assert not same_message(sent.replace(b"body", b"bodY"), delivered)


def test_header_value_unfolds() -> None:
    data = b"Subject: a\r\nMessage-ID:\r\n <x@y>\r\n\r\nMessage-ID: <not-a-header>\r\n"
    assert header_value(data, "message-id") == "<x@y>"
    assert header_value(data, "Date") is None


def test_a_message_starting_with_received_still_compares_equal() -> None:
    from labrunner.mime import compare_delivered

    sent = b"Received: by the author's own relay\r\nFrom: a@b\r\n\r\nbody\r\n"
    delivered = b"Return-Path: <a@b>\nDelivered-To: a@b\n" + sent.replace(b"\r\n", b"\n")
    assert compare_delivered(sent, delivered) == (True, ["Return-Path", "Delivered-To"])
    # Something other than a trace header above the message: not the same delivery.
    assert compare_delivered(sent, b"Subject: injected\r\n" + sent)[0] is False
