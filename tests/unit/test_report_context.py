"""The report context: built from the fixture run folder, tolerant of missing files, no guesses."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from labrunner.errors import UsageError
from labrunner.report import render_html
from labrunner.report.context import build_context
from labrunner.report.i18n import LANGS, MESSAGES, catalogue
from labrunner.report.scrub import scrub_lines
from labrunner.secrets import REDACTED

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run"
RUN_ID = "20261126-141500"
TEMPLATES = Path(__file__).resolve().parents[2] / "labrunner" / "templates"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "output")
    return tmp_path / "output" / RUN_ID


def by_name(ctx: dict, name: str) -> dict:
    return next(sc for sc in ctx["scenarios"] if sc["name"] == name)


def test_cover_and_environment_come_from_the_manifest(run_dir: Path) -> None:
    ctx = build_context(run_dir)
    assert ctx["lang"] == "zh"  # the manifest's language
    assert ctx["meta"]["lab"] == "实验5 电子邮件"
    assert ctx["meta"]["student"] == "张三"
    rows = dict(ctx["environment"]["target_rows"])
    assert rows["内核"] == "6.1.0-27-amd64"
    assert rows["tcpdump"] == "4.99.3"
    assert ("tshark", "4.0.17") in ctx["environment"]["local_rows"]


def test_missing_environment_says_not_captured(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["target"] = {}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    ctx = build_context(run_dir, lang="en")
    values = [v for _, v in ctx["environment"]["target_rows"]]
    assert values == ["not captured"] * 5


def test_scenario_without_analysis_keeps_its_section_and_error(run_dir: Path) -> None:
    ctx = build_context(run_dir, lang="en")
    sc = by_name(ctx, "imap-fetch")
    assert sc["status"] == "failed"
    assert sc["streams"] == []
    assert sc["analysis_note"].startswith("No analysis")
    assert sc["error"] == "imap: connection to 10.77.1.2:143 refused"
    # the failed step's error is part of its transcript in the appendix
    assert any(line["dir"] == "!" and "refused" in line["text"] for line in sc["transcript"])


def test_unreadable_analysis_is_reported_not_raised(run_dir: Path) -> None:
    (run_dir / "telnet-smtp" / "analysis.json").write_text("{not json")
    sc = by_name(build_context(run_dir, lang="en"), "telnet-smtp")
    assert sc["streams"] == []
    assert "could not be read" in sc["analysis_note"]


def test_a_reused_result_is_read_from_inside_this_run_folder(run_dir: Path) -> None:
    sc = by_name(build_context(run_dir, lang="en"), "smtp-starttls")
    assert "20261126-140210" in sc["reused"]
    assert sc["streams"][0]["protocol"] == "SMTP"
    assert all(f["ok"] for f in sc["files"])


def test_through_output_latest_only_the_reused_results_say_so(run_dir: Path) -> None:
    """`labrunner report output/latest` (the README's command) is the run itself, not a reuse."""
    latest = run_dir.parent / "latest"
    latest.symlink_to(run_dir.name)
    direct, linked = build_context(run_dir, lang="en"), build_context(latest, lang="en")
    assert [sc["reused"] for sc in linked["scenarios"]] == [sc["reused"] for sc in direct["scenarios"]]
    assert by_name(linked, "pop3-retrieve")["reused"] == ""
    assert "20261126-140210" in by_name(linked, "smtp-starttls")["reused"]


def test_stream_endpoints_mail_and_stats_follow_docs_analysis(run_dir: Path) -> None:
    st = by_name(build_context(run_dir, lang="en"), "pop3-retrieve")["streams"][0]
    assert st["title"] == "POP3 session 10.77.0.2:51210 → 10.77.1.2:110"
    mail = {k: v[0][0] for k, v in st["mails"][0]["rows"]}
    assert mail["Subject"] == "实验5 STARTTLS 测试"
    assert mail["Attachments"] == "notes.txt (text/plain, 1024 bytes)"
    assert mail["MIME parts"].startswith("text/plain (utf-8, 7bit, 44 bytes); text/plain (base64, 1024 bytes)")
    assert st["stats"]["packets"] == "29" and st["stats"]["server_bytes"] == "2480"
    assert st["stats"]["rtt"] == "0.040 / 0.100 / 0.300 (14 samples)"
    # statistics are one table per scenario, a row per connection
    sc = by_name(build_context(run_dir, lang="en"), "pop3-retrieve")
    assert sc["timings"]["stats"]["rows"] == [(st["number"], "POP3", st["stats"])] and st["number"].startswith("A.")


def test_frame_zero_is_not_a_frame(run_dir: Path) -> None:
    path = run_dir / "telnet-smtp" / "analysis.json"
    doc = json.loads(path.read_text())
    doc["streams"][0]["mail"][0]["frame"] = 0
    doc["streams"][0]["dialogue"][0]["frame"] = 0
    path.write_text(json.dumps(doc))
    st = by_name(build_context(run_dir, lang="en"), "telnet-smtp")["streams"][0]
    assert st["mails"][0]["caption"] == "Mail summary (frame not captured)"
    assert st["lines"][0]["frame"] == ""


def test_ipv6_endpoint_is_bracketed(run_dir: Path) -> None:
    path = run_dir / "https-webmail" / "analysis.json"
    doc = json.loads(path.read_text())
    doc["streams"][0]["server"] = {"ip": "fd00::3", "port": 443}
    path.write_text(json.dumps(doc))
    st = by_name(build_context(run_dir, lang="en"), "https-webmail")["streams"][0]
    assert st["server"] == "[fd00::3]:443"


def test_sequence_diagram_interleaves_the_tls_handshake_by_frame(run_dir: Path) -> None:
    import xml.etree.ElementTree as ET

    st = by_name(build_context(run_dir, lang="en"), "https-webmail")["streams"][0]
    root = ET.fromstring(str(st["sequence_svg"]))
    labels = [" ".join((e.text or "").replace("\xa0", " ").split()) for e in
              root.iter("{http://www.w3.org/2000/svg}text")]
    arrows = [x.split(" ", 1)[1] for x in labels if x.startswith("#")]
    assert arrows == ["Client Hello", "Server Hello, Certificate, Server Key Exchange, Server Hello Done",
                      "Client Key Exchange, Change Cipher Spec, Encrypted Handshake Message",
                      "Change Cipher Spec, Encrypted Handshake Message", "GET / HTTP/1.1", "HTTP/1.1 200 OK"]


def test_tls13_certificate_comes_from_the_client_side(run_dir: Path) -> None:
    st = by_name(build_context(run_dir, lang="en"), "smtp-starttls")["streams"][0]
    rows = dict(st["tls"]["rows"])
    assert rows["Version"] == "TLS 1.3"
    assert rows["Server certificate"].startswith("encrypted in TLS 1.3")
    assert rows["Certificate subject (as received by the client)"] == "CN=mail.lab.test"


def test_tls_table_lists_the_offered_suites_and_groups_with_the_chosen_ones_marked(run_dir: Path) -> None:
    """The lab asks which suites the Client Hello offered and which one the server chose."""
    def offer(doc: dict) -> None:  # a name with markup in it must come out as text
        doc["streams"][0]["tls"]["client_hello"]["cipher_suites"].append("<b>GREASE</b>")

    path = run_dir / "smtp-starttls" / "analysis.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    offer(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    st = by_name(build_context(run_dir, lang="en"), "smtp-starttls")["streams"][0]
    rows = dict(st["tls"]["rows"])
    assert rows["Versions the client offered"] == "TLS 1.3, TLS 1.2"
    suites = str(rows["Cipher suites in the Client Hello (4; the server's choice in bold)"])
    assert suites == ("<b>TLS_AES_256_GCM_SHA384</b> (chosen), TLS_CHACHA20_POLY1305_SHA256, "
                      "TLS_AES_128_GCM_SHA256, &lt;b&gt;GREASE&lt;/b&gt;")
    groups = str(rows["Key exchange groups the client supports (2; the one used in bold)"])
    assert groups == "<b>x25519</b> (chosen), secp256r1"
    zh = dict(by_name(build_context(run_dir, lang="zh"), "smtp-starttls")["streams"][0]["tls"]["rows"])
    assert str(zh["Client Hello 中的密码套件（4 个，加粗者为服务器所选）"]).startswith(
        "<b>TLS_AES_256_GCM_SHA384</b>（选中）, TLS_CHACHA20")
    # TLS 1.2 without a supported_versions extension: the Client Hello's own version; the group
    # the server chose comes from its Server Key Exchange
    web = dict(by_name(build_context(run_dir, lang="en"), "https-webmail")["streams"][0]["tls"]["rows"])
    assert web["Versions the client offered"] == "TLS 1.2"
    assert str(web["Key exchange groups the client supports (2; the one used in bold)"]) == (
        "<b>x25519</b> (chosen), secp256r1")
    html = render_html(run_dir, lang="en").read_text(encoding="utf-8")
    assert '<td class="list"><b>TLS_AES_256_GCM_SHA384</b> (chosen), ' in html


def test_tls12_certificate_from_the_capture(run_dir: Path) -> None:
    st = by_name(build_context(run_dir, lang="en"), "https-webmail")["streams"][0]
    rows = dict(st["tls"]["rows"])
    assert rows["Certificate issuer"] == "CN=labrunner sandbox CA"
    assert rows["Cipher suite"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (0xc02f)"
    assert rows["Certificate key"] == "RSA 2048"
    assert rows["Key exchange group"] == "x25519"  # from the Server Key Exchange
    assert rows["Handshake round trips"] == "2"
    assert [h["message"] for h in st["tls"]["handshake"]][:2] == [
        "Client Hello", "Server Hello, Certificate, Server Key Exchange, Server Hello Done"]


def test_figure_and_table_numbers_are_unique_and_in_document_order(run_dir: Path) -> None:
    ctx = build_context(run_dir)
    # the body: 1, 2, 3 ... in the order of the handout's sections; each appendix its own B1, C1 ...
    tables: list[int | str] = [ctx["environment"]["target_table"]]
    figures: list[int | str] = []
    tls: list[int | str] = []
    mails: list[int | str] = []
    stats: list[int | str] = []
    for sec in ctx["sections"]:
        for sc in sec["scenarios"]:
            for st in sc["streams"]:
                if st["in_body"]:
                    tables.append(st["dialogue_table"])
                if st["sequence_figure"]:
                    figures.append(st["sequence_figure"])
                if st["tls"] and not st["tls"]["same_as"]:
                    tls.append(st["tls"]["table"])
                mails += [x["table"] for x in st["mails"] if not x["same_as"]]  # (else: a reference)
    for sc in ctx["scenarios"]:  # appendix D, after the connections of each scenario
        if sc["timings"] and sc["timings"]["stats"]:
            stats.append(sc["timings"]["stats"]["table"])

    tables.append(ctx["summary_table"])
    assert tables == list(range(1, len(tables) + 1))
    assert figures == list(range(1, len(figures) + 1))
    assert tls == [f"B{n}" for n in range(1, len(tls) + 1)]
    assert mails == [f"C{n}" for n in range(1, len(mails) + 1)]
    assert stats == [f"D{n}" for n in range(1, len(stats) + 1)]
    assert (ctx["captures_table"], ctx["tools_table"]) == ("E1", "F1")
    # the text cites the numbers it was given
    st = by_name(ctx, "telnet-smtp")["streams"][0]
    assert f"表 {st['dialogue_table']}" in st["dialogue_intro"]
    assert f"图 {st['sequence_figure']}" in st["dialogue_intro"]


def test_problems_come_from_failures_and_retries_only(run_dir: Path) -> None:
    ctx = build_context(run_dir, lang="en")
    problems = {p["title"]: p for p in ctx["problems"]}
    assert set(problems) == {"Retrieving mail over POP3", "Reading mail over IMAP"}
    pop = problems["Retrieving mail over POP3"]
    assert pop["lines"] == ["Failed in run 20261126-140210: POP3 PASS: -ERR [AUTH] Authentication failed."]
    assert pop["outcome"] == "A later retry in run 20261126-141500 passed."
    assert problems["Reading mail over IMAP"]["outcome"] == "Still unresolved when this report was made."


def test_failures_in_earlier_runs_of_the_output_folder_are_problems(run_dir: Path) -> None:
    def run(run_id: str, status: str, error: str | None) -> None:
        (run_dir.parent / run_id).mkdir()
        (run_dir.parent / run_id / "manifest.json").write_text(json.dumps({"run_id": run_id, "scenarios": [
            {"name": "telnet-smtp", "run_id": run_id, "status": status, "error": error},
            # reused, not produced in this run: does not count
            {"name": "https-webmail", "run_id": "20261126-100000", "status": "failed", "error": "old"}]}))

    run("20261126-130000", "failed", "smtp: 535 5.7.8 authentication failed")
    run("20261126-131000", "passed", None)
    run("20261126-160000", "failed", "after this report's run")
    problems = {p["title"]: p for p in build_context(run_dir, lang="en")["problems"]}
    telnet = problems["Sending mail by hand over telnet"]
    assert telnet["lines"] == ["Failed in run 20261126-130000: smtp: 535 5.7.8 authentication failed"]
    assert telnet["outcome"] == "A later retry in run 20261126-131000 passed."
    assert "The TLS handshake of web mail" not in problems


def test_all_passed_first_time_means_no_problems(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["scenarios"] = [s for s in manifest["scenarios"] if s["name"] == "telnet-smtp"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert build_context(run_dir)["problems"] == []


def test_changed_capture_file_is_flagged(run_dir: Path) -> None:
    path = run_dir / "telnet-smtp" / "analysis.json"
    path.write_text(path.read_text() + " ")
    files = {f["name"]: f for f in by_name(build_context(run_dir, lang="en"), "telnet-smtp")["files"]}
    assert files["analysis.json"]["check"] == "MISMATCH: the file has changed"
    assert files["transcript.json"]["check"] == "matches"


def pop3_dialogue(listings: int) -> list[dict]:
    """A POP3 session whose middle is ``listings`` LIST commands: not a landmark of the exercise."""
    rows = [("S", "+OK Dovecot ready.", "reply"), ("C", "STLS", "command"), ("S", "+OK Begin TLS", "reply"),
            ("C", "[TLS handshake starts]", "tls"), ("C", "USER student", "command"), ("S", "+OK", "reply"),
            ("C", "PASS «redacted»", "command"), ("S", "+OK Logged in.", "reply")]
    for _ in range(listings):
        rows += [("C", "LIST", "command"), ("S", "+OK 2 messages:\n1 900\n2 800\n.", "reply")]
    rows += [("C", "RETR 1", "command"), ("S", "+OK 900 octets", "reply"), ("S", "RETR message, 900 bytes", "data"),
             ("C", "QUIT", "command"), ("S", "-ERR mailbox locked", "reply")]
    return [{"dir": d, "frame": i + 4, "time": 0.01 * i, "text": x, "kind": k, "explanation": ""}
            for i, (d, x, k) in enumerate(rows)]


def test_section_4_keeps_the_landmarks_and_says_what_it_left_out(run_dir: Path) -> None:
    path = run_dir / "pop3-retrieve" / "analysis.json"
    doc = json.loads(path.read_text())
    doc["streams"][0]["dialogue"] = pop3_dialogue(30)  # 73 lines
    path.write_text(json.dumps(doc))
    sc = by_name(build_context(run_dir, lang="en"), "pop3-retrieve")
    st = sc["streams"][0]
    kept = [x for x in st["shown"] if x["kind"] != "omitted"]
    omitted = [x for x in st["shown"] if x["kind"] == "omitted"]
    assert len(kept) == 20 and st["left_out"] == 53
    assert sum(x["omitted"] for x in omitted) == 53
    texts = [x["text"] for x in kept]
    # every landmark (greeting, TLS, login, transfer, quit, the error) whatever its place
    for landmark in ("+OK Dovecot ready.", "STLS", "[TLS handshake starts]", "USER student", "PASS «redacted»",
                     "+OK Logged in.", "RETR 1", "+OK 900 octets", "RETR message, 900 bytes", "QUIT",
                     "-ERR mailbox locked"):
        assert landmark in texts
    assert [x["frame"] for x in kept] == sorted(x["frame"] for x in kept)  # in capture order
    # each cut says how much, which frames and where the full record is
    assert omitted[0]["text"] == f"… 53 more lines here (frames 19–71): see Appendix {st['number']}"
    assert st["truncated"].startswith("20 of 73 lines are shown here")
    # the appendix holds that record under the anchor section 4 links to: the client's record
    # of the connection, and the lines section 4 left out as the capture has them
    block = next(b for b in sc["appendix"] if b["anchor"] == st["appendix_anchor"])
    assert block["heading"].startswith(f"{st['number']} POP3 session")
    assert "USER student@lab.test" in block["text"]  # the fixture's transcript
    assert block["extra"].count("LIST") == 30 - 4 and "1 900\n2 800" in block["extra"]  # 4 LIST were shown
    assert block["extra"].splitlines()[0].split() == ["19", "0.1500", "S:", "+OK", "2", "messages:"]
    # without a transcript, the capture's whole dialogue
    (run_dir / "pop3-retrieve" / "transcript.json").unlink()
    sc = by_name(build_context(run_dir, lang="en"), "pop3-retrieve")
    block = next(b for b in sc["appendix"] if b["anchor"] == sc["streams"][0]["appendix_anchor"])
    assert block["text"].count("LIST") == 30 and "RETR 1" in block["text"] and not block["extra"]
    html = render_html(run_dir, lang="en").read_text(encoding="utf-8")
    assert f'<a href="#{st["appendix_anchor"]}">… 53 more lines here' in html
    assert f'<h4 id="{st["appendix_anchor"]}">' in html


def test_sequence_diagram_is_an_overview_of_whole_exchanges(run_dir: Path) -> None:
    import xml.etree.ElementTree as ET

    path = run_dir / "pop3-retrieve" / "analysis.json"
    doc = json.loads(path.read_text())
    doc["streams"][0]["dialogue"] = pop3_dialogue(30)
    path.write_text(json.dumps(doc))
    st = by_name(build_context(run_dir, lang="en"), "pop3-retrieve")["streams"][0]
    root = ET.fromstring(str(st["sequence_svg"]))
    labels = [" ".join((e.text or "").replace("\xa0", " ").split()) for e in
              root.iter("{http://www.w3.org/2000/svg}text")]
    arrows = [x.split(" ", 1)[1] for x in labels if x.startswith("#")]
    # the greeting and the error, the whole login and transfer (issue 15: the diagram of the
    # exercise shows PASS and the DATA/RETR phase), then other exchanges in order up to the cap
    assert arrows == ["+OK Dovecot ready.", "STLS", "+OK Begin TLS", "[TLS handshake starts]", "USER student",
                      "+OK", "PASS «redacted»", "+OK Logged in.", *["LIST", "+OK 2 messages: (+3)"] * 5,
                      "RETR 1", "+OK 900 octets", "RETR message, 900 bytes", "QUIT", "-ERR mailbox locked"]
    notes = [x for x in labels if x.startswith("⋯")]
    assert notes == ["⋯ 50 lines not drawn (frames 22–71)"]


def test_short_dialogues_are_shown_whole(run_dir: Path) -> None:
    ctx = build_context(run_dir, lang="en")
    for sc in ctx["scenarios"]:
        for st in sc["streams"]:
            assert not st["left_out"] and st["shown"] == st["lines"]


def test_huge_transcript_and_long_lines_are_capped(run_dir: Path) -> None:
    path = run_dir / "telnet-smtp" / "transcript.json"
    doc = json.loads(path.read_text())
    doc["steps"][0]["events"] = [{"conn": 1, "dir": "S", "time": 0.1, "text": "x" * 5000}] * 2000
    path.write_text(json.dumps(doc))
    path = run_dir / "telnet-smtp" / "analysis.json"
    doc = json.loads(path.read_text())
    doc["streams"][0]["dialogue"][0]["text"] = "y" * 1000 + "\nsecond"
    path.write_text(json.dumps(doc))
    sc = by_name(build_context(run_dir, lang="en"), "telnet-smtp")
    assert len(sc["transcript"]) == 1501
    assert sc["transcript"][-1]["text"] == "(500 more entries left out)"
    assert sc["transcript"][0]["text"] == "x" * 4000 + "… (1000 more characters)"
    assert sc["streams"][0]["shown"][0]["short"] == "y" * 300 + "… (700 more characters) | second"


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no manifest\.json"):
        build_context(tmp_path)


def test_broken_manifest(run_dir: Path) -> None:
    (run_dir / "manifest.json").write_text("[1, 2")
    with pytest.raises(UsageError, match="cannot read"):
        build_context(run_dir)


def test_unknown_language(run_dir: Path) -> None:
    with pytest.raises(UsageError, match="unknown report language 'fr'"):
        build_context(run_dir, lang="fr")


# --- the message catalogue -----------------------------------------------------------------


def test_every_message_has_both_languages_with_the_same_fields() -> None:
    field = re.compile(r"\{(\w+)\}")
    for key, pair in MESSAGES.items():
        assert len(pair) == len(LANGS), key
        assert all(pair), f"{key}: a translation is empty"
        assert set(field.findall(pair[0])) == set(field.findall(pair[1])), key


def test_every_key_the_templates_use_exists() -> None:
    used = set()
    for path in TEMPLATES.rglob("*.html"):
        used |= set(re.findall(r"\bt\.(\w+)", path.read_text(encoding="utf-8")))
    assert used, "the templates print no message at all?"
    assert used - set(catalogue("zh")) == set()


def test_english_report_has_no_chinese_fixed_text(run_dir: Path) -> None:
    ctx = build_context(run_dir, lang="en")
    cjk = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
    assert not [v for v in ctx["t"].values() if cjk.search(v)]


# --- credentials are removed by shape ---------------------------------------------------------


def lines(*pairs: tuple[str, str]) -> list[dict]:
    return [{"dir": d, "text": text} for d, text in pairs]


def texts(rows: list[dict]) -> list[str]:
    return [r["text"] for r in scrub_lines(rows)]


def test_auth_login_password_after_the_password_prompt() -> None:
    got = texts(lines(("C", "AUTH LOGIN"), ("S", "334 VXNlcm5hbWU6"), ("C", "c3R1ZGVudA=="),
                      ("S", "334 UGFzc3dvcmQ6"), ("C", "c2VjcmV0LXB3"), ("S", "235 ok")))
    assert got[2] == "c3R1ZGVudA=="  # the user name stays, as in the seed report
    assert got[4] == REDACTED


def test_auth_login_password_sent_before_its_prompt() -> None:
    # a client that does not wait: the password is the second line, still under "Username:"
    rows = lines(("C", "AUTH LOGIN"), ("S", "334 VXNlcm5hbWU6"), ("C", "c3R1ZGVudA=="), ("C", "c2VjcmV0LXB3"),
                 ("S", "334 UGFzc3dvcmQ6"), ("S", "235 ok"))
    rows[3]["explanation"] = "user name in base64: secret-pw"  # what a confused dissector might say
    got = scrub_lines(rows)
    assert [r["text"] for r in got][2:4] == ["c3R1ZGVudA==", REDACTED]
    assert "secret-pw" not in repr(got)
    # with the user name as initial response, the very next client line is the password
    got = texts(lines(("C", "AUTH LOGIN c3R1ZGVudA=="), ("C", "c2VjcmV0LXB3"), ("S", "235 ok")))
    assert got[1] == REDACTED


def test_tshark_labels_keep_their_label() -> None:
    got = texts(lines(("S", "334 UGFzc3dvcmQ6"), ("C", "Pass: c2VjcmV0LXB3")))
    assert got[1] == f"Pass: {REDACTED}"
    assert texts(lines(("C", "Pass: c2VjcmV0LXB3")))[0] == f"Pass: {REDACTED}"


def test_auth_plain_inline_and_on_the_next_line() -> None:
    assert texts(lines(("C", "AUTH PLAIN AHN0dWRlbnQAc2VjcmV0")))[0] == f"AUTH PLAIN {REDACTED}"
    got = texts(lines(("C", "AUTH PLAIN"), ("S", "334 "), ("C", "AHN0dWRlbnQAc2VjcmV0"), ("S", "235 ok")))
    assert got[2] == REDACTED


def test_pop3_imap_and_http_basic() -> None:
    assert texts(lines(("C", "PASS hunter2")))[0] == f"PASS {REDACTED}"
    assert texts(lines(("C", 'a1 LOGIN "student@lab.test" "hunter 2"')))[0] == \
        f'a1 LOGIN "student@lab.test" {REDACTED}'
    assert texts(lines(("C", "GET / HTTP/1.1\nAuthorization: Basic c3R1OnB3")))[0] == \
        f"GET / HTTP/1.1\nAuthorization: Basic {REDACTED}"


def test_ordinary_lines_are_untouched() -> None:
    rows = lines(("S", "220 mail ESMTP"), ("C", "MAIL FROM:<a@b>"), ("S", "334 VXNlcm5hbWU6"), ("C", "dXNlcg=="))
    assert texts(rows) == [r["text"] for r in rows]


def test_each_tls_stream_gets_the_certificate_of_its_own_connection() -> None:
    from labrunner.report.context import _client_certificates, _stream_certificates
    from labrunner.report.transcript import Transcript

    transcript = Transcript.from_json({"steps": [
        {"connections": [{"port": 443, "tls": {"peer_certificate": {"subject": "CN=first"}}}]},
        {"connections": [{"port": 587, "tls": None},
                         {"port": 443, "tls": {"peer_certificate": {"subject": "CN=second"}}}]},
    ]})
    streams = [{"server": {"port": 443}}, {"server": {"port": 587}}, {"server": {"port": 443}},
               {"server": {"port": 443}}]  # a third stream the client never opened (another program)
    got = _stream_certificates(streams, _client_certificates(transcript))
    assert got == [{443: {"subject": "CN=first"}}, {}, {443: {"subject": "CN=second"}}, {}]


def test_reply_time_chart_says_how_many_bars_it_left_out(run_dir: Path) -> None:
    path = run_dir / "pop3-retrieve" / "analysis.json"
    doc = json.loads(path.read_text())
    doc["streams"][0]["dialogue"] = pop3_dialogue(45)
    path.write_text(json.dumps(doc))
    sc = by_name(build_context(run_dir, lang="en"), "pop3-retrieve")
    bars = sc["streams"][0]["bars"]
    assert len(bars) > 40
    timing = sc["timings"]["timing"]
    assert timing["svg"].count("<rect") == 40
    assert timing["left_out"] == f"The chart shows the first 40 of {len(bars)} commands."


def test_appendix_b_lists_each_key_log_as_a_secret(run_dir: Path) -> None:
    """keylog.txt (TLS session keys) stays beside the capture; the manifest does not list it."""
    keylog = run_dir / "https-webmail" / "keylog.txt"
    keylog.write_text("CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n", encoding="ascii")
    keylog.chmod(0o600)
    empty = run_dir / "telnet-smtp" / "keylog.txt"
    empty.write_text("# TLS secrets log file, generated by OpenSSL / Python\n", encoding="ascii")  # no key
    empty.chmod(0o644)  # widened by hand: flagged like a capture would be
    ctx = build_context(run_dir, lang="en")
    web = {f["name"]: f for f in by_name(ctx, "https-webmail")["files"]}["keylog.txt"]
    assert web["mode"] == "0600" and web["ok"] and web["size"] == keylog.stat().st_size
    assert web["check"] == "mode 0600, readable by you only"
    assert web["secret"] == "TLS session keys (the capture embeds a copy): do not share"
    telnet = {f["name"]: f for f in by_name(ctx, "telnet-smtp")["files"]}["keylog.txt"]
    assert not telnet["ok"] and telnet["check"] == "mode 0644, should be 0600 (chmod 600)"
    assert telnet["secret"] == "empty: this experiment made no TLS connection"
    assert "keylog.txt" not in {f["name"] for f in by_name(ctx, "pop3-retrieve")["files"]}  # none there
    html = render_html(run_dir, lang="zh").read_text(encoding="utf-8")
    row = re.search(r"<tr class=\"ok\"><td><code>https-webmail/keylog\.txt</code> \(0600\).*?</tr>", html, re.S)
    assert row and "TLS 会话密钥" in row.group(0), html[html.find("keylog.txt") - 200:][:800]
    assert re.search(r"<tr class=\"bad\"><td><code>telnet-smtp/keylog\.txt</code> \(0644\)", html)
    assert "keylog.txt 中还有一份" in html  # the warning above the table names it
