"""report.html: escaping, no secrets, user templates first, one-line errors."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from labrunner import cli
from labrunner.errors import ReportError
from labrunner.report import render_html
from labrunner.secrets import Redactor, secret_forms

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run"
RUN_ID = "20261126-141500"
SECRET = "S3cr3t-pw!x"
USER = "student@lab.test"
XSS = "<script>alert(1)</script>"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "output")
    return tmp_path / "output" / RUN_ID


def edit_json(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def leak_secret(run_dir: Path) -> None:
    """Put the password, in the forms a buggy writer could leave, into every input file."""
    def telnet(doc: dict) -> None:
        for line in doc["streams"][0]["dialogue"]:
            if line["text"].startswith("Pass:"):
                line["text"] = "Pass: " + b64(SECRET.encode())

    def starttls(doc: dict) -> None:
        for line in doc["streams"][0]["dialogue"]:
            if line["text"].startswith("AUTH PLAIN"):
                line["text"] = "AUTH PLAIN " + b64(b"\0" + USER.encode() + b"\0" + SECRET.encode())

    def pop3(doc: dict) -> None:
        for line in doc["streams"][0]["dialogue"]:
            if line["text"].startswith("PASS"):
                line["text"] = "PASS " + SECRET

    def transcript(doc: dict) -> None:
        for event in doc["steps"][0]["events"]:
            if event["text"] == "«redacted»":
                event["text"] = b64(SECRET.encode()) if event["dir"] == "C" else event["text"]

    edit_json(run_dir / "telnet-smtp" / "analysis.json", telnet)
    edit_json(run_dir / "smtp-starttls" / "analysis.json", starttls)
    edit_json(run_dir / "pop3-retrieve" / "analysis.json", pop3)
    edit_json(run_dir / "telnet-smtp" / "transcript.json", transcript)


def assert_no_secret(text: str) -> None:
    found = [form for form in secret_forms(SECRET, [USER]) if form in text]
    assert not found, f"secret forms in the output: {found}"


def test_renders_every_section_in_both_languages(run_dir: Path) -> None:
    zh = render_html(run_dir).read_text(encoding="utf-8")
    for heading in ("1 实验目的", "2 实验环境", "3 实验内容", "4 实验结果与分析", "5 实验总结", "附录",
                    "4.4 使用 telnet 收发邮件", "4.4.1 使用 telnet 发送邮件", "5.1 遇到的问题与解决方法"):
        assert heading in zh
    assert 'lang="zh-CN"' in zh
    en = render_html(run_dir, lang="en").read_text(encoding="utf-8")
    for heading in ("1 Objectives", "4 Results and Analysis", "4.2.1 Sending a message with an attachment",
                    "5.2 Reflections", "Warning: the capture files contain credentials"):
        assert heading in en


def test_html_is_self_contained(run_dir: Path) -> None:
    html = render_html(run_dir).read_text(encoding="utf-8")
    assert "<svg" in html and "<style>" in html
    assert "<link" not in html and "<img" not in html and "<script" not in html


def test_password_in_any_form_never_reaches_the_report(run_dir: Path) -> None:
    leak_secret(run_dir)
    raw = (run_dir / "telnet-smtp" / "analysis.json").read_text()
    assert b64(SECRET.encode()) in raw  # the leak is really there
    assert_no_secret(render_html(run_dir).read_text(encoding="utf-8"))
    assert_no_secret(render_html(run_dir, lang="en").read_text(encoding="utf-8"))


def test_free_text_secret_is_redacted_when_the_caller_knows_it(run_dir: Path) -> None:
    edit_json(run_dir / "manifest.json",
              lambda m: m["scenarios"][4].update(error=f"login failed for password {SECRET}"))
    redactor = Redactor()
    redactor.add(SECRET, [USER])
    html = render_html(run_dir, redact=redactor).read_text(encoding="utf-8")
    assert_no_secret(html)
    assert "login failed for password «redacted»" in html


def test_captured_strings_and_notes_are_escaped(run_dir: Path) -> None:
    def subject(doc: dict) -> None:
        doc["streams"][0]["mail"][0]["subject"] = XSS
        doc["streams"][0]["dialogue"][1]["text"] = f"HELO {XSS}"

    edit_json(run_dir / "telnet-smtp" / "analysis.json", subject)
    edit_json(run_dir / "manifest.json", lambda m: m["scenarios"][0]["notes"].update(
        zh=f"**粗体** {XSS} [x](javascript:alert(1))"))
    html = render_html(run_dir).read_text(encoding="utf-8")
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<strong>粗体</strong>" in html  # Markdown still works
    assert 'href="javascript:' not in html


def test_user_templates_override_single_files(run_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mytemplates" / "partials"
    mine.mkdir(parents=True)
    (mine / "cover.html").write_text('<section class="cover">SCHOOL LOGO {{ meta.student }}</section>\n')
    html = render_html(run_dir, templates_dir=mine.parent).read_text(encoding="utf-8")
    assert "SCHOOL LOGO 张三" in html
    assert "2 实验环境" in html  # the built-in partials are still used


def test_templates_folder_from_lab_yaml_in_cli_report(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "course"
    folder.mkdir()
    (folder / "print.css").write_text("/* COURSE CSS */")
    (tmp_path / "lab.yaml").write_text("report: {templates: course}\nprofiles:\n  sandbox: {from_sandbox: true}\n",
                                       encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == 0
    assert "/* COURSE CSS */" in (run_dir / "report.html").read_text(encoding="utf-8")


def test_template_using_an_unknown_name_is_one_clear_error(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad" / "partials"
    folder.mkdir(parents=True)
    (folder / "cover.html").write_text("{{ t.no_such_message }}")
    with pytest.raises(ReportError, match="unknown name"):
        render_html(run_dir, templates_dir=folder.parent)
    (folder / "cover.html").write_text("{% if %}")
    with pytest.raises(ReportError, match=r"cover.html:1: template syntax error"):
        render_html(run_dir, templates_dir=folder.parent)
    (folder / "cover.html").write_text("{{ meta.student + 1 }}")
    with pytest.raises(ReportError, match=r"failed: TypeError: can only concatenate str"):
        render_html(run_dir, templates_dir=folder.parent)


def test_missing_data_is_said_not_invented(run_dir: Path) -> None:
    edit_json(run_dir / "manifest.json", lambda m: m.update(target={}))
    html = render_html(run_dir, lang="en").read_text(encoding="utf-8")
    assert html.count("not captured") >= 5
    assert "No analysis (analysis.json was not written)" in html


def test_cli_report_without_pdf(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(run_dir), "--no-pdf", "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"report.html: {run_dir / 'report.en.html'}"  # beside the run's own (zh) report


def test_cli_report_resolves_latest_in_the_output_folder(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(run_dir.parent.parent)  # no lab.yaml here: ./output is used
    (run_dir.parent / "latest").symlink_to(RUN_ID)
    assert cli.main(["report", "--no-pdf"]) == 0
    assert str(run_dir.resolve() / "report.html") in capsys.readouterr().out


def test_cli_report_bad_run_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "20990101-000000", "--no-pdf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labrunner: error: no run '20990101-000000'")
    assert "Traceback" not in err


def test_builtin_templates_are_compiled_once_per_process(run_dir: Path, tmp_path: Path) -> None:
    from labrunner.report import render

    render.warm()  # what the runner does while the scenarios run
    env = render.environment()
    compiled = env.get_template("report.html")
    render_html(run_dir)
    assert render.environment() is env and env.get_template("report.html") is compiled
    # a course's folder is read afresh each time: its files may change between two renders
    (tmp_path / "print.css").write_text("/* A */")
    assert render.environment(tmp_path) is not render.environment(tmp_path)


def test_students_own_problems_and_solutions_lead_section_5_1(run_dir: Path, tmp_path: Path) -> None:
    """report.problems (lab.yaml) is the student's own 5.1, in Markdown, before what the runs recorded."""
    from labrunner.config import load_lab

    lab_yaml = tmp_path / "lab.yaml"
    lab_yaml.write_text("report:\n  problems:\n    zh: |\n"
                        "      **Xftp 连不上服务器**：换到校园网后恢复，原因是服务器防火墙。\n"
                        "    en: Xftp could not connect; the campus network fixed it.\n"
                        "profiles:\n  sandbox: {from_sandbox: true}\n", encoding="utf-8")
    problems = load_lab(lab_yaml).report.problems
    edit_json(run_dir / "manifest.json", lambda m: m.update(problems={"zh": problems.zh, "en": problems.en}))
    zh = render_html(run_dir).read_text(encoding="utf-8")
    section = zh[zh.index('id="sec-problems"'):zh.index('id="sec-reflections"')]
    assert "<strong>Xftp 连不上服务器</strong>：换到校园网后恢复" in section
    logged = section.index("运行中自动记录的失败与重试")
    assert section.index("Xftp") < logged < section.index("运行 20261126-140210 中失败")
    en = render_html(run_dir, lang="en").read_text(encoding="utf-8")
    assert "Xftp could not connect; the campus network fixed it." in en


def test_recorded_errors_and_hints_are_in_the_reports_language(run_dir: Path) -> None:
    from labrunner.report.i18n import localize

    error = ("SMTP smtp.lab.test:25 cannot be reached from the target (smtp.lab.test:25: connection refused), "
             "but port 465 and 587 can: outbound port 25 is blocked, probably by the cloud provider")
    zh = localize(error, "zh")
    assert zh == ("目标主机连不上 SMTP 服务器 smtp.lab.test 的 25 端口（smtp.lab.test:25: connection refused），"
                  "但 465、587 端口可以连通：出站 25 端口被封禁了，多半是云服务商所为")
    assert localize(error, "en") == error
    from labrunner.executor._wire import PORT25_HINT

    assert "25 端口解封" in str(localize(PORT25_HINT, "zh"))
    assert localize("mail.lab.test:993: the server's certificate was not accepted: unable to get local issuer "
                    "certificate", "zh") == "mail.lab.test:993：服务器证书未通过验证：unable to get local issuer " \
                                              "certificate"
    assert localize("something new", "zh") == "something new"  # unknown: as it was


CONTROLS = "\x1b[2J\x1b]0;PWNED\x07\x00\x08\x7f\x9b\u202e"


def test_control_bytes_from_a_server_are_escaped_in_the_page(run_dir: Path) -> None:
    """F22: a hostile server's ESC, BEL, NUL, C1 and bidi override reached report.html raw."""
    def hostile(doc: dict) -> None:
        doc["streams"][0]["dialogue"][0]["text"] = f"220 hello{CONTROLS}end"
        doc["streams"][0]["mail"][0]["subject"] = f"subj{CONTROLS}"

    edit_json(run_dir / "telnet-smtp" / "analysis.json", hostile)
    html = render_html(run_dir).read_text(encoding="utf-8")
    assert not [ch for ch in CONTROLS if not ch.isprintable() and ch in html]
    assert "220 hello\\x1b[2J\\x1b]0;PWNED\\x07\\x00\\x08\\x7f\\x9b\\u202eend" in html


def test_a_hand_made_error_of_megabytes_is_shown_as_written_not_matched() -> None:
    """The error patterns backtrack (quadratic on a text made to defeat them: 0.9 s at 76 KB, hours
    at a few MB in a hand-edited transcript.json); an error longer than any labrunner writes is
    left as it is, a real one is still translated."""
    from labrunner.report.i18n import localize

    real = ("SMTP a.test:25 cannot be reached from the target (timed out), but port 587 can: "
            "outbound port 25 is blocked, probably by the cloud provider")
    hostile = ("SMTP a:25 cannot be reached from the target (" + "), but port x can: " * 300 + "), but port "
               "587 can: outbound port 25 is blocked, probably by the cloud provider")
    assert localize(hostile, "zh") == hostile  # (it fits the pattern: matched, it took the backtracking)
    assert localize(real, "zh") != real
