"""What the HTTPS session writes into the transcript of a web mail's response headers."""

import pytest

from labrunner.secrets import REDACTED
from labrunner.sessions.https import mask_cookie, masked_headers, same_host_target


@pytest.mark.parametrize(("line", "shown"), [
    ("Set-Cookie: qm_sid=8f1c2e; Path=/; HttpOnly", f"Set-Cookie: qm_sid={REDACTED}; Path=/; HttpOnly"),
    ("set-cookie: a=b", f"set-cookie: a={REDACTED}"),
    ("Cookie: sid=xyz", f"Cookie: sid={REDACTED}"),
    # a browser sends all its cookies in one header: every value is a credential
    ("Cookie: roundcube_sessid=abc; roundcube_sessauth=def",
     f"Cookie: roundcube_sessid={REDACTED}; roundcube_sessauth={REDACTED}"),
    ("Content-Type: text/html; charset=utf-8", "Content-Type: text/html; charset=utf-8"),
    ("X-Set-Cookie-Note: harmless", "X-Set-Cookie-Note: harmless"),
])
def test_cookie_values_are_masked(line, shown):
    assert mask_cookie(line) == shown


def test_kept_headers_mask_cookies_too() -> None:
    # security review F9: the step's details kept the raw Set-Cookie values
    kept = masked_headers([("Set-Cookie", "SESSIONID=SuperSecretSessionToken123; Path=/"), ("Server", "nginx")])
    assert kept == [["Set-Cookie", f"SESSIONID={REDACTED}; Path=/"], ["Server", "nginx"]]


@pytest.mark.parametrize(("location", "expected"), [
    ("/cgi-bin/loginpage", "/cgi-bin/loginpage"),
    ("https://mail.qq.com/cgi-bin/loginpage?t=1", "/cgi-bin/loginpage?t=1"),
    ("https://MAIL.qq.com:443/", "/"),
    ("loginpage", "/cgi-bin/loginpage"),  # relative to the current path
    ("https://wx.mail.qq.com/", None),  # another host
    ("http://mail.qq.com/", None),  # plain http: another port and no TLS
    ("https://mail.qq.com:8443/", None),
    ("https://mail.qq.com:x/", None),
    ("/a b", None),
])
def test_same_host_target(location: str, expected: str | None) -> None:
    assert same_host_target(location, "mail.qq.com", 443, "/cgi-bin/index") == expected
