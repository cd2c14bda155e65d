"""The catalog's load with 1, 5 and 10 gateway controllers watching 2,000 services.

    .venv/bin/python bench/gateways.py [--services 2000] [--gateways 1,5,10] [--seconds 30] [--rate 10]

One embedded catalog (`shopgate catalog`, its own process) holds 2,000 services, one instance and
one TTL check each. Gateways (`shopgate gateway`, each with its own real HAProxy on free ports) are
added until 1, then 5, then 10 run; once all have synced, the bench flips health checks at a steady
`--rate` (a check turns critical, later passing again) for `--seconds` and prints, per gateway count:

* long-polls: blocking queries the catalog holds (its gauge `shopgate.catalog.blocking_queries_held`)
  and the sum of the controllers' `shopgate_gateway_long_polls`, sampled every second (mean);
* requests/s the catalog served, from its own counter `shopgate.catalog.http_requests` (the bench's
  own flips and metric reads taken out), and the sum of the controllers' `catalog.requests` (/status);
* the catalog's CPU time per second (user + system, from /proc), i.e. the share of one core;
* propagation: from the flip's API call until each gateway's HAProxy shows the slot's new admin state
  (polled through the master CLI every 5 ms, at most two pollers per gateway), p50/p99/max over every
  (flip, gateway) pair.

HAProxy's checks: only `--flippers` services (20, spread over the 2,000) start passing; the others
start critical, so their slots sit in `maint` and HAProxy runs no check for them. The instances
point at closed ports, and a down server is checked every second (settings.HEALTH_CHECK; one
created at runtime every 20 ms, NEW_SERVER_CHECK): 2,000 passing services would be 8,000 checks/s
per HAProxy, 80,000 with 10 — more than this 2-core machine has beside the gateways, and nothing
the catalog sees. The catalog's work is the same either way: every
health answer lists every check, whatever its status. Each HAProxy has 4 slots per service (the
minimum, `--slot-headroom 1`) and KV maxconn 1000, as bench/membership.py, for the descriptor limit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import FIRST_PORT, FORCED_MAINT, Gateway, Rig  # noqa: E402
from _harness import load_average, machine, percentile, table  # noqa: E402
from shopgate.processes import process_cpu_seconds  # noqa: E402


class Phase:
    """One measured period: the catalog's counters before and after, long-poll samples, propagation times."""

    def __init__(self, rig: Rig, gateways: list[Gateway]):
        self.rig, self.gateways = rig, gateways
        self.own_requests = 0            # what the bench itself asked the catalog during the period
        self.held: list[float] = []      # catalog side
        self.polls: list[float] = []     # sum over the controllers
        self.latencies: list[float] = []
        self.lock = threading.Lock()

    def catalog_metrics(self) -> dict[str, float]:
        self.own_requests += 1
        return self.rig.catalog_metrics()

    def snapshot(self) -> tuple[float, float, float, float]:
        """(monotonic time, catalog requests received, catalog CPU seconds, the controllers' requests)."""
        received = self.catalog_metrics()["shopgate.catalog.http_requests"]
        return (time.monotonic(), received, process_cpu_seconds(self.rig.catalog.pid) or 0.0,
                sum(g.status()["catalog"]["requests"] for g in self.gateways))

    def sample_long_polls(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            self.held.append(self.catalog_metrics()["shopgate.catalog.blocking_queries_held"])
            self.polls.append(sum(g.metric("shopgate_gateway_long_polls") for g in self.gateways))

    def wait_on(self, gateway: Gateway, backend: str, address: str, critical: bool, started: float) -> None:
        def predicate(state: int | None) -> bool:
            return state is not None and bool(state & FORCED_MAINT) == critical
        seen = gateway.wait_for(backend, address, predicate, timeout=60, interval=0.005)
        with self.lock:
            self.latencies.append((seen - started) * 1000)


def measure(rig: Rig, gateways: list[Gateway], flippers: list[int], critical: dict[int, bool], seconds: float, rate: float) -> dict:
    phase = Phase(rig, gateways)
    stop = threading.Event()
    sampler = threading.Thread(target=phase.sample_long_polls, args=(stop,), daemon=True)
    before = phase.snapshot()
    sampler.start()
    flips = int(seconds * rate)
    pools = {id(gateway): ThreadPoolExecutor(2) for gateway in gateways}   # at most 2 pollers on one master socket
    try:
        waits = []
        begun = time.monotonic()
        for n in range(flips):
            time.sleep(max(0.0, begun + n / rate - time.monotonic()))
            service = flippers[n % len(flippers)]
            critical[service] = not critical[service]
            started = time.monotonic()
            (rig.fail_check if critical[service] else rig.pass_check)(f"svc{service:05d}-0")
            phase.own_requests += 1
            waits += [pools[id(gateway)].submit(phase.wait_on, gateway, f"be_svc{service:05d}", f"127.0.0.1:{FIRST_PORT + service}", critical[service], started)
                      for gateway in gateways]
        time.sleep(max(0.0, begun + seconds - time.monotonic()))
        stop.set()
        sampler.join()
        after = phase.snapshot()
        for wait in waits:
            wait.result()
    finally:
        for pool in pools.values():
            pool.shutdown(cancel_futures=True)
    elapsed = after[0] - before[0]
    own = phase.own_requests - 1   # a read counts itself: the opening one is in `before` already
    return {"flips": flips, "seconds": elapsed,
            "held": statistics.fmean(phase.held) if phase.held else float("nan"),
            "polls": statistics.fmean(phase.polls) if phase.polls else float("nan"),
            "catalog_rps": (after[1] - before[1] - own) / elapsed,
            "gateways_rps": (after[3] - before[3]) / elapsed,
            "cpu": (after[2] - before[2]) / elapsed,
            "p50": percentile(phase.latencies, 0.5), "p99": percentile(phase.latencies, 0.99), "max": max(phase.latencies)}


def settle(gateways: list[Gateway], timeout: float = 120) -> None:
    """Every controller idle on its three long-polls (synced, nothing left to apply)."""
    deadline = time.monotonic() + timeout
    while sum(g.metric("shopgate_gateway_long_polls") for g in gateways) < 3 * len(gateways):
        if time.monotonic() > deadline:
            raise RuntimeError("the gateways did not settle on their long-polls")
        time.sleep(0.5)
    time.sleep(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--gateways", default="1,5,10", help="gateway counts, ascending (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured period per gateway count")
    parser.add_argument("--rate", type=float, default=10.0, help="health flips per second")
    parser.add_argument("--flippers", type=int, default=20, help="services whose check flips (they start passing)")
    args = parser.parse_args()
    counts = [int(n) for n in args.gateways.split(",")]
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    flippers = list(range(0, args.services, max(1, args.services // args.flippers)))[: args.flippers]
    critical = {service: False for service in flippers}
    rig = Rig(args.services, 1, gateway_args=("--slot-headroom", "1"), kv={"shopgate/gateway/maxconn": "1000"})
    rows = []
    try:
        rig.start_catalog()
        rig.register_all(status="critical")
        for service in flippers:
            rig.pass_check(f"svc{service:05d}-0")
        gateways: list[Gateway] = []
        for count in counts:
            while len(gateways) < count:
                started = time.monotonic()
                if rig.gateway is None:
                    rig.start_gateway()
                    gateways.append(rig.gateway)
                else:
                    gateways.append(rig.add_gateway())
                print(f"  gateway {len(gateways)}: first full config running {time.monotonic() - started:.1f}s after start", flush=True)
            settle(gateways)
            figures = measure(rig, gateways, flippers, critical, args.seconds, args.rate)
            load = load_average()
            print(f"  {count} gateway(s): {figures['flips']} flips in {figures['seconds']:.1f}s; load average {load}", flush=True)
            rows.append((count, f"{figures['flips'] / figures['seconds']:.1f}", f"{figures['held']:.1f}", f"{figures['polls']:.1f}", f"{figures['catalog_rps']:.1f}", f"{figures['gateways_rps']:.1f}",
                         f"{figures['cpu'] * 100:.1f}", f"{figures['p50']:.0f}", f"{figures['p99']:.0f}", f"{figures['max']:.0f}", load.split(" (")[0]))
    finally:
        rig.close()
    print(f"{args.services} services, one instance and one check each; {args.rate:g} health flips/s for {args.seconds:g}s per row")
    print(table(("gateways", "flips/s done", "long-polls held (catalog)", "long-polls (controllers)", "catalog req/s", "controllers' req/s",
                 "catalog CPU % of a core", "propagation p50 ms", "p99 ms", "max ms", "load average 1/5/15"), rows))
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
