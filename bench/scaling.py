"""Zero-drop scaling under load: products scaled 1 → 6 → 1, several times, while a load generator runs.

    .venv/bin/python bench/scaling.py [--cycles 3] [--connections 8]

A throw-away stack (1 instance per service) on free ports; the load (wrk when installed, else the
async Python generator) sends GET /api/v1/products through the entry point for the whole run while
this script scales products up and down with the same code as `shopgate scale` (new instances
self-register; removed ones go to maintenance, drain and deregister). Prints requests and errors
(socket errors + non-2xx/3xx). No pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from _harness import drive, machine, run, table

from shopgate.tool.display import Progress
from shopgate.tool.lifecycle import scale, scratch_stack

STEP_PAUSE = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--peak", type=int, default=6)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0, help="load duration (default: long enough for the cycles)")
    args = parser.parse_args()
    seconds = args.seconds or args.cycles * 11 + 5
    events = []
    with scratch_stack(instances=1) as manifest:
        result = {}
        load = threading.Thread(target=lambda: result.setdefault(
            "load", drive(f"{manifest.ports.entry_url}/api/v1/products", seconds, args.connections)))
        started = time.monotonic()
        load.start()
        time.sleep(STEP_PAUSE)
        progress = Progress(sys.stderr)
        for _ in range(args.cycles):
            for count in (args.peak, 1):
                if time.monotonic() - started > seconds - 4:
                    break
                at = time.monotonic() - started
                scale(manifest, "products", count, progress)
                events.append((f"{at:5.1f}s", f"products → {count}", f"{time.monotonic() - started - at:.2f}s"))
                time.sleep(STEP_PAUSE)
        load.join()
    figures = result["load"]
    print(f"zero-drop scaling under load — {machine()}")
    print(f"load generator: {figures.generator}, {seconds:.0f}s of GET /api/v1/products through the entry point\n")
    print(table(("at", "scale", "until routed / drained"), events))
    print(f"\nrequests {figures.requests}, errors {figures.errors}, {figures.rate:.0f} req/s, "
          f"p50 {figures.p50_ms:.2f} ms, p99 {figures.p99_ms:.2f} ms, scale events {len(events)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
