"""Propagation latency, controller side: a catalog change -> HAProxy's runtime state (health-check rise excluded).

    .venv/bin/python bench/propagation.py [--services 10] [--instances 2] [--changes 100]

Each round: an instance's check turns passing in the catalog -> its server slot is out of
maintenance in HAProxy (it then waits for HAProxy's own `rise` check, which is not counted);
then it deregisters -> its slot is draining. Timed from the catalog API call returning to the
runtime state changing, polled over the master CLI every ~2 ms. Also printed: the controller's own
histogram (change seen by the watcher -> runtime API done). Floor: p99 <= 500 ms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig, latency_rows, measure_changes  # noqa: E402
from _harness import machine, percentile, table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rig = Rig(args.services, args.instances)
    try:
        rig.start()
        services = [f"svc{s:05d}" for s in range(args.services)]
        print("  warm-up: one round per service (the first extra instance grows the backend's slots: a reload)")
        measure_changes(rig, len(services), services)
        print(f"  measuring {args.changes} add + {args.changes} remove rounds")
        reloads_before = rig.metric("shopgate_gateway_reloads_total")
        adds, removes, controller = measure_changes(rig, args.changes, services)
        reloads = rig.metric("shopgate_gateway_reloads_total") - reloads_before
        print(table(("propagation, ms", "n", "p50", "p99", "max", "mean"), latency_rows(adds, removes, controller)))
        worst = percentile(adds + removes, 0.99)
        print(f"floor p99 <= 500 ms: {'met' if worst <= 500 else 'NOT met'} (p99 of both directions {worst:.1f} ms); "
              f"reloads during the measured rounds: {reloads:.0f}")
    finally:
        rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
