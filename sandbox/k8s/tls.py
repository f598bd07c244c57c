"""TLS for the sandbox Kubernetes API servers: one self-signed CA per sandbox, server certs for 127.0.0.1.

ASK's API server speaks https, and kubectl (client-go) only sends a kubeconfig's bearer token over TLS, so
the sandbox serves https too. Layout of a CA directory (the sandbox uses `DIR/tls/`, shared by every
cluster it runs; a lone `KubeCluster` uses `<its data dir>/tls/`):

- `ca.crt` / `ca.key` — the certificate authority, generated once (ECDSA P-256, 10 years) and kept;
  kubeconfigs carry `ca.crt` as `certificate-authority-data`, so they stay valid across restarts;
- `server.crt` / `server.key` — the API servers' certificate, signed by that CA, for the IP SANs
  127.0.0.1 and ::1 and the DNS SAN localhost (1 year, reissued when it nears expiry or the CA changed).

Private keys are written with mode 0600. Generation uses the `cryptography` package.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)
SERVER_IPS = ("127.0.0.1", "::1")
SERVER_DNS = ("localhost",)


@dataclass(frozen=True)
class ServerTLS:
    """Paths of a CA and of the server certificate it signed."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path

    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context presenting the server certificate (TLS 1.2+, with h1 ALPN only)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ensure_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """Load the CA of `directory`, creating it on first use. Returns (cert, key, created)."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ask-batch sandbox"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "ask-batch sandbox CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key, True


def _server_cert_valid(cert_path: Path, key_path: Path, ca: x509.Certificate) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    return cert.issuer == ca.subject and cert.not_valid_after_utc - RENEW_BEFORE > _now()


def ensure_server_tls(directory: Path) -> ServerTLS:
    """The CA and server certificate in `directory`, generated (or renewed) as needed."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key, created = _ensure_ca(directory)
    tls = ServerTLS(directory / "ca.crt", directory / "ca.key", directory / "server.crt", directory / "server.key")
    if not created and _server_cert_valid(tls.cert, tls.key, ca):
        return tls
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    sans += [x509.DNSName(name) for name in SERVER_DNS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(tls.key, _key_pem(key), 0o600)
    _write(tls.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return tls
