"""Certificates for the HTTPS entry point: PEM bundles from KV and files -> validated CertEntry records.

    shopgate/tls/certs/<name>    one PEM bundle: the certificate, its chain, the private key
    shopgate/tls/sni/<name>      optional: SNI names (blank- or comma-separated) narrowing the SAN
    --certs DIR/<name>.pem       the same bundle, from a file

Pure: a bundle is accepted only when it parses, its key matches its certificate, each chain
certificate issued the one before it, it is valid at `now`, and its SAN names a host; anything
else is a rejection naming the KV key or file and what is wrong, and never reaches HAProxy. The
accepted PEM is re-encoded from the parsed objects, so nothing but certificates and one key (and
no blank line, which would end a runtime-API payload) can reach HAProxy. Keys are never shown:
CertEntry's repr leaves the PEM out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from gateway.haproxy_syntax import HOSTNAME, display
from shopgate.settings import KV_PREFIX

CERTS_PREFIX = f"{KV_PREFIX}tls/certs/"
SNI_PREFIX = f"{KV_PREFIX}tls/sni/"

#: A certificate's name (KV key suffix or file stem): becomes part of a file name in the state dir.
CERT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:[A-Z]+ )?PRIVATE KEY)-----.+?-----END \1-----", re.S)


class BadCertificate(ValueError):
    """A bundle that must not reach HAProxy; the message says what is wrong."""


@dataclass(frozen=True)
class CertEntry:
    """One accepted certificate: what HAProxy loads and /status shows (never the key)."""

    id: str                       # "kv-<name>" or "file-<name>": unique, the PEM's file name stem
    source: str                   # the KV key or file it came from
    sni: tuple[str, ...]          # the crt-list SNI filters: SAN DNS names, or the narrowing
    sans: tuple[str, ...]         # every SAN entry (DNS names and IP addresses)
    not_before: float             # unix times
    not_after: float
    fingerprint: str              # SHA-256 of the leaf certificate, hex
    pem: bytes = field(repr=False)   # re-encoded chain + PKCS#8 key

    @property
    def file_name(self) -> str:
        return f"{self.id}.pem"

    def summary(self, now: float, expiring_days: float) -> dict:
        """What /status shows of the certificate."""
        left = self.not_after - now
        return {"id": self.id, "source": self.source, "sni": list(self.sni), "sans": list(self.sans),
                "not_after": self.not_after, "expires_in_days": round(left / 86400, 2),
                "expiring": left < expiring_days * 86400, "fingerprint_sha256": self.fingerprint}


def sni_filter_problem(name: str) -> str | None:
    """Why `name` cannot be a crt-list SNI filter (a hostname or `*.` + hostname), or None."""
    plain = name[2:] if name.startswith("*.") else name
    if not HOSTNAME.fullmatch(plain):
        return f"{display(name)} is not a hostname or *.hostname"
    return None


def _covered(name: str, dns_names: tuple[str, ...]) -> bool:
    """Whether a SAN entry in `dns_names` covers `name` (exactly, or by a one-label wildcard)."""
    if name in dns_names:
        return True
    _, dot, parent = name.partition(".")
    return bool(dot) and not name.startswith("*.") and f"*.{parent}" in dns_names


@lru_cache(maxsize=4096)
def _parse(data: bytes, sni_text: str | None) -> tuple[CertEntry, None] | tuple[None, str]:
    """The time-independent part of validation, cached by content (1,000 certificates re-parse in no time)."""
    try:
        return _parse_bundle(data, sni_text), None
    except BadCertificate as error:
        return None, str(error)


def _parse_bundle(data: bytes, sni_text: str | None) -> CertEntry:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise BadCertificate("no PEM certificate in it (expected the certificate, its chain and the key)") from None
    blocks = [m.group(0) for m in _KEY_BLOCK.finditer(data)]
    if len(blocks) != 1:
        raise BadCertificate(f"expected exactly one PEM private key, found {len(blocks)}")
    try:
        key = serialization.load_pem_private_key(blocks[0], password=None)
    except TypeError:
        raise BadCertificate("the private key is encrypted (HAProxy needs it unencrypted)") from None
    except Exception as error:   # cryptography raises ValueError, UnsupportedAlgorithm, ... for malformed keys
        raise BadCertificate(f"the private key does not parse: {error.__class__.__name__}") from None
    leaf = certificates[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        raise BadCertificate("the private key does not match the certificate")
    for index, (child, parent) in enumerate(zip(certificates, certificates[1:]), start=1):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise BadCertificate(f"chain: certificate {index + 1} did not issue certificate {index} (order: leaf first, then each issuer)") from None
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise BadCertificate("the certificate has no subjectAltName (clients ignore the CN; SNI selects by SAN)") from None
    dns_names = tuple(dict.fromkeys(n.lower() for n in san.get_values_for_type(x509.DNSName)))
    sans = dns_names + tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    for name in dns_names:
        problem = sni_filter_problem(name)
        if problem:
            raise BadCertificate(f"SAN {problem}")
    sni = dns_names
    if sni_text is not None:
        sni = tuple(dict.fromkeys(n.lower() for n in re.split(r"[\s,]+", sni_text.strip()) if n))
        for name in sni:
            problem = sni_filter_problem(name)
            if problem:
                raise BadCertificate(f"SNI narrowing: {problem}")
            if not _covered(name, dns_names):
                raise BadCertificate(f"SNI narrowing: {name} is not covered by the certificate's SAN ({', '.join(dns_names) or 'none'})")
    if not sni:
        raise BadCertificate("no DNS name to select the certificate by SNI (SAN has IP addresses only, or the narrowing is empty)")
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return CertEntry(
        id="", source="", sni=sni, sans=sans,
        not_before=leaf.not_valid_before_utc.replace(tzinfo=timezone.utc).timestamp(),
        not_after=leaf.not_valid_after_utc.replace(tzinfo=timezone.utc).timestamp(),
        fingerprint=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(), pem=pem)


def certificate_entry(cert_id: str, source: str, data: bytes, sni_text: str | None, now: float) -> CertEntry:
    """One bundle -> CertEntry, or BadCertificate saying what is wrong (without the source: the caller names it)."""
    entry, problem = _parse(bytes(data), sni_text)
    if entry is None:
        raise BadCertificate(problem)
    if now < entry.not_before:
        raise BadCertificate(f"not valid before {_when(entry.not_before)}")
    if now >= entry.not_after:
        raise BadCertificate(f"expired on {_when(entry.not_after)}")
    return CertEntry(cert_id, source, entry.sni, entry.sans, entry.not_before, entry.not_after, entry.fingerprint, entry.pem)


def stored_entry(cert_id: str, source: str, data: bytes, sni: tuple[str, ...]) -> CertEntry | None:
    """A certificate the state dir's files hold (what HAProxy loaded): parsed again, its dates not judged
    (the catalog's view decides whether it stays); None when the file no longer parses."""
    entry, _ = _parse(bytes(data), " ".join(sni))
    if entry is None:
        return None
    return CertEntry(cert_id, source, entry.sni, entry.sans, entry.not_before, entry.not_after, entry.fingerprint, entry.pem)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def certificates(kv: Mapping[str, bytes], files: Mapping[str, bytes], now: float,
                 previous: tuple[CertEntry, ...] = ()) -> tuple[tuple[CertEntry, ...], tuple[str, ...]]:
    """Every accepted certificate (KV first, then files, each by name) and every rejection as "source: why".

    A bad replacement of a certificate in `previous` (the one serving) keeps the previous one while
    it is still valid: a bad certificate never replaces a good one."""
    serving = {entry.id: entry for entry in previous}
    entries: list[CertEntry] = []
    rejected: list[str] = []
    narrowing = {key[len(SNI_PREFIX):]: value for key, value in kv.items() if key.startswith(SNI_PREFIX)}
    inputs = [(f"kv-{key[len(CERTS_PREFIX):]}", key[len(CERTS_PREFIX):], key, kv[key])
              for key in sorted(kv) if key.startswith(CERTS_PREFIX) and not key.endswith("/")]
    inputs += [(f"file-{_stem(path)}", _stem(path), path, files[path]) for path in sorted(files)]
    for cert_id, name, source, data in inputs:
        try:
            if not CERT_NAME.fullmatch(name):
                raise BadCertificate(f"name {display(name)} must be 1-63 of A-Z a-z 0-9 _ . - starting with a letter or digit")
            sni_raw = narrowing.pop(name, None) if source.startswith(CERTS_PREFIX) else None
            try:
                sni_text = sni_raw.decode("utf-8") if sni_raw is not None else None
            except UnicodeDecodeError:
                raise BadCertificate("its SNI narrowing is not UTF-8 text") from None
            entries.append(certificate_entry(cert_id, source, data, sni_text, now))
        except BadCertificate as error:
            kept = serving.get(cert_id)
            if kept is not None and kept.source == source and kept.not_before <= now < kept.not_after:
                entries.append(kept)
                error = BadCertificate(f"{error}; the previous certificate keeps serving")
            rejected.append(f"{display(source, 200)[1:-1]}: {error}")
    rejected += [f"{display(SNI_PREFIX + name, 200)[1:-1]}: no certificate {display(CERTS_PREFIX + name, 200)[1:-1]} to narrow" for name in sorted(narrowing)]
    return tuple(entries), tuple(rejected)


def _stem(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base[:-4] if base.endswith(".pem") else base


def crt_list_line(directory: str, entry: CertEntry) -> str:
    """The crt-list line of `entry`: its PEM path and SNI filters (all validated shapes)."""
    return " ".join((f"{directory}/{entry.file_name}", *entry.sni))
