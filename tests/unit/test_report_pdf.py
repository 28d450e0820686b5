"""report.pdf: read back with poppler and pypdf: sections, TOC page numbers, footers, CJK fonts."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_html import FIXTURE, RUN_ID, assert_no_secret, edit_json, leak_secret

from labrunner.errors import ReportError
from labrunner.report import render_report
from labrunner.report.pdf import missing_glyphs, render_pdf, visible

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed")


@functools.lru_cache(maxsize=4)
def page_texts(pdf: Path) -> list[str]:
    from pypdf import PdfReader

    count = len(PdfReader(pdf).pages)
    return [subprocess.run(["pdftotext", "-layout", "-f", str(n), "-l", str(n), str(pdf), "-"],
                           capture_output=True, text=True, check=True).stdout for n in range(1, count + 1)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture run with a leaked password, rendered once in each language."""
    out = {}
    for lang in ("zh", "en"):
        root = tmp_path_factory.mktemp(lang)
        shutil.copytree(FIXTURE, root / "output")
        run_dir = root / "output" / RUN_ID
        leak_secret(run_dir)
        res = render_report(run_dir, lang=lang)
        assert res["pdf"] == run_dir / ("report.pdf" if lang == "zh" else "report.en.pdf") and res["timings"]["pdf"] > 0
        out[lang] = res["pdf"]
    return out


def toc_entries(text: str) -> list[tuple[str, int]]:
    entries = []
    for line in text.splitlines():
        m = re.match(r"^\s*(\S.*?)\s*\.{4,}\s*(\d+)\s*$", line)
        if m:
            entries.append((m.group(1).strip(), int(m.group(2))))
    return entries


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_toc_page_numbers_point_at_the_headings(rendered: dict[str, Path], lang: str) -> None:
    pages = page_texts(rendered[lang])
    entries = toc_entries(pages[1])
    # chapters, the handout's 4.2-4.4, 4.x.y per scenario, 5.x, appendix A-G
    assert len(entries) == 5 + 3 + 5 + 2 + 1 + 7
    numbers = [n for _, n in entries]
    assert numbers == sorted(numbers) and numbers[0] > 2  # after cover and contents
    for title, page in entries:
        body = re.sub(r"\s+", " ", pages[page - 1])
        assert re.sub(r"\s+", " ", title) in body, f"{title!r} is not on page {page}"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_page_but_the_cover_is_numbered(rendered: dict[str, Path], lang: str) -> None:
    pages = page_texts(rendered[lang])
    total = len(pages)
    assert total > 10
    assert not re.search(r"\d+ / \d+", pages[0])
    for n, text in enumerate(pages[1:], 2):
        assert f"{n} / {total}" in text, f"page {n} has no page number"
        # the running header: the lab title on every page after the cover
        assert "实验5 电子邮件" in text


def test_chinese_report_text_and_sections(rendered: dict[str, Path]) -> None:
    text = "\n".join(page_texts(rendered["zh"]))
    for needle in ("实验报告", "张三", "2022012345", "1 实验目的", "2 实验环境", "3 实验内容",
                   "4 实验结果与分析", "5 实验总结", "5.1 遇到的问题与解决方法", "5.2 心得体会",
                   "注意：抓包文件包含明文凭据", "表 1 目标主机环境", "图 1 SMTP 时序图",
                   "HELO lab-client", "Debian GNU/Linux 12", "运行 20261126-140210 中失败"):
        assert needle in text, needle


def test_english_report_text(rendered: dict[str, Path]) -> None:
    text = "\n".join(page_texts(rendered["en"]))
    for needle in ("Lab Report", "1 Objectives", "Table 1 Target host environment", "Figure 1 SMTP sequence",
                   "A later retry in run 20261126-141500 passed.", "encrypted in TLS 1.3"):
        assert needle in text, needle


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_no_password_in_the_pdf(rendered: dict[str, Path], lang: str) -> None:
    assert_no_secret("\n".join(page_texts(rendered[lang])))
    assert_no_secret(rendered[lang].with_suffix(".html").read_text(encoding="utf-8"))


def test_cjk_fonts_are_embedded(rendered: dict[str, Path]) -> None:
    out = subprocess.run(["pdffonts", str(rendered["zh"])], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()[2:]]
    names = {row[0].split("+", 1)[-1]: row for row in rows}
    assert "Noto-Sans-CJK-SC" in names and "Noto-Sans-Mono-CJK-SC" in names
    assert all(row[-5] == "yes" for row in rows), "every font must be embedded"  # the emb column
    assert not [n for n in names if "DejaVu" in n or "Liberation" in n], "a fallback font was used"


def test_a_character_no_font_has_stops_the_pdf(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "output")
    run_dir = tmp_path / "output" / RUN_ID
    # U+10FFFD is a private-use code point: no installed font draws it
    edit_json(run_dir / "manifest.json", lambda m: m["scenarios"][0]["notes"].update(zh="坏字符 \U0010fffd 在这里"))
    with pytest.raises(ReportError, match=r"U\+10FFFD .*坏字符"):
        render_report(run_dir)
    assert not (run_dir / "report.pdf").exists()
    assert (run_dir / "report.html").exists()  # the HTML is still there to look at


def test_emoji_from_a_real_mailbox_render_in_colour(tmp_path: Path) -> None:
    """Subjects in a real inbox (IMAP FETCH of the newest mail) carry emoji: they must draw."""
    shutil.copytree(FIXTURE, tmp_path / "output")
    run_dir = tmp_path / "output" / RUN_ID
    edit_json(run_dir / "manifest.json", lambda m: m["scenarios"][0]["notes"].update(zh="限时优惠 🎉🔥 ✉️"))
    paths = render_report(run_dir)
    fonts = subprocess.run(["pdffonts", str(paths["pdf"])], capture_output=True, text=True, check=True).stdout
    assert "Noto-Color-Emoji" in fonts  # found by fontconfig, no CSS needed
    assert "🎉" in subprocess.run(["pdftotext", str(paths["pdf"]), "-"], capture_output=True, text=True,
                                 check=True).stdout


def test_glyph_check_passes_for_chinese_and_symbols() -> None:
    assert missing_glyphs("<p>实验 «redacted» → 你好 &amp; ½ …</p><style>x{content:'\U0010fffd'}</style>") == {}


def test_pdf_needs_the_html_first(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"report\.html does not exist"):
        render_pdf(tmp_path)


def test_a_captured_character_no_font_has_is_shown_as_its_code_point(tmp_path: Path) -> None:
    """Data the run recorded (a subject, a server reply, the client's record) cannot stop the PDF:
    each character no font draws becomes a visible [U+XXXX]; the report's own text keeps the check."""
    shutil.copytree(FIXTURE, tmp_path / "output")
    run_dir = tmp_path / "output" / RUN_ID
    bad = "\U0010fffd"

    def analysis(doc: dict) -> None:
        doc["streams"][0]["mail"][0]["subject"] = f"坏{bad}主题"
        doc["streams"][0]["dialogue"][0]["text"] = f"220 mail.lab.test {bad} ESMTP"

    def transcript(doc: dict) -> None:
        doc["steps"][0]["events"][0]["text"] = f"greeting {bad}"

    edit_json(run_dir / "telnet-smtp" / "analysis.json", analysis)
    edit_json(run_dir / "telnet-smtp" / "transcript.json", transcript)
    paths = render_report(run_dir, lang="en")
    assert paths["pdf"] is not None and paths["pdf"].is_file()
    html = paths["html"].read_text(encoding="utf-8")
    assert bad not in html
    text = re.sub(r"\s+", " ", "\n".join(page_texts(paths["pdf"])))
    for needle in ("坏[U+10FFFD]主题", "220 mail.lab.test [U+10FFFD] ESMTP", "greeting [U+10FFFD]"):
        assert needle in text, needle


def test_visible_keeps_what_a_font_draws() -> None:
    assert visible("EHLO lab-client") == "EHLO lab-client"
    assert visible("实验5 «redacted» 🎉 é") == "实验5 «redacted» 🎉 é"
    assert visible("a\U0010fffdb\U0010fffe") == "a[U+10FFFD]b[U+10FFFE]"


def word_boxes(pdf: Path) -> list[tuple[int, float, float, float, str]]:
    """(page, page width, xMin, xMax, word) of every word poppler finds in the PDF."""
    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True,
                         check=True).stdout
    boxes = []
    page, width = 0, 0.0
    for line in out.splitlines():
        if m := re.search(r'<page width="([\d.]+)"', line):
            page, width = page + 1, float(m.group(1))
        elif m := re.search(r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)"[^>]*>(.*)</word>', line):
            boxes.append((page, width, float(m.group(1)), float(m.group(2)), m.group(3)))
    return boxes


def test_long_message_ids_wrap_inside_the_mail_table(tmp_path: Path) -> None:
    """Message-IDs and encoded subjects are single tokens: in the one-column-per-message summary
    they must break inside their cell, not run into the next column and off the page."""
    shutil.copytree(FIXTURE, tmp_path / "output")
    run_dir = tmp_path / "output" / RUN_ID
    ids = [f"<{n}{'7' * 100}.{n}.{'1' * 8}@lab-client.example.test>" for n in range(3)]
    assert all(len(i) >= 120 for i in ids)

    def three_mails(doc: dict) -> None:
        first = doc["streams"][0]["mail"][0]
        doc["streams"][0]["mail"] = [{**first, "frame": 30 + n, "message_id": mid,
                                      "subject_raw": "=?utf-8?b?" + "5a6e6aqMNSBTVEFSVFRMUyDmtYvor5U" * 3 + f"{n}=?="}
                                     for n, mid in enumerate(ids)]

    edit_json(run_dir / "pop3-retrieve" / "analysis.json", three_mails)
    pdf = render_report(run_dir, lang="en")["pdf"]
    assert pdf is not None
    right_margin = 18 / 25.4 * 72  # @page margin in print.css
    boxes = word_boxes(pdf)
    beyond = [(page, word, x_max) for page, width, _, x_max, word in boxes if x_max > width - right_margin + 1]
    assert not beyond, f"words past the right margin: {beyond[:5]}"
    # every ID is whole in the PDF: its pieces follow one another in the drawing order (-raw)
    raw = subprocess.run(["pdftotext", "-raw", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    text = re.sub(r"\s+", "", raw)
    for mid in ids:
        assert mid in text


def test_english_report_goes_beside_the_chinese_one_with_its_own_cover(tmp_path: Path) -> None:
    """`report --lang en` writes report.en.html/.pdf and leaves the Chinese files as they were;
    the cover's school, course, lab and name come in each language (issue 15)."""
    import hashlib

    shutil.copytree(FIXTURE, tmp_path / "output")
    run_dir = tmp_path / "output" / RUN_ID

    def cover(m: dict) -> None:
        m["lang"] = "zh"
        m["report"].update(school={"zh": "示例大学", "en": "Example University"},
                           course={"zh": "计算机网络", "en": "Computer Networks"},
                           lab={"zh": "实验5 电子邮件", "en": "Lab 5: E-mail"},
                           student={"name": {"zh": "张三", "en": "Zhang San"}, "id": "2022012345", "class": "CS1"})

    edit_json(run_dir / "manifest.json", cover)
    zh = render_report(run_dir)
    assert (zh["html"].name, zh["pdf"].name) == ("report.html", "report.pdf")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (zh["html"], zh["pdf"])}
    en = render_report(run_dir, lang="en")
    assert (en["html"].name, en["pdf"].name) == ("report.en.html", "report.en.pdf")
    after = {p.name: hashlib.sha256((run_dir / p.name).read_bytes()).hexdigest() for p in (zh["html"], zh["pdf"])}
    assert after == before  # the Chinese report untouched
    en_cover = page_texts(en["pdf"])[0]
    for needle in ("Lab Report", "Example University", "Computer Networks", "Lab 5: E-mail", "Zhang San"):
        assert needle in en_cover, needle
    zh_cover = re.sub(r"\s+", "", page_texts(zh["pdf"])[0])  # the school is letter-spaced
    assert "示例大学" in zh_cover and "张三" in zh_cover and "Example University" not in zh_cover
