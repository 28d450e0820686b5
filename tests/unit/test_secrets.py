import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labrunner.config.model import SecretRef
from labrunner.errors import UsageError
from labrunner.sandbox.state import MailAccount
from labrunner.secrets import REDACTED, Redactor, resolve, secret_forms

SECRET = "zujnuhmaarpybbbb"  # the seed report's authorization code, as leaked in base64 there
USER = "877261793@qq.com"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_seed_report_pass_line_is_redacted():
    r = Redactor()
    r.add(SECRET, users=[USER])
    # the very line the seed report printed
    assert r("C: Pass: enVqbnVobWFhcnB5YmJiYg==") == f"C: Pass: {REDACTED}"


def test_auth_plain_blob_and_http_basic_are_redacted():
    r = Redactor()
    r.add(SECRET, users=[USER])
    plain = b64(b"\0" + USER.encode() + b"\0" + SECRET.encode())
    basic = b64(f"{USER}:{SECRET}".encode())
    out = r(f"AUTH PLAIN {plain}\nAuthorization: Basic {basic}")
    assert plain not in out and basic not in out and SECRET not in out


@given(prefix=st.binary(max_size=12), suffix=st.binary(max_size=12))
def test_secret_inside_any_base64_blob_is_caught(prefix, suffix):
    r = Redactor()
    r.add(SECRET)
    blob = b64(prefix + SECRET.encode() + suffix)
    assert r.contains_secret(blob)


def test_short_or_empty_secret_and_no_secret():
    r = Redactor()
    r.add("")
    assert r("anything") == "anything"
    r.add("pw")
    assert r("my pw here") == f"my {REDACTED} here"


def test_forms_longest_first():
    forms = secret_forms(SECRET, [USER])
    assert forms == sorted(forms, key=len, reverse=True)


def test_resolve_from_env_and_state(monkeypatch):
    monkeypatch.setenv("QQ_AUTH_CODE", "abc")
    assert resolve(SecretRef(env="QQ_AUTH_CODE"), what="code") == "abc"
    assert resolve(SecretRef(state="password"), what="pw", state=MailAccount("student@lab.test", password="s3")) == "s3"


def test_resolve_missing_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("QQ_AUTH_CODE", raising=False)
    with pytest.raises(UsageError) as info:
        resolve(SecretRef(env="QQ_AUTH_CODE", prompt=False), what="authorization code")
    assert "QQ_AUTH_CODE" in str(info.value) and "export QQ_AUTH_CODE" in (info.value.hint or "")
    with pytest.raises(UsageError, match="sandbox state"):
        resolve(SecretRef(state="password"), what="pw", state=MailAccount("student@lab.test"))
