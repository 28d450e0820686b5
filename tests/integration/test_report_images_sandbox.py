"""A screenshot in a scenario's notes, through a real sandbox run: copied into the run folder,
embedded in report.html and report.pdf, and the report re-rendered from a copy of the folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from labfiles import SCENARIOS, cli, write_lab  # type: ignore[import-not-found]  # same folder

pytestmark = pytest.mark.integration


def pdf_images(pdf: Path) -> list[tuple[str, str]]:
    """(width, height) of each image drawn in the PDF, as poppler's pdfimages lists them."""
    out = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    return [(row.split()[3], row.split()[4]) for row in out.splitlines()[2:]]


def test_screenshot_in_notes_is_embedded_in_html_and_pdf(sandbox: dict[str, Any], sandbox_instance: str,
                                                         tmp_path: Path) -> None:
    from PIL import Image

    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    text = (SCENARIOS / "plain-smtp.yaml").read_text(encoding="utf-8")
    shot = "    ![QQ 邮箱开启 POP3/SMTP 服务](shots/qq-settings.png)\n\n"
    text = text.replace("notes:\n  zh: |\n", "notes:\n  zh: |\n" + shot, 1)
    (scenarios / "plain-smtp.yaml").write_text(text, encoding="utf-8")
    (scenarios / "shots").mkdir()
    Image.new("RGB", (320, 120), (31, 95, 168)).save(scenarios / "shots" / "qq-settings.png")
    lab = write_lab(tmp_path, sandbox_instance, scenarios_dir=scenarios)

    res = cli(lab, "run", "plain-smtp", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(json.loads(res.stdout)["run"])
    (copied,) = list((run_dir / "plain-smtp" / "images").iterdir())
    assert copied.read_bytes() == (scenarios / "shots" / "qq-settings.png").read_bytes()
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert '<img src="data:image/png;base64,' in html and 'alt="QQ 邮箱开启 POP3/SMTP 服务"' in html
    assert pdf_images(run_dir / "report.pdf") == [("320", "120")]
    # the run folder holds it: the original may go, the report still shows it
    (scenarios / "shots" / "qq-settings.png").unlink()
    assert cli(lab, "report", str(run_dir)).returncode == 0
    assert pdf_images(run_dir / "report.pdf") == [("320", "120")]
    # a missing image: one line naming the file and the note, exit 2, no run folder made
    runs = sorted(p.name for p in run_dir.parent.iterdir())
    res = cli(lab, "run", "plain-smtp")
    assert res.returncode == 2
    assert res.stderr.splitlines()[0] == (
        f"labrunner: error: plain-smtp.yaml: notes.zh: image 'shots/qq-settings.png' not found "
        f"(looked for {scenarios / 'shots' / 'qq-settings.png'})")
    assert sorted(p.name for p in run_dir.parent.iterdir()) == runs
    shutil.rmtree(scenarios / "shots")
