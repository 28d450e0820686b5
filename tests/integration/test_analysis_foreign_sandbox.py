"""BDAT (CHUNKING, RFC 3030) sent to the sandbox's real Postfix at test time, and analysed.

tests/fixtures/make_foreign_captures.py captures the sessions (the same script made the
checked-in fixtures in tests/fixtures/captures/foreign/); the unit tests in
test_analysis_foreign_mail.py check those in detail, this one that a fresh capture of a real
Postfix reads the same way.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from labfiles import analyze  # type: ignore[import-not-found]  # each {zh, en} in the language asked

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import make_foreign_captures as mfc

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["bdat_chunks", "bdat_pipelined"])
def test_bdat_to_postfix_is_read_as_data_and_summarised(name: str, sandbox: dict[str, Any], tmp_path: Path) -> None:
    capture = mfc.capture(sandbox, name, tmp_path)
    [stream] = analyze(capture, lang="en")["streams"]
    entries = stream["dialogue"]
    sizes = [int(e["text"].split()[1]) for e in entries if e["kind"] == "command" and e["text"].startswith("BDAT ")]
    assert len(sizes) >= 2
    assert [e["text"] for e in entries if e["dir"] == "C"][-1] == "QUIT"
    assert not any(e["kind"] == "auth" or e["redacted"] for e in entries)
    [mail] = stream["mail"]
    assert mail["size"] == sum(sizes) and not mail["truncated"]
    assert mail["subject"] == "BDAT 分块 test" and [a["filename"] for a in mail["attachments"]] == ["chunk.bin"]
    # Postfix took the message: its own byte count (it adds a CRLF to a last chunk without one)
    queued = next(int(m.group(1)) for e in entries if (m := re.search(r"Ok: (\d+) bytes queued", e["text"])))
    assert queued in (sum(sizes), sum(sizes) + 2)
