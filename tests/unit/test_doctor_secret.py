"""`labrunner doctor` says whether the account's password is there before a run needs it."""

from __future__ import annotations

import io
from pathlib import Path

from labrunner.config.load import load_lab, resolve_profile
from labrunner.doctor import check_secret

ROOT = Path(__file__).resolve().parents[2]


def test_the_qq_profile_without_its_authorization_code_fails_the_check(monkeypatch):
    profile = resolve_profile(load_lab(ROOT / "lab.yaml"), "qq")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: nobody to ask
    monkeypatch.delenv("QQ_AUTH_CODE", raising=False)
    row = check_secret(profile)
    assert not row.ok and row.where == "config"
    assert row.detail == "not set: it is read from the environment variable QQ_AUTH_CODE"
    assert row.fix.startswith("export QQ_AUTH_CODE=...")
    monkeypatch.setenv("QQ_AUTH_CODE", "abcdefghijklmnop")
    row = check_secret(profile)
    assert row.ok and "abcdefghijklmnop" not in repr(row)


def test_a_run_without_the_authorization_code_names_it_as_qq_mail_does(monkeypatch):
    import pytest

    from labrunner.errors import UsageError
    from labrunner.run.lab import account_secret

    profile = resolve_profile(load_lab(ROOT / "lab.yaml"), "qq")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.delenv("QQ_AUTH_CODE", raising=False)
    with pytest.raises(UsageError) as err:
        account_secret(profile)
    assert str(err.value) == (f"password (for QQ Mail: the authorization code, 授权码) of {profile.account.address} "
                              "is not set: it is read from the environment variable QQ_AUTH_CODE")


def test_doctor_fails_a_password_a_run_would_refuse_without_showing_it(monkeypatch):
    profile = resolve_profile(load_lab(ROOT / "lab.yaml"), "qq")
    monkeypatch.setenv("QQ_AUTH_CODE", "abcdefghijklmnop\r")  # from a .env saved with CRLF
    row = check_secret(profile)
    assert not row.ok and "abcdefghij" not in repr(row)
    assert row.detail == "the value from the environment variable QQ_AUTH_CODE ends with a carriage return (CR)"
    assert "line ends" in row.fix
