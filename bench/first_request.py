"""Catalog passing -> first routed request: how soon a new instance takes traffic through the gateway.

    .venv/bin/python bench/first_request.py [--rounds 10] [--together 1,20]

A real catalog and `shopgate gateway` (one service, 64 slots from KV `slots`), real HTTP instances
in this process, and a steady load through the entry point. Per round, N instances registered
critical turn passing at once (one catalog call each); for each, the time from just before its
call to the first routed request its server receives (HAProxy's own health check has to pass
first: it is part of the figure). Floor: p99 <= 150 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig  # noqa: E402
from _harness import machine, percentile, table  # noqa: E402

SERVICE = "svc00000"


class Instance:
    """A tiny HTTP instance: answers everything, remembers when the first routed (non-/health) request came."""

    def __init__(self) -> None:
        self.first_routed: float | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/health" and owner.first_routed is None:
                    owner.first_routed = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None   # checks and load close connections early
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def steady_load(url: str, stop: threading.Event, workers: int = 4) -> list[threading.Thread]:
    def loop() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                session.get(url, timeout=5)
            except requests.RequestException:
                time.sleep(0.01)
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    return threads


def one_round(rig: Rig, together: int, round_: int) -> list[float]:
    instances = [Instance() for _ in range(together)]
    ids = [f"{SERVICE}-new-{round_}-{i}" for i in range(together)]
    try:
        for service_id, instance in zip(ids, instances):
            rig.register(SERVICE, service_id, port=instance.port, status="critical")
        time.sleep(0.5)   # the critical registrations settle (nothing changes in HAProxy)
        started: dict[str, float] = {}

        def make_passing(service_id: str) -> None:
            started[service_id] = time.monotonic()
            rig.pass_check(service_id)

        with ThreadPoolExecutor(together) as pool:
            list(pool.map(make_passing, ids))
        deadline = time.monotonic() + 10
        while any(i.first_routed is None for i in instances) and time.monotonic() < deadline:
            time.sleep(0.01)
        return [((i.first_routed or float("inf")) - started[s]) * 1000 for s, i in zip(ids, instances)]
    finally:
        for service_id in ids:
            rig.deregister(service_id)
        time.sleep(1.5)   # drained and back in maint before the next round
        for instance in instances:
            instance.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--together", default="1,20", help="comma-separated counts of instances turning passing at once")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rig = Rig(1, 1, gateway_args=("--drain-timeout", "1"), kv={f"shopgate/services/{SERVICE}/slots": "64"})
    stop = threading.Event()
    rows = []
    try:
        rig.start()
        time.sleep(2)
        reloads = rig.metric("shopgate_gateway_reloads_total")
        load = steady_load(f"http://127.0.0.1:{rig.listen_port}/api/v1/{SERVICE}", stop)
        for together in (int(n) for n in args.together.split(",")):
            rounds = max(1, args.rounds if together == 1 else args.rounds // 3)
            values = [ms for round_ in range(rounds) for ms in one_round(rig, together, round_ + 1000 * together)]
            rows.append((together, len(values), f"{percentile(values, 0.5):.0f}", f"{percentile(values, 0.99):.0f}", f"{max(values):.0f}"))
        reloads = rig.metric("shopgate_gateway_reloads_total") - reloads
    finally:
        stop.set()
        rig.close()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; reloads during the rounds: {reloads:.0f}")
    print(table(("instances passing at once", "n", "p50 ms", "p99 ms", "max ms"), rows))
    worst = max(float(row[3]) for row in rows)
    print(f"floor first routed request <= 150 ms p99: {'met' if worst <= 150 else 'NOT met'} ({worst:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
