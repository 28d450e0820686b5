"""The student's own capture as a scenario: ``import: {capture: FILE, keylog: FILE}``.

The handout captures on the student's PC with Wireshark (a real mail client, a browser
logging in to web mail). Such a capture (pcap or pcapng) with the browser's SSLKEYLOGFILE goes
through the same analysis as labrunner's own and into the report like any other scenario,
marked as imported. No target and no sessions are involved: the scenario's run copies the
capture into its folder as ``capture.pcapng`` (0600, the key log embedded with editcap, as
labrunner's own captures are) and analyses it.

The files must lie inside the project folder (where lab.yaml is): a scenario file shared by
someone else cannot make a run read, and copy into a report, a file from elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from labrunner import runfolder
from labrunner.config.model import ImportStep, Scenario
from labrunner.config.rules import PCAPNG_MAGIC, file_problem  # the rule config checks with
from labrunner.errors import UsageError


def imported_step(sc: Scenario) -> ImportStep | None:
    return next((s for s in sc.steps if isinstance(s, ImportStep)), None)


def with_secrets(pcapng: bytes, secrets: bytes) -> bytes:
    """``pcapng`` with a Decryption Secrets Block (TLS key log) right after its first section header.

    Wireshark and tshark then decrypt the TLS in it with no options, as with editcap's
    ``--inject-secrets``. The block's byte order is the section's.
    """
    import struct

    order = "<" if pcapng[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    shb_len = struct.unpack(order + "I", pcapng[4:8])[0]
    if pcapng[8:12] not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d") or shb_len < 28 or shb_len > len(pcapng):
        raise UsageError("the capture's pcapng section header is damaged",
                         hint="open it in Wireshark and save it again as pcapng")
    padded = secrets + b"\0" * (-len(secrets) % 4)
    total = 5 * 4 + len(padded)  # type, length, secrets type, secrets length, data, the length again
    block = struct.pack(order + "IIII", 0x0000000A, total, 0x544C534B, len(secrets)) + padded
    block += struct.pack(order + "I", total)
    return pcapng[:shb_len] + block + pcapng[shb_len:]


def parse_cli(specs: list[str], project: Path, cwd: Path | None = None) -> dict[str, ImportStep]:
    """``--import SCENARIO=CAPTURE[,KEYLOG]`` (paths relative to the current folder)."""
    cwd = Path.cwd() if cwd is None else cwd
    out: dict[str, ImportStep] = {}
    for spec in specs:
        name, sep, files = spec.partition("=")
        if not sep or not name or not files:
            raise UsageError(f"--import {spec!r}: write SCENARIO=CAPTURE or SCENARIO=CAPTURE,KEYLOG",
                             hint="e.g. --import webmail-tls=captures/qqmail.pcapng,captures/sslkeys.log")
        capture, _, keylog = files.partition(",")
        paths = [(cwd / Path(capture).expanduser(), "capture")]
        if keylog:
            paths.append((cwd / Path(keylog).expanduser(), "keylog"))
        for path, what in paths:
            problem = file_problem(path, project, what)
            if problem:
                raise UsageError(f"--import {name}: {what}: {problem}")
        out[name] = ImportStep(capture=str(paths[0][0]), keylog=str(paths[1][0]) if keylog else None,
                               project=str(project))
    return out


def run(sc: Scenario, step: ImportStep, run_dir: Path, entry: runfolder.ScenarioEntry, stage: Callable[[str], None], *,
        lang: str, show_credentials: bool, redactor: Callable[[str], str] | None) -> Callable[[], None]:
    """Copy the capture in (the key log embedded); returns the analysis, as a run's scenario does."""
    from labrunner.capture import finalize

    out = runfolder.scenario_dir(run_dir, sc.name)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(step.capture)
    keylog = Path(step.keylog) if step.keylog else None
    stage("importing the capture")
    # the files may have changed since the scenario was read: checked again, as bad input
    project = Path(step.project or source.parent)
    for path, what in ((source, "capture"), *(((keylog, "keylog"),) if keylog else ())):
        problem = file_problem(path, project, what)
        if problem:
            raise UsageError(f"{sc.name}: import: {what}: {problem}")
    kept_keylog = None
    if keylog is not None:
        kept_keylog = out / "keylog.txt"
        fd = os.open(kept_keylog, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as dst, keylog.open("rb") as src:
            shutil.copyfileobj(src, dst)
        os.chmod(kept_keylog, 0o600)
    data = source.read_bytes()
    if data[:4] == PCAPNG_MAGIC:
        # editcap 4.0 refuses to write a pcapng read from a pcapng ("can't be written as a
        # pcapng file"): copied as it is, the key log put in as a Decryption Secrets Block
        secrets = kept_keylog.read_bytes() if kept_keylog is not None else b""
        fd = os.open(out / "capture.pcapng", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as dst:
            dst.write(with_secrets(data, secrets) if secrets.strip() else data)
        os.chmod(out / "capture.pcapng", 0o600)
    else:
        finalize(source, kept_keylog, out / "capture.pcapng")
    digest = hashlib.sha256(data).hexdigest()
    entry.imported = runfolder.Imported(capture=source.name, sha256=digest, keylog=keylog.name if keylog else None)
    runfolder.write_json(out / runfolder.TRANSCRIPT,
                         {"scenario": sc.name, "imported": entry.imported.to_json(), "steps": []})

    def finish() -> None:
        from labrunner import analysis

        stage("analysing")
        doc = analysis.analyze(out / "capture.pcapng", lang=lang, show_credentials=show_credentials,
                               redactor=redactor)
        runfolder.write_json(out / "analysis.json", doc)
        frames = (doc.get("capture") or {}).get("frames")
        entry.frames = frames if isinstance(frames, int) else None
        entry.capture = runfolder.CaptureInfo(packets=entry.frames, settled="imported")
        entry.files = {**entry.files, **{
            name: runfolder.FileEntry(**runfolder.file_entry(out / name))
            for name in (runfolder.CAPTURE, runfolder.TRANSCRIPT, runfolder.ANALYSIS) if (out / name).exists()}}

    return finish
