"""A run folder is data, never code (security review F3, F12, F13, F6): `labrunner report` on a
folder someone handed in runs nothing, fetches nothing, and reads or writes nothing outside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labrunner import cli
from labrunner.errors import ReportError
from labrunner.report import render_html

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run"
RUN_ID = "20261126-141500"
SSTI = '{% set x = cycler.__init__.__globals__.os.system("id > PROOF") %}SSTI-RAN'


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "output")
    return tmp_path / "output" / RUN_ID


def edit_manifest(run_dir: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = run_dir / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _hostile_templates(folder: Path, proof: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text(SSTI.replace("PROOF", str(proof)), encoding="utf-8")
    return folder


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_templates_named_in_the_manifest_are_never_used(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # F3: the review's reproduction, a folder carrying its own template
    proof = tmp_path / "ssti-proof"
    tpl = _hostile_templates(run_dir / "tpl", proof)
    monkeypatch.chdir(run_dir.parent.parent)
    value = str(tpl) if where == "absolute" else f"output/{RUN_ID}/tpl"
    edit_manifest(run_dir, lambda m: m["report"].update(templates=value))
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == 0
    assert not proof.exists()
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "SSTI-RAN" not in html and "2 实验环境" in html  # the built-in templates


def test_a_template_runs_in_jinjas_sandbox(run_dir: Path, tmp_path: Path) -> None:
    # even a folder given on purpose (--templates, lab.yaml) cannot reach Python's globals
    proof = tmp_path / "ssti-proof"
    tpl = _hostile_templates(tmp_path / "given", proof)
    with pytest.raises(ReportError, match="may not do"):
        render_html(run_dir, templates_dir=tpl)
    assert not proof.exists()


def test_the_sandboxed_templates_keep_autoescape(run_dir: Path) -> None:
    edit_manifest(run_dir, lambda m: m["report"]["student"].update(name="<b>x</b>"))
    html = render_html(run_dir).read_text(encoding="utf-8")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


def _png(path: Path, width: int, height: int) -> Path:
    from PIL import Image

    Image.new("RGB", (width, height), (200, 30, 30)).save(path)
    return path


def _image_sizes(pdf: Path) -> set[tuple[int, int]]:
    import subprocess

    out = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    return {(int(cols[3]), int(cols[4])) for cols in (line.split() for line in out.splitlines()[2:])}


@pytest.mark.skipif(shutil.which("pdfimages") is None, reason="poppler-utils is not installed")
def test_the_pdf_fetches_nothing_outside_the_run_folder(run_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # F12: Markdown images in notes made WeasyPrint call a URL and embed any local file
    import http.server
    import threading

    from labrunner.report import render_report

    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write((tmp_path / "served.png").read_bytes())

        def log_message(self, *args: object) -> None:
            pass

    _png(tmp_path / "served.png", 53, 31)
    outside = _png(tmp_path / "outside.png", 41, 29)
    _png(run_dir / "inside.png", 37, 23)  # a student's screenshot copied into the run folder
    (run_dir / "telnet-smtp" / "link.png").symlink_to(outside)  # a symlink out is outside too
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ssrf-from-notes?x=1"
        notes = (f"![a]({url}) ![b]({outside}) ![c](file://{outside}) ![d](telnet-smtp/link.png) "
                 f"![e](../../outside.png) ![f](inside.png)")
        edit_manifest(run_dir, lambda m: m["scenarios"][0].update(notes={"zh": notes, "en": notes}))
        pdf = render_report(run_dir)["pdf"]
    finally:
        server.shutdown()
        server.server_close()
    assert asked == []
    sizes = _image_sizes(pdf)
    assert (37, 23) in sizes  # files under the run folder are still embedded
    assert (41, 29) not in sizes and (53, 31) not in sizes
    note = capsys.readouterr().err.splitlines()
    assert len(note) == 1 and note[0].startswith("labrunner: note: report.pdf leaves out") and url in note[0]


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed")
def test_symlinks_planted_in_the_run_folder_are_not_written_through(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # F6: `.report.pdf.tmp` had a fixed name and WeasyPrint wrote through it
    import os
    import stat

    victims = {}
    for name in (".report.pdf.tmp", f".report.html.tmp{os.getpid()}", "report.pdf"):
        victim = tmp_path / f"victim{len(victims)}.txt"
        victim.write_text("precious\n")
        victim.chmod(0o600)
        (run_dir / name).symlink_to(victim)
        victims[victim] = name
    assert cli.main(["report", str(run_dir)]) == 0
    for victim in victims:
        assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    pdf = run_dir / "report.pdf"
    assert not pdf.is_symlink() and pdf.read_bytes().startswith(b"%PDF")
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_a_lone_surrogate_in_a_scenarios_json_is_shown_not_a_crash(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run_dir / "telnet-smtp" / "transcript.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["steps"][0]["host"] = "mail\ud800.lab.test"  # a field printed as it is
    path.write_text(json.dumps(doc), encoding="utf-8")  # "\ud800" as JSON writes it
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == 0, capsys.readouterr().err
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "mail\\ud800.lab.test" in html
