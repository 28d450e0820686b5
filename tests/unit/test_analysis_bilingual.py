"""analysis.json says everything in both languages: a report in the other language needs no tshark.

What the analysis words itself (explanations, notes, the text of a gap or of encrypted data,
a TLS suite's parts) is ``{"zh": ..., "en": ...}`` in the document (docs/analysis.md); the
report picks its language (labrunner.text.in_language). Before, analysis.json held the run's
language only, and ``labrunner report --lang en`` of a Chinese run analysed the capture again.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from labrunner.analysis import analyze
from labrunner.analysis.tshark import tshark_version
from labrunner.report.context import build_context
from labrunner.text import in_language, is_pair

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUN_ID = "20261126-141500"
CHINESE = re.compile(r"[\u4e00-\u9fff]")

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@pytest.fixture(scope="module")
def smtp_zh() -> dict:
    return analyze(FIXTURES / "captures" / "smtp-plain.pcapng", lang="zh")  # as a Chinese run writes it


def test_a_report_in_the_other_language_reads_analysis_json_with_tshark_gone(
        smtp_zh: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(FIXTURES / "run", tmp_path / "output")
    folder = tmp_path / "output" / RUN_ID / "telnet-smtp"
    (folder / "analysis.json").write_text(json.dumps(smtp_zh, ensure_ascii=False), encoding="utf-8")
    shutil.copy(FIXTURES / "captures" / "smtp-plain.pcapng", folder / "capture.pcapng")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no tshark to analyse the capture again
    tshark_version.cache_clear()
    try:
        for lang, explained in (("en", "Service ready: the server's greeting, the session can start"),
                                ("zh", "服务就绪：服务器问候，可以开始会话")):
            sc = next(s for s in build_context(tmp_path / "output" / RUN_ID, lang=lang)["scenarios"]
                      if s["name"] == "telnet-smtp")
            (stream,) = sc["streams"]
            said = [line["explanation"] for line in stream["lines"] if line["explanation"]] + stream["notes"]
            assert explained in said
            assert all(bool(CHINESE.search(text)) == (lang == "zh") for text in said), said
    finally:
        tshark_version.cache_clear()


def test_the_document_holds_each_language_as_the_analysis_in_that_language_said_it(smtp_zh: dict) -> None:
    """The pairs carry exactly what analysing in each language gives (asked for in zh or en,
    the document differs only in ``lang``)."""
    smtp_en = analyze(FIXTURES / "captures" / "smtp-plain.pcapng", lang="en")
    assert {**smtp_en, "lang": "zh"} == smtp_zh
    stream = smtp_zh["streams"][0]
    assert all(is_pair(e["explanation"]) for e in stream["dialogue"] if e["explanation"] is not None)
    assert all(is_pair(n) for n in stream["notes"])
    en = in_language(smtp_zh, "en")["streams"][0]
    assert en["notes"] == ["Sent without TLS: anyone on the path can read every line, the password included "
                           "(base64 is an encoding, not encryption)."]
    assert en["dialogue"][0]["explanation"] == "Service ready: the server's greeting, the session can start"
    zh = in_language(smtp_zh, "zh")["streams"][0]
    assert zh["dialogue"][0]["explanation"] == "服务就绪：服务器问候，可以开始会话"


def test_in_language_picks_the_other_language_when_one_is_missing() -> None:
    doc = {"a": [{"zh": "", "en": "only English"}, "as it is"], "b": {"zh": "中文", "en": "English", "c": 1}}
    assert in_language(doc, "zh") == {"a": ["only English", "as it is"], "b": doc["b"]}  # (not a pair: 3 keys)
