"""The report's PDF text for the report fixtures equals tests/fixtures/golden/report/ (see the README there)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GOLDEN_REPORT

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed")


def test_pdf_text_equals_the_golden_files(fixture_report_pdf: Callable[[str, str], Path]) -> None:
    import make_report_golden

    pdfs = {(fixture, lang): fixture_report_pdf(fixture, lang) for fixture, lang in make_report_golden.CASES}
    diffs = make_report_golden.differences(pdfs)
    assert not diffs, (
        "the report's PDF text changed; if on purpose, run `.venv/bin/python "
        f"{GOLDEN_REPORT.relative_to(GOLDEN_REPORT.parents[3])}/make_report_golden.py` and say in the commit message "
        "what changed and why:\n" + "\n\n".join(d[:6000] for d in diffs))
