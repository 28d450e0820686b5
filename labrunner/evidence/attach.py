"""The files report.pdf carries as attachments: the manifest, and per scenario the analysis the
report was rendered from and the sanitized capture it came from. The report's appendix lists
them with their SHA-256; ``labrunner verify`` reads them back (verify.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrunner.errors import UsageError
from labrunner.evidence.sanitize import SANITIZED
from labrunner.runfolder import MANIFEST, sha256_file
from labrunner.runfolder.records import Manifest

ANALYSIS = "analysis.json"


@dataclass
class Evidence:
    name: str  # the attachment's name in the PDF
    path: Path
    kind: str  # "manifest" | "analysis" | "capture"
    scenario: str | None
    size: int
    sha256: str


def scenario_folders(run_dir: Path) -> tuple[Manifest, dict[str, Path]]:
    """The run's manifest, and where each scenario's files are (runfolder.records: inside the run
    folder; a result whose folder lies outside it is left out). UsageError: no usable manifest."""
    manifest = Manifest.read(run_dir)
    folders = {}
    for entry in manifest.scenarios:
        folder, outside = entry.folder(run_dir)
        if outside is None:
            folders[entry.name] = folder
    return manifest, folders


def attachment_name(scenario: str, file: str) -> str:
    return f"{scenario}.{file}"


def evidence_files(run_dir: Path) -> list[Evidence]:
    """The files to attach, in the manifest's order; a file that does not exist is left out."""
    run_dir = Path(run_dir)
    out: list[Evidence] = []

    def add(name: str, path: Path, kind: str, scenario: str | None) -> None:
        if path.is_file():
            out.append(Evidence(name, path, kind, scenario, path.stat().st_size, sha256_file(path)))

    add(MANIFEST, run_dir / MANIFEST, "manifest", None)
    try:
        manifest, folders = scenario_folders(run_dir)
    except UsageError:
        return out
    # with show_credentials the analysis holds the password: it stays out of the attachments
    show = manifest.report.show_credentials
    for name, folder in folders.items():
        if not show:
            add(attachment_name(name, ANALYSIS), folder / ANALYSIS, "analysis", name)
        add(attachment_name(name, SANITIZED), folder / SANITIZED, "capture", name)
    return out


def pdf_attachments(run_dir: Path) -> list[Any]:
    """WeasyPrint attachments of :func:`evidence_files` (read here: no URL fetching)."""
    import weasyprint

    return [weasyprint.Attachment(string=e.path.read_bytes(), name=e.name,
                                  description=f"{e.kind} sha256:{e.sha256}")
            for e in evidence_files(run_dir)]
