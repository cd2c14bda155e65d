"""Gateway overhead: one backend instance measured directly and through HAProxy, alternating, in one run.

    .venv/bin/python bench/overhead.py [--seconds 6] [--rounds 2] [--connections 4,16]

A throw-away stack (1 instance per service) on free ports; the load alternates between the products
instance's own port and the entry point's /api/v1/products, which HAProxy routes to that same
instance. Prints each run and, per connection count, the ratio of the medians (gateway / direct).
An instance serves 4 requests at a time (gunicorn, 4 threads): at 4 connections the figure is
HAProxy's cost; beyond that HAProxy's queueing and connection reuse in front of the instance show.
No pass/fail.
"""

from __future__ import annotations

import argparse
import statistics

from _harness import drive, machine, run, table

from shopgate.tool.lifecycle import scratch_stack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", default="4,16", help="comma-separated connection counts")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    with scratch_stack(instances=1) as manifest:
        instance = manifest.instances("products")[0]
        urls = {"direct": f"http://127.0.0.1:{instance.port}/api/v1/products",
                "through HAProxy": f"{manifest.ports.entry_url}/api/v1/products"}
        runs = [(c, round_, path, drive(url, args.seconds, c))
                for c in levels for round_ in range(1, args.rounds + 1) for path, url in urls.items()]
    print(f"gateway overhead — {machine()}")
    print(f"load generator: {runs[0][3].generator.split(' (')[0]}, {args.seconds:.0f}s per run, GET /api/v1/products (one instance)\n")
    print(table(("connections", "round", "path", "req/s", "p50 ms", "p99 ms", "errors"),
                [(c, r, p, f"{x.rate:.0f}", f"{x.p50_ms:.2f}", f"{x.p99_ms:.2f}", x.errors) for c, r, p, x in runs]))
    print()
    for c in levels:
        rate = {path: statistics.median(x.rate for cc, _, p, x in runs if p == path and cc == c) for path in urls}
        p50 = {path: statistics.median(x.p50_ms for cc, _, p, x in runs if p == path and cc == c) for path in urls}
        print(f"{c:>3} connections: throughput ratio (through HAProxy / direct) {rate['through HAProxy'] / rate['direct']:.3f}, "
              f"p50 latency {p50['through HAProxy'] - p50['direct']:+.2f} ms through HAProxy")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
