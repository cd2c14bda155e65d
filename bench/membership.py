"""The shape of a membership change's cost: 100, 1,000 and 10,000 servers on one run (it should stay flat).

    .venv/bin/python bench/membership.py [--services 20,200,2000] [--instances 5] [--changes 30]

Each size gets a catalog and a real `shopgate gateway`, then `--changes` rounds of: an instance's
check turns passing (its slot leaves MAINT), then it deregisters (its slot drains). Printed per size:
the controller side (change seen by the watcher -> runtime API done, from its own histogram), the
catalog API call -> HAProxy's runtime state, the controller's CPU seconds per 1,000 changes (its
whole process, /proc, over the change rounds), blocking queries held (must not grow with the
services), RSS, and HAProxy's CPU while idle (its health checks alone: the instances are closed
ports, so every server is down and checked at its down interval). Floor: <= 20 ms p99 controller side at 10,000 servers, flat from 100 to 10,000.

The gateway runs with its default flags: a slot per instance (5 per service, 10,000 at 10,000
servers) plus two descriptors per `maxconn` (4,096) fit this machine's 20,000-descriptor limit
(bench/descriptors.py); a sixth instance of a service becomes a dynamic server: no reload.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig, measure_changes  # noqa: E402
from _harness import load_average, machine, percentile, table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", default="20,200,2000", help="comma-separated service counts, one rig each")
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--changes", type=int, default=30, help="rounds per size (each: one add, one removal)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    rows = []
    controller_p99 = {}
    for services in (int(n) for n in args.services.split(",")):
        servers = services * args.instances
        print(f"{services} services x {args.instances} instances = {servers} servers:")
        rig = Rig(services, args.instances)
        try:
            rig.start()
            time.sleep(3)   # HAProxy's first round of health checks, the controller idle again
            haproxy_idle = rig.gateway.haproxy_cpu_percent()   # its checks alone: every instance is a closed port, so down
            polls = int(rig.metric("shopgate_gateway_long_polls"))
            names = [f"svc{s:05d}" for s in range(0, services, max(1, services // args.changes))][: args.changes]
            reloads_before = rig.metric("shopgate_gateway_reloads_total")
            rebuilt_before = rig.metric("shopgate_gateway_services_rebuilt_total")
            cpu_before = rig.cpu_seconds()
            adds, removes, controller = measure_changes(rig, args.changes, names)
            cpu = rig.cpu_seconds() - cpu_before
            reloads = rig.metric("shopgate_gateway_reloads_total") - reloads_before
            rebuilt = rig.metric("shopgate_gateway_services_rebuilt_total") - rebuilt_before
            api = adds + removes
            controller_p99[servers] = percentile(controller, 0.99)
            rows.append((f"{servers:,}", len(controller), f"{percentile(controller, 0.5):.1f} / {controller_p99[servers]:.1f}",
                         f"{percentile(api, 0.5):.1f} / {percentile(api, 0.99):.1f}", f"{cpu / len(controller) * 1000:.1f}",
                         f"{rebuilt / len(controller):.1f}", f"{reloads:.0f}", polls, f"{rig.rss_mb():.0f}", f"{haproxy_idle:.0f}"))
            print(f"  load average: {load_average()}")
        finally:
            rig.close()
    print(table(("servers", "changes", "controller p50 / p99 ms", "API call -> HAProxy p50 / p99 ms", "CPU s / 1,000 changes",
                 "services rebuilt / change", "reloads", "long-polls", "RSS MB", "HAProxy idle CPU %"), rows))
    largest = max(controller_p99)
    flat = controller_p99[largest] <= 2 * max(1.0, controller_p99[min(controller_p99)])
    print(f"floor controller p99 <= 20 ms at {largest:,} servers: {'met' if controller_p99[largest] <= 20 else 'NOT met'} "
          f"({controller_p99[largest]:.1f} ms); flat (largest within 2x of smallest): {'yes' if flat else 'NO'}")
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
