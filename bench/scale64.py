"""Scale one service 1 -> 64 -> 1 under load: reloads and failed requests (issue 15's floor: 0 and 0).

    .venv/bin/python bench/scale64.py [--peak 64] [--workers 4]

A real catalog and `shopgate gateway` (one service with the default slots: 4 for one instance), real
HTTP instances served by this process, and a steady keep-alive load through the entry point. 63
instances register passing at once; once all 64 take traffic they deregister at once (each keeps
serving meanwhile, as a draining instance does). Beyond the 4 slots the gateway adds dynamic servers
(`add server`) and deletes them after draining (`del server`), so no reload is expected. Prints the
time until all 64 are UP in HAProxy, until only 1 is left (dynamic servers deleted), the reloads,
and the failed requests (errors and non-2xx answers).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig  # noqa: E402
from _harness import machine, table, wait  # noqa: E402
from first_request import SERVICE, Instance  # noqa: E402


class Load:
    """Keep-alive GETs through the entry point from a few threads; counts requests and failures."""

    def __init__(self, url: str, workers: int):
        self.url, self.stop = url, threading.Event()
        self.requests = self.failed = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                ok = session.get(self.url, timeout=10).status_code < 400
            except requests.RequestException:
                ok = False
            with self.lock:
                self.requests += 1
                self.failed += not ok

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def haproxy_servers(rig: Rig) -> dict[str, str]:
    """Server name -> status of the service's backend in HAProxy (`show stat`)."""
    text = requests.get(f"http://127.0.0.1:{rig.stats_port}/;csv", timeout=10).text.lstrip("# ")
    header, *rows = [line.split(",") for line in text.splitlines() if line]
    status = header.index("status")
    return {r[1]: r[status] for r in rows if r[0] == f"be_{SERVICE}" and r[1] not in ("FRONTEND", "BACKEND")}


def is_slot(name: str) -> bool:
    return re.fullmatch(r"s[0-9]+", name) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4, help="load threads (keep-alive connections)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rig = Rig(1, 1, gateway_args=("--drain-timeout", "5"))   # its one instance (a closed port) goes once ours is UP
    instances = [Instance() for _ in range(args.peak)]
    ids = [f"{SERVICE}-{i.port}" for i in instances]
    load = None
    try:
        rig.start()
        rig.register(SERVICE, ids[0], port=instances[0].port)
        wait("the first instance UP", lambda: list(haproxy_servers(rig).values()).count("UP") == 1)
        rig.deregister(f"{SERVICE}-0")
        wait("the rig's own instance gone", lambda: len([s for s in haproxy_servers(rig).values() if not s.startswith("MAINT")]) == 1)
        reloads = rig.metric("shopgate_gateway_reloads_total")
        load = Load(f"http://127.0.0.1:{rig.listen_port}/api/v1/{SERVICE}", args.workers)
        time.sleep(2)
        for service_id, instance in zip(ids[1:], instances[1:]):
            rig.register(SERVICE, service_id, port=instance.port)
        up = wait(f"{args.peak} servers UP", lambda: list(haproxy_servers(rig).values()).count("UP") == args.peak)
        time.sleep(2)
        names = haproxy_servers(rig)
        for service_id in ids[1:]:
            rig.deregister(service_id)
        down = wait("back to 1 server, dynamic ones deleted",
                    lambda: list((servers := haproxy_servers(rig)).values()).count("UP") == 1 and all(map(is_slot, servers)))
        time.sleep(2)
        load.close()
        reloads = rig.metric("shopgate_gateway_reloads_total") - reloads
    finally:
        if load is not None:
            load.close()
        rig.close()
        for instance in instances:
            instance.close()
    dynamic = [n for n in names if not is_slot(n)]
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(table(("step", "seconds"), [(f"1 -> {args.peak}: {args.peak - 1} registered at once -> all UP in HAProxy", f"{up:.2f}"),
                                      (f"{args.peak} -> 1: {args.peak - 1} deregistered at once -> dynamic servers deleted", f"{down:.2f}")]))
    print(f"servers at the peak: {len(names)} ({len(names) - len(dynamic)} slots, {len(dynamic)} dynamic, e.g. {', '.join(sorted(dynamic)[:2])})")
    print(f"instances that served routed requests: {sum(i.first_routed is not None for i in instances)} of {args.peak}")
    print(f"requests {load.requests}, failed {load.failed}, reloads {reloads:.0f}")
    print(f"floor 0 reloads and 0 failed: {'met' if reloads == 0 and load.failed == 0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
