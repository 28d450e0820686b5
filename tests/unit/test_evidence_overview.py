"""The class overview's verify column and flags (report/overview.py), on the recorded runs of
tests/fixtures/run: reports made before the evidence existed cannot be verified and say so; a
report taking a scenario from a run of another profile is flagged; template text is flagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labrunner.report.overview import render_overview, review_rows

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "run"


def _row(run: str | None, **extra: object) -> dict:
    row = {"name": "s1", "student": {"name": "学生", "id": "s1", "class": "计科"}, "target": "10.0.0.1",
           "error": None, "hint": None, "interrupted": False, "scenarios": {"telnet-smtp": "passed"}, "errors": {},
           "report_pdf": None, "report_html": None, "run": run}
    row.update(extra)
    return row


@pytest.fixture
def overview(tmp_path: Path) -> tuple[Path, Path]:
    output = tmp_path / "output"
    shutil.copytree(RUNS, output)
    # the scenario reused from another run came from another profile
    manifest = json.loads((output / "20261126-141500" / "manifest.json").read_text("utf-8"))
    manifest["origin"] = {"profile": "sandbox", "sandbox": "ux"}
    next(e for e in manifest["scenarios"] if e["name"] == "smtp-starttls")["origin"] = {"profile": "myecs",
                                                                                       "target": "203.0.113.7"}
    (output / "20261126-141500" / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    folder = tmp_path / "class" / "20261126-150000"
    folder.mkdir(parents=True)
    return output / "20261126-141500", folder


def test_flags_a_report_mixing_runs_and_profiles_and_left_template_text(overview: tuple[Path, Path]) -> None:
    run, folder = overview
    manifest = json.loads((run / "manifest.json").read_text("utf-8"))
    manifest["scenarios"][0]["notes"] = {"zh": "### 体会\n（在此写下你的体会。）", "en": ""}
    (run / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    rows = [_row("../../output/20261126-141500"), _row(None, error="unreachable")]
    review_rows(rows, folder)
    assert rows[0]["mixed_runs"] == ["smtp-starttls: run 20261126-140210 (profile myecs, target 203.0.113.7, "
                                     "not profile sandbox, sandbox ux)"]
    assert rows[0]["template_text"] == ["telnet-smtp"]
    # recorded before sanitized captures existed: verify cannot pass it
    verdict = rows[0]["verify"]
    assert verdict["status"] == "differs"
    assert "telnet-smtp: sanitized.pcapng is missing, so the report cannot be checked against a capture" \
        in verdict["differences"]
    assert rows[1]["verify"] is None and rows[1]["mixed_runs"] == []
    html = render_overview({"created": "now", "lab": "lab.yaml", "students": rows},
                           folder / "overview.html").read_text("utf-8")
    assert '<td class="verify-differs"' in html and "不一致 differs" in html
    assert "沿用其他运行 from another run: smtp-starttls: run 20261126-140210 (profile myecs" in html
    assert "模板文字未替换 template text left: telnet-smtp" in html


def test_a_report_that_is_not_there_is_unchecked(overview: tuple[Path, Path]) -> None:
    _, folder = overview
    rows = [_row("../../output/20261126-141500", report_pdf="../../output/20261126-141500/report.pdf")]
    review_rows(rows, folder)
    assert rows[0]["verify"]["status"] == "unchecked" and "no such file" in rows[0]["verify"]["text"]
