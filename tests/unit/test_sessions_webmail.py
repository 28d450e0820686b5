"""The web-mail step's page reading, and its refusal of QQ Mail (whose login needs a browser)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from labrunner.config.model import WebmailStep
from labrunner.errors import UsageError
from labrunner.sessions import webmail
from labrunner.sessions.context import StepResult

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


def test_the_analysis_shows_a_login_forms_fields_with_the_password_redacted() -> None:
    # a browser's login POST (a third-party capture with its key log): the fields are shown,
    # the password only as «redacted» unless the credentials are to be shown
    from foreign_corpus import analyze  # type: ignore[import-not-found]  # each {zh, en} in the language asked

    from labrunner.secrets import REDACTED

    caps = FIXTURE.parents[1] / "captures"
    pcap, keys = caps / "browser-login.pcap", caps / "browser-login.keys"
    bodies = [d for s in analyze(pcap, keylog=keys, lang="en")["streams"] for d in s["dialogue"]
              if d["dir"] == "C" and "form fields:" in d["text"]]
    assert bodies[0]["text"].splitlines()[1:] == ["username=student@lab.test", f"password={REDACTED}"]
    assert bodies[0]["redacted"] is True
    shown = [d for s in analyze(pcap, keylog=keys, lang="en", show_credentials=True)["streams"]
             for d in s["dialogue"] if d["dir"] == "C" and "form fields:" in d["text"]]
    assert REDACTED not in shown[0]["text"] and shown[0]["text"].splitlines()[2].startswith("password=_")


def test_the_report_scrubber_hides_what_the_analyser_hides_in_http() -> None:
    # offline, where the secret is unknown: cookies, secret query parameters, password-like form fields
    from labrunner.report.scrub import scrub_lines
    from labrunner.secrets import REDACTED

    lines = [
        {"dir": "C", "text": "GET /?_task=mail&_token=abc123 HTTP/1.1\nHost: mail.lab.test\nCookie: sid=s3cr3t"},
        {"dir": "S", "text": "HTTP/1.1 302 Found\nSet-Cookie: sid=n3w; path=/\nLocation: /?_task=mail&_token=abc123"},
        {"dir": "C", "text": "[body: 40 bytes] form fields:\n_user=student@lab.test\n_pass=hunter2\n_url="},
    ]
    out = [e["text"] for e in scrub_lines(lines)]
    assert out[0] == f"GET /?_task=mail&_token={REDACTED} HTTP/1.1\nHost: mail.lab.test\nCookie: {REDACTED}"
    assert out[1] == f"HTTP/1.1 302 Found\nSet-Cookie: {REDACTED}\nLocation: /?_task=mail&_token={REDACTED}"
    assert out[2] == f"[body: 40 bytes] form fields:\n_user=student@lab.test\n_pass={REDACTED}\n_url="
