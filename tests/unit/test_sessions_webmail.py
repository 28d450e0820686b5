"""The web-mail step's page reading, and its refusal of QQ Mail (whose login needs a browser)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from labrunner.config.model import WebmailStep
from labrunner.errors import UsageError
from labrunner.sessions import webmail
from labrunner.sessions.core import StepResult

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "webmail" / "roundcube-login.html"


def test_roundcube_login_form_is_read() -> None:
    (form,) = webmail.forms_of(FIXTURE.read_bytes())
    assert form.attrs["action"] == "/?_task=login"
    assert form.named("password") == "_pass" and form.named("text") == "_user"
    values = dict(form.values())
    assert values["_token"] == "wtqrNkLJlNC2HujwoXQgObFDBc5qTx0K" and values["_task"] == "login"
    assert "rcmloginsubmit" not in values  # the button is no field


def test_selects_textareas_and_unchecked_boxes() -> None:
    page = (b'<form name="form"><select name="_from"><option value="1">a</option>'
            b'<option value="2" selected>b</option></select><textarea name="_message">hi &amp; bye</textarea>'
            b'<input type="checkbox" name="_mdn" value="1"><input type="checkbox" name="_dsn" value="1" checked>'
            b'</form>')
    (form,) = webmail.forms_of(page)
    assert form.values() == [("_from", "2"), ("_message", "hi & bye"), ("_dsn", "1")]


def test_roundcube_message_is_read() -> None:
    assert webmail._message(b'rcmail.display_message("Login failed.","warning",0);') == "Login failed."
    assert webmail._message(b"nothing here") is None


@pytest.mark.parametrize("host", ["mail.qq.com", "wx.mail.qq.com", "MAIL.QQ.COM.", "qq.com", "mail.foxmail.com"])
def test_qq_mail_is_refused_clearly_before_any_connection(host: str) -> None:
    result = StepResult(kind="webmail", id=None, server="web", host=host, port=443, security="tls",
                        started=0.0, started_wall=0.0)
    with pytest.raises(UsageError, match="web login needs a browser") as err:
        webmail.run(WebmailStep(), None, result, 0.0)  # type: ignore[arg-type]  # no context is needed
    assert err.value.hint is not None and "--import" in err.value.hint
    assert result.connections == []


@pytest.mark.parametrize("host", ["mail.lab.test", "notqq.com", "qq.com.example.org"])
def test_other_hosts_are_not_refused(host: str) -> None:
    assert webmail.browser_only(host) is None


def test_doctor_says_beforehand_that_qq_mail_cannot_be_logged_in_to() -> None:
    from labrunner.config.load import load_lab, load_scenarios
    from labrunner.doctor import webmail_checks

    root = FIXTURE.parents[3]
    lab = load_lab(root / "lab.yaml")
    scenarios = load_scenarios(lab, None)
    (row,) = webmail_checks(scenarios, lab.profiles["qq"])
    assert not row.ok and row.name == "web mail login (webmail-tls, step 3)"
    assert "mail.qq.com is QQ Mail, whose web login needs a browser" in row.detail and "--import" in row.fix
    qq = lab.profiles["qq"]
    own = replace(qq, servers={**qq.servers, "web": replace(qq.servers["web"], host="mail.lab.test")})
    assert webmail_checks(scenarios, own) == []
