"""The teaching assistant's overview of a class run: one row per student, one column per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labrunner.runfolder import write_bytes_atomic

TEMPLATE = "overview.html"


def render_overview(doc: dict[str, Any], out: Path, *, templates_dir: Path | str | None = None) -> Path:
    from labrunner.report.render import environment

    scenarios: list[str] = []
    for row in doc["students"]:
        for name in row["scenarios"]:
            if name not in scenarios:
                scenarios.append(name)
    html = environment(templates_dir).get_template(TEMPLATE).render(doc=doc, scenarios=scenarios)
    write_bytes_atomic(out, html.encode("utf-8"))
    return out
