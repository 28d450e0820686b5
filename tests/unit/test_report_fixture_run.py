"""The report of a recorded real run of all six default scenarios (tests/fixtures/sandbox-run):
each thing said once, nothing the run showed left out without saying so."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from labrunner.report.context import build_context

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sandbox-run"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sandbox-run")
    shutil.copytree(FIXTURE, root / "output")
    run_dir = next((root / "output").glob("*/manifest.json")).parent
    return build_context(run_dir, lang="en")


def streams(ctx: dict) -> list[dict]:
    return [st for sc in ctx["scenarios"] for st in sc["streams"]]


def test_every_dialogue_line_is_shown_or_counted(ctx: dict) -> None:
    analysed = 0
    for sc in ctx["scenarios"]:
        doc = json.loads((FIXTURE / sc["run_id"] / sc["name"] / "analysis.json").read_text("utf-8"))
        assert [len(s["dialogue"]) for s in doc["streams"]] == [len(st["lines"]) for st in sc["streams"]]
        for st in sc["streams"]:
            analysed += len(st["lines"])
            kept = [x for x in st["shown"] if x["kind"] != "omitted"]
            assert len(kept) + sum(x["omitted"] for x in st["shown"] if x["kind"] == "omitted") == len(st["lines"])
            assert len(kept) == len(st["lines"]) - st["left_out"]
    assert len(streams(ctx)) == 13 and analysed == 249


def test_tls_parameters_and_certificate_are_listed_once_then_referred_to(ctx: dict) -> None:
    tls = [(st["number"], st["tls"]) for st in streams(ctx) if st["tls"]]
    assert len(tls) == 11  # every connection but the two plain SMTP ones on port 25
    # appendix B: one table per distinct set of parameters (merged, issue 15), in document order
    full = [n for n, x in tls if not x["same_as"]]
    assert full == ["A.1.1", "A.4.1", "A.4.2"]  # SMTP TLS 1.3; HTTPS TLS 1.2; HTTPS TLS 1.3 (another suite)
    assert [x["table"] for n, x in tls if n in full] == ["B1", "B2", "B3"]
    for number, x in tls:
        rows = dict(x["rows"])
        assert rows["Server name (SNI)"].endswith("lab.test")
        assert "Handshake time" in rows
        if number not in full:  # the same as the first SMTP connection: a row of the table of connections
            assert x["same_as"] == x["table"] == "B1"
    summary = {st["number"]: st["tls_summary"] for st in streams(ctx) if st["tls"]}
    assert summary["A.3.3"]["line"].startswith("TLS: TLS 1.3, TLS_AES_256_GCM_SHA384, key exchange group x25519")
    assert summary["A.3.3"]["line"].endswith("(parameters in Table B1).")
    # the one server certificate: its fingerprint row once in the tables printed
    prints = [v for n, x in tls if n in full for k, v in x["rows"] if k.startswith("Certificate SHA-256")]
    assert len(prints) == 1


def test_mail_summaries_share_a_table_per_connection(ctx: dict) -> None:
    pop3 = next(st for st in streams(ctx) if st["number"] == "A.3.2")
    assert len(pop3["mails"]) == 1 and pop3["mails"][0]["frames"] == ["78", "81"]
    rows = dict(pop3["mails"][0]["rows"])
    assert rows["Subject"] == [("实验5 POP3 测试 (lab 5, POP3)", 2)]  # TOP and RETR: one value, both columns
    assert len(rows["Size (bytes)"]) == 2  # 776 (headers) and 872 (the whole message)


def test_a_mail_summary_already_printed_is_one_line_referring_to_it(ctx: dict) -> None:
    """The same message fetched the same way on another connection (POP3 over STLS, then over
    995; IMAP over STARTTLS, then over 993): one table, then a line naming it (issue 18)."""
    mails = {st["number"]: st["mails"] for st in streams(ctx)}
    assert mails["A.3.3"][0]["same_as"] == mails["A.3.2"][0]["table"] == "C6"
    assert mails["A.6.3"][0]["same_as"] == mails["A.6.2"][0]["table"] == "C9"
    assert mails["A.3.3"][0]["same"] == "Mail summary (frames 121, 124): the same as Table C6."
    printed = [m["table"] for ms in mails.values() for m in ms if not m["same_as"]]
    assert printed == [f"C{n}" for n in range(1, 10)]  # numbered in order, no gap


def test_statistics_and_reply_times_once_per_scenario(ctx: dict) -> None:
    for sc in ctx["scenarios"]:
        assert [row[0] for row in sc["timings"]["stats"]["rows"]] == [st["number"] for st in sc["streams"]]
        assert sc["timings"]["timing"]["svg"].count("<rect") == sum(len(st["bars"]) for st in sc["streams"])


def test_appendix_has_a_section_for_every_connection(ctx: dict) -> None:
    for sc in ctx["scenarios"]:
        anchors = [b["anchor"] for b in sc["appendix"] if b["anchor"]]
        assert anchors == [st["appendix_anchor"] for st in sc["streams"]]
        for st, block in zip(sc["streams"], (b for b in sc["appendix"] if b["anchor"]), strict=True):
            assert block["heading"] == f"A.{st['number'][2:]} {st['title']}"
            # the lines section 4 left out follow, with their frames, only for a connection it
            # shows: one it does not show at all has its whole record here ("Table None" before)
            assert bool(block["extra"]) == bool(st["left_out"] and st["in_body"])
            if block["extra"]:
                assert f"of Table {st['dialogue_table']} " in block["extra_note"], block["extra_note"]
    assert any(not st["in_body"] and st["left_out"] for st in streams(ctx))


def test_the_pdf_gets_the_report_without_what_only_the_browser_shows(
        fixture_report_pdf: Callable[[str, str], Path]) -> None:
    from labrunner.report.pdf import pdf_source

    html = (fixture_report_pdf("sandbox-run", "zh").parent / "report.html").read_text(encoding="utf-8")
    source = pdf_source(html)
    # the six reply-time charts: in report.html, not in what WeasyPrint lays out (2 % of its time)
    assert html.count("<!--labrunner:screen-only-->") == 6
    assert html.count("各命令的应答时间（编号为连接）") == 6 and "各命令的应答时间（编号为连接）" not in source
    assert source.count("<svg") == html.count("<svg") - 6 and source.count("<svg") > 0


def test_section_3_describes_each_step_in_words_and_tells_the_two_web_steps_apart(
        ctx: dict, tmp_path: Path) -> None:
    steps = {sc["name"]: sc["steps"] for sc in ctx["scenarios"]}
    assert steps["telnet-smtp"] == [
        "Typed dialogue (telnet style) with smtp (smtp.lab.test), port 25, plain text, not encrypted"]
    assert steps["webmail-tls"] == [
        "HTTPS session with web (mail.lab.test), port 443, implicit TLS "
        "(negotiated: TLS 1.2, ECDHE-RSA-AES128-GCM-SHA256)",
        "HTTPS session with web (mail.lab.test), port 443, implicit TLS (negotiated: TLS 1.3, TLS_AES_256_GCM_SHA384)"]
    assert steps["pop3"][1].startswith("POP3 session with pop3 (pop.lab.test), port 110, STARTTLS upgrade to TLS")
    shutil.copytree(FIXTURE, tmp_path / "output")
    zh = build_context(next((tmp_path / "output").glob("*/manifest.json")).parent, lang="zh")
    steps = {sc["name"]: sc["steps"] for sc in zh["scenarios"]}
    assert steps["telnet-smtp"] == ["逐行输入（telnet 方式）的会话：smtp (smtp.lab.test)，端口 25，明文，不加密"]
    assert steps["webmail-tls"][0] == (
        "HTTPS 会话：web (mail.lab.test)，端口 443，直接 TLS（协商为 TLS 1.2，ECDHE-RSA-AES128-GCM-SHA256）")
    assert steps["imap"][1].endswith("端口 143，STARTTLS 升级为 TLS（协商为 TLS 1.3，TLS_AES_256_GCM_SHA384）")
    # no internal word of the transcript left in any step line
    for line in [x for sc in (*ctx["scenarios"], *zh["scenarios"]) for x in sc["steps"]]:
        assert not any(word in line for word in ("LINES", "starttls", "安全方式", "security ", "TLSv")), line


ENGLISH = re.compile(r"\b(connecting|connected|target|handshake|starting|done|closed|failed|following|bytes|lines|"
                     r"message|headers|body|literal|fragment|mailbox|greeting)\b")


def test_the_clients_own_lines_of_appendix_a_are_in_the_reports_language(ctx: dict, tmp_path: Path) -> None:
    """Appendix A: labrunner's notes (*) and the summaries it writes in place of a message body
    are translated in the Chinese report; what the servers sent, and the English report, stay as they were."""
    shutil.copytree(FIXTURE, tmp_path / "output")
    zh = build_context(next((tmp_path / "output").glob("*/manifest.json")).parent, lang="zh")
    own = re.compile(r"message data, |headers of message \d+, |body, |«literal, |DATA fragment, |… \d+ more lines, ")
    translated = 0
    for sc_en, sc_zh in zip(ctx["scenarios"], zh["scenarios"], strict=True):
        for en, cn in zip(sc_en["transcript"], sc_zh["transcript"], strict=True):
            if en["dir"] == "*" or own.match(en["text"]):
                translated += 1
                assert not ENGLISH.search(cn["text"]), cn["text"]
                assert re.search(r"[\u4e00-\u9fff]", cn["text"]), cn["text"]
            else:
                assert cn["text"] == en["text"]  # a server's or the client's protocol line: as sent
    assert translated > 40
    webmail = {r["text"] for r in next(sc for sc in zh["scenarios"] if sc["name"] == "webmail-tls")["transcript"]}
    assert {"正在从目标主机连接 mail.lab.test:443", "开始 TLS 握手（SNI mail.lab.test）",
            "TLS 握手完成：TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256", "正文，788 字节（text/html）"} <= webmail
    raw = json.loads((FIXTURE / "20261126-154056" / "webmail-tls" / "transcript.json").read_text("utf-8"))
    assert [r["text"] for r in next(sc for sc in ctx["scenarios"] if sc["name"] == "webmail-tls")["transcript"]] == [
        e["text"] for step in raw["steps"] for e in step["events"]]


def test_body_follows_the_handout_and_leaves_repeats_to_the_appendix(ctx: dict) -> None:
    assert [(s["number"], [sc["name"] for sc in s["scenarios"]]) for s in ctx["sections"]] == [
        ("1", ["mail-client"]), ("2", ["plain-smtp", "pop3"]), ("3", ["webmail-tls"]), ("4", ["telnet-smtp"]),
        ("5", ["imap"])]
    body = {st["number"]: st for st in streams(ctx) if st["in_body"]}
    # the SMTP submissions the POP3 and IMAP exercises start with were shown in 4.1: appendix only
    assert "A.3.1" not in body and "A.6.1" not in body
    same = next(st for st in streams(ctx) if st["number"] == "A.3.1")["same_kind"]
    assert "Sending and receiving mail with a mail client" in same and "Appendix A.3.1" in same
    # one sequence diagram per exercise, and it shows the login and the whole DATA phase
    drawn = [st["number"] for st in streams(ctx) if st["sequence_svg"]]
    assert drawn == ["A.1.1", "A.2.1", "A.3.2", "A.4.1", "A.5.1", "A.6.2"]
    for number in ("A.1.1", "A.2.1", "A.5.1"):
        svg = str(body[number]["sequence_svg"]).replace("\xa0", " ")
        for needle in ("AUTH", "235 ", "MAIL FROM", "RCPT TO", "DATA", "354 ", "queued", "QUIT"):
            assert needle in svg, (number, needle)


def test_tls_walkthrough_message_by_message(ctx: dict) -> None:
    web = next(sc for sc in ctx["scenarios"] if sc["name"] == "webmail-tls")
    walk = web["tls_walkthrough"]
    assert walk is ctx["tls_walkthrough"]
    assert [m["name"] for m in walk["messages"]] == [
        "Client Hello", "Server Hello", "Certificate", "Server Key Exchange", "Server Hello Done",
        "Client Key Exchange", "Change Cipher Spec", "Finished", "New Session Ticket", "Application Data"]
    by = {m["name"]: m for m in walk["messages"]}
    # values from the capture
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in by["Client Hello"]["carries"]
    assert "server_name" in by["Client Hello"]["carries"] and "mail.lab.test" in by["Client Hello"]["carries"]
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 0xc02f" in by["Server Hello"]["carries"]
    assert "CN=mail.lab.test" in by["Certificate"]["carries"] and "RSA 2048" in by["Certificate"]["carries"]
    assert "x25519" in by["Server Key Exchange"]["carries"] and "forward secrecy" in by["Server Key Exchange"]["why"]
    assert "x25519" in by["Client Key Exchange"]["carries"]
    assert "GET / HTTP/1.1" in by["Application Data"]["carries"]
    assert by["Server Hello"]["where"].startswith(" (server → client, frame ")
    # and what TLS 1.3 leaves out, with the two handshakes of the capture
    assert any("No Server Key Exchange" in p for p in walk["tls13"]["points"])
    assert walk["tls13"]["observed"][1].startswith("The TLS 1.3 handshake of this capture: Client Hello → Server Hello")


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed")
def test_chinese_pdf_body_is_at_most_15_pages_with_the_tls_walkthrough(
        fixture_report_pdf: Callable[[str, str], Path]) -> None:
    """Issue 15: the body (cover and contents excluded, up to the appendix) of the default
    scenarios' Chinese report is at most 15 pages, and holds the TLS 1.2 walk-through."""
    import subprocess

    pdf = fixture_report_pdf("sandbox-run", "zh")  # the copy the golden PDF text is read from
    run_dir = pdf.parent
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    pages = text.split("\f")
    appendix = next(n for n, page in enumerate(pages, 1) if re.search(r"^\s*附录\s*$", page, re.M) and n > 2)
    body = "\n".join(pages[2:appendix - 1])
    assert appendix - 1 - 2 <= 15, f"the body has {appendix - 3} pages"
    for needle in ("4.1 使用邮件客户端收发邮件", "4.2 本地收发邮件", "4.3 Web 邮件", "4.4 使用 telnet 收发邮件",
                   "TLS 1.2 握手逐条分析", "Client Hello", "Server Key Exchange", "Server Hello Done",
                   "Client Key Exchange", "Change Cipher Spec", "Finished", "Application Data",
                   "与 TLS 1.3 的比较", "前向安全", "5.1 遇到的问题与解决方法", "5.2 心得体会"):
        assert needle in body, needle
    # what repeats per connection is not in the body
    for needle in ("各连接的统计", "邮件摘要（帧", "BPF"):
        assert needle not in body, needle
    # the reply-time charts are in report.html only; the PDF's appendix D says so
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("各命令的应答时间（编号为连接）") == 6 and "各命令的应答时间（编号为连接）" not in text
    assert text.count("见同一目录下的 report.html") == 6
