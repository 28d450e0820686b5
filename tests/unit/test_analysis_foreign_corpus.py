"""Issue 14's corpus test: third-party captures against their expected dialogue and tshark's own
SMTP/POP/IMAP/HTTP dissectors, and no credential in any output (see foreign_corpus.py)."""

from __future__ import annotations

import shutil
import sys
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foreign_corpus as fc

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

NAMES = sorted(fc.CORPUS)


@cache
def _doc(name: str) -> dict[str, Any]:
    return fc.analyze_case(name)


@cache
def _rows(name: str) -> list[dict[str, Any]]:
    return fc.tshark_rows(name)


@lru_cache(maxsize=1)
def _all_secrets() -> frozenset[str]:
    found: set[str] = set()
    for name in NAMES:
        found |= fc.credentials(_rows(name))
    return frozenset(found)


def test_every_capture_in_the_folder_is_in_the_table():
    on_disk = {p.name for p in fc.DIR.iterdir() if p.suffix in (".pcap", ".pcapng")}
    assert on_disk == set(fc.CORPUS)
    for name, case in fc.CORPUS.items():
        stem = name.rsplit(".", 1)[0]
        assert (fc.DIR / f"{stem}.dialogue").is_file(), name
        assert (fc.DIR / f"{stem}.keys").is_file() == case.keys, name


@pytest.mark.parametrize("name", NAMES)
def test_dialogue_is_the_expected_one(name):
    assert fc.outline(_doc(name)) == fc.expected(name)


def test_every_command_and_reply_tshark_shows_is_in_our_dialogue():
    problems = [p for name in NAMES for p in fc.disagreements(name, _doc(name), _rows(name))]
    assert not problems, "\n".join(problems)


def test_the_allow_list_names_only_what_tshark_really_shows():
    # an entry for an item tshark does not show (any more) would hide nothing: it must go
    for name in NAMES:
        shown = {(frame, item) for frame, _, _, item in fc.items(_rows(name))}
        shown |= {(frame, "*") for frame, _ in shown}
        assert set(fc.CORPUS[name].tshark_wrong) <= shown, name
        assert set(fc.CORPUS[name].literal_frames) <= {frame for frame, _ in shown}, name


def test_the_scan_finds_the_credentials_it_looks_for():
    # the corpus holds passwords in SMTP AUTH, IMAP LOGIN and HTTP Basic: the scan must see them,
    # or "no leak" below proves nothing
    assert len(_all_secrets()) >= 4


@pytest.mark.parametrize("name", NAMES)
def test_no_credential_in_any_output(name):
    assert not fc.leaks(_doc(name), set(_all_secrets())), name
