"""Fixtures shared by the unit tests' modules."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

GOLDEN_REPORT = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "report"


@pytest.fixture(scope="session")
def fixture_report_pdf(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``fixture_report_pdf("sandbox-run", "zh")``: the PDF of a copy of tests/fixtures/FIXTURE rendered
    in LANG, rendered once per session (the golden PDF text and the body-length test read the same one)."""
    if str(GOLDEN_REPORT) not in sys.path:
        sys.path.insert(0, str(GOLDEN_REPORT))
    import make_report_golden

    done: dict[tuple[str, str], Path] = {}

    def pdf(fixture: str, lang: str) -> Path:
        if (fixture, lang) not in done:
            done[fixture, lang] = make_report_golden.render(fixture, lang, tmp_path_factory.mktemp(f"{fixture}-{lang}"))
        return done[fixture, lang]

    return pdf
