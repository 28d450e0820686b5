"""What the HTTPS session writes into the transcript of a web mail's response headers."""

import pytest

from labrunner.secrets import REDACTED
from labrunner.sessions.https import mask_cookie


@pytest.mark.parametrize(("line", "shown"), [
    ("Set-Cookie: qm_sid=8f1c2e; Path=/; HttpOnly", f"Set-Cookie: qm_sid={REDACTED}; Path=/; HttpOnly"),
    ("set-cookie: a=b", f"set-cookie: a={REDACTED}"),
    ("Cookie: sid=xyz", f"Cookie: sid={REDACTED}"),
    ("Content-Type: text/html; charset=utf-8", "Content-Type: text/html; charset=utf-8"),
    ("X-Set-Cookie-Note: harmless", "X-Set-Cookie-Note: harmless"),
])
def test_cookie_values_are_masked(line, shown):
    assert mask_cookie(line) == shown
