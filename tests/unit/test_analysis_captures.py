"""tshark on real captures: the checked-in sandbox fixtures and edited copies of them.

The fixtures (tests/fixtures/make_captures.py --fake-password) hold real Postfix/Dovecot
sessions. Edited copies (drop, duplicate, reorder, split, IPv6, cut short, started late) are
made with scapy here and checked against tshark's own "follow stream" and against the
unedited capture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from foreign_corpus import analyze  # type: ignore[import-not-found]  (each {zh, en} in the language asked)

from labrunner.analysis import CaptureFileError, tshark_version
from labrunner.analysis.dialogue import REDACTED
from labrunner.errors import ToolMissing

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CAPS = FIX / "captures"
sys.path.insert(0, str(FIX))
import make_captures as mc  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def _transcript(name: str) -> list[dict]:
    return json.loads((CAPS / f"{name}.transcript.json").read_text(encoding="utf-8"))["lines"]


def _only(doc: dict) -> dict:
    assert len(doc["streams"]) == 1
    return doc["streams"][0]


@pytest.fixture(scope="module")
def smtp_doc() -> dict:
    return analyze(CAPS / "smtp-plain.pcapng", lang="en")


# --- against the client's transcript and Wireshark's own dissectors -------------------------------


@pytest.mark.parametrize("name", ["smtp-plain", "smtps-tls12", "imaps-tls13", "pop3-stls"])
def test_dialogue_matches_the_client_transcript_line_by_line(name):
    doc = analyze(CAPS / f"{name}.pcapng", lang="en")
    stream = _only(doc)
    assert mc.dialogue_lines(stream) == mc.expected_lines(_transcript(name))
    dumped = json.dumps(doc, ensure_ascii=False)
    for form in mc.secret_forms(mc.FAKE_PASSWORD, "student@lab.test"):
        assert form not in dumped


def test_smtp_fixture_summary_and_frames_match_wiresharks_smtp_dissector(smtp_doc):
    stream = _only(smtp_doc)
    assert stream["protocol"] == "SMTP" and stream["security"] == "plain" and stream["tls"] is None
    assert stream["server"]["port"] == 25 and stream["syn_seen"] and stream["fin_seen"]
    mail = stream["mail"][0]
    assert mail["subject"] == "实验5 测试" and mail["from"] == "student@lab.test"
    assert mail["attachments"] == [{"filename": "data.bin", "content_type": "application/octet-stream", "size": 3000}]
    # Wireshark's SMTP dissector (switched on here) puts each request/response at these frames
    def frames(display_filter: str) -> set[int]:
        out = subprocess.run(["tshark", "-r", str(CAPS / "smtp-plain.pcapng"), "-Y", display_filter, "-T", "fields",
                              "-e", "frame.number"], capture_output=True, text=True, check=True).stdout
        return {int(f) for f in out.split()}

    ws_req = frames("smtp.req || imf")  # commands, AUTH lines, and the reassembled message
    ws_rsp = frames("smtp.rsp")
    ours_c = {e["frame"] for e in stream["dialogue"] if e["dir"] == "C"}
    ours_s = {e["frame"] for e in stream["dialogue"] if e["dir"] == "S"}
    assert ours_c == ws_req
    assert ours_s == ws_rsp
    assert smtp_doc["capture"]["frames"] == 34
    st = stream["stats"]
    assert st["packets"] == 34 and st["retransmissions"] == 0 and st["rtt"]["samples"] > 5


def test_tls12_handshake_details():
    stream = _only(analyze(CAPS / "smtps-tls12.pcapng", lang="en"))
    tls = stream["tls"]
    assert tls["version"] == "TLS 1.2" and tls["cipher_suite"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert tls["suite_parts"]["key_exchange"] == "ECDHE" and tls["suite_parts"]["authentication"] == "RSA"
    assert tls["suite_parts"]["cipher"] == "AES_128_GCM" and tls["suite_parts"]["mac"] == "SHA256"
    assert tls["sni"] == "smtp.lab.test"
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in tls["client_hello"]["cipher_suites"]
    assert tls["server_key_exchange"]["curve"] in ("x25519", "secp256r1", "x448", "secp384r1")
    assert tls["certificate"]["subject"].startswith("CN=mail.lab.test")
    assert "DNS:smtp.lab.test" in tls["certificate"]["san"] and tls["certificate"]["key_size"] == 2048
    names = [m["message"] for m in tls["messages"]]
    for msg in ("Client Hello", "Server Hello", "Certificate", "Server Key Exchange", "Server Hello Done",
                "Client Key Exchange", "Change Cipher Spec", "Finished"):
        assert msg in names
    assert {c["dir"] for c in tls["change_cipher_spec"]} == {"C", "S"}
    assert tls["round_trips"] == 2 and tls["decrypted"]
    assert all(e["decrypted"] for e in stream["dialogue"] if e["kind"] != "tls")


def test_tls13_without_keys_shows_what_a_passive_observer_sees(tmp_path):
    stripped = _write(tmp_path, _packets("imaps-tls13"), "nokeys")  # a pcap holds no key log
    with_keys = _only(analyze(CAPS / "imaps-tls13.pcapng", lang="en"))
    assert with_keys["tls"]["version"] == "TLS 1.3" and with_keys["tls"]["certificate_visible"]
    assert with_keys["tls"]["round_trips"] == 1
    doc = analyze(stripped, lang="en")
    stream = _only(doc)
    tls = stream["tls"]
    assert tls["version"] == "TLS 1.3" and not tls["decrypted"] and not tls["certificate_visible"]
    assert tls["sni"] == "imap.lab.test"
    assert doc["capture"]["decryption"] == "none"
    kinds = {e["kind"] for e in stream["dialogue"]}
    assert kinds == {"tls"}
    assert any("encrypted application data" in e["text"] for e in stream["dialogue"])
    assert any("passive observer" in n and "TLS 1.3" in n for n in stream["notes"])
    assert "LOGIN" not in json.dumps(stream["dialogue"])


def test_starttls_fixture_switches_to_decrypted_lines():
    stream = _only(analyze(CAPS / "pop3-stls.pcapng", lang="en"))
    assert stream["security"] == "starttls" and stream["tls"]["decrypted"]
    kinds = [(e["kind"], e["decrypted"]) for e in stream["dialogue"]]
    tls_at = kinds.index(("tls", False))
    assert all(not dec for _, dec in kinds[:tls_at]) and all(dec for _, dec in kinds[tls_at + 1:])
    assert any(e["text"] == f"PASS {REDACTED}" for e in stream["dialogue"])


def test_chinese_is_the_default_language():
    doc = analyze(CAPS / "smtp-plain.pcapng")
    assert doc["lang"] == "zh"
    first = _only(doc)["dialogue"][0]
    assert "服务就绪" in first["explanation"]


# --- edited copies --------------------------------------------------------------------------


def _packets(name: str = "smtp-plain"):
    import scapy.layers.inet
    import scapy.layers.inet6
    import scapy.layers.l2  # noqa: F401  (registers the layers before reading)
    from scapy.utils import rdpcap

    return list(rdpcap(str(CAPS / f"{name}.pcapng")))


def _write(tmp_path: Path, pkts, name: str) -> Path:
    from scapy.utils import wrpcap

    path = tmp_path / f"{name}.pcap"
    wrpcap(str(path), pkts)
    return path


def _payload(p) -> bytes:
    from scapy.layers.inet import TCP

    return bytes(p[TCP].payload)


def _follow(path: Path) -> dict[str, bytes]:
    """tshark's own "Follow TCP Stream" of stream 0, as bytes per direction."""
    out = subprocess.run(["tshark", "-r", str(path), "-q", "-z", "follow,tcp,raw,0"],
                         capture_output=True, text=True, check=True).stdout
    nodes: dict[str, str] = {}
    data = {"0": bytearray(), "1": bytearray()}
    for line in out.splitlines():
        if line.startswith("Node "):
            nodes[line[5]] = line.split(": ", 1)[1]
        elif line.startswith("\t") and line.strip():
            data["1"].extend(bytes.fromhex(line.strip()))
        elif line and all(c in "0123456789abcdef" for c in line):
            data["0"].extend(bytes.fromhex(line))
    client = "0" if nodes["0"].endswith(":54266") else "1"
    return {"C": bytes(data[client]), "S": bytes(data["1" if client == "0" else "0"])}


def _texts(doc: dict) -> list[tuple[str, str]]:
    return [(e["dir"], e["text"]) for e in _only(doc)["dialogue"]]


def _lines_of(raw: bytes) -> list[str]:
    return [ln.decode("utf-8", "replace") for ln in raw.split(b"\r\n")]


def _check_against_follow(path: Path, original: dict) -> dict:
    doc = analyze(path, lang="en", show_credentials=True)
    follow = _follow(path)
    assert follow == _follow(CAPS / "smtp-plain.pcapng")  # Wireshark reassembles the same bytes
    plain = analyze(CAPS / "smtp-plain.pcapng", lang="en", show_credentials=True)
    assert _texts(doc) == _texts(plain)
    # and each protocol line we show is a line of Wireshark's followed stream
    for d, text in _texts(doc):
        if not text.startswith("DATA fragment"):
            lines = _lines_of(follow[d])
            assert all(part in lines for part in text.split("\n")), (d, text)
    return doc


def test_duplicated_segments(tmp_path, smtp_doc):
    pkts = []
    for p in _packets():
        pkts.append(p)
        if _payload(p):
            pkts.append(p.copy())
    doc = _check_against_follow(_write(tmp_path, pkts, "dup"), smtp_doc)
    stats = _only(doc)["stats"]
    assert stats["retransmissions"] >= 10 and stats["packets"] == len(pkts)


def test_reordered_segments(tmp_path, smtp_doc):
    pkts = _packets()
    body = [i for i, p in enumerate(pkts) if len(_payload(p)) == 1448]
    a, b = body[0], body[1]
    pkts[a], pkts[b] = pkts[b], pkts[a]
    doc = _check_against_follow(_write(tmp_path, pkts, "reorder"), smtp_doc)
    assert _only(doc)["stats"]["out_of_order"] + _only(doc)["stats"]["retransmissions"] >= 1


def test_split_segments_attribute_lines_to_the_last_piece(tmp_path, smtp_doc):
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw

    pkts = _packets()
    i = next(i for i, p in enumerate(pkts) if _payload(p).startswith(b"250-"))
    p = pkts[i]
    data = _payload(p)
    pieces = []
    for start, end in ((0, 7), (7, 60), (60, len(data))):
        q = p.copy()
        q[TCP].remove_payload()
        q[TCP].seq = p[TCP].seq + start
        del q[IP].len, q[IP].chksum, q[TCP].chksum
        pieces.append(q / Raw(data[start:end]))
    pkts[i:i + 1] = pieces
    doc = _check_against_follow(_write(tmp_path, pkts, "split"), smtp_doc)
    entry = next(e for e in _only(doc)["dialogue"] if e["text"].startswith("250-"))
    assert entry["first_frame"] == i + 1 and entry["frame"] == i + 3


def test_dropped_segment_becomes_a_gap(tmp_path, smtp_doc):
    pkts = _packets()
    i = [i for i, p in enumerate(pkts) if len(_payload(p)) == 1448][1]
    lost = len(_payload(pkts[i]))
    del pkts[i]
    doc = analyze(_write(tmp_path, pkts, "drop"), lang="en")
    stream = _only(doc)
    gaps = [e for e in stream["dialogue"] if e["kind"] == "gap"]
    assert len(gaps) == 1 and f"[{lost} bytes not in the capture]" == gaps[0]["text"]
    # Wireshark's follow stream marks the same hole
    assert f"[{lost} bytes missing in capture file]".encode() in _follow(_write(tmp_path, pkts, "drop2"))["C"]
    want = [t for t in _texts(smtp_doc) if not t[1].startswith("DATA fragment")]
    got = [t for t in _texts(doc) if not t[1].startswith(("DATA fragment", "["))]
    assert got == want
    # the lines cut by the hole go with it (a line is at most 78 characters here)
    assert 0 <= _only(smtp_doc)["mail"][0]["size"] - lost - stream["mail"][0]["size"] <= 2 * 80


def test_capture_started_mid_stream_and_cut_short(tmp_path, smtp_doc):
    pkts = _packets()
    start = next(i for i, p in enumerate(pkts) if _payload(p).startswith(b"MAIL FROM"))
    path = _write(tmp_path, pkts[start:], "late")
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last packet is cut short, as when a disk fills up
    doc = analyze(path, lang="en")
    stream = _only(doc)
    assert doc["capture"]["truncated"] and not stream["syn_seen"]
    assert any("middle of this connection" in n for n in stream["notes"])
    texts = _texts(doc)
    assert texts[0] == ("C", "MAIL FROM:<student@lab.test>")
    assert texts[:6] == [t for t in _texts(smtp_doc) if t[0] in "CS"][
        _texts(smtp_doc).index(("C", "MAIL FROM:<student@lab.test>")):][:6]


def test_ipv6_copy_gives_the_same_dialogue(tmp_path, smtp_doc):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    pkts = []
    for p in _packets():
        src = "fd00::2" if p[IP].src.endswith(".2") else "fd00::3"
        dst = "fd00::3" if src == "fd00::2" else "fd00::2"
        tcp = p[TCP].copy()
        del tcp.chksum
        q = Ether(src=p[Ether].src, dst=p[Ether].dst) / IPv6(src=src, dst=dst, hlim=64) / tcp
        q.time = p.time
        pkts.append(q)
    doc = analyze(_write(tmp_path, pkts, "v6"), lang="en")
    stream = _only(doc)
    assert stream["client"]["ip"] == "fd00::2" and stream["server"] == {"ip": "fd00::3", "port": 25}
    assert _texts(doc) == _texts(smtp_doc)


# --- bad input and missing tools ------------------------------------------------------------------


def test_cli_json_and_errors(tmp_path, capsys):
    from labrunner.cli import main

    assert main(["analyze", str(CAPS / "smtp-plain.pcapng"), "--json", "--lang", "en"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"streams", "capture", "stats"} and doc["streams"][0]["protocol"] == "SMTP"
    assert main(["analyze", str(CAPS / "smtp-plain.pcapng")]) == 0
    out = capsys.readouterr().out
    assert "C: AUTH LOGIN" in out and "//" in out and mc.FAKE_PASSWORD not in out

    junk = tmp_path / "junk.pcapng"
    junk.write_bytes(b"\x0a\x0d\x0d\x0a" + os.urandom(300))
    assert main(["analyze", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labrunner: error:") and "Traceback" not in err and str(junk) in err
    assert main(["analyze", str(tmp_path / "missing.pcap")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["analyze", str(CAPS / "smtp-plain.pcapng"), "--keylog", str(tmp_path / "none.keys")]) == 2
    assert "key log" in capsys.readouterr().err


def test_text_file_is_not_a_capture(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is a lab report, not a capture\n" * 10)
    with pytest.raises(CaptureFileError) as info:
        analyze(text)
    assert info.value.exit_status == 2


def test_missing_tshark_is_toolmissing_with_the_apt_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    tshark_version.cache_clear()
    try:
        with pytest.raises(ToolMissing) as info:
            tshark_version()
        assert "apt-get install" in (info.value.hint or "")
    finally:
        monkeypatch.undo()
        tshark_version.cache_clear()


def test_old_tshark_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "tshark"
    fake.write_text("#!/bin/sh\necho 'TShark (Wireshark) 2.6.10 (Git v2.6.10)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    tshark_version.cache_clear()
    try:
        with pytest.raises(ToolMissing, match="too old"):
            tshark_version()
    finally:
        monkeypatch.undo()
        tshark_version.cache_clear()


def test_tshark_version_is_asked_once_per_installed_binary(monkeypatch, tmp_path):
    """The version is kept on disk for this binary; a replaced binary (an upgrade) is asked again."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "tshark"
    fake.parent.mkdir()

    def install(version: str) -> None:
        new = fake.with_name("tshark.new")
        new.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'TShark (Wireshark) {version} (Git v{version})'\n")
        new.chmod(0o755)
        new.replace(fake)  # a package upgrade: a new file in place of the old one

    install("4.0.17")
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        for _ in range(3):
            tshark_version.cache_clear()
            assert tshark_version() == (4, 0, 17)
        assert calls.read_text().count("x") == 1
        install("4.2.5")
        tshark_version.cache_clear()
        assert tshark_version() == (4, 2, 5)
        assert calls.read_text().count("x") == 2
        install("3.4.1")  # a cached answer never lets a too old tshark through
        tshark_version.cache_clear()
        with pytest.raises(ToolMissing, match="too old"):
            tshark_version()
        tshark_version.cache_clear()
        with pytest.raises(ToolMissing, match="too old"):
            tshark_version()
    finally:
        monkeypatch.undo()
        tshark_version.cache_clear()


def test_plain_text_warning_also_when_credentials_are_shown():
    for show in (False, True):
        stream = _only(analyze(CAPS / "smtp-plain.pcapng", lang="en", show_credentials=show))
        assert any(n.startswith("Sent without TLS") for n in stream["notes"])
        assert any(e["text"] == (mc._b64(mc.FAKE_PASSWORD) if show else REDACTED) for e in stream["dialogue"])


def test_the_text_summary_says_how_tls_was_decrypted_in_the_reader_s_language():
    from labrunner.analysis.text import render

    head = render(analyze(CAPS / "smtps-tls12.pcapng", lang="zh")).splitlines()[0]
    assert head.endswith("TLS 解密：用抓包文件中嵌入的密钥日志") and "embedded" not in head
    head = render(analyze(CAPS / "smtps-tls12.pcapng", lang="en")).splitlines()[0]
    assert head.endswith("decryption: with the key log embedded in the capture")
