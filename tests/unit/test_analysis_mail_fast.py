"""The mail summary's fast paths (mail._plain_words, mail._params, mail._Head) give exactly what
the stdlib gives: the header parser for RFC 2047 words, compat32's Message for MIME parameters.

Each fast path answers only for the plain form and says "not sure" (None) otherwise; these
tests check that generated plain input takes the fast path and agrees with the stdlib, that
unusual input falls back, and that anything in between agrees whichever path it takes.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labrunner.analysis.mail import (
    _FOLD,
    _decoded,
    _decoded_size,
    _Head,
    _params,
    _parsed,
    _plain_base64_size,
    _plain_words,
    _stdlib_headers,
    summarize,
)

# --- RFC 2047 encoded words -----------------------------------------------------------------

_CHARSETS = ["utf-8", "UTF-8", "gb2312", "GBK", "big5", "iso-8859-1", "iso-8859-15", "koi8-r", "shift_jis",
             "us-ascii"]
_CHARS = list("aZ09 \t.,!~_=?-") + list("测试实验邮件éüßжд") + ["\u3000"]
_Q_RAW = list("!\"#$%&'()*+,-./:;<>@[\\]^`{|}~")  # may stand unencoded in q text


@st.composite
def _encoded_word(draw: st.DrawFn) -> str:
    charset = draw(st.sampled_from(_CHARSETS))
    data = draw(st.text(alphabet=st.sampled_from(_CHARS), min_size=1, max_size=10)).encode(charset, "ignore")
    if not data:
        data = b"x"
    cte = draw(st.sampled_from("bBqQ"))
    if cte in "bB":
        text = base64.b64encode(data).decode("ascii")
    else:
        pieces = []
        for byte in data:
            if chr(byte).isalnum() and byte < 128:
                pieces.append(chr(byte))
            elif byte == 32 and draw(st.booleans()):
                pieces.append("_")
            else:
                pieces.append(draw(st.sampled_from(["=%02X", "=%02x"])) % byte)
        pieces.append(draw(st.sampled_from(["", *_Q_RAW])))
        text = "".join(pieces)
    return f"=?{charset}?{cte}?{text}?="


_PLAIN_WORD = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                      max_size=8).filter(lambda w: "=?" not in w)
_BLANK = st.sampled_from([" ", "  ", "\t", " \t ", "\r\n ", "\r\n\t"])


@st.composite
def _plain_value(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.one_of(_encoded_word(), _encoded_word(), _PLAIN_WORD), min_size=1, max_size=6))
    value = draw(st.sampled_from(["", " ", "\t"]))
    for i, word in enumerate(words):
        value += (draw(_BLANK) if i else "") + word
    return value + draw(st.sampled_from(["", " ", "\t "]))


@settings(max_examples=500, deadline=None)
@given(_plain_value())
def test_plain_encoded_words_take_the_fast_path_and_decode_like_the_parser(value):
    raw = _FOLD.sub("", value)
    fast = _plain_words(raw)
    assert fast is not None
    assert fast == _parsed(raw)


@pytest.mark.parametrize(("raw", "expected"), [
    ("bench =?utf-8?b?5rWL6K+V?=", "bench 测试"),  # the benchmark's subject
    ("=?utf-8?q?a?= \t =?utf-8?q?b?= c", "ab c"),  # blanks between encoded words vanish
    ("=?UTF-8?Q?=E6=B5=8B_x?=", "测 x"),  # q text starting with =XX, "_" is a space
    (" =?gb2312?b?suLK1A==?= (lab 5) ", "测试 (lab 5)"),
])
def test_plain_encoded_words(raw, expected):
    assert _plain_words(raw) == expected == _parsed(raw)


@pytest.mark.parametrize("raw", [
    "=?utf-8?b?YQ?=",  # base64 without its padding: the parser pads it
    "=?utf-8?b?!!!?=",  # not base64 at all
    "=?utf-8?b?=YQ=?=",  # "=" first
    "=?x-no-such-charset?q?a?=",  # unknown charset: the parser keeps the bytes as surrogates
    "=?utf-8?q?=FF?=",  # bytes the charset cannot decode
    "=?us-ascii?q?=E9?=",
    "=?utf-8*en?q?a?=",  # RFC 2231 language
    "=?utf-8?q?=zz?=",  # "=" first without two hex digits: the parser's "?=" search stops there
    "=?utf-8?q??=",  # empty text
    "a=?utf-8?q?b?=",  # an encoded word glued to text
    "=?utf-8?q?b?=c",
    "=?utf-8?q?a?==?utf-8?q?b?=",
    "é =?utf-8?q?a?=",  # non-ASCII around it
    "=?utf-8?q?a?=\r\nb",  # a line break that is not a fold
    "=?utf-8?q?a?=\x00",  # a control character
    "=?unicode_escape?q?\\ud800?=",  # decodes to a surrogate: the parser re-decodes the whole value
    "=?rot13?q?a?=",  # a codec that is not a text encoding
])
def test_unusual_values_go_to_the_parser(raw):
    assert _plain_words(raw) is None


_SOUP = st.lists(st.sampled_from([
    "=?", "?=", "utf-8", "UTF-8", "gb2312", "x-nope", "unicode_escape", "*en", "?b?", "?B?", "?q?", "?Q?",
    "5rWL", "6K+V", "YQ==", "YQ", "suLK1A==", "=3D", "=E6=B5=8B", "=FF", "=", "_", "*", " ", "\t", "  ",
    "\r\n ", "\r\n", "\n", "a", "Z", "é", "测", "(", ")", "\\", '"', "?", "\\ud800", "\x00", "\x1c",
]), max_size=30).map("".join)


@settings(max_examples=800, deadline=None)
@given(_SOUP)
def test_any_value_decodes_like_the_parser(value):
    raw = _FOLD.sub("", value)
    fast = _plain_words(raw)
    if fast is not None:
        assert fast == _parsed(raw)
    expected = _parsed(raw) or raw.strip()
    assert _decoded(value) == expected


# --- MIME parameters ----------------------------------------------------------------------------


def _stdlib(head: bytes) -> email.message.Message:
    # the stdlib's header parser (raw UTF-8 read as text, RFC 6532), which
    # test_analysis_headers checks against BytesHeaderParser/HeaderParser themselves
    return _stdlib_headers(head)


def _same(head: bytes) -> None:
    ours, ref = _Head(head), _stdlib(head)
    assert ours.content_type() == ref.get_content_type()
    assert ours.boundary() == ref.get_param("boundary")
    assert ours.charset() == ref.get_content_charset()
    assert ours.filename() == ref.get_filename()
    assert ours.disposition() == ref.get_content_disposition()
    for name in ("Content-Type", "content-disposition", "CONTENT-TRANSFER-ENCODING", "Subject", "X-None"):
        assert ours.get(name) == ref.get(name)


_NAMES = st.sampled_from(["charset", "Charset", "boundary", "BOUNDARY", "name", "filename", "FileName", "format",
                          "x-a.b", "size"])
_TOKEN = st.text(alphabet=st.sampled_from(list("aZ09-+.!#$%&'^_`{|}~/:<>?[]")), min_size=1, max_size=10)
_QUOTED = st.text(alphabet=st.sampled_from(list("aZ09 \t-=;,:/.?'<>[]@%")), max_size=12).map(lambda t: f'"{t}"')
# unquote drops <>, and get_filename unquotes once more
_ANGLED = st.one_of(_TOKEN, _QUOTED).map(lambda t: f"<{t}>") | _TOKEN.map(lambda t: f'"<{t}>"')
_EQ = st.sampled_from(["=", " =", "= ", " = "])
_SEP = st.sampled_from([";", "; ", " ; ", ";\r\n\t", ";\r\n "])


@st.composite
def _plain_params(draw: st.DrawFn, kinds: list[str]) -> str:
    value = draw(st.sampled_from(kinds))
    names = draw(st.lists(_NAMES, max_size=4, unique_by=str.lower))
    for name in names:
        value += draw(_SEP) + name + draw(_EQ) + draw(st.one_of(_TOKEN, _QUOTED, _ANGLED))
    return value + draw(st.sampled_from(["", ";", " ", "; "]))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), _plain_params(["text/plain", "TEXT/Plain", "multipart/mixed", "image/png", "text",
                                           "a/b/c", ""])),
       st.one_of(st.none(), _plain_params(["attachment", "inline", "Attachment", ""])),
       st.sampled_from(["\r\n", "\n"]))
def test_plain_parameters_take_the_fast_path_and_read_like_the_stdlib(ctype, disposition, eol):
    lines = ["Subject: x"]
    for name, value in (("Content-Type", ctype), ("Content-Disposition", disposition)):
        if value is not None:
            assert _params(value) is not None
            lines.append(f"{name}: {value}")
    lines.append("Content-Transfer-Encoding: base64")
    _same(eol.join(lines).replace("\r\n", eol).encode("ascii"))


@pytest.mark.parametrize("head", [
    b'Content-Type: text/plain; name="<a.bin>"\r\nContent-Disposition: inline; filename="<<b.bin>>"',
    b"Content-Type: text/plain; charset=US-ASCII\r\ncontent-type: image/png; charset=utf-8; name=x\r\n"
    b"Subject: first\r\nSUBJECT: second\r\nContent-Disposition: inline\r\nContent-Disposition: attachment",
    b"Content-Type: multipart/mixed;\r\n boundary=\"a;b\"; charset=\"x\";;\r\n\tname=\"=?utf-8?q?a?=\"",
])
def test_plain_parameter_corners_take_the_fast_path(head):
    ours = _Head(head)
    assert ours._ct is not None and ours._cd is not None
    _same(head)


@pytest.mark.parametrize("value", [
    "attachment; filename*=utf-8''%E5%9B%BE.png",  # RFC 2231
    'attachment; filename*0="a"; filename*1="b.png"',  # RFC 2231 continuations
    'text/plain; name="a\\"b"',  # a backslash escape
    "text/plain (a comment); charset=utf-8",
    'text/plain; charset="utf-8',  # unbalanced quotes
    "text/plain; charset=a; Charset=b",  # the same name twice
    "text/plain; name=图.png",  # non-ASCII
])
def test_unusual_parameters_go_to_the_stdlib(value):
    assert _params(value) is None
    _same(f"Content-Type: {value}\r\nContent-Disposition: {value}".encode())


_PARAM_SOUP = st.lists(st.sampled_from([
    "text/plain", "multipart/mixed", "attachment", ";", "=", '"', "\\", "*", "*0", "*1*", "(", ")", "<", ">", " ",
    "\t", "\r\n ", "'", "%E5", "utf-8''", "é", "a", "0", "charset", "name", "filename", "boundary", "NAME",
]), max_size=24).map("".join)


@settings(max_examples=800, deadline=None)
@given(_PARAM_SOUP, _PARAM_SOUP)
def test_any_parameters_read_like_the_stdlib(ctype, disposition):
    _same(f"Content-Type: {ctype}\r\nContent-Disposition: {disposition}".encode())


# --- whole messages -------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(list("aZ09 .-_()") + list("测试实验é")), min_size=1, max_size=12)


def _read(value: str | None) -> str | None:
    """mail._decoded through the header parser alone."""
    if value is None:
        return None
    raw = _FOLD.sub("", value)
    return _parsed(raw) or raw.strip()


@settings(max_examples=60, deadline=None)
@given(_TEXT, _TEXT, st.sampled_from(["utf-8", "gb2312", "iso-8859-1"]), st.booleans())
def test_summaries_of_generated_mails_agree_with_the_stdlib(subject, filename, charset, crlf):
    m = EmailMessage()
    m["From"] = "学生 <s@lab.test>"
    m["To"] = "a@lab.test, b@lab.test"
    m["Subject"] = subject
    try:
        m.set_content(subject.encode(charset).decode(charset) + "\n", charset=charset)
    except UnicodeEncodeError:
        m.set_content("plain\n")
    m.add_attachment(b"x" * 100, maintype="application", subtype="octet-stream", filename=filename)
    raw = m.as_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    got = summarize(raw, size=len(raw), frame=1, direction="C")
    ref = email.message_from_bytes(raw, policy=email.policy.compat32)
    leaves = [p for p in ref.walk() if not p.is_multipart()]
    assert [(p["content_type"], p["charset"], p["disposition"]) for p in got["parts"]] == [
        (p.get_content_type(), p.get_content_charset(), p.get_content_disposition()) for p in leaves]
    assert [p["filename"] for p in got["parts"]] == [_read(p.get_filename()) for p in leaves]
    assert got["subject"] == _read(str(ref["Subject"]))
    assert got["attachments"][0]["filename"] == filename.strip()
    assert got["subject"] == subject.strip()
    assert got["from"] == "学生 <s@lab.test>" and got["to"] == ["a@lab.test", "b@lab.test"]


# --- the decoded size of a base64 part ----------------------------------------------------------

_BASE64_BODY = st.tuples(st.binary(max_size=300), st.integers(min_value=1, max_value=80),
                         st.sampled_from([b"\r\n", b"\n"]), st.sampled_from([b"", b"\r\n", b"\n", b"\r\n\r\n"]))


@settings(max_examples=400, deadline=None)
@given(_BASE64_BODY)
def test_plain_base64_is_sized_without_decoding(case):
    data, width, eol, end = case
    text = base64.b64encode(data)
    body = eol.join(text[i:i + width] for i in range(0, len(text), width)) + end
    assert _plain_base64_size(body) == len(data)


@pytest.mark.parametrize("body", [
    b"QQ", b"QQ=", b"Q===", b"QQ==QUJD", b"QQ==\r\nQUJD", b"QUJD QUJD", b"QUJD\tQUJD", b"QU-D", b"====",
    b"QUJD\x00", "QUJé".encode(),
])
def test_unusual_base64_is_decoded(body):
    assert _plain_base64_size(body) is None
    assert _decoded_size(body, "base64") == _binascii_size(body)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.sampled_from([b"QUJD", b"QQ", b"Q", b"=", b"==", b"\r\n", b"\n", b"\r", b" ", b"-", b"_", b"/+",
                                 b"\x00", b"\xff"]), max_size=20).map(b"".join))
def test_any_base64_is_sized_like_binascii(body):
    assert _decoded_size(body, "base64") == _binascii_size(body)


def _binascii_size(body: bytes) -> int:
    """Decoded by binascii; where it refuses (cut short, bad padding), what the base64
    characters there decode to: 6 bits each (as MailStream counts a message too big to keep)."""
    try:
        return len(binascii.a2b_base64(body))
    except binascii.Error:
        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        return sum(c in alphabet for c in body) * 6 // 8
