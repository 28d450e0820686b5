"""TLS client contexts with key logging.

Every context appends its secrets to the scenario's key log (NSS key log format), which the
capture stage injects into the pcapng so Wireshark shows the decrypted dialogue. TLS 1.3
encrypts the server certificate on the wire, so the summary of the certificate the client
received (``labrunner.certificates.certificate_summary``) is the report's source for it.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

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
