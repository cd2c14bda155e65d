"""HTTPS at the entry point, with real TLS clients: Python `ssl` with SNI, curl (HTTP/1.1 and HTTP/2).

A real controller and HAProxy (`--https`), a real catalog whose KV holds the certificates, certificates
made by a local CA (shopgate.certs). The reload counter in /status must not move for any certificate change.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import socket
import ssl
import stat
import subprocess
import threading
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from browser import page_dom
from gateway_harness import eventually, gateway_factory  # noqa: F401  (fixture)
from shopgate.certs import issue, make_ca
from shopgate.processes import free_port

NOW = datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def ca():
    return make_ca("shopgate test CA")


@pytest.fixture
def https_gateway(gateway_factory, tmp_path, ca):
    certs = tmp_path / "certs"
    certs.mkdir()
    gateway = gateway_factory(args=("--https", f"127.0.0.1:{free_port()}", "--certs", str(certs)))
    gateway.https_port = int(gateway.status()["tls"]["https"].rpartition(":")[2])
    gateway.certs_dir = certs
    gateway.ca_file = tmp_path / "ca.pem"
    gateway.ca_file.write_bytes(ca.pem)
    gateway.ca = ca
    gateway.start_backend("products")
    eventually("products routed", lambda: requests.get(f"{gateway.url}/api/v1/products", timeout=5).status_code == 200)
    return gateway


def served(port: int, server_name: str | None) -> x509.Certificate:
    """The leaf certificate HAProxy presents for `server_name` (None: no SNI)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def serial(port: int, server_name: str | None) -> int:
    return served(port, server_name).serial_number


def serial_of(bundle: bytes) -> int:
    return x509.load_pem_x509_certificates(bundle)[0].serial_number


def serve(gateway, name: str, server_name: str) -> bytes:
    """Put a fresh certificate for `server_name` under KV name `name` and wait until HAProxy presents it."""
    bundle = issue(gateway.ca, (server_name,))
    put_kv(gateway, f"shopgate/tls/certs/{name}", bundle)
    eventually(f"{name} served for {server_name}", lambda: serial(gateway.https_port, server_name) == serial_of(bundle), timeout=10, interval=0.02)
    return bundle


def put_kv(gateway, key: str, value: bytes | None) -> None:
    kv = gateway.catalog.client().kv
    if value is None:
        kv.delete(key)
    else:
        kv.put(key, value)


def verified_get(gateway, host: str, path: str = "/api/v1/products") -> tuple[int, dict, dict]:
    """A GET verified against the test CA with SNI `host` (connecting to 127.0.0.1): status, headers, body."""
    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    with socket.create_connection(("127.0.0.1", gateway.https_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body) if body.startswith(b"{") else {}


def test_kv_certificate_served_by_sni_and_removed_without_reload(https_gateway, ca):
    gateway = https_gateway
    default = serial(gateway.https_port, "shop.test")
    reloads = gateway.status()["reloads"]
    bundle = issue(ca, ("shop.test", "www.shop.test"))
    put_kv(gateway, "shopgate/tls/certs/shop", bundle)
    eventually("the KV certificate served for its name", lambda: serial(gateway.https_port, "shop.test") == serial_of(bundle), timeout=10, interval=0.02)
    assert serial(gateway.https_port, "www.shop.test") == serial_of(bundle)
    assert serial(gateway.https_port, "other.test") == default
    assert serial(gateway.https_port, None) == default
    status, headers, body = verified_get(gateway, "shop.test")
    assert status == 200 and body["service"] == "products"
    tls = gateway.status()["tls"]
    assert [c["sni"] for c in tls["certificates"]] == [["shop.test", "www.shop.test"]]
    assert "PRIVATE" not in str(gateway.status())
    key_file = gateway.state_dir / "tls" / "kv-shop.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert "kv-shop.pem shop.test www.shop.test" in (gateway.state_dir / "tls" / "crt-list").read_text()
    assert gateway.metric('shopgate_gateway_certificate_expiry_seconds{name="kv-shop"}') > 80 * 86400

    renewed = issue(ca, ("shop.test", "www.shop.test"))
    put_kv(gateway, "shopgate/tls/certs/shop", renewed)
    eventually("the renewed certificate served", lambda: serial(gateway.https_port, "shop.test") == serial_of(renewed), timeout=10, interval=0.02)

    put_kv(gateway, "shopgate/tls/sni/shop", b"www.shop.test")
    eventually("narrowed to www", lambda: serial(gateway.https_port, "shop.test") == default, timeout=10)
    assert serial(gateway.https_port, "www.shop.test") == serial_of(renewed)

    put_kv(gateway, "shopgate/tls/certs/shop", None)
    put_kv(gateway, "shopgate/tls/sni/shop", None)
    eventually("removed: the default certificate again", lambda: serial(gateway.https_port, "www.shop.test") == default, timeout=10)
    assert not key_file.exists()
    assert gateway.status()["reloads"] == reloads
    assert gateway.metric('shopgate_gateway_certificate_updates_total{result="applied"}') >= 4


def test_a_default_certificate_never_shadows_a_kv_certificate_for_its_names(gateway_factory, tmp_path, ca):
    """`--default-cert` for localhost (as `shopgate up` runs it) and a renewed localhost certificate in KV:
    SNI localhost gets the KV one, a client without SNI the default."""
    default_file = tmp_path / "default.pem"
    default_file.write_bytes(issue(ca, ("localhost",)))
    gateway = gateway_factory(args=("--https", f"127.0.0.1:{free_port()}", "--default-cert", str(default_file)))
    gateway.https_port = int(gateway.status()["tls"]["https"].rpartition(":")[2])
    gateway.ca = ca
    assert serial(gateway.https_port, "localhost") == serial_of(default_file.read_bytes())
    renewed = serve(gateway, "localhost", "localhost")
    assert serial(gateway.https_port, None) == serial_of(default_file.read_bytes())
    assert serial(gateway.https_port, "localhost") == serial_of(renewed)


def _bad_bundles(ca) -> dict[str, tuple[bytes, str]]:
    good = issue(ca, ("bad.test",))
    leaf_and_key = good.split(b"-----END CERTIFICATE-----\n", 1)
    other_key = issue(ca, ("bad.test",)).split(b"-----END CERTIFICATE-----\n")[-1]
    return {
        "notpem": (b"hello", "no PEM certificate"),
        "nokey": (leaf_and_key[0] + b"-----END CERTIFICATE-----\n", "exactly one PEM private key"),
        "wrongkey": (leaf_and_key[0] + b"-----END CERTIFICATE-----\n" + other_key, "does not match"),
        "expired": (issue(ca, ("bad.test",), not_before=NOW - datetime.timedelta(days=10), not_after=NOW - datetime.timedelta(days=1)), "expired on"),
        "future": (issue(ca, ("bad.test",), not_before=NOW + datetime.timedelta(days=1)), "not valid before"),
        "nosan": (issue(ca, ("bad.test",), with_san=False), "no subjectAltName"),
        "badchain": (issue(ca, ("bad.test",), chain=False) + make_ca("someone else").pem, "did not issue"),
    }


def test_bad_certificates_never_replace_a_good_one(https_gateway, ca):
    gateway = https_gateway
    good = serve(gateway, "good", "bad.test")
    reloads = gateway.status()["reloads"]
    bad = _bad_bundles(ca)
    for name, (bundle, _) in bad.items():
        put_kv(gateway, f"shopgate/tls/certs/{name}", bundle)
    put_kv(gateway, "shopgate/tls/certs/good", bad["wrongkey"][0])   # a bad renewal of a serving certificate
    (gateway.certs_dir / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")

    def all_rejected():
        rejected = gateway.status()["tls"]["rejected"]
        return len(rejected) == len(bad) + 2 and rejected
    rejected = eventually("every bad bundle rejected", all_rejected, timeout=10)
    for name, (_, reason) in bad.items():
        assert any(r.startswith(f"shopgate/tls/certs/{name}: ") and reason in r for r in rejected), (name, rejected)
    assert any(r.startswith("shopgate/tls/certs/good: ") and "does not match" in r for r in rejected)
    assert any(r.startswith(str(gateway.certs_dir / "broken.pem")) for r in rejected)
    assert serial(gateway.https_port, "bad.test") == serial_of(good)   # the good one keeps serving
    assert [c["id"] for c in gateway.status()["tls"]["certificates"]] == ["kv-good"]
    assert gateway.status()["reloads"] == reloads
    assert gateway.metric("shopgate_gateway_certificates_rejected") == len(bad) + 2


def test_certificate_file_directory_is_watched(https_gateway, ca):
    gateway = https_gateway
    bundle = issue(ca, ("files.test",))
    (gateway.certs_dir / "files.pem").write_bytes(bundle)
    eventually("the file certificate served", lambda: serial(gateway.https_port, "files.test") == serial_of(bundle), timeout=10)
    (gateway.certs_dir / "files.pem").unlink()
    eventually("gone with its file", lambda: serial(gateway.https_port, "files.test") != serial_of(bundle), timeout=10)


def test_curl_http1_and_http2_with_forwarded_proto(https_gateway, ca):
    gateway = https_gateway
    put_kv(gateway, "shopgate/tls/certs/shop", issue(ca, ("shop.test",)))
    eventually("served", lambda: gateway.status()["tls"]["certificates"], timeout=10)
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        result = subprocess.run(
            ["curl", "-sS", flag, "--cacert", str(gateway.ca_file), "--resolve", f"shop.test:{gateway.https_port}:127.0.0.1",
             "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"https://shop.test:{gateway.https_port}/api/v1/products"],
            capture_output=True, text=True, timeout=30)
        assert result.stdout == f"200 {version}", (flag, result.stdout, result.stderr)


def test_https_redirect_and_hsts_per_service(https_gateway, ca):
    gateway = https_gateway
    put_kv(gateway, "shopgate/tls/certs/shop", issue(ca, ("shop.test",)))
    put_kv(gateway, "shopgate/services/products/https_redirect", b"true")
    put_kv(gateway, "shopgate/services/products/hsts", b"31536000")

    def redirected():
        answer = requests.get(f"{gateway.url}/api/v1/products?x=1", headers={"Host": "shop.test"}, allow_redirects=False, timeout=5)
        return answer.status_code == 308 and answer.headers["Location"]
    location = eventually("plain HTTP redirected", redirected, timeout=15)
    assert location == f"https://shop.test:{gateway.https_port}/api/v1/products?x=1"
    status, headers, body = verified_get(gateway, "shop.test")
    assert status == 200 and headers["strict-transport-security"] == "max-age=31536000"


def test_rotation_under_https_load_fails_nothing(https_gateway, ca):
    """New TLS connection per request (a handshake each) while the certificate is replaced 10 times."""
    gateway = https_gateway
    first = serve(gateway, "shop", "shop.test")
    reloads = gateway.status()["reloads"]
    stop = threading.Event()
    results = {"ok": 0, "failed": []}

    def client():
        while not stop.is_set():
            try:
                status, _, body = verified_get(gateway, "shop.test")
                if status == 200 and body.get("service") == "products":
                    results["ok"] += 1
                else:
                    results["failed"].append(status)
            except (OSError, ssl.SSLError, ValueError) as error:
                results["failed"].append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    seen = {serial_of(first)}
    try:
        for _ in range(10):
            seen.add(serial_of(serve(gateway, "shop", "shop.test")))
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert results["failed"] == []
    assert results["ok"] > 50
    assert len(seen) == 11
    assert gateway.status()["reloads"] == reloads


def spki_pin(bundle: bytes) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value for the bundle's leaf: base64 SHA-256 of its SPKI."""
    spki = x509.load_pem_x509_certificates(bundle)[0].public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_headless_chromium_loads_a_page_over_https_trusting_the_certificate(https_gateway, ca):
    """Chromium trusts the served certificate by its SPKI pin (no NSS database) and shows the routed answer;
    pinned to another key it refuses the page, so the page came over TLS with exactly this certificate."""
    gateway = https_gateway
    bundle = serve(gateway, "local", "localhost")
    url = f"https://localhost:{gateway.https_port}/api/v1/products"
    dom = page_dom(url, wait_ms=1000, extra=(f"--ignore-certificate-errors-spki-list={spki_pin(bundle)}",))
    assert '"service":"products"' in dom.replace(" ", ""), dom[:500]
    other = page_dom(url, wait_ms=1000, extra=(f"--ignore-certificate-errors-spki-list={spki_pin(issue(ca, ('localhost',)))}",))
    assert '"service"' not in other, other[:500]
