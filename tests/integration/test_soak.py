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
from pathlib import Path
from typing import Any

import pytest
from test_faults import no_leftovers, write_lab  # type: ignore[import-not-found]  # same folder

pytestmark = pytest.mark.integration

ALL = ["mail-client", "plain-smtp", "webmail-tls", "telnet-smtp", "pop3", "imap"]
TIMES_AND_ADDRESSES = [
    (re.compile(r"\d{8}-\d{6}(?:-\d+)?"), "RUN"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)?"), "TIME"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "IP"),
    (re.compile(r"IP:\d+"), "IP:PORT"),
    (re.compile(r"port \d{4,5}\b"), "port PORT"),
    # frame numbers move with the timing of ACKs and TLS alerts, not with what was said, and how
    # many frames a mail summary lists with how often a client looked for its mail (see LOOK)
    (re.compile(r"(帧|[Ff]rames?|#)\s?\d+(?:,\s?\d+)*"), r"\1 N"),
    # so do the numbers of the tables after such a summary
    (re.compile(r"(表|图|Table|Figure)\s?\d+"), r"\1 N"),
]


def soak_count() -> int:
    return int(os.environ.get("LABRUNNER_SOAK_COUNT", "3"))


def normal(text: str) -> str:
    for pattern, repl in TIMES_AND_ADDRESSES:
        text = pattern.sub(repl, text)
    return text


def first_word(text: str) -> str:
    """A command's verb or a reply's status (250, +OK, *, OK): what the dialogue did. IMAP's tags
    are skipped: one more command earlier in the session renumbers every later one."""
    m = re.match(r"(?:[A-Za-z]\d{3,} )?([^\s-]+)", text)
    return m.group(1) if m else ""


# How often a client looks for the mail it sent depends on when Postfix delivered it, not on
# labrunner: POP3 reads headers newest first until it finds it (TOP n 0), IMAP searches again
# after a NOOP. A run of such exchanges counts as one "look".
LOOK = re.compile(r"TOP \d+ 0|(?:[A-Za-z]\d{3,} )?(?:SEARCH|NOOP)\b.*")


def is_look(command: str) -> bool:
    return LOOK.fullmatch(command) is not None


def looking(dialogue: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The frames from the first of a run of looks to the next other command."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for e in dialogue:
        if e["dir"] != "C" or not isinstance(e["frame"], int):
            continue
        probe = is_look(e["text"])
        if probe and start is None:
            start = e["frame"]
        elif not probe and start is not None:
            spans.append((start, e["frame"]))
            start = None
    if start is not None:
        spans.append((start, float("inf")))
    return spans


def mail_shape(stream: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    """The mails a stream carried, apart from the headers read while looking for one."""
    spans = looking(stream["dialogue"])
    return [(m.get("subject"), m.get("from")) for m in stream.get("mail") or []
            if not any(a <= (m.get("frame") or 0) < b for a, b in spans)]


def dialogue_shape(dialogue: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    shape: list[tuple[str, ...]] = []
    probing = False
    for e in dialogue:
        if e["kind"] not in ("command", "reply", "auth"):
            continue
        word = first_word(e["text"])
        if e["dir"] == "C":
            probing = is_look(e["text"])
            if probing:
                if shape[-1:] != [("look",)]:
                    shape.append(("look",))
                continue
        if not probing:
            shape.append((e["dir"], e["kind"], word, e["redacted"]))
    return shape


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
                "dialogue": dialogue_shape(s["dialogue"]),
                "mail": mail_shape(s),
                "notes": [normal(n) for n in s["notes"]],
            })
        shape[entry["name"]] = {"status": entry["status"], "error": entry["error"], "streams": streams,
                                "notes": [normal(n) for n in doc["notes"]]}
    return shape


def report_shape(run_dir: Path) -> list[str]:
    """The report's headings and captions, in order (section numbers, tables, figures); a table
    repeated right after itself counts once (one mail summary per mail a client looked at)."""
    html = (run_dir / "report.html").read_text("utf-8")
    found = re.findall(r"<(h[1-4]|caption|figcaption)[^>]*>(.*?)</\1>", html, flags=re.S)
    shape = [f"{tag}: {normal(re.sub(r'<[^>]+>', '', text)).strip()}" for tag, text in found]
    return [line for n, line in enumerate(shape) if n == 0 or line != shape[n - 1]]


def settle(before: set[threading.Thread], wait: float = 10) -> None:
    """Let the threads a run started end: paramiko's transport thread and the capture's readers
    finish a moment after the run has returned, on their own schedule. A leaked thread never
    ends, and is still counted after ``wait``."""
    deadline = time.monotonic() + wait
    for t in threading.enumerate():
        if t not in before:
            t.join(max(0.0, deadline - time.monotonic()))


def difference(a: Any, b: Any, where: str = "") -> str:
    """Where two shapes first differ, and the two values there."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return next(difference(a[k], b[k], f"{where}[{k!r}]") for k in a if a[k] != b[k])
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return next(difference(x, y, f"{where}[{n}]") for n, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return f"{where or 'the whole'}: {a!r} != {b!r}"


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
    from labrunner.run.lab import run_lab
    from labrunner.run.outcome import RunOptions

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
        assert shape[0] == first[0], f"run {i + 1}: the analysis differs from run 1: {difference(first[0], shape[0])}"
        assert shape[1] == first[1], f"run {i + 1}: the report's structure differs from run 1: " \
                                     f"{difference(first[1], shape[1])}"
    baseline = resources[0]
    for i, used in enumerate(resources[1:], 2):
        assert used[0] <= baseline[0], f"run {i}: open files grew: {[r[0] for r in resources]}"
        assert used[1] <= baseline[1], f"run {i}: threads grew: {[r[1] for r in resources]}"
        assert used[2] <= baseline[2], f"run {i}: child processes grew: {[r[2] for r in resources]}"
