"""TLS client contexts with key logging, and a summary of the certificate the client received.

Every context appends its secrets to the scenario's key log (NSS key log format), which the
capture stage injects into the pcapng so Wireshark shows the decrypted dialogue. TLS 1.3
encrypts the server certificate on the wire, so the summary here is the report's source for
it.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from labrunner.errors import UsageError

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def ensure_keylog(path: Path) -> None:
    """Create the key log 0600 before ssl opens it: ssl would create it with the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def client_context(
    keylog: Path,
    ca_file: str | None,
    *,
    version: str | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A verifying client context: the profile's CA file, else the system store."""
    if ca_file is not None:
        ca_path = Path(ca_file).expanduser()
        if not ca_path.is_file():
            raise UsageError(f"profile ca_file {ca_path} does not exist",
                             hint="give the CA certificate (PEM) the servers' certificates chain to")
        try:
            context = ssl.create_default_context(cafile=str(ca_path))
        except ssl.SSLError as exc:
            raise UsageError(f"profile ca_file {ca_path} is not a PEM CA certificate: {exc.reason}") from None
    else:
        context = ssl.create_default_context()
    if version is not None:
        context.minimum_version = VERSIONS[version]
        context.maximum_version = VERSIONS[version]
    if ciphers:
        try:
            context.set_ciphers(ciphers)  # only TLS 1.2 and lower; 1.3 suites are fixed
        except ssl.SSLError:
            raise UsageError(f"ciphers {ciphers!r}: OpenSSL knows none of these cipher suites",
                             hint="use OpenSSL names, e.g. ECDHE-RSA-AES128-GCM-SHA256") from None
    ensure_keylog(keylog)
    context.keylog_filename = str(keylog)
    return context


def certificate_summary(der: bytes) -> dict[str, Any]:
    """Subject, issuer, validity, key type/size, SANs and fingerprint of a DER certificate."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    cert = x509.load_der_x509_certificate(der)
    key_type: str
    key_size: int | None = None
    curve: str | None = None
    try:
        key: object = cert.public_key()
    except UnsupportedAlgorithm:
        # A key algorithm this OpenSSL does not know (or a damaged capture): name its OID, as
        # Wireshark does, instead of losing the whole handshake.
        key = None
    if key is None:
        key_type = f"unknown ({cert.public_key_algorithm_oid.dotted_string})"
    elif isinstance(key, rsa.RSAPublicKey):
        key_type, key_size = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, key_size, curve = "EC", key.curve.key_size, key.curve.name
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key_type, key_size = "Ed25519", 256
    elif isinstance(key, ed448.Ed448PublicKey):
        key_type, key_size = "Ed448", 456
    elif isinstance(key, dsa.DSAPublicKey):
        key_type, key_size = "DSA", key.key_size
    else:
        key_type = type(key).__name__
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        sig = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        sig = None
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key_type": key_type,
        "key_size": key_size,
        "curve": curve,
        "signature_hash": sig.name if sig is not None else None,
        "san": sans,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    }
