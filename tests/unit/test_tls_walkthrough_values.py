"""The TLS 1.2 walk-through's values (issue 15): the client and server randoms, the Server Key
Exchange's curve, ephemeral public key and signature algorithm are recorded by the analysis
(from Wireshark's fields) and shown by the report, checked against the capture's own bytes."""

from __future__ import annotations

import shutil

import pytest
from test_analysis_captures import CAPS, _packets, _payload

from labrunner.analysis import analyze
from labrunner.report import context, i18n

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@pytest.fixture(scope="module")
def tls12() -> dict:
    doc = analyze(CAPS / "smtps-tls12.pcapng", lang="en")
    return doc["streams"][0]


def test_the_randoms_and_the_server_key_exchange_are_recorded(tls12):
    tls = tls12["tls"]
    hello, server_hello, ske = tls["client_hello"], tls["server_hello"], tls["server_key_exchange"]
    payloads = {i + 1: _payload(p) for i, p in enumerate(_packets("smtps-tls12"))}
    # each random sits after the record header (5), the handshake header (4) and the version (2)
    assert bytes.fromhex(hello["random"]) == payloads[hello["frame"]][11:43]
    assert bytes.fromhex(server_hello["random"]) == payloads[server_hello["frame"]][11:43]
    assert hello["random"] != server_hello["random"]
    # ECParameters (named_curve 3, x25519 0x001d), the key's length and the key, then the
    # signature's algorithm (rsa_pss_rsae_sha256 0x0804), in the Server Key Exchange's frame
    key = bytes.fromhex(ske["public_key"])
    assert len(key) == 32 and ske["curve"] == "x25519"
    assert b"\x03\x00\x1d\x20" + key + b"\x08\x04" in payloads[ske["frame"]]
    assert ske["signature_algorithm"] == "rsa_pss_rsae_sha256"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_walkthrough_shows_them(tls12, lang):
    t = i18n.catalogue(lang)
    tls = tls12["tls"]
    messages = {m["name"]: m for m in context._walk_messages({"lines": []}, tls, t)}
    shown = {v["label"]: v["value"] for m in messages.values() for v in m["recorded"]}
    assert shown == {t["tls_walk_client_random"]: tls["client_hello"]["random"],
                     t["tls_walk_server_random"]: tls["server_hello"]["random"],
                     t["tls_walk_ske_key"]: tls["server_key_exchange"]["public_key"]}
    assert "x25519" in messages["Server Key Exchange"]["carries"]
    assert "rsa_pss_rsae_sha256" in messages["Server Key Exchange"]["carries"]
    assert t["tls_walk_not_recorded"] not in messages["Server Key Exchange"]["carries"]
    # an analysis made before they were recorded: the sentence says so, no empty value lines
    old = {**tls, "client_hello": {k: v for k, v in tls["client_hello"].items() if k != "random"},
           "server_key_exchange": {"curve": "x25519"}}
    messages = {m["name"]: m for m in context._walk_messages({"lines": []}, old, t)}
    assert not messages["Client Hello"]["recorded"] and not messages["Server Key Exchange"]["recorded"]
    assert t["tls_walk_not_recorded"] in messages["Server Key Exchange"]["carries"]
