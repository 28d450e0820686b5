"""The analysis against real sessions with the sandbox's Postfix, Dovecot and nginx.

Each session is captured at test time (tests/fixtures/make_captures.py) with the sandbox's
own throwaway password; the dialogue the analysis extracts from the capture must equal the
client's transcript line by line, for every protocol and TLS variant, and the password must
not appear in any form.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from labfiles import analyze  # type: ignore[import-not-found]  # each {zh, en} in the language asked

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import make_captures as mc

pytestmark = pytest.mark.integration

NAMES = list(mc.sessions("u", "p"))
EXPECT = {  # protocol, security, TLS version (None: no TLS)
    "smtp-plain": ("SMTP", "plain", None),
    "smtp-pipelining": ("SMTP", "plain", None),
    "smtp-starttls": ("SMTP", "starttls", "TLS 1.3"),
    "smtps-tls12": ("SMTP", "tls", "TLS 1.2"),
    "pop3-plain": ("POP3", "plain", None),
    "pop3-stls": ("POP3", "starttls", "TLS 1.3"),
    "pop3s": ("POP3", "tls", "TLS 1.3"),
    "imap-plain": ("IMAP", "plain", None),
    "imap-starttls": ("IMAP", "starttls", "TLS 1.3"),
    "imaps-tls13": ("IMAP", "tls", "TLS 1.3"),
    "https": ("HTTPS", "tls", "TLS 1.3"),
}


@pytest.fixture(scope="module")
def captured(sandbox: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if shutil.which("tshark") is None or shutil.which("editcap") is None:
        pytest.skip("tshark/editcap not installed")
    out = tmp_path_factory.mktemp("captures")
    # The POP3 and IMAP sessions read message 1: start from an empty mailbox, whatever earlier
    # runs on this sandbox instance left in it.
    for sub in ("cur", "new"):
        folder = Path(sandbox["maildir"]) / sub
        for mail in folder.iterdir() if folder.is_dir() else []:
            mail.unlink()
    return {name: mc.capture(sandbox, name, out, password=sandbox["account"]["password"]) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_dialogue_equals_client_transcript(name: str, captured: dict, sandbox: dict) -> None:
    cap = captured[name]
    doc = analyze(cap["capture"], lang="zh")
    assert len(doc["streams"]) == 1
    stream = doc["streams"][0]
    protocol, security, version = EXPECT[name]
    assert (stream["protocol"], stream["security"]) == (protocol, security)
    assert mc.dialogue_lines(stream) == mc.expected_lines(cap["lines"])
    if version:
        assert stream["tls"]["version"] == version and stream["tls"]["decrypted"]
        assert stream["tls"]["certificate"]["subject"].startswith("CN=mail.lab.test")
        assert stream["tls"]["sni"] == sandbox["servers"][{"SMTP": "smtp", "POP3": "pop3", "IMAP": "imap",
                                                            "HTTPS": "web"}[protocol]]["host"]
    else:
        assert stream["tls"] is None
    dumped = json.dumps(doc, ensure_ascii=False)
    for form in mc.secret_forms(sandbox["account"]["password"], sandbox["account"]["user"]):
        assert form not in dumped


@pytest.mark.parametrize("name", ["smtp-plain", "smtp-pipelining", "smtp-starttls", "pop3-plain", "imap-plain"])
def test_message_summaries(name: str, captured: dict) -> None:
    stream = analyze(captured[name]["capture"], lang="en")["streams"][0]
    assert stream["mail"], "the message was transferred in this session"
    mail = stream["mail"][-1]
    assert mail["subject"] == "实验5 测试" and mail["from"] == "student@lab.test"
    assert mail["attachments"][0]["filename"] == "data.bin" and mail["attachments"][0]["size"] == 3000
    assert any(e["kind"] == "data" and "实验5 测试" in e["text"] for e in stream["dialogue"])


def test_keylog_option_on_a_capture_without_embedded_keys(captured: dict, tmp_path: Path) -> None:
    import scapy.layers.inet  # noqa: F401
    from scapy.utils import rdpcap, wrpcap

    cap = captured["smtps-tls12"]
    bare = tmp_path / "bare.pcap"  # a pcap cannot hold the key log: like a student's own capture
    wrpcap(str(bare), rdpcap(str(cap["capture"])))
    without = analyze(bare, lang="en")["streams"][0]
    assert not without["tls"]["decrypted"] and {e["kind"] for e in without["dialogue"]} == {"tls"}
    assert without["tls"]["certificate_visible"]  # TLS 1.2 shows the certificate in clear
    with_keys = analyze(bare, keylog=cap["keylog"], lang="en")
    assert with_keys["capture"]["decryption"] == "keylog"
    assert mc.dialogue_lines(with_keys["streams"][0]) == mc.expected_lines(cap["lines"])


def test_pipelined_commands_share_their_frame(captured: dict) -> None:
    stream = analyze(captured["smtp-pipelining"]["capture"], lang="en")["streams"][0]
    sent = [e for e in stream["dialogue"] if e["text"] in ("MAIL FROM:<student@lab.test>", "RCPT TO:<student@lab.test>",
                                                             "DATA")]
    assert len(sent) == 3 and len({e["frame"] for e in sent}) == 1


def test_starttls_without_keys(captured: dict, tmp_path: Path) -> None:
    import scapy.layers.inet  # noqa: F401
    from scapy.utils import rdpcap, wrpcap

    bare = tmp_path / "bare.pcap"
    wrpcap(str(bare), rdpcap(str(captured["smtp-starttls"]["capture"])))
    stream = analyze(bare, lang="en")["streams"][0]
    assert stream["security"] == "starttls" and not stream["tls"]["decrypted"]
    texts = [e["text"] for e in stream["dialogue"]]
    assert "STARTTLS" in texts and not any(t.startswith("AUTH") for t in texts)
    after = texts[texts.index("STARTTLS") + 2:]
    assert after and all(t.startswith("[") for t in after)


def test_show_credentials_shows_the_password(captured: dict, sandbox: dict) -> None:
    doc = analyze(captured["pop3-plain"]["capture"], lang="en", show_credentials=True)
    texts = [e["text"] for e in doc["streams"][0]["dialogue"]]
    assert f"PASS {sandbox['account']['password']}" in texts


def test_cli_on_a_sandbox_capture(captured: dict) -> None:
    out = subprocess.run([sys.executable, "-m", "labrunner", "analyze", str(captured["imap-starttls"]["capture"]),
                          "--lang", "en"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "IMAP (starttls)" in out.stdout and "a1 STARTTLS" in out.stdout and "TLS 1.3" in out.stdout
