"""One membership change at 10,000 servers, controller memory, and long-polls at 10 vs 2,000 services.

    .venv/bin/python bench/membership.py [--services 2000] [--instances 5] [--changes 20]

A small catalog (10 services) and a large one (2,000 services x 5 instances = 10,000 servers)
each get a real `shopgate gateway`. Printed per size: blocking queries held by the controller
(must not grow with the services), its RSS, and for the large one the time of single membership
changes (catalog API call -> HAProxy runtime state; controller-side seen -> applied).
Floor: one change applied <= 100 ms at 10,000 servers (controller side).

HAProxy reserves a file descriptor per server slot (spare ones too) plus two per `maxconn`; this
machine's hard limit is 20,000 descriptors (no CAP_SYS_RESOURCE to raise it). So the gateway runs
with `--slot-headroom 1` (8 slots for 5 instances: 16,000 slots) and KV `shopgate/gateway/maxconn`
1000. With the default headroom (16 slots each, 32,000 slots) HAProxy refuses to load ("Cannot
raise FD limit"), and the controller reports exactly that and keeps the previous config.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig, latency_rows, measure_changes  # noqa: E402
from _harness import machine, table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    sizes = []
    change_rows = []
    for services, instances in ((10, args.instances), (args.services, args.instances)):
        print(f"{services} services x {instances} instances:")
        rig = Rig(services, instances, gateway_args=("--slot-headroom", "1"), kv={"shopgate/gateway/maxconn": "1000"})
        try:
            rig.start()
            time.sleep(3)   # HAProxy's first round of health checks, the controller idle again
            polls = rig.metric("shopgate_gateway_long_polls")
            sizes.append((f"{services} x {instances} = {services * instances}", int(polls), f"{rig.rss_mb():.0f}"))
            if services == args.services:
                names = [f"svc{s:05d}" for s in range(0, services, max(1, services // args.changes))][: args.changes]
                # 5 instances sit in 8 slots, so one more is a runtime change, no reload
                adds, removes, controller = measure_changes(rig, args.changes, names)
                reloads = rig.metric("shopgate_gateway_reloads_total")
                change_rows = latency_rows(adds, removes, controller)
                sizes[-1] += (f"{rig.rss_mb():.0f}",)
                print(f"  reloads after the first full config (a cold start, not a reload): {reloads:.0f}")
        finally:
            rig.close()
    print(table(("catalog", "long-polls held", "controller RSS MB", "RSS after changes MB"), [row + ("",) * (4 - len(row)) for row in sizes]))
    print(f"long-polls independent of the service count: {'yes' if sizes[0][1] == sizes[1][1] else 'NO'}")
    print(table((f"one change at {args.services * args.instances} servers, ms", "n", "p50", "p99", "max", "mean"), change_rows))
    controller_p99 = float(change_rows[2][3])
    print(f"floor one change <= 100 ms (controller side, p99): {'met' if controller_p99 <= 100 else 'NOT met'} ({controller_p99:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
