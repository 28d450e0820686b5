"""F1: a secret is recognised in every escaped spelling, refused when it holds a control
character, and never quoted by an error message in a form the redactor does not know."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sessions_faults import make_ctx, pop3_server  # type: ignore[import-not-found]

from labrunner.config.model import Pop3Step, SecretRef
from labrunner.errors import ExitStatus, UsageError
from labrunner.sandbox.state import MailAccount
from labrunner.secrets import REDACTED, Redactor, quoted, resolve
from labrunner.sessions import run_step

AWKWARD = 'pä"ss\\wörd \'密码 %+/='
USER = "student@lab.test"


def spellings(secret: str) -> list[str]:
    """How code that does not know about redaction may write the secret, computed here."""
    raw = secret.encode()
    return [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1],
            ascii(secret)[1:-1], repr(raw)[2:-1], html.escape(secret), urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret), raw.hex(), base64.b64encode(raw).decode()]


@pytest.mark.parametrize("tail", ["\r", "\n", "\r\n", "\t", "\x1b", "\x7f", "\x85", "\x00"])
def test_a_secret_with_a_control_character_is_refused_without_showing_it(monkeypatch, tail):
    secret = "qqauthcode1234" + tail
    if tail == "\x00":  # no environment variable holds a NUL: a prompt or the state then
        with pytest.raises(UsageError) as info:
            resolve(SecretRef(state="password"), what="password of me@qq.com",
                    state=MailAccount("me@qq.com", password=secret))
    else:
        monkeypatch.setenv("WPW", secret)
        with pytest.raises(UsageError) as info:
            resolve(SecretRef(env="WPW", prompt=False), what="password of me@qq.com")
    said = f"{info.value}\n{info.value.hint}"
    assert "qqauthcode" not in said and "cXFhdXRoY29kZT" not in said
    assert "\n" not in str(info.value) and info.value.exit_status == ExitStatus.USAGE
    assert "ends with" in str(info.value)
    if tail in ("\r", "\n", "\r\n"):
        assert "line ends" in (info.value.hint or "")


def test_a_control_character_inside_or_at_the_start_is_named_too(monkeypatch):
    for value, where in (("abc\x1bdef", "contains the control character U+001B"), ("\rabc", "starts with a carriage")):
        monkeypatch.setenv("WPW", value)
        with pytest.raises(UsageError, match=re.escape(where)):
            resolve(SecretRef(env="WPW", prompt=False), what="pw")
    monkeypatch.setenv("WPW", AWKWARD)  # quotes, backslash, space, non-ASCII: all fine
    assert resolve(SecretRef(env="WPW", prompt=False), what="pw") == AWKWARD


@settings(max_examples=60, deadline=None)
@given(secret=st.text(min_size=6, max_size=24).filter(lambda s: s.strip() == s and len(set(s)) > 3))
def test_every_escaped_spelling_is_redacted(secret):
    r = Redactor()
    r.add(secret, users=[USER])
    for form in spellings(secret):
        assert REDACTED in r(f"x {form} y"), (secret, form)


@pytest.mark.parametrize("secret", [AWKWARD, "qqauthcode1234\r", "Abc123secretXYZ\n", "tab\there-x"])
def test_repr_and_json_of_a_line_holding_the_secret_are_redacted(secret):
    r = Redactor()
    r.add(secret, users=[USER])
    line = f"PASS {secret}"
    for shown in (repr(line), json.dumps(line), json.dumps(line, ensure_ascii=False), ascii(line),
                  repr(line.encode()), repr(line + "'\""), html.escape(line)):
        assert secret not in r(shown) and REDACTED in r(shown), shown
        for form in spellings(secret):
            assert form not in r(shown), (shown, form)


def test_quoted_redacts_before_it_cuts():
    r = Redactor()
    secret = "qqauthcode1234-and-more"
    r.add(secret)
    line = "PASS " + secret + "\r"
    # cut first, the secret would be half there and unrecognisable: redacted first, it is gone
    assert "qqauthcode" not in quoted(line, r, 12)
    assert quoted("short line", r) == "'short line'"


def test_pop3_password_ending_in_cr_is_never_quoted(tmp_path: Path):
    """The review's reproduction, below the resolver: the PASS line with a CR fails, and the error
    holds no form of the password (run/schedule.py stores redactor(str(error)) in the manifest)."""
    secret = "qqauthcode1234\r"

    ctx = make_ctx(tmp_path, pop3_server(b"Subject: x\r\n\r\nbody\r\n"))
    ctx.profile = type(ctx.profile)(name="p", target=ctx.profile.target, account=ctx.profile.account,
                                    servers={"pop3": type(next(iter(ctx.profile.servers.values())))(
                                        "pop.fake.test", {"plain": 110})})
    ctx.secret = secret
    ctx.redactor.add(secret, [USER])
    result = run_step(Pop3Step(security="plain", retrieve="none", commands=()), ctx)
    assert not result.ok and result.error is not None
    written = f"{result.error}\n{result.hint}\n{json.dumps(result.to_dict())}"
    assert "qqauthcode" not in written, written
    assert "may not contain CR or LF" in result.error and "PASS" in result.error


def test_run_refuses_a_password_with_a_trailing_cr_before_writing_anything(tmp_path: Path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "p.yaml").write_text(
        "title: p\nobjective: p\nsteps:\n  - pop3: {security: plain, retrieve: none}\n", encoding="utf-8")
    (tmp_path / "lab.yaml").write_text(
        "default_profile: nl\nprofiles:\n  nl:\n    target: {host: 192.0.2.7, user: u}\n"
        "    servers: {pop3: {host: pop.lab.test, plain: 110}}\n"
        "    account: {address: me@lab.test, secret: {env: WPW}}\n", encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "labrunner", "run", "-c", "lab.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                         env={**os.environ, "WPW": "qqauthcode1234\r"})
    assert res.returncode == ExitStatus.USAGE, res.stderr
    assert "ends with a carriage return (CR)" in res.stderr and "Traceback" not in res.stderr
    assert "qqauthcode" not in res.stdout + res.stderr
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").rglob("*.json"))
