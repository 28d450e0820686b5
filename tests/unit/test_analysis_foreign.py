"""Issue 14's connection, TLS and redaction defects, each on a real third-party capture or an
edited copy of one (tests/fixtures/captures/foreign/, see foreign_corpus.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from labrunner.analysis import analyze
from labrunner.analysis.dialogue import REDACTED
from labrunner.analysis.text import render

sys.path.insert(0, str(Path(__file__).resolve().parent))
import foreign_corpus as fc

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
F = fc.DIR
PASSWORD = "_lszuMy8m2rFBwvNBrWJ"  # the dead sandbox instance's, in these captures (README there)
FORMS = (PASSWORD, "X2xzenVNeThtMnJGQnd2TkJyV0o=", "AHN0dWRlbnRAbGFiLnRlc3QAX2xzenVNeThtMnJGQnd2TkJyV0o=")


def _scapy() -> Any:
    import scapy.layers.inet
    import scapy.layers.l2  # noqa: F401  (registers the layers before reading)
    from scapy import utils

    return utils


def _clean(doc: dict[str, Any]) -> None:
    for text in (json.dumps(doc, ensure_ascii=False), render(doc)):
        for form in FORMS:
            assert form not in text


def _by_port(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {s["server"]["port"]: s for s in doc["streams"]}


# --- D1: the protocol of a decrypted stream is what its bytes say ---------------------------------


def test_mail_over_tls_on_unusual_ports_is_mail_and_redacted():
    doc = analyze(F / "oddports_tls.pcap", keylog=F / "oddports_tls.keys", lang="en")
    streams = _by_port(doc)
    assert {p: (s["protocol"], s["security"]) for p, s in streams.items()} == {
        9993: ("IMAP", "tls"), 4650: ("SMTP", "tls"), 9995: ("POP3", "tls"), 8443: ("HTTPS", "tls")}
    assert any(e["text"] == f"A002 AUTHENTICATE PLAIN {REDACTED}" for e in streams[9993]["dialogue"])
    smtp_auth = [e for e in streams[4650]["dialogue"] if e["kind"] == "auth"]
    assert [e["redacted"] for e in smtp_auth] == [False, True]  # user name shown, password not
    assert streams[4650]["mail"] and streams[9995]["mail"]  # messages summarised, not printed
    _clean(doc)


def test_https_on_a_port_labrunner_does_not_know_still_masks_cookies(tmp_path):
    # security review F9: HTTPS moved to 2443 (the ports rewritten in a real capture; the key log
    # still decrypts it): HTTP is recognised from the decrypted bytes, so Cookie, Set-Cookie and
    # Authorization are masked as on 443
    utils = _scapy()
    from scapy.layers.inet import TCP

    pkts = utils.rdpcap(str(F / "oddports_tls.pcap"))
    for p in pkts:
        if TCP in p:
            for f in ("sport", "dport"):
                if getattr(p[TCP], f) == 8443:
                    setattr(p[TCP], f, 2443)
            del p[TCP].chksum
    moved = tmp_path / "https2443.pcap"
    utils.wrpcap(str(moved), pkts)
    doc = analyze(moved, keylog=F / "oddports_tls.keys", lang="en")
    s = _by_port(doc)[2443]
    assert s["protocol"] == "HTTPS"
    heads = "\n".join(e["text"] for e in s["dialogue"])
    assert f"Authorization: {REDACTED}" in heads and f"Cookie: {REDACTED}" in heads
    assert "Cookie: s" not in heads.replace(REDACTED, "")
    _clean(doc)


# --- D2: redaction by position without the start of the session ----------------------------------


@pytest.mark.parametrize(("name", "frame"), [
    ("mid_smtp_authpw.pcap", 2),  # starts at 334 "Password:"
    ("mid_smtp_plainblob.pcap", 2),  # starts at AUTH PLAIN's empty 334
    ("mid_imap_authlogin.pcap", 6),  # starts at AUTHENTICATE LOGIN's "+ VXNlcm5hbWU6"
    ("mid_pop3_authplain.pcap", 2),  # starts at POP3 AUTH PLAIN's "+ "
])
def test_the_answer_to_a_sasl_prompt_is_hidden_when_the_auth_command_is_not_in_the_capture(name, frame):
    doc = analyze(F / name, lang="en")
    line = next(e for e in doc["streams"][0]["dialogue"] if e["frame"] == frame and e["dir"] == "C")
    assert (line["kind"], line["text"], line["redacted"]) == ("auth", REDACTED, True)
    _clean(doc)


def test_a_credential_line_is_hidden_when_even_the_prompt_is_not_in_the_capture(tmp_path):
    # the capture starts with the client's password line itself: one base64 token where a command
    # should be is no command of SMTP; the next command is a command again
    cut = tmp_path / "from_password.pcap"
    subprocess.run(["editcap", "-r", str(F / "mid_smtp_authpw.pcap"), str(cut), "2-16"], check=True,
                   capture_output=True)
    doc = analyze(cut, lang="en")
    dialogue = doc["streams"][0]["dialogue"]
    assert (dialogue[0]["kind"], dialogue[0]["text"]) == ("auth", REDACTED)
    assert [e["text"].split()[0] for e in dialogue[1:4]] == ["235", "MAIL", "250"]
    _clean(doc)


# --- D18: secrets in URLs ------------------------------------------------------------------------


def test_a_password_in_a_url_query_is_hidden():
    doc = analyze(F / "https_post.pcap", keylog=F / "https_post.keys", lang="en")
    requests = [e["text"].split("\n")[0] for s in doc["streams"] for e in s["dialogue"]
                if e["dir"] == "C" and e["kind"] == "command"]
    assert f"GET /login?user=student&password={REDACTED} HTTP/1.1" in requests
    # the POST bodies (form and JSON, both with the password): the JSON one counted, not shown;
    # the form's fields shown (a web mail's login), the password «redacted»
    bodies = [e["text"] for s in doc["streams"] for e in s["dialogue"] if e["kind"] == "data"]
    assert f"[body: 55 bytes] form fields:\nusername=student@lab.test\npassword={REDACTED}" in bodies
    assert "[body: 57 bytes]" in bodies
    _clean(doc)


@pytest.mark.parametrize(("line", "shown"), [
    ("GET /a?pass=x&user=u HTTP/1.1", f"GET /a?pass={REDACTED}&user=u HTTP/1.1"),
    ("Referer: https://h/cb?code=abc123&state=1", f"Referer: https://h/cb?code={REDACTED}&state=1"),
    ("GET /x?access_token=T;pwd=P#f", f"GET /x?access_token={REDACTED};pwd={REDACTED}#f"),
    ("Location: /login?_pass=s3&passwd=s4&secret=s5", f"Location: /login?_pass={REDACTED}&passwd={REDACTED}"
                                                      f"&secret={REDACTED}"),
    ("GET /search?q=password HTTP/1.1", "GET /search?q=password HTTP/1.1"),
])
def test_mask_query(line, shown):
    from labrunner.analysis.dialogue import mask_query

    assert mask_query(line) == shown


# --- D3: ICMP errors quoting a TCP segment --------------------------------------------------------


def _with_icmp_errors(src: Path, dst: Path, *, v6: bool = False, icmp: bool = True) -> int:
    """A copy of ``src`` where a router answers every big client segment with "fragmentation
    needed" (ICMPv6 "packet too big" for ``v6``), quoting the whole segment and its first 548
    bytes, as the Wireshark wiki's smtp.pcap does. Returns how many were inserted."""
    utils = _scapy()
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
    from scapy.layers.l2 import Ether

    out, added = [], 0
    for p in utils.rdpcap(str(src)):
        if v6 and IP in p:  # the same packets over IPv6 (addresses made up, ports and bytes kept)
            ip = p[IP]
            p = Ether(src=p[Ether].src, dst=p[Ether].dst) / IPv6(
                src=f"fd00::{ip.src.split('.')[-1]}", dst=f"fd00::{ip.dst.split('.')[-1]}") / ip[TCP]
            del p[TCP].chksum
            p.time = ip.time
        out.append(p)
        if icmp and TCP in p and len(p[TCP].payload) > 1000:
            net = p[IPv6] if v6 else p[IP]
            for quote in (bytes(net), bytes(net)[:548]):
                if v6:
                    err = IPv6(src="fd00::1", dst=net.src) / ICMPv6PacketTooBig(mtu=1280) / quote
                else:
                    err = IP(src="10.77.230.1", dst=net.src) / ICMP(type=3, code=4, nexthopmtu=1400) / quote
                e = Ether(src=p[Ether].dst, dst=p[Ether].src) / err
                e.time = p.time
                out.append(e)
                added += 1
    utils.wrpcap(str(dst), out)
    return added


@pytest.mark.parametrize("v6", [False, True], ids=["icmp", "icmpv6"])
def test_icmp_errors_quoting_segments_are_not_dialogue(tmp_path, v6):
    from labrunner.analysis import core
    from labrunner.analysis.tshark import tshark_version

    clean = tmp_path / "clean.pcap"
    _with_icmp_errors(F / "snail_send.pcap", clean, v6=v6, icmp=False)
    path = tmp_path / "icmp.pcap"
    added = _with_icmp_errors(F / "snail_send.pcap", path, v6=v6)
    assert added >= 6
    base = analyze(clean, lang="en")
    doc = analyze(path, lang="en")
    (s,), (b,) = doc["streams"], base["streams"]
    # the same dialogue, mail and TCP statistics as without the ICMP errors
    assert [(e["dir"], e["frame"] - sum(f < e["frame"] for f in _icmp_frames(path)), e["text"])
            for e in s["dialogue"]] == [(e["dir"], e["frame"], e["text"]) for e in b["dialogue"]]
    assert [dict(m, frame=0) for m in s["mail"]] == [dict(m, frame=0) for m in b["mail"]]
    assert s["stats"]["packets"] == b["stats"]["packets"]
    assert not any("not in the capture" in e["text"] for e in s["dialogue"])
    assert any(f"{added} ICMP error message(s)" in n for n in s["notes"])
    # the light pass reads them the same way as the -T fields pass
    opts = {"lang": "en", "show": False, "redactor": None}
    assert core._document(path, None, opts, tshark_version(), light=True) == \
        core._document(path, None, opts, tshark_version(), light=False)


def _icmp_frames(path: Path) -> list[int]:
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "icmp || icmpv6", "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, check=True).stdout
    return [int(x) for x in out.split()]
