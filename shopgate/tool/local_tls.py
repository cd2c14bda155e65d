"""HTTPS for the local stack: a local CA kept in the state dir, and a `localhost` certificate it issues.

    <state-dir>/tls-local/ca.pem          the CA's certificate: what a client trusts (curl --cacert)
    <state-dir>/tls-local/ca-key.pem      its key (0600): kept so that a renewed certificate (the demo's
                                          rotation) is issued by the CA clients already trust
    <state-dir>/tls-local/localhost.pem   certificate for localhost and 127.0.0.1 + key (0600)

The CA is made once per state dir and kept (a client that trusts it keeps trusting it); the
`localhost` certificate is issued at each `up` and written to Consul KV `shopgate/tls/certs/localhost`,
which the gateway serves for the SNI name `localhost` like any KV certificate (renewed there with no
reload). The same bundle is the gateway's `--default-cert`, for clients that send no SNI name
(https://127.0.0.1:8443 — an IP address is never sent as SNI).
"""

from __future__ import annotations

from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.tls import CERTS_PREFIX
from shopgate import settings
from shopgate.certs import Issuer, issue, key_pem, load_issuer, make_ca, write_secret
from shopgate.tool.manifest import Ports

#: The names the local certificate is for; the first is its KV name and the host of the HTTPS URL.
LOCAL_NAMES = ("localhost", settings.LOOPBACK)
LOCAL_CERT_KEY = f"{CERTS_PREFIX}{LOCAL_NAMES[0]}"


def tls_dir(state_dir: Path) -> Path:
    return state_dir / "tls-local"


def ca_path(state_dir: Path) -> Path:
    return tls_dir(state_dir) / "ca.pem"


def local_cert_path(state_dir: Path) -> Path:
    return tls_dir(state_dir) / "localhost.pem"


def local_ca(state_dir: Path) -> Issuer:
    """The state dir's CA: loaded when kept from an earlier run, else made and written."""
    directory = tls_dir(state_dir)
    cert_file, key_file = ca_path(state_dir), directory / "ca-key.pem"
    if cert_file.exists() and key_file.exists():
        return load_issuer(cert_file.read_bytes(), key_file.read_bytes())
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    issuer = make_ca(f"shopgate local CA ({state_dir.name})")
    write_secret(key_file, key_pem(issuer.key))
    cert_file.write_bytes(issuer.pem)
    return issuer


def issue_local_certificate(state_dir: Path) -> bytes:
    """A new `localhost`/127.0.0.1 bundle from the state dir's CA, written to localhost.pem."""
    bundle = issue(local_ca(state_dir), LOCAL_NAMES)
    write_secret(local_cert_path(state_dir), bundle)
    return bundle


def leaf_der(bundle: bytes) -> bytes:
    """The bundle's leaf certificate as a TLS handshake carries it (to compare with what is served)."""
    return x509.load_pem_x509_certificate(bundle).public_bytes(Encoding.DER)


def put_local_certificate(catalog_url: str, bundle: bytes) -> None:
    """Write the bundle to KV shopgate/tls/certs/localhost: the gateway serves it with no reload."""
    requests.put(f"{catalog_url}/v1/kv/{LOCAL_CERT_KEY}", data=bundle, timeout=5).raise_for_status()


def tls_lines(state_dir: Path, ports: Ports) -> list[tuple[str, str]]:
    """What `up` and `status` print about HTTPS: the CA to trust and a curl line that trusts it."""
    ca = ca_path(state_dir)
    return [("local CA", str(ca)),
            ("try HTTPS", f"curl --cacert {ca} {ports.https_entry_url}/api/v1/products")]
