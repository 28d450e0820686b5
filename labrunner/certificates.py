"""A summary of an X.509 certificate: what the report shows of a server's certificate.

Neutral ground for both sides that meet certificates: the sessions (the certificate a client
received, sessions/wire.py) and the analysis (the certificates a capture carries,
analysis/tls.py). cryptography is imported only when a certificate is summarised.
"""

from __future__ import annotations

from typing import Any


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
