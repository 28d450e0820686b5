"""The byte-level parts of the analysis: ordering segments, grouping lines, redacting by position."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labrunner.analysis.dialogue import REDACTED, conversation
from labrunner.analysis.reassembly import Assembler
from labrunner.secrets import Redactor
from labrunner.text import in_language


def _conv(protocol: str, **kw):
    conv = conversation(protocol, show_credentials=kw.pop("show", False), redactor=kw.pop("redactor", None))
    conv.read_in = kw.pop("lang", "en")  # the entries say things in both languages: _play gives this one
    return conv


def _play(conv, script: list[tuple[str, bytes]]):
    for frame, (d, data) in enumerate(script, start=1):
        conv.feed(d, data, frame, frame / 100, decrypted=False)
    conv.finish(len(script), len(script) / 100)
    return in_language(conv.entries, conv.read_in)


def _texts(entries):
    return [(e["dir"], e["text"]) for e in entries]


# --- reassembly ----------------------------------------------------------------------------


def _collect(asm: Assembler, segments):
    out = []
    for seq, data, frame in segments:
        out += asm.add(seq, data, frame, float(frame))
    out += asm.flush()
    return out


def test_in_order_duplicate_and_overlap_give_each_byte_once():
    asm = Assembler()
    asm.start_at(1)
    chunks = _collect(asm, [(1, b"HELLO ", 1), (1, b"HELLO ", 2), (4, b"LO WOR", 3), (10, b"LD\r\n", 4)])
    assert b"".join(c.data for c in chunks) == b"HELLO WORLD\r\n"
    assert [c.frame for c in chunks] == [1, 3, 4]
    assert asm.duplicate_bytes == 6 + 3


def test_out_of_order_segment_waits_for_the_hole():
    asm = Assembler()
    asm.start_at(1)
    chunks = _collect(asm, [(1, b"AB", 1), (5, b"EF", 2), (3, b"CD", 3)])
    assert b"".join(c.data for c in chunks) == b"ABCDEF"
    assert [c.frame for c in chunks] == [1, 3, 2]
    assert all(c.gap == 0 for c in chunks)


def test_a_lost_segment_becomes_a_gap_of_its_size():
    asm = Assembler()
    asm.start_at(1)
    chunks = _collect(asm, [(1, b"AB", 1), (7, b"GH", 2)])
    assert [(c.data, c.gap) for c in chunks] == [(b"AB", 0), (b"GH", 4)]


def test_pending_data_is_bounded():
    asm = Assembler(max_pending=10)
    asm.start_at(1)
    chunks = []
    for i in range(5):  # the first 100 bytes never arrive
        chunks += asm.add(101 + i * 4, b"abcd", i, 0.0)
    assert asm.pending_bytes <= 10
    assert chunks and chunks[0].gap == 100


def test_capture_starting_mid_stream_starts_at_the_first_segment():
    asm = Assembler()
    chunks = _collect(asm, [(5000, b"250 OK\r\n", 7)])
    assert chunks[0].data == b"250 OK\r\n" and chunks[0].gap == 0


# --- SMTP -------------------------------------------------------------------------------------


def test_smtp_multiline_reply_is_one_entry_and_auth_login_is_decoded_and_redacted():
    user, pw = "student@lab.test", "S3cret!pw"
    entries = _play(_conv("SMTP"), [
        ("S", b"220 smtp.lab.test ESMTP\r\n"),
        ("C", b"EHLO x\r\n"),
        ("S", b"250-smtp.lab.test\r\n250-PIPELI"), ("S", b"NING\r\n250 AUTH LOGIN\r\n"),
        ("C", b"AUTH LOGIN\r\n"),
        ("S", b"334 VXNlcm5hbWU6\r\n"),
        ("C", base64.b64encode(user.encode()) + b"\r\n"),
        ("S", b"334 UGFzc3dvcmQ6\r\n"),
        ("C", base64.b64encode(pw.encode()) + b"\r\n"),
        ("S", b"235 2.7.0 Authentication successful\r\n"),
    ])
    assert _texts(entries)[2] == ("S", "250-smtp.lab.test\n250-PIPELINING\n250 AUTH LOGIN")
    assert entries[2]["first_frame"] == 3 and entries[2]["frame"] == 4
    assert "Username:" in entries[4]["explanation"]
    assert entries[5]["text"] == base64.b64encode(user.encode()).decode()
    assert user in entries[5]["explanation"] and not entries[5]["redacted"]
    assert entries[7]["text"] == REDACTED and entries[7]["redacted"] and entries[7]["kind"] == "auth"
    blob = repr(entries)
    assert pw not in blob and base64.b64encode(pw.encode()).decode() not in blob


def test_smtp_show_credentials_keeps_them():
    pw64 = base64.b64encode(b"pw").decode()
    entries = _play(_conv("SMTP", show=True), [
        ("S", b"220 x\r\n"), ("C", b"AUTH LOGIN\r\n"), ("S", b"334 UGFzc3dvcmQ6\r\n"),
        ("C", pw64.encode() + b"\r\n"), ("S", b"235 ok\r\n")])
    assert entries[3]["text"] == pw64 and not entries[3]["redacted"]


def test_smtp_auth_plain_initial_response_is_redacted():
    blob = base64.b64encode(b"\0u@x\0pw").decode()
    entries = _play(_conv("SMTP"), [("S", b"220 x\r\n"), ("C", f"AUTH PLAIN {blob}\r\n".encode()),
                                    ("S", b"235 ok\r\n")])
    assert entries[1]["text"] == f"AUTH PLAIN {REDACTED}"
    assert blob not in repr(entries)


def test_smtp_pipelined_commands_and_data_summary():
    body = (b"From: =?utf-8?b?5a2m55Sf?= <s@lab.test>\r\nTo: t@lab.test\r\nSubject: =?utf-8?b?5a6e6aqMNQ==?=\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n..dot\r\n")
    entries = _play(_conv("SMTP"), [
        ("S", b"220 x\r\n"),
        ("C", b"MAIL FROM:<s@lab.test>\r\nRCPT TO:<t@lab.test>\r\nDATA\r\n"),
        ("S", b"250 ok\r\n250 ok\r\n354 go\r\n"),
        ("C", body[:40]), ("C", body[40:] + b".\r\n"),
        ("S", b"250 queued\r\n"),
    ])
    assert [e["text"] for e in entries[1:4]] == ["MAIL FROM:<s@lab.test>", "RCPT TO:<t@lab.test>", "DATA"]
    assert all(e["frame"] == 2 for e in entries[1:4])
    assert [e["text"] for e in entries[4:7]] == ["250 ok", "250 ok", "354 go"]
    data = entries[7]
    assert data["kind"] == "data" and data["first_frame"] == 4 and data["frame"] == 5
    assert data["text"].startswith(f"DATA fragment, {len(body)} bytes")
    assert "subject: 实验5" in data["text"]
    assert entries[8]["text"] == "250 queued"


def test_starttls_reply_stops_the_plain_text():
    conv = _conv("SMTP")
    _play(conv, [("S", b"220 x\r\n"), ("C", b"STARTTLS\r\n"), ("S", b"220 go ahead\r\n\x16\x03\x01\x02\x00")])
    assert conv.upgraded
    assert [e["text"] for e in conv.entries] == ["220 x", "STARTTLS", "220 go ahead"]


# --- POP3 and IMAP ----------------------------------------------------------------------------


def test_pop3_pass_apop_redacted_and_multiline_list_kept_together():
    entries = _play(_conv("POP3"), [
        ("S", b"+OK ready\r\n"), ("C", b"USER u\r\n"), ("S", b"+OK\r\n"), ("C", b"PASS hunter2\r\n"),
        ("S", b"+OK in\r\n"), ("C", b"LIST\r\n"), ("S", b"+OK 2 messages\r\n1 10\r\n"), ("S", b"2 20\r\n.\r\n"),
        ("C", b"APOP u c4c9334bac560ecc979e58001b3e22fb\r\n"), ("S", b"-ERR no\r\n"),
    ])
    assert ("C", f"PASS {REDACTED}") in _texts(entries)
    assert ("S", "+OK 2 messages\n1 10\n2 20\n.") in _texts(entries)
    assert ("C", f"APOP u {REDACTED}") in _texts(entries)
    assert "hunter2" not in repr(entries) and "c4c9334b" not in repr(entries)


def test_pop3_retr_body_is_a_mail_summary():
    conv = _conv("POP3")
    entries = _play(conv, [
        ("S", b"+OK\r\n"), ("C", b"RETR 1\r\n"),
        ("S", b"+OK 60 octets\r\nSubject: hi\r\nFrom: a@b\r\n\r\n..x\r\n.\r\n"), ("C", b"QUIT\r\n")])
    assert [e["kind"] for e in entries] == ["reply", "command", "reply", "data", "command"]
    assert conv.mail[0]["subject"] == "hi" and conv.mail[0]["size"] == len(b"Subject: hi\r\nFrom: a@b\r\n\r\n..x\r\n")


def test_imap_login_literal_and_authenticate_redacted():
    entries = _play(_conv("IMAP"), [
        ("S", b"* OK ready\r\n"),
        ("C", b'a1 LOGIN "user" "p w"\r\n'), ("S", b"a1 NO bad\r\n"),
        ("C", b"a2 LOGIN user {5}\r\n"), ("S", b"+ go\r\n"), ("C", b"sEcr3\r\n"), ("S", b"a2 NO bad\r\n"),
        ("C", b"a3 AUTHENTICATE PLAIN\r\n"), ("S", b"+ \r\n"), ("C", base64.b64encode(b"\0u\0zz9") + b"\r\n"),
        ("S", b"a3 OK done\r\n"),
    ])
    texts = _texts(entries)
    assert ("C", f'a1 LOGIN "user" {REDACTED}') in texts
    assert any(d == "C" and t.startswith("a2 LOGIN user {5}") and REDACTED in t for d, t in texts)
    assert ("C", REDACTED) in texts
    blob = repr(entries)
    assert "p w" not in blob and "sEcr3" not in blob and base64.b64encode(b"\0u\0zz9").decode() not in blob


def test_imap_login_with_a_literal_user_name_and_a_quoted_password_hides_the_password():
    # the session sends a user name that a quoted string cannot carry as a literal, the
    # password as a quoted string: the password is the last argument, not the fourth token
    entries = _play(_conv("IMAP"), [
        ("S", b"* OK ready\r\n"),
        ("C", b'a4 LOGIN {5+}\r\njos\xc3\xa9 "hunter2"\r\n'), ("S", b"a4 NO bad\r\n"),
        ("C", b"a5 LOGIN {5}\r\n"), ("S", b"+ go\r\n"), ("C", b'jos\xc3\xa9 zz-secret\r\n'),
        ("S", b"a5 NO bad\r\n"),
    ])
    blob = repr(entries)
    assert "hunter2" not in blob and "zz-secret" not in blob, _texts(entries)
    assert any(d == "C" and t.startswith("a4 LOGIN {5+}") and t.endswith(REDACTED) for d, t in _texts(entries))


def test_imap_untagged_lines_grouped_with_their_completion():
    entries = _play(_conv("IMAP"), [
        ("S", b"* OK hi\r\n"), ("C", b"a SELECT INBOX\r\n"),
        ("S", b"* 3 EXISTS\r\n* 0 RECENT\r\na OK [READ-WRITE] done\r\n")])
    assert _texts(entries)[-1] == ("S", "* 3 EXISTS\n* 0 RECENT\na OK [READ-WRITE] done")
    assert entries[-1]["explanation"].startswith("SELECT")


# --- HTTP and redactor --------------------------------------------------------------------------


def test_http_headers_bodies_and_authorization():
    entries = _play(_conv("HTTP"), [
        ("C", b"POST /login HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nContent-Length: 9\r\n\r\nuser=u&pw"),
        ("S", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        ("S", b"0\r\n\r\n"),
    ])
    texts = _texts(entries)
    assert texts[0] == ("C", f"POST /login HTTP/1.1\nHost: x\nAuthorization: {REDACTED}\nContent-Length: 9")
    assert texts[1] == ("C", "[body: 9 bytes]")
    assert texts[3] == ("S", "[body: 5 bytes]")
    assert "dTpw" not in repr(entries)


def test_redactor_is_applied_on_top():
    red = Redactor()
    red.add("topsecret", ["u"])
    entries = _play(_conv("other", redactor=red), [("C", b"hello topsecret\r\n")])
    assert entries[0]["text"] == f"hello {REDACTED}" and entries[0]["redacted"]


@pytest.mark.parametrize("lang,word", [("zh", "服务就绪"), ("en", "Service ready")])
def test_explanations_follow_the_language(lang, word):
    entries = _play(_conv("SMTP", lang=lang), [("S", b"220 x\r\n")])
    assert word in entries[0]["explanation"]


def test_dialogue_is_capped():
    from labrunner.analysis import dialogue

    conv = _conv("other")
    for i in range(dialogue.MAX_ENTRIES + 5):
        conv.feed("C", b"x\r\n", i, 0.0, decrypted=False)
    assert len(conv.entries) == dialogue.MAX_ENTRIES and conv.omitted == 5


# --- mail summaries ---------------------------------------------------------------------------


def test_mail_summary_agrees_with_the_stdlib_parser():
    import email
    import email.policy
    from email.message import EmailMessage

    from labrunner.analysis.mail import summarize

    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner body\n")
    m = EmailMessage()
    m["From"] = "=?utf-8?b?5a2m55Sf?= <s@lab.test>"
    m["To"] = "a@lab.test, b@lab.test"
    m["Subject"] = "实验5 附件"
    m.set_content("plain text ü\n", cte="quoted-printable")
    m.add_alternative("<p>html</p>\n", subtype="html")
    m.add_attachment(bytes(range(256)) * 7, maintype="image", subtype="png", filename="图.png")
    m.add_attachment(inner)
    raw = m.as_bytes().replace(b"\n", b"\r\n")
    got = summarize(raw, size=len(raw), frame=3, direction="C")
    want = [p for p in email.message_from_bytes(raw, policy=email.policy.compat32).walk() if not p.is_multipart()]
    # an attached message is one part (as Wireshark lists it), not opened further
    assert [p["content_type"] for p in got["parts"]] == [p.get_content_type() for p in want[:3]] + ["message/rfc822"]
    assert got["subject"] == "实验5 附件" and got["from"] == "学生 <s@lab.test>"
    assert got["to"] == ["a@lab.test", "b@lab.test"]
    png = next(p for p in got["parts"] if p["content_type"] == "image/png")
    assert png["size"] == 256 * 7 and png["filename"] == "图.png" and png["encoding"] == "base64"
    qp = got["parts"][0]
    assert qp["size"] == len(want[0].get_payload(decode=True))
    assert got["attachments"][0] == {"filename": "图.png", "content_type": "image/png", "size": 1792}


@pytest.mark.parametrize("d,first,protocol", [
    ("S", b"220 mx.example.com ESMTP ready\r\n", "SMTP"), ("S", b"+OK POP3 ready\r\n", "POP3"),
    ("S", b"* OK IMAP4rev1 ready\r\n", "IMAP"), ("C", b"GET / HTTP/1.1\r\n", "HTTP"),
    ("S", b"SSH-2.0-OpenSSH_9.2\r\n", "other"),
])
def test_protocol_on_an_unusual_port_is_recognised_from_its_first_bytes(d, first, protocol):
    from labrunner.analysis.streams import _sniff

    assert _sniff(d, first) == protocol


def test_text_rendering_in_chinese():
    from labrunner.analysis.text import render

    entries = _play(_conv("SMTP", lang="zh"), [("S", b"220 x\r\n"), ("C", b"QUIT\r\n"), ("S", b"221 bye\r\n")])
    stats = {"packets": 3, "bytes": 300, "retransmissions": 0, "duplicate_acks": 0, "out_of_order": 0, "rtt": None}
    doc = {"lang": "zh", "notes": [], "capture": {"file": "a.pcap", "frames": 3, "duration": 0.1, "tshark": "4.0.17",
                                                  "decryption": "none"},
           "streams": [{"index": 0, "protocol": "SMTP", "security": "plain", "client": {"ip": "::1", "port": 5},
                        "server": {"ip": "::1", "port": 25}, "first_frame": 1, "last_frame": 3, "tls": None,
                        "dialogue": entries, "stats": stats, "notes": ["注意"]}]}
    text = render(doc)
    assert "[::1]:5 → [::1]:25" in text and "S: 220 x" in text and "// 服务就绪" in text
    assert "重传 0" in text and "! 注意" in text


@pytest.mark.parametrize("script", [
    # a client that does not wait for the second prompt (a telnet line without `expect`)
    [b"AUTH LOGIN\r\n", None, b"USER\r\n", b"PASS\r\n", None],
    # both lines in one segment, before any prompt
    [b"AUTH LOGIN\r\nUSER\r\nPASS\r\n", None, None],
    # AUTH LOGIN with the user name as initial response: the only line that follows is the password
    [b"AUTH LOGIN USER\r\n", None, b"PASS\r\n"],
], ids=["no-wait", "one-segment", "initial-response"])
def test_smtp_auth_login_password_is_redacted_whatever_the_timing(script):
    user64 = base64.b64encode(b"student@lab.test")
    pw64 = base64.b64encode(b"s3cr3tpassword")
    prompts = iter([b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"235 ok\r\n"])
    if script[0].startswith(b"AUTH LOGIN USER"):
        prompts = iter([b"334 UGFzc3dvcmQ6\r\n", b"235 ok\r\n"])
    steps = [("S", b"220 x\r\n")]
    for part in script:
        if part is None:
            steps.append(("S", next(prompts)))
        else:
            steps.append(("C", part.replace(b"USER", user64).replace(b"PASS", pw64)))
    steps += [("S", rest) for rest in prompts]
    entries = _play(_conv("SMTP"), steps)
    blob = repr(entries)
    assert pw64.decode() not in blob and "s3cr3tpassword" not in blob
    assert any(e["redacted"] and e["kind"] == "auth" for e in entries)
    assert "student@lab.test" in blob  # the user name is still decoded for the reader


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\n.\r\n", b"\n.\n", b"\r\n.\r\n"]),
                max_size=30).map(b"".join))
def test_body_end_finds_what_the_regular_expression_finds(raw: bytes) -> None:
    from labrunner.analysis.dialogue import _BODY_END, body_end

    match = _BODY_END.search(raw)
    assert body_end(bytearray(raw)) == (match.end() if match else -1)
