"""Throw-away TLS material for FTPS tests, made with ``trustme``.

One CA and one server certificate valid for ``127.0.0.1``, ``::1`` and
``localhost``, written to files because the real servers (vsftpd, pure-ftpd)
read them from disk.  RSA keys: every server and TLS version accepts them.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["TLSCerts", "make_certs"]


@dataclass(frozen=True)
class TLSCerts:
    directory: Path
    ca_file: Path  #: CA certificate (PEM) -- what clients trust
    cert_file: Path  #: server certificate chain (PEM)
    key_file: Path  #: server private key (PEM, unencrypted)
    combined_file: Path  #: key + certificate chain in one PEM (pure-ftpd ``-2``)

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for clients that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certs(directory: Path) -> TLSCerts:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="ftp-pooler test CA")
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost", key_type=trustme.KeyType.RSA)
    ca_file = directory / "ca.pem"
    cert_file = directory / "server-cert.pem"
    key_file = directory / "server-key.pem"
    combined_file = directory / "server-combined.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # cert_chain_pems: leaf first, then intermediates (none here)
    with open(cert_file, "wb") as f:
        f.writelines(blob.bytes() for blob in leaf.cert_chain_pems)
    leaf.private_key_pem.write_to_path(str(key_file))
    with open(combined_file, "wb") as f:
        f.write(leaf.private_key_pem.bytes())
        f.writelines(blob.bytes() for blob in leaf.cert_chain_pems)
    # The servers run as root and read these before dropping privileges, but keep
    # the directory traversable and the public parts world-readable anyway.
    os.chmod(directory, 0o755)
    for p in (ca_file, cert_file):
        os.chmod(p, 0o644)
    for p in (key_file, combined_file):
        os.chmod(p, 0o600)
    return TLSCerts(directory, ca_file, cert_file, key_file, combined_file)
