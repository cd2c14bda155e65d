"""Gateway overhead: one backend instance measured directly and through HAProxy, alternating, in one run.

    .venv/bin/python bench/overhead.py [--seconds 8] [--rounds 2] [--connections 16]

A throw-away stack (1 instance per service) on free ports; the load alternates between the products
instance's own port and the entry point's /api/v1/products, which HAProxy routes to that same
instance. Prints each run and the ratio of the medians (gateway / direct). No pass/fail.
"""

from __future__ import annotations

import argparse
import statistics

from _harness import drive, machine, table

from shopgate.stack import scratch_stack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with scratch_stack(instances=1) as manifest:
        instance = manifest.instances("products")[0]
        urls = {"direct": f"http://127.0.0.1:{instance.port}/api/v1/products",
                "through HAProxy": f"{manifest.ports.entry_url}/api/v1/products"}
        runs = [(round_, path, drive(url, args.seconds, args.connections))
                for round_ in range(1, args.rounds + 1) for path, url in urls.items()]
    print(f"gateway overhead — {machine()}")
    print(f"load generator: {runs[0][2].generator}, {args.seconds:.0f}s per run, GET /api/v1/products (one instance)\n")
    print(table(("round", "path", "req/s", "p50 ms", "p99 ms", "errors"),
                [(r, p, f"{x.rate:.0f}", f"{x.p50_ms:.2f}", f"{x.p99_ms:.2f}", x.errors) for r, p, x in runs]))
    median = {path: statistics.median(x.rate for _, p, x in runs if p == path) for path in urls}
    p50 = {path: statistics.median(x.p50_ms for _, p, x in runs if p == path) for path in urls}
    print(f"\nthroughput ratio (through HAProxy / direct): {median['through HAProxy'] / median['direct']:.3f}")
    print(f"p50 latency added by HAProxy: {p50['through HAProxy'] - p50['direct']:+.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
