"""The class overview table and the inventory run's argument checks (no sandbox needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labrunner.errors import UsageError
from labrunner.report.overview import render_overview


def row(name: str, **extra: object) -> dict:
    base = {"name": name, "student": {"name": f"学生{name}", "id": name, "class": "计科"}, "target": "10.0.0.1",
            "error": None, "hint": None, "interrupted": False, "scenarios": {}, "errors": {},
            "report_pdf": None, "report_html": None, "run": None}
    base.update(extra)
    return base


def test_error_rows_span_the_scenarios_and_links_stay_relative(tmp_path: Path) -> None:
    doc = {"created": "now", "lab": "lab.yaml", "students": [
        row("s1", scenarios={"pop3": "passed", "imap": "failed"}, errors={"imap": "login <refused>"},
            report_pdf="../../students/s1/r/report.pdf"),
        row("s2", error="host key of 10.0.0.2 has CHANGED", hint="read it on the console"),
    ]}
    html = render_overview(doc, tmp_path / "overview.html").read_text("utf-8")
    assert '<td class="error" colspan="2">host key of 10.0.0.2 has CHANGED<br><small>read it on the console' in html
    assert 'href="../../students/s1/r/report.pdf"' in html and "file://" not in html
    assert 'title="login &lt;refused&gt;"' in html  # a scenario's error, escaped


def test_a_class_where_every_student_failed_still_has_a_result_column(tmp_path: Path) -> None:
    doc = {"created": "now", "lab": "lab.yaml", "students": [row("s1", error="unreachable")]}
    html = render_overview(doc, tmp_path / "overview.html").read_text("utf-8")
    assert "<th>结果 Result</th>" in html and '<td class="error" colspan="1">unreachable' in html


def test_parallel_must_be_at_least_one(tmp_path: Path) -> None:
    from labrunner.config.load import load_lab
    from labrunner.run.inventory import run_inventory
    from labrunner.run.outcome import RunOptions

    (tmp_path / "lab.yaml").write_text(
        "profiles:\n  sandbox: {from_sandbox: true}\n"
        "inventory:\n  - {name: a, target: {host: h}, account: {address: a@b.c}}\n")
    lab = load_lab(tmp_path / "lab.yaml")
    with pytest.raises(UsageError, match=r"--parallel 0: give how many targets run at once, 1 or more"):
        run_inventory(lab, RunOptions(), parallel=0)
    (tmp_path / "lab.yaml").write_text("profiles:\n  sandbox: {from_sandbox: true}\n")
    with pytest.raises(UsageError, match="has no inventory"):
        run_inventory(load_lab(tmp_path / "lab.yaml"), RunOptions())
