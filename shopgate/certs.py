"""Making certificates: a local CA, certificates it issues, and the gateway's self-signed default;
and writing key files (0600, atomically).

Written once here for the gateway (its default certificate), `shopgate up` (a local CA and a
`localhost` certificate) and the tests and benches (good and bad bundles). Keys are EC P-256:
fast to make and to handshake, and every TLS client of the last decade accepts them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issuer:
    """A certificate authority: its certificate and key (objects, for signing)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def load_issuer(certificate_pem: bytes, key_pem_bytes: bytes) -> Issuer:
    """A CA kept on disk (its certificate and unencrypted key), to issue more certificates later."""
    key = serialization.load_pem_private_key(key_pem_bytes, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    return Issuer(x509.load_pem_x509_certificate(certificate_pem), key)


def write_secret(path: Path, data: bytes) -> None:
    """Write a file holding a private key: created 0600, replaced atomically."""
    temporary = path.with_suffix(".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def make_ca(common_name: str = "shopgate local CA", days: int = 3650) -> Issuer:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = new_key()
    now = _now()
    certificate = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY).not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(certificate, key)


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def issue(issuer: Issuer | None, names: tuple[str, ...], *, not_before: datetime.datetime | None = None,
          not_after: datetime.datetime | None = None, key: ec.EllipticCurvePrivateKey | None = None,
          with_san: bool = True, chain: bool = True) -> bytes:
    """A PEM bundle (leaf, issuer when `chain`, key) for `names`; self-signed when `issuer` is None.

    The keyword arguments exist to make the bad bundles the gateway must refuse (expired, no SAN, ...)."""
    key = key or new_key()
    now = _now()
    subject = _name(names[0] if names else "no-name")
    builder = (
        x509.CertificateBuilder().subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - DAY).not_valid_after(not_after or now + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if with_san and names:
        builder = builder.add_extension(_san(names), critical=False)
    if issuer is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    certificate = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    parts = [certificate.public_bytes(serialization.Encoding.PEM)]
    if issuer is not None and chain:
        parts.append(issuer.pem)
    return b"".join(parts) + key_pem(key)
