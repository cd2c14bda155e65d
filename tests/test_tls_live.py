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
import signal
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
from gateway_harness import eventually, gateway_factory, proxy_v2  # noqa: F401  (fixture)
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
    eventually(f"{name} served for {server_name}", lambda: serial(gateway.https_port, server_name) == serial_of(bundle), interval=0.02)
    return bundle


def put_kv(gateway, key: str, value: bytes | None) -> None:
    kv = gateway.catalog.client().kv
    if value is None:
        kv.delete(key)
    else:
        kv.put(key, value)


def verified_get(gateway, host: str, path: str = "/api/v1/products", port: int | None = None,
                 preamble: bytes = b"", tls: bool = True) -> tuple[int, dict, dict]:
    """A GET to 127.0.0.1 (the HTTPS port unless `port`), after `preamble` (e.g. a PROXY header) on the same
    connection, then over TLS verified against the test CA with SNI `host` (plain with tls=False):
    status, headers, body."""
    context = ssl.create_default_context(cafile=str(gateway.ca_file))
    with socket.create_connection(("127.0.0.1", port or gateway.https_port), timeout=5) as raw:
        raw.sendall(preamble)
        with context.wrap_socket(raw, server_hostname=host) if tls else raw as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := connection.recv(65536):
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
    eventually("the KV certificate served for its name", lambda: serial(gateway.https_port, "shop.test") == serial_of(bundle), interval=0.02)
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
    eventually("the renewed certificate served", lambda: serial(gateway.https_port, "shop.test") == serial_of(renewed), interval=0.02)

    put_kv(gateway, "shopgate/tls/sni/shop", b"www.shop.test")
    eventually("narrowed to www", lambda: serial(gateway.https_port, "shop.test") == default)
    assert serial(gateway.https_port, "www.shop.test") == serial_of(renewed)

    put_kv(gateway, "shopgate/tls/certs/shop", None)
    put_kv(gateway, "shopgate/tls/sni/shop", None)
    eventually("removed: the default certificate again", lambda: serial(gateway.https_port, "www.shop.test") == default)
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
    rejected = eventually("every bad bundle rejected", all_rejected)
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
    eventually("the file certificate served", lambda: serial(gateway.https_port, "files.test") == serial_of(bundle))
    (gateway.certs_dir / "files.pem").unlink()
    eventually("gone with its file", lambda: serial(gateway.https_port, "files.test") != serial_of(bundle))


def test_curl_http1_and_http2_with_forwarded_proto(https_gateway, ca):
    gateway = https_gateway
    put_kv(gateway, "shopgate/tls/certs/shop", issue(ca, ("shop.test",)))
    eventually("served", lambda: gateway.status()["tls"]["certificates"])
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


def _or_none(call):
    """call()'s result, or None while the connection is refused or the handshake fails (e.g. before a reload)."""
    try:
        return call()
    except OSError:   # ssl.SSLError and connection resets alike
        return None


def test_https_serves_the_entry_points_environments_and_takes_proxy_v2_before_the_handshake(https_gateway, ca):
    """HTTPS is a second bind of the entry point's frontend: it serves prod, and the environments selected
    there by host name (`hosts`); an environment with its own `bind` is plain HTTP on that bind only, so a
    staging instance never answers over HTTPS. With accept_proxy the HTTPS bind reads a PROXY v2 header
    before the TLS handshake, as behind an outer L4 balancer's send-proxy-v2."""
    gateway = https_gateway
    (prod,) = eventually("prod's instance up", lambda: gateway.servers_up("products"))
    staging_bind = free_port()
    put_kv(gateway, "shopgate/gateway/environments/staging/bind", f"127.0.0.1:{staging_bind}".encode())
    put_kv(gateway, "shopgate/gateway/environments/qa/hosts", b"qa.shop.test")
    staging = gateway.start_backend("products", tags="env=staging")
    qa = gateway.start_backend("products", tags="env=qa")
    bundle = issue(ca, ("shop.test", "staging.shop.test", "qa.shop.test"))
    put_kv(gateway, "shopgate/tls/certs/shop", bundle)
    eventually("staging routed", lambda: gateway.routed("products@staging", {staging.port}))
    eventually("qa routed", lambda: gateway.routed("products@qa", {qa.port}))
    eventually("the certificate served", lambda: serial(gateway.https_port, "qa.shop.test") == serial_of(bundle))

    def answered(host: str, **kwargs) -> tuple[int, str, str]:
        status, _, body = verified_get(gateway, host, **kwargs)
        assert status == 200, (host, status, body)
        return body["port"], body["forwarded_proto"], body["forwarded_for"]

    assert answered("shop.test") == (prod, "https", "127.0.0.1")
    assert answered("staging.shop.test") == (prod, "https", "127.0.0.1"), "staging's host name over HTTPS is prod's request"
    assert answered("qa.shop.test") == (qa.port, "https", "127.0.0.1"), "an environment selected by host name is served over HTTPS"
    assert answered("staging.shop.test", port=staging_bind, tls=False) == (staging.port, "http", "127.0.0.1")
    with pytest.raises(OSError):   # no TLS on an environment's own bind: HAProxy answers 400 in plain text, or resets
        verified_get(gateway, "staging.shop.test", port=staging_bind)

    put_kv(gateway, "shopgate/gateway/accept_proxy", b"true")
    header = proxy_v2("198.51.100.20", 40100, gateway.https_port)
    eventually("the HTTPS bind takes PROXY v2", lambda: _or_none(lambda: verified_get(gateway, "shop.test", preamble=header)), timeout=15)
    assert answered("shop.test", preamble=header) == (prod, "https", "198.51.100.20")
    assert answered("qa.shop.test", preamble=proxy_v2("198.51.100.21", 40101, gateway.https_port)) == (qa.port, "https", "198.51.100.21")
    assert answered("x", port=staging_bind, tls=False, preamble=proxy_v2("198.51.100.22", 40102, staging_bind)) == (staging.port, "http", "198.51.100.22")
    with pytest.raises(OSError):
        verified_get(gateway, "shop.test")   # a TLS handshake without the header is not a PROXY header: closed


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


def test_a_restarted_controller_keeps_serving_the_kv_certificate_throughout(https_gateway, ca):
    """The controller SIGKILLed and started again on the same state dir adopts the running HAProxy: every
    handshake meanwhile presents the KV certificate (never the default), /status lists it again, a
    renewal written while no controller ran goes in through the runtime API, and the first reload after
    the restart (a structural KV change) loads the files, which still hold it."""
    gateway = https_gateway
    first = serve(gateway, "shop", "shop.test")
    default = serial(gateway.https_port, "other.test")
    haproxy_pid = gateway.status()["haproxy_pid"]
    presented: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def handshakes():
        while not stop.is_set():
            try:
                presented.append(serial(gateway.https_port, "shop.test"))
            except OSError as error:
                failures.append(repr(error))

    thread = threading.Thread(target=handshakes)
    thread.start()
    marks = []   # handshakes so far: at the kill, at the restart, once the new controller answers, at the end
    try:
        eventually("handshakes going", lambda: presented)
        marks.append(len(presented))
        gateway.process.signal(signal.SIGKILL)
        gateway.process.popen.wait(timeout=10)
        renewed = issue(ca, ("shop.test",))
        put_kv(gateway, "shopgate/tls/certs/shop", renewed)   # while no controller runs
        eventually("handshakes while no controller runs", lambda: len(presented) > marks[0] + 2)
        marks.append(len(presented))
        gateway.launch()
        crt_list = gateway.state_dir / "tls" / "crt-list"
        eventually("the new controller answers", lambda: gateway.status()["tls"]["certificates"], timeout=30)
        marks.append(len(presented))
        assert "kv-shop.pem shop.test" in crt_list.read_text(), "the crt-list HAProxy reloads from still holds the KV certificate"
        fingerprint = hashlib.sha256(x509.load_pem_x509_certificates(renewed)[0].public_bytes(Encoding.DER)).hexdigest()
        eventually("/status shows the renewal", lambda: [c["fingerprint_sha256"] for c in gateway.status()["tls"]["certificates"]] == [fingerprint], timeout=15)
        eventually("the renewal served", lambda: serial(gateway.https_port, "shop.test") == serial_of(renewed))
        assert gateway.status()["haproxy_pid"] == haproxy_pid, "adopted, not replaced"
        assert gateway.status()["reloads"] == 0

        put_kv(gateway, "shopgate/services/products/timeout_server", b"20s")   # structural: one reload
        eventually("reloaded", lambda: gateway.status()["reloads"] == 1, timeout=15)
        eventually("handshakes after the reload", lambda: len(presented) > marks[-1] + 2)
        marks.append(len(presented))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert failures == []
    assert marks == sorted(set(marks)), f"handshakes in every phase: {marks}"
    assert default not in presented, f"the default certificate was presented {presented.count(default)} of {len(presented)} times"
    assert set(presented) == {serial_of(first), serial_of(renewed)}
    assert serial(gateway.https_port, "shop.test") == serial_of(renewed)
    assert "kv-shop.pem shop.test" in crt_list.read_text()


def test_a_certificate_haproxy_holds_but_the_files_lost_is_taken_back_not_refused(https_gateway, ca):
    """The controller died after HAProxy committed a new certificate but before the files were written:
    the next controller's add meets a certificate HAProxy already holds and replaces it, crt-list line
    included (no refusal in /status, no reload, the files written), so removing it later still works."""
    gateway = https_gateway
    bundle = serve(gateway, "shop", "shop.test")
    gateway.process.signal(signal.SIGKILL)
    gateway.process.popen.wait(timeout=10)
    tls_dir = gateway.state_dir / "tls"
    (tls_dir / "kv-shop.pem").unlink()
    (tls_dir / "held.json").write_text("[]\n")
    (tls_dir / "crt-list").write_text(f"{tls_dir}/default.pem !*\n")
    gateway.launch()
    eventually("the files hold it again", lambda: "kv-shop.pem shop.test" in (tls_dir / "crt-list").read_text(), timeout=30)
    tls = eventually("/status lists it", lambda: gateway.status()["tls"])
    assert [c["id"] for c in tls["certificates"]] == ["kv-shop"] and tls["rejected"] == []
    assert serial(gateway.https_port, "shop.test") == serial_of(bundle)
    put_kv(gateway, "shopgate/tls/certs/shop", None)   # one crt-list line for it in HAProxy, or `del ssl crt-list` is refused
    eventually("removed: the default again", lambda: serial(gateway.https_port, "shop.test") != serial_of(bundle))
    assert gateway.status()["tls"]["rejected"] == [] and gateway.status()["tls"]["certificates"] == []
    assert gateway.metric('shopgate_gateway_certificate_updates_total{result="rejected"}') == 0
    assert gateway.status()["reloads"] == 0


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
