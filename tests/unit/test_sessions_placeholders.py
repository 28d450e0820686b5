"""Placeholders of the telnet exercise: filled at run time, secret lines flagged for redaction."""

from __future__ import annotations

import base64

import pytest

from labrunner.config.model import AccountSpec
from labrunner.errors import UsageError
from labrunner.sessions.placeholders import expand

ACCOUNT = AccountSpec(address="877261793@qq.com")
SECRET = "zujnuhmaarpybbbb"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_user_and_secret_in_base64_like_the_seed() -> None:
    user = expand("{account.user|base64}", ACCOUNT, SECRET)
    assert user.text == "ODc3MjYxNzkzQHFxLmNvbQ==" and not user.sensitive  # the seed's User: line
    secret = expand("{account.secret|base64}", ACCOUNT, SECRET)
    assert secret.text == "enVqbnVobWFhcnB5YmJiYg==" and secret.sensitive  # the seed's Pass: line


def test_address_login_plain_and_braces() -> None:
    account = AccountSpec(address="me@lab.test", user="me")
    assert expand("MAIL FROM:<{account.address}>", account, "s").text == "MAIL FROM:<me@lab.test>"
    assert expand("USER {account.user}", account, "s").text == "USER me"
    plain = expand("AUTH PLAIN {auth.plain}", account, "pw")
    assert plain.text == "AUTH PLAIN " + b64("\0me\0pw") and plain.sensitive
    assert expand("a1 SEARCH {{x}}", account, "s").text == "a1 SEARCH {x}"
    assert expand("{ account.address | base64 }", account, "s").text == b64("me@lab.test")


def test_unknown_placeholder_and_filter_say_what_is_known() -> None:
    with pytest.raises(UsageError, match=r"line 3: unknown placeholder \{account.password\}") as info:
        expand("PASS {account.password}", ACCOUNT, SECRET, where="line 3")
    assert info.value.hint is not None and "{account.secret}" in info.value.hint
    with pytest.raises(UsageError, match=r"unknown filter \|hex"):
        expand("{account.secret|hex}", ACCOUNT, SECRET)
