"""The web-mail exercise (seed section 4.3) against the sandbox's nginx.

The TLS 1.2 step offers a browser's list of suites and the server chooses by its own
preference, as QQ Mail did in the seed capture. The webmail step logs in to the sandbox's
Roundcube, sends a mail, and the POP3 step fetches it from Dovecot.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from labfiles import cli, write_lab  # type: ignore[import-not-found]  # same folder

from labrunner.config.load import profile_from_state
from labrunner.config.model import AccountSpec, HttpsStep, Profile, TargetSpec
from labrunner.executor import connect
from labrunner.secrets import REDACTED, Redactor
from labrunner.sessions import SessionContext, run_step

pytestmark = pytest.mark.integration


def _ctx(state: dict[str, Any], tmp_path: Path) -> SessionContext:
    base = Profile(name="sandbox", target=TargetSpec(host="unset"), servers={},
                   account=AccountSpec(address="unset"), from_sandbox=True)
    profile = profile_from_state(base, state)
    return SessionContext(executor=connect(profile.target), profile=profile,
                          secret=str(state["account"]["password"]), keylog=tmp_path / "keys.log",
                          redactor=Redactor(), scenario_dir=tmp_path)


def test_the_server_chooses_the_suite_by_its_own_preference(sandbox: dict[str, Any], tmp_path: Path) -> None:
    # A client that prefers AES-256 still gets AES-128: the server's order decides.
    ctx = _ctx(sandbox, tmp_path)
    try:
        result = run_step(HttpsStep(tls_version="1.2",
                                    ciphers="ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"), ctx)
        forced = run_step(HttpsStep(tls_version="1.2", ciphers="ECDHE-RSA-AES256-GCM-SHA384"), ctx)
    finally:
        ctx.executor.close()
    assert result.ok and forced.ok, (result.error, forced.error)
    tls, tls_forced = result.connections[0].tls, forced.connections[0].tls
    assert tls is not None and tls.cipher == "ECDHE-RSA-AES128-GCM-SHA256"
    # forcing one suite stays possible
    assert tls_forced is not None and tls_forced.cipher == "ECDHE-RSA-AES256-GCM-SHA384"


def test_the_web_mail_scenario(sandbox: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> None:
    """The shipped scenario: a browser's TLS 1.2 offer, Roundcube's login and send, POP3 fetches the mail."""
    lab = write_lab(tmp_path, sandbox_instance, lang="en")
    res = cli(lab, "run", "webmail-tls", "--no-pdf", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    run = tmp_path / "output" / "latest" / "webmail-tls"
    streams = [s for s in json.loads((run / "analysis.json").read_text(encoding="utf-8"))["streams"]
               if s["protocol"] == "HTTPS"]
    # the TLS 1.2 step: a browser's offer, the server's choice
    first = streams[0]["tls"]
    assert len(first["client_hello"]["cipher_suites"]) >= 10
    assert "x25519" in first["client_hello"]["supported_groups"] and first["client_hello"]["alpn"] == ["http/1.1"]
    assert first["cipher_suite_id"] == "0xc02f"
    assert first["cipher_suite"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"

    steps = json.loads((run / "transcript.json").read_text(encoding="utf-8"))["steps"]
    web, fetch = steps[2], steps[3]
    assert web["kind"] == "webmail" and web["ok"], web["error"]
    said = [e["text"] for e in web["events"] if e["dir"] == "C"]
    # the login POST with its CSRF token, the user, the password redacted, the session cookie masked
    login_body = next(t for t in said if t.startswith("_token=") and "_pass=" in t)
    assert f"_pass={REDACTED}" in login_body and "_user=student%40lab.test" in login_body
    assert any(t.startswith(f"Cookie: roundcube_sessid={REDACTED}") for t in said)
    assert any(t.startswith("_token=") and "_action=send" in t and "_subject=" in t for t in said)
    # the web mail sent it, Postfix delivered it, POP3 fetched it: the same bytes, with Postfix's trace
    assert fetch["kind"] == "pop3" and fetch["ok"], fetch["error"]
    assert fetch["found"]["message_id"] == web["message"]["message_id"] and fetch["found"]["identical"]
    assert "Received" in fetch["found"]["trace_headers"]
    # F9: no cookie value in the transcript, the kept headers included
    text = (run / "transcript.json").read_text(encoding="utf-8")
    assert re.findall(r"roundcube_sess\w+=(?!«redacted»)", text) == []
    # the password nowhere but in the capture and the key log
    secret = str(sandbox["account"]["password"])
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("capture.pcapng", "keylog.txt"):
            assert secret not in path.read_text(encoding="utf-8", errors="replace"), path
    # the capture shows the login POST (decrypted), its cookie redacted
    posts = [d["text"] for s in streams for d in s["dialogue"]
             if d["dir"] == "C" and str(d["text"]).startswith("POST ")]
    assert len(posts) == 2 and all(f"Cookie: {REDACTED}" in p for p in posts)
    html = (run.parent / "report.html").read_text(encoding="utf-8")
    assert "<b>TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256</b>" in html  # the offer with the choice marked
    assert "POST /?_task=login HTTP/1.1" in html and "CSRF" in html


def test_imported_captures_appear_in_the_report(sandbox: dict[str, Any], sandbox_instance: str, tmp_path: Path) -> None:
    """The student's own captures: a scenario's import step (a pcap and the browser's key log),
    and `run --import` for a shipped scenario (a pcapng): analysed and reported, marked imported."""
    caps = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
    (tmp_path / "sc").mkdir()
    (tmp_path / "captures").mkdir()
    for name in ("browser-login.pcap", "browser-login.keys", "smtp-plain.pcapng"):
        shutil.copy(caps / name, tmp_path / "captures")
    shutil.copy(Path(__file__).resolve().parents[2] / "scenarios" / "webmail-tls.yaml", tmp_path / "sc")
    (tmp_path / "sc" / "mine.yaml").write_text(
        "title: {zh: 我的浏览器抓包, en: My browser's capture}\nsection: '4.3'\nsteps:\n"
        "  - import: {capture: ../captures/browser-login.pcap, keylog: ../captures/browser-login.keys}\n",
        encoding="utf-8")
    lab = write_lab(tmp_path, sandbox_instance, scenarios_dir="sc", lang="en")
    res = cli(lab, "run", "mine", "--no-pdf", "--import", "webmail-tls=captures/smtp-plain.pcapng", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "connecting to" not in res.stderr  # only imported captures: the target is not needed
    run = tmp_path / "output" / "latest"
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert "target" not in manifest or not manifest["target"]  # so it was not described either
    entries = {e["name"]: e for e in manifest["scenarios"]}
    assert entries["mine"]["imported"]["capture"] == "browser-login.pcap"
    assert entries["mine"]["imported"]["keylog"] == "browser-login.keys"
    assert entries["webmail-tls"]["imported"]["capture"] == "smtp-plain.pcapng"
    assert entries["mine"]["status"] == entries["webmail-tls"]["status"] == "passed"
    assert entries["mine"]["frames"] == 56 and entries["webmail-tls"]["frames"] == 34
    # no session ran: the transcripts are empty, nothing of the sandbox is in the captures
    for name in ("mine", "webmail-tls"):
        assert json.loads((run / name / "transcript.json").read_text(encoding="utf-8"))["steps"] == []
        assert (run / name / "capture.pcapng").stat().st_mode & 0o777 == 0o600
    # the dialogues, the HTTPS one decrypted with the browser's key log
    mine = json.loads((run / "mine" / "analysis.json").read_text(encoding="utf-8"))
    said = [str(d["text"]) for s in mine["streams"] for d in s["dialogue"] if d["dir"] == "C"]
    assert any(t.startswith("POST /login HTTP/1.1") for t in said)
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count("Imported capture: ") == 2
    assert "decrypted with the browser&#39;s key log browser-login.keys" in html
    assert "POST /login HTTP/1.1" in html and "EHLO lab-client" in html and "MAIL FROM:" in html
