"""The web-mail exercise (seed section 4.3) against the sandbox's nginx.

The TLS 1.2 step offers a browser's list of suites and the server chooses by its own
preference, as QQ Mail did in the seed capture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from labfiles import cli, write_lab  # type: ignore[import-not-found]  # same folder

from labrunner.config.load import profile_from_state
from labrunner.config.model import AccountSpec, HttpsStep, Profile, TargetSpec
from labrunner.executor import connect
from labrunner.secrets import Redactor
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


def test_a_browser_like_client_hello_in_the_capture(sandbox_instance: str, tmp_path: Path) -> None:
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "tls12.yaml").write_text(
        "title: tls\nobjective: suites\ncapture: {enabled: true}\nsteps:\n"
        "  - https: {tls_version: '1.2'}\n", encoding="utf-8")
    lab = write_lab(tmp_path, sandbox_instance, scenarios_dir="sc")
    res = cli(lab, "run", "tls12", "--no-pdf", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    run = tmp_path / "output" / "latest" / "tls12"
    (stream,) = [s for s in json.loads((run / "analysis.json").read_text(encoding="utf-8"))["streams"]
                 if s["protocol"] == "HTTPS"]
    hello = stream["tls"]["client_hello"]
    assert len(hello["cipher_suites"]) >= 10
    assert "x25519" in hello["supported_groups"] and hello["alpn"] == ["http/1.1"] and hello["sni"]
    assert stream["tls"]["cipher_suite_id"] == "0xc02f"
    assert stream["tls"]["cipher_suite"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    # the report lists the offer with the server's choice marked
    html = (run.parent / "report.html").read_text(encoding="utf-8")
    assert "<b>TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256</b>" in html
