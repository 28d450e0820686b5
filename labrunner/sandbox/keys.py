"""The sandbox's keys and certificates, made with `cryptography` (no openssl processes).

A sandbox CA signs one RSA server certificate for every mail name: an RSA key is what makes
TLS 1.2 negotiate ECDHE-RSA-AES128-GCM-SHA256, the suite of the seed's QQ Mail capture.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

MAIL_NAMES = ("mail.lab.test", "smtp.lab.test", "pop.lab.test", "imap.lab.test", "lab.test")


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create a file with its final mode from the start, so a secret is never world-readable."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@dataclass(frozen=True)
class SshKey:
    private_openssh: bytes
    public_line: str  # "ssh-ed25519 AAAA..."

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_line)


def fingerprint(public_line: str) -> str:
    """The SHA256 fingerprint as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def new_ssh_key(comment: str) -> SshKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return SshKey(private, f"{public.decode()} {comment}")


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: bytes
    ca_key: bytes
    server_cert: bytes  # the leaf only: clients must trust the CA themselves, as with a real root
    server_key: bytes


def new_tls(instance: str, mail_address: str, *, days: int = 365) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    not_before = now - dt.timedelta(hours=1)  # tolerate small clock differences
    not_after = now + dt.timedelta(days=days)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labrunner sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"labrunner sandbox CA ({instance})"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in MAIL_NAMES]
    sans.append(x509.IPAddress(ipaddress.IPv4Address(mail_address)))
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labrunner sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, MAIL_NAMES[0]),
        ]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(srv_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    def key_pem(k: rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())
    ca_pem = ca_cert.public_bytes(pem)
    return TlsFiles(
        ca_cert=ca_pem,
        ca_key=key_pem(ca_key),
        server_cert=srv_cert.public_bytes(pem),
        server_key=key_pem(srv_key),
    )


def new_password() -> str:
    """A mailbox password that is easy to type in a telnet session (no quoting needed)."""
    return secrets.token_urlsafe(15)


def ssha256(password: str) -> str:
    """Dovecot's {SSHA256} scheme: base64(sha256(password + salt) + salt)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha256(password.encode() + salt).digest()
    return "{SSHA256}" + base64.b64encode(digest + salt).decode()
