"""Header decoding in the mail summaries must read like the sender wrote it."""

import pytest

from labrunner.analysis.mail import _decoded


@pytest.mark.parametrize(("raw", "expected"), [
    # folded right after an encoded word: the space before "(lab" belongs to the subject
    ("=?utf-8?b?5a6e6aqMNSDpgq7ku7blrqLmiLfnq6/mtYvor5XvvIw0NjUg56uv5Y+j?=\r\n (lab 5, mail client over SSL)",
     "实验5 邮件客户端测试，465 端口 (lab 5, mail client over SSL)"),
    ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047: blanks between encoded words vanish
    ("plain text", "plain text"),
    ("=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),  # undecodable: shown as it came
    ("=?utf-8?q?caf=C3=A9?= au lait", "café au lait"),
    (None, None),
])
def test_decoded(raw, expected):
    assert _decoded(raw) == expected


# --- the fast paths give what the stdlib gives -------------------------------------------------
# mail.py skips the stdlib's parsers where their result is known; these compare the two on
# tricky and on generated input, so a fast path that drifts from the stdlib fails here.

import email.policy  # noqa: E402
from email.parser import BytesHeaderParser, HeaderParser  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from labrunner.analysis.mail import _FOLD, _UNSTRUCTURED, _plain_headers, parse_headers  # noqa: E402


def _stdlib(head: bytes):
    try:  # RFC 6532: a header block in UTF-8 is read as text (mail._stdlib_headers)
        text = head.decode("utf-8") if not head.isascii() else None
    except UnicodeDecodeError:
        text = None
    if text is not None:
        return HeaderParser(policy=email.policy.compat32).parsestr(text + "\r\n\r\n")
    return BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")


def _same(head: bytes) -> None:
    ours, ref = parse_headers(head), _stdlib(head)
    assert ours._headers == ref._headers
    assert ours.get_unixfrom() == ref.get_unixfrom()
    assert ours.get_content_type() == ref.get_content_type()
    assert ours.get_param("boundary") == ref.get_param("boundary")
    assert ours.get_filename() == ref.get_filename()


@pytest.mark.parametrize("head", [
    b"From: a@b\r\nTo: c@d\r\nSubject: hi",
    b"Content-Type: multipart/mixed;\r\n\tboundary=\"===x==\"\r\nMIME-Version: 1.0",
    b"Subject: folded\n  twice\n\tthrice",
    b"X-Empty:\r\nX-Space: \r\nX-Tab:\t v \t",
    b"Content-Disposition: attachment; filename=\"a b.bin\"",
])
def test_plain_header_blocks_take_the_fast_path(head):
    assert _plain_headers(head) is not None
    _same(head)


@pytest.mark.parametrize("head", [
    b"From a@b Thu Nov 26 00:00:00 2026\r\nSubject: mbox",  # Unix envelope line
    b" starts with a continuation\r\nSubject: x",
    b"Subject: stray\rCR\r\nTo: x",
    b"Subject: caf\xc3\xa9",  # raw UTF-8
    b": no name\r\nSubject: x",
    b"not a header line\r\nSubject: x",
    b"Subject: x\r\nFrom here on",
    b"",
])
def test_unusual_header_blocks_go_to_the_stdlib(head):
    assert _plain_headers(head) is None
    _same(head)


_HEADER_TEXT = st.lists(st.sampled_from(["a", "Z", ":", ";", " ", "\t", "\r", "\n", "\r\n", "-", "=", '"', "(",
                                         ")", "<", "@", ",", "?", "\\", "~", "From ", "\x00", "é", "=?"]),
                        max_size=60).map("".join)


@settings(max_examples=400, deadline=None)
@given(_HEADER_TEXT)
def test_any_header_block_parses_like_the_stdlib(text):
    head = text.encode("utf-8")
    end = head.find(b"\n\n")  # mail._split hands over what comes before the first blank line
    _same(head if end < 0 else head[:end])


def _decoded_by_the_parser(value: str) -> str:
    raw = _FOLD.sub("", value)
    try:
        text = str(_UNSTRUCTURED("subject", raw)).strip()
    except (ValueError, LookupError, UnicodeError, IndexError):
        text = ""
    return text or raw.strip()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", "Z", " ", "(", ")", ",", ";", ":", "<", ">", "@", ".", '"', "\\", "\t",
                                 "\r\n ", "\r\n", "=", "?", "_", "\x7f", "\x01", "é"]),
                max_size=40).map("".join))
def test_values_without_encoded_words_decode_like_the_header_parser(raw):
    assert _decoded(raw) == _decoded_by_the_parser(raw)


_NAME = st.text(alphabet=st.sampled_from(list("AZaz09-_!~.")), min_size=1, max_size=8)
_PLAIN = st.text(alphabet=st.sampled_from(list("az09 \t;=\"'()<>@,.:/\\")), max_size=20)
_VALUE = st.one_of(_PLAIN, _PLAIN, _PLAIN, st.text(alphabet=st.sampled_from(list("a \r:é")), max_size=5))
_FIELD = st.tuples(_NAME, _VALUE).map(lambda nv: f"{nv[0]}:{nv[1]}")
_LINE = st.one_of(_FIELD, _FIELD, _VALUE.map(lambda v: " " + v), _VALUE.map(lambda v: "\t" + v))


@settings(max_examples=400, deadline=None)
@given(_FIELD, st.lists(_LINE, max_size=6), st.sampled_from(["\r\n", "\n"]))
def test_header_shaped_blocks_parse_like_the_stdlib(first, lines, eol):
    _same(eol.join([first, *lines]).encode("utf-8"))
