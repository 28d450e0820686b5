"""TLS helpers: the certificate summary the report shows, contexts, the key log file."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from labrunner.certificates import certificate_summary
from labrunner.errors import UsageError
from labrunner.sessions.tls import client_context, ensure_keylog


def make_cert(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, san: bool = True) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.lab.test"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "实验")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(0xABCDEF).not_valid_before(start).not_valid_after(start + dt.timedelta(days=90)))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("mail.lab.test"), x509.DNSName("smtp.lab.test"),
             x509.IPAddress(ipaddress.ip_address("10.77.0.3"))]), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_summary_of_an_rsa_certificate() -> None:
    cert = make_cert(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    summary = certificate_summary(cert.public_bytes(serialization.Encoding.DER))
    assert summary["subject"] == "O=实验,CN=mail.lab.test"
    assert summary["issuer"] == summary["subject"]
    assert (summary["key_type"], summary["key_size"], summary["curve"]) == ("RSA", 2048, None)
    assert summary["san"] == ["DNS:mail.lab.test", "DNS:smtp.lab.test", "IP:10.77.0.3"]
    assert summary["not_before"] == "2026-01-01T00:00:00+00:00"
    assert summary["not_after"] == "2026-04-01T00:00:00+00:00"
    assert summary["serial"] == "abcdef" and summary["signature_hash"] == "sha256"
    assert len(summary["sha256"].split(":")) == 32


def test_summary_of_an_ec_certificate_without_san() -> None:
    cert = make_cert(ec.generate_private_key(ec.SECP256R1()), san=False)
    summary = certificate_summary(cert.public_bytes(serialization.Encoding.DER))
    assert (summary["key_type"], summary["key_size"], summary["curve"]) == ("EC", 256, "secp256r1")
    assert summary["san"] == []


def test_keylog_is_created_0600_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "run" / "keylog.txt"
        ensure_keylog(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_context_versions_ciphers_and_key_log(tmp_path: Path) -> None:
    ctx = client_context(tmp_path / "k.txt", None, version="1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    names = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert names == ["ECDHE-RSA-AES128-GCM-SHA256"]
    assert ctx.keylog_filename == str(tmp_path / "k.txt")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_context_input_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"ca_file .*missing\.pem does not exist"):
        client_context(tmp_path / "k.txt", str(tmp_path / "missing.pem"))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(UsageError, match="is not a PEM CA certificate"):
        client_context(tmp_path / "k.txt", str(tmp_path / "bad.pem"))
    with pytest.raises(UsageError, match="OpenSSL knows none of these cipher suites"):
        client_context(tmp_path / "k.txt", None, ciphers="NO-SUCH-CIPHER")
