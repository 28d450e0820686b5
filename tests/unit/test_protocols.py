"""The reply and command tables: both languages, class fallback, provider hints."""

from __future__ import annotations

import pytest

from labrunner.protocols import imap, pop3, smtp


@pytest.mark.parametrize("module", [smtp, pop3, imap])
def test_every_entry_has_both_languages(module: object) -> None:
    for table_name in ("REPLIES", "COMMANDS"):
        table = getattr(module, table_name)
        assert table
        for key, text in table.items():
            assert text.zh and text.en, (module, key)


def test_smtp_codes_explained_in_both_languages() -> None:
    assert smtp.explain(535, "en").startswith("Authentication failed")
    assert "授权码" in smtp.explain(535, "zh")
    assert smtp.explain("354", "en").startswith("Start mail input")
    assert "Username:" in smtp.explain(334, "en")


def test_smtp_unknown_code_falls_back_to_its_class() -> None:
    assert smtp.explain(599, "en") == "Permanent failure"
    assert smtp.explain(471, "zh") == "暂时性失败，可稍后重试"
    assert smtp.explain(999, "en") == ""


def test_smtp_commands_explained() -> None:
    assert "envelope sender" in smtp.explain("MAIL FROM:<a@b>", "en")
    assert smtp.explain("ehlo", "en").startswith("Identify the client")
    assert smtp.explain("XYZZY", "en") == ""


def test_qq_hint_for_535_and_generic_hint_elsewhere() -> None:
    qq = smtp.hint(535, "smtp.qq.com", "en")
    assert "authorization code is wrong or POP3/SMTP service is not enabled in QQ Mail settings" in qq
    assert "QQ 邮箱" in smtp.hint(535, "smtp.qq.com", "zh")
    other = smtp.hint(535, "smtp.lab.test", "en")
    assert "QQ" not in other and "password or authorization code" in other
    # a host that merely ends in the same letters is not QQ's
    assert "QQ" not in smtp.hint(535, "notqq.com", "en")
    assert smtp.hint(250, "smtp.qq.com") == ""


def test_pop3_statuses_response_codes_and_hints() -> None:
    assert pop3.explain("+OK", "en") == "Success"
    assert pop3.explain("[AUTH]", "en").startswith("Authentication failed")
    assert pop3.explain("IN-USE", "zh") == "邮箱正被另一个会话使用"
    assert pop3.explain("RETR 1", "en") == "Retrieve a whole message"
    assert "QQ Mail" in pop3.hint("PASS", "pop.qq.com", "en")
    assert "QQ" not in pop3.hint("PASS", "pop.lab.test", "en")
    assert pop3.hint("STAT", "pop.qq.com", "en") == ""


def test_pop3_multiline_commands() -> None:
    assert {"CAPA", "RETR", "TOP"} <= pop3.MULTILINE
    assert {"LIST", "UIDL"} == pop3.MULTILINE_WITHOUT_ARG


def test_imap_statuses_codes_commands_and_hints() -> None:
    assert imap.explain("NO", "en").startswith("Failure")
    assert imap.explain("[AUTHENTICATIONFAILED]", "en").startswith("Authentication failed")
    assert imap.explain("select", "zh") == "打开一个邮箱（文件夹）"
    assert "IMAP/SMTP" in imap.hint("LOGIN", "imap.qq.com", "en")
    assert imap.hint("SELECT", "imap.qq.com", "en") == "check the mailbox name in the scenario"
