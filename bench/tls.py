"""HTTPS at the entry point: its cost next to HTTP, KV write -> certificate served, 1,000 SNI certificates.

    .venv/bin/python bench/tls.py [--seconds 5] [--rotations 20] [--certs 1000]

A catalog, a controller with `--https`, and one `products` instance that is a second HAProxy answering
`http-request return status 200` (one thread): far faster than the gateway path, so the ratio is the
entry point's TLS cost, not the instance's limit (a Python test server capped the keep-alive rates).
The instance alone is measured too. Prints:
  1. wrk through the gateway to that instance over HTTP and HTTPS, keep-alive and a new connection
     (a full TLS handshake) per request, alternating in one run, the ratios, and every error wrk saw
     (socket errors by kind, non-2xx answers); wrk's TLS runs on the same two cores;
  2. KV write of a renewed certificate -> HAProxy presenting it (a handshake polled every ~2 ms),
     with the reload counter before and after;
  3. `--certs` certificates written to KV: time until all are served, HAProxy and controller memory.
No pass/fail.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import ssl
import subprocess
import time

from _gateway_rig import Rig
from _harness import HAPROXY, machine, parse_wrk, percentile, table
from cryptography import x509

from shopgate.certs import issue, make_ca
from shopgate.processes import ManagedProcess, free_port, process_rss_kib, wait_for_http

#: The instance: HAProxy answering every request itself (HAProxy's health check of it included).
INSTANCE_CONFIG = """global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend instance
    bind 127.0.0.1:{port}
    http-request return status 200 content-type application/json string "{{\\"service\\": \\"products\\"}}"
"""


def serial(port: int, name: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def serial_of(bundle: bytes) -> int:
    return x509.load_pem_x509_certificates(bundle)[0].serial_number


def haproxy_rss_mb(rig: Rig) -> float:
    info = rig.cli.show_proc()
    return sum((process_rss_kib(pid) or 0) for pid in (info.master_pid, *info.workers)) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--certs", type=int, default=1000)
    args = parser.parse_args()
    https_port = free_port()
    rig = Rig(1, 1, gateway_args=("--https", f"127.0.0.1:{https_port}"))
    instance = None
    try:
        rig.start()
        port = free_port()
        config = rig.dir / "instance.cfg"
        config.write_text(INSTANCE_CONFIG.format(port=port))
        instance = ManagedProcess("instance", [HAPROXY, "-db", "-f", str(config)], log_path=rig.dir / "instance.log").start()
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=30, process=instance)
        rig.register("products", "products-haproxy", port)
        wait_for_http(f"http://127.0.0.1:{rig.listen_port}/api/v1/products", timeout=60, process=instance)
        ca = make_ca("bench CA")
        rig.kv_put("shopgate/tls/certs/shop", issue(ca, ("shop.test",)).decode())
        while rig.metric("shopgate_gateway_certificate_expiry_seconds", '{name="kv-shop"}') == 0:
            time.sleep(0.05)
        openssl = re.search(r"Running on OpenSSL version : (.+)", subprocess.run([HAPROXY, "-vv"], capture_output=True, text=True).stdout)
        print(f"machine: {machine()}; HAProxy runs on {openssl.group(1) if openssl else 'an unknown OpenSSL'}; certificates EC P-256\n")

        print(f"1. HTTP vs HTTPS through the gateway to the same instance (wrk -t2 -c16 -d{args.seconds:.0f}s, alternating)")
        rows, rates = [], {}
        for mode, headers in (("keep-alive", []), ("new connection per request", ["-H", "Connection: close"])):
            for scheme, url in (("instance alone", f"http://127.0.0.1:{port}/api/v1/products"),
                                ("http", f"http://127.0.0.1:{rig.listen_port}/api/v1/products"),
                                ("https", f"https://127.0.0.1:{https_port}/api/v1/products")):
                rate, requests, errors = wrk(url, args.seconds, headers)
                rates[(mode, scheme)] = rate
                rows.append((mode, scheme, f"{rate:.0f}", requests, errors, f"{os.getloadavg()[0]:.2f}"))
        print(table(("connections", "to", "req/s", "requests", "errors", "load avg"), rows))
        for mode in ("keep-alive", "new connection per request"):
            print(f"   {mode}: HTTPS/HTTP = {rates[(mode, 'https')] / max(rates[(mode, 'http')], 1):.2f}"
                  f" (HTTP through the gateway / instance alone = {rates[(mode, 'http')] / max(rates[(mode, 'instance alone')], 1):.2f})")

        print(f"\n2. KV write of a renewed certificate -> served ({args.rotations} rotations)")
        reloads = rig.metric("shopgate_gateway_reloads_total")
        latencies = []
        for _ in range(args.rotations):
            bundle = issue(ca, ("shop.test",))
            started = time.monotonic()
            rig.kv_put("shopgate/tls/certs/shop", bundle.decode())
            while serial(https_port, "shop.test") != serial_of(bundle):
                time.sleep(0.002)
            latencies.append((time.monotonic() - started) * 1000)
        print(f"   median {percentile(latencies, 0.5):.0f} ms, p95 {percentile(latencies, 0.95):.0f} ms, max {max(latencies):.0f} ms;"
              f" reloads {reloads:.0f} -> {rig.metric('shopgate_gateway_reloads_total'):.0f}; load avg {os.getloadavg()[0]:.2f}")

        print(f"\n3. {args.certs} SNI certificates from KV")
        bundles = [issue(ca, (f"site{n:04d}.test",)).decode() for n in range(args.certs)]
        before_haproxy, before_controller = haproxy_rss_mb(rig), rig.rss_mb()
        started = time.monotonic()
        for n, bundle in enumerate(bundles):
            rig.kv_put(f"shopgate/tls/certs/site{n:04d}", bundle)
        written = time.monotonic() - started
        last = f"site{args.certs - 1:04d}.test"
        while serial(https_port, last) != serial_of(bundles[-1].encode()):
            time.sleep(0.02)
        served = time.monotonic() - started
        print(f"   KV writes took {written:.1f}s; all served {served:.1f}s after the first write;"
              f" HAProxy RSS {before_haproxy:.0f} -> {haproxy_rss_mb(rig):.0f} MB, controller {before_controller:.0f} -> {rig.rss_mb():.0f} MB;"
              f" reloads {rig.metric('shopgate_gateway_reloads_total'):.0f}; load avg {os.getloadavg()[0]:.2f}")
    finally:
        if instance is not None:
            instance.stop(timeout=10)
        rig.close()
    return 0


def wrk(url: str, seconds: float, headers: list[str]) -> tuple[float, int, str]:
    """(req/s, requests, errors) of wrk -t2 -c16 on `url`; errors spelled out as wrk reports them ("0" when none)."""
    done = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds:.0f}s", "--latency", *headers, url], capture_output=True, text=True, check=True)
    result = parse_wrk(done.stdout, "wrk")
    kinds = re.findall(r"(?:Socket errors: .*|Non-2xx or 3xx responses: \d+)", done.stdout)
    return result.rate, result.requests, "; ".join(kinds) if result.errors else "0"


if __name__ == "__main__":
    raise SystemExit(main())
