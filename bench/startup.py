"""End-to-end startup: from `shopgate service products` starting to the first request the gateway routes to it.

    .venv/bin/python bench/startup.py [--runs 5]

A throw-away stack with products scaled to 0; each run starts one products instance and polls
(every 20 ms) the catalog and the entry point until the new instance answers through HAProxy, then
stops it (drain, deregister) and waits until the gateway has let it go. No pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import requests
from _harness import machine, table

from shopgate.tool.display import Progress
from shopgate.tool.lifecycle import scale, scratch_stack, start_instance, stop_records
from shopgate.tool.probes import catalog_instances, gateway_status, routed_ports

POLL = 0.02


def first_routed(manifest, port: int) -> tuple[float, float, float]:
    """Seconds from now until: registered in the catalog, passing there, answering through the entry point."""
    started = time.monotonic()
    registered = passing = None
    while True:
        instances = {entry.port: entry.status for entry in catalog_instances(manifest.ports.catalog_url, "products")}
        now = time.monotonic() - started
        if registered is None and port in instances:
            registered = now
        if passing is None and instances.get(port) == "passing":
            passing = now
        try:
            response = requests.get(f"{manifest.ports.entry_url}/api/v1/products", timeout=2)
            if response.status_code == 200 and response.headers.get("X-Instance") == f"products-{port}":
                return registered or now, passing or now, time.monotonic() - started
        except requests.RequestException:
            pass
        if now > 60:
            raise TimeoutError(f"products-{port} was not routed within 60 s")
        time.sleep(POLL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with scratch_stack(instances=1) as manifest:
        scale(manifest, "products", 0, Progress(sys.stderr))
        for run in range(1, args.runs + 1):
            record = start_instance(manifest, "products")
            rows.append((run, *first_routed(manifest, record.port)))
            stop_records([record], 20)
            while routed_ports(gateway_status(manifest.ports), "products"):
                time.sleep(POLL)
    print(f"service startup to first routed request — {machine()}")
    print("(times from the `shopgate service products` process start; polled every 20 ms)\n")
    print(table(("run", "registered s", "passing s", "first routed s"), [(r, f"{a:.2f}", f"{b:.2f}", f"{c:.2f}") for r, a, b, c in rows]))
    routed = [r[3] for r in rows]
    print(f"\nfirst routed request: median {statistics.median(routed):.2f} s, min {min(routed):.2f} s, max {max(routed):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
