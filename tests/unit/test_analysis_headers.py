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
