"""Soak: many consecutive full runs of every shipped scenario in this process, against the sandbox.

After each run: no more open files, threads or child processes in this process than after the
first (the first run opens what stays open for good: imports, the tshark version cache), nothing
left running on the target, and the same analysis and report structure as the first run, apart
from times, addresses and ports, run ids, and counts of the mailbox that grows with every run.
``make test`` runs ``LABRUNNER_SOAK_COUNT`` runs (3 by default); ``make soak`` runs 30.
"""

from __future__ import annotations

import gc
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_faults import no_leftovers, write_lab  # type: ignore[import-not-found]  # same folder

pytestmark = pytest.mark.integration

ALL = ["mail-client", "plain-smtp", "webmail-tls", "telnet-smtp", "pop3", "imap"]
TIMES_AND_ADDRESSES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"\d{8}-\d{6}(?:-\d+)?"), "RUN"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)?"), "TIME"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "IP"),
    (re.compile(r"IP:\d+"), "IP:PORT"),
    (re.compile(r"port \d{4,5}\b"), "port PORT"),
    # frame numbers move with the timing of ACKs and TLS alerts, not with what was said; a list
    # of them keeps its length ("帧 12, 81" → "帧 N, N")
    (re.compile(r"(帧|[Ff]rames?|#)\s?(\d+(?:,\s?\d+)*)"),
     lambda m: f"{m.group(1)} " + ", ".join("N" for _ in m.group(2).split(","))),
]


def soak_count() -> int:
    return int(os.environ.get("LABRUNNER_SOAK_COUNT", "3"))


def normal(text: str) -> str:
    for pattern, repl in TIMES_AND_ADDRESSES:
        text = pattern.sub(repl, text)
    return text


def first_word(text: str) -> str:
    """A command's verb or a reply's status (250, +OK, * or a tag): what the dialogue did."""
    m = re.match(r"[^\s-]+", text)
    return m.group(0) if m else ""


def analysis_shape(run_dir: Path) -> dict[str, Any]:
    """Per scenario: its status and, per stream, protocol, ports, TLS and the dialogue's steps."""
    manifest = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    shape: dict[str, Any] = {}
    for entry in manifest["scenarios"]:
        doc = json.loads((run_dir / entry["name"] / "analysis.json").read_text("utf-8"))
        streams = []
        for s in doc["streams"]:
            tls = s["tls"] or {}
            streams.append({
                "protocol": s["protocol"], "security": s["security"], "server_port": s["server"]["port"],
                "syn_fin": (s["syn_seen"], s["fin_seen"]), "truncated": s["dialogue_truncated"],
                "tls": (tls.get("version"), tls.get("cipher_suite"), tls.get("decrypted"), tls.get("sni")),
                "dialogue": [(e["dir"], e["kind"], first_word(e["text"]), e["redacted"]) for e in s["dialogue"]
                             if e["kind"] in ("command", "reply", "auth")],
                "mail": [(m.get("subject"), m.get("from")) for m in s.get("mail") or []],
                "notes": [normal(n) for n in s["notes"]],
            })
        shape[entry["name"]] = {"status": entry["status"], "error": entry["error"], "streams": streams,
                                "notes": [normal(n) for n in doc["notes"]]}
    return shape


def report_shape(run_dir: Path) -> list[str]:
    """The report's headings and captions, in order (section numbers, tables, figures)."""
    html = (run_dir / "report.html").read_text("utf-8")
    found = re.findall(r"<(h[1-4]|caption|figcaption)[^>]*>(.*?)</\1>", html, flags=re.S)
    return [f"{tag}: {normal(re.sub(r'<[^>]+>', '', text)).strip()}" for tag, text in found]


def settle(before: set[threading.Thread], wait: float = 10) -> None:
    """Let the threads a run started end: paramiko's transport thread and the capture's readers
    finish a moment after the run has returned, on their own schedule. A leaked thread never
    ends, and is still counted after ``wait``."""
    deadline = time.monotonic() + wait
    for t in threading.enumerate():
        if t not in before:
            t.join(max(0.0, deadline - time.monotonic()))


def own_resources() -> tuple[int, int, int]:
    """Open files, threads, and child processes (zombies included) of this process."""
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    children = 0
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                children += 1
    return fds, threading.active_count(), children


@pytest.mark.timeout(120 + 60 * soak_count())  # the suite's 300 s is for one test, not 30 runs
def test_consecutive_full_runs_leak_nothing_and_agree(sandbox: dict[str, Any], sandbox_instance: str,
                                                      tmp_path: Path) -> None:
    from labrunner.config.load import load_lab
    from labrunner.runner import RunOptions, run_lab

    lab = load_lab(write_lab(tmp_path, sandbox_instance))
    count = soak_count()
    resources: list[tuple[int, int, int]] = []
    first: tuple[dict[str, Any], list[str]] | None = None
    for i in range(count):
        before = set(threading.enumerate())
        outcome = run_lab(lab, RunOptions(pdf=False, progress=lambda _line: None))
        assert outcome.ok, (i, [(o.name, o.status, o.error) for o in outcome.outcomes])
        assert [o.name for o in outcome.outcomes] == ALL
        assert no_leftovers(sandbox_instance) == [], f"run {i + 1}"
        settle(before)
        resources.append(own_resources())
        shape = (analysis_shape(outcome.run_dir), report_shape(outcome.run_dir))
        if first is None:
            first = shape
            assert len(first[1]) > 20  # the shape holds the report's sections, tables and figures
            continue
        assert shape[0] == first[0], f"run {i + 1}: the analysis differs from run 1"
        assert shape[1] == first[1], f"run {i + 1}: the report's structure differs from run 1"
    baseline = resources[0]
    for i, used in enumerate(resources[1:], 2):
        assert used[0] <= baseline[0], f"run {i}: open files grew: {[r[0] for r in resources]}"
        assert used[1] <= baseline[1], f"run {i}: threads grew: {[r[1] for r in resources]}"
        assert used[2] <= baseline[2], f"run {i}: child processes grew: {[r[2] for r in resources]}"
