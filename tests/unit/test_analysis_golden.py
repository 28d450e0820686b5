"""Golden analysis.json: every fixture capture's analysis, in both languages, byte for byte as checked in.

tests/fixtures/golden/analysis/ holds what ``labrunner analyze --json`` prints and a run writes as
analysis.json for each capture under tests/fixtures/captures/ (with its key log where one exists).
Any change of the analysis's behaviour on them fails here with the first differences by JSON path.
A change on purpose: ``python3 tests/fixtures/make_golden.py``, and say in the commit message what
changed in the documents and why (tests/fixtures/golden/README.md).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIX))
import make_golden as mg  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

CASES = mg.cases()


@pytest.fixture(scope="module")
def docs():
    # all at once, in parallel; those the foreign corpus test already analysed come from its cache
    return mg.documents(CASES)


def test_every_capture_has_a_golden_file_in_each_language_and_no_other_file_is_there():
    assert len(CASES) >= 2 * 30  # the four sandbox captures, browser-login and the foreign corpus
    assert {mg.golden_path(c, lang).is_file() for c, lang in CASES} == {True}
    assert mg.stale() == []


@pytest.mark.parametrize(("capture", "lang"), CASES,
                         ids=[f"{c.relative_to(mg.CAPTURES)}-{lang}" for c, lang in CASES])
def test_analysis_is_the_golden_one(docs, capture, lang):
    problems = mg.check_one(capture, lang, docs[(capture, lang)])
    if problems and (note := mg.version_note()):
        problems.append(note)
    assert not problems, "analysis differs from its golden file (if on purpose: python3 " \
        "tests/fixtures/make_golden.py, and explain in the commit message)\n" + "\n".join(problems)


def test_the_golden_files_are_deterministic_and_hold_no_local_detail():
    # no absolute path, no tshark version (normalised; it is in TSHARK), the run's JSON layout
    for capture, lang in CASES[:4]:
        text = mg.golden_path(capture, lang).read_text(encoding="utf-8")
        assert str(FIX) not in text and "/tmp/" not in text
        doc = json.loads(text)
        assert doc["capture"]["tshark"] == mg.TSHARK_PLACEHOLDER
        assert doc["lang"] == lang
        assert mg.serialise(doc) == text


def test_a_changed_analysis_is_reported_with_the_path_of_its_first_differences(docs):
    capture, lang = next((c, lang) for c, lang in CASES if c.name == "smtp-plain.pcapng" and lang == "en")
    doc = json.loads(json.dumps(docs[(capture, lang)]))
    doc["streams"][0]["dialogue"][1]["text"] += " (changed)"
    doc["stats"]["packets"] += 1
    del doc["notes"]
    problems = mg.check_one(capture, lang, doc)
    was = docs[(capture, lang)]["streams"][0]["dialogue"][1]["text"]
    assert problems[0] == (f"smtp-plain.pcapng.en.json: .streams[0].dialogue[1].text: golden {json.dumps(was)}, "
                           f"now {json.dumps(was + ' (changed)')}")
    assert any(".stats.packets: golden " in p for p in problems)
    assert any(".notes: in the golden file, missing now" in p for p in problems)
