"""Gateway core at scale: render + validate 10,000 servers, and the compute of one membership change.

    .venv/bin/python bench/render.py [--services 2000] [--instances 5] [--changes 200]

Prints a table of figures (no pass/fail). Floors from the gateway issue:
full render + `haproxy -c` <= 5 s; one membership change <= 100 ms end to end (this measures the
controller-side compute: build_route_table + plan_changes; the runtime command is measured by the
apply benchmark).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import HAPROXY, percentile  # noqa: E402
from gateway.diff import plan_changes  # noqa: E402
from gateway.model import Instance, RuntimePaths, Snapshot  # noqa: E402
from gateway.render import render_config  # noqa: E402
from gateway.routing import build_route_table  # noqa: E402
from shopgate.settings import TEMPLATES_DIR  # noqa: E402


def make_snapshot(services: int, instances: int) -> Snapshot:
    catalog = {}
    for s in range(services):
        name = f"svc{s:05d}"
        catalog[name] = tuple(
            Instance(service=name, id=f"{name}-{i}", node="node1", address=f"10.{s // 250}.{s % 250}.{i + 1}", port=8000 + i)
            for i in range(instances)
        )
    return Snapshot(services=catalog, kv={"shopgate/services/svc00000/balance": b"leastconn"})


def timed(func, *args):
    started = time.perf_counter()
    result = func(*args)
    return result, (time.perf_counter() - started) * 1000


def measure_changes(snapshot: Snapshot, running, changes: int, services: int):
    """Flip one instance's health per step; time the controller-side compute of each change."""
    compute_ms: list[float] = []
    for n in range(changes):
        name = f"svc{(n * 37) % services:05d}"
        instances = list(snapshot.services[name])
        victim = instances[n % len(instances)]
        instances[n % len(instances)] = replace(victim, status="critical" if victim.healthy else "passing")
        snapshot = Snapshot(services={**snapshot.services, name: tuple(instances)}, kv=snapshot.kv, index=snapshot.index + 1)
        started = time.perf_counter()
        wanted = build_route_table(snapshot, running)
        plan = plan_changes(running, wanted)
        compute_ms.append((time.perf_counter() - started) * 1000)
        if plan.needs_reload or len(plan.membership) != 1:
            raise SystemExit(f"unexpected plan for one membership change: {plan}")
        running = wanted
    return compute_ms, snapshot, running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--changes", type=int, default=200, help="membership changes to time")
    parser.add_argument("--haproxy-bin", default=HAPROXY)
    args = parser.parse_args()

    snapshot = make_snapshot(args.services, args.instances)
    servers = snapshot.instance_count()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="shopgate-bench-") as tmp:
        runtime = RuntimePaths(admin_socket=Path(tmp) / "admin.sock", listen="127.0.0.1:18080", stats="127.0.0.1:18404")
        table, build_ms = timed(build_route_table, snapshot)
        config, render_ms = timed(render_config, table, TEMPLATES_DIR, runtime)
        path = Path(tmp) / "haproxy.cfg"
        path.write_text(config)
        check, check_ms = timed(subprocess.run, [args.haproxy_bin, "-c", "-q", "-f", str(path)])
        if check.returncode != 0:
            print(f"haproxy -c failed (exit {check.returncode})", file=sys.stderr)
            return 1
        slots = sum(len(b.servers) for b in table.backends)
        rows += [
            ("catalog", f"{args.services} services x {args.instances} = {servers} servers ({slots} slots)"),
            ("build_route_table (first)", f"{build_ms:.0f} ms"),
            ("render_config", f"{render_ms:.0f} ms ({len(config) / 1e6:.1f} MB, {config.count(chr(10))} lines)"),
            ("haproxy -c", f"{check_ms:.0f} ms"),
            ("render + validate (total)", f"{build_ms + render_ms + check_ms:.0f} ms  (floor 5000 ms)"),
        ]

        # One membership change at a time: an instance fails, then recovers (no reload, a runtime command).
        # Measured twice: as is, then after gc.freeze() (what a long-running controller can do after a
        # structural build, so the cyclic GC stops rescanning the 10,000-server table).
        for label, freeze in (("membership change", False), ("  same, after gc.freeze()", True)):
            if freeze:
                gc.collect()
                gc.freeze()
            compute_ms, snapshot, table = measure_changes(snapshot, table, args.changes, args.services)
            rows += [
                (label, f"x{args.changes}: build_route_table + plan_changes, 1 runtime change each"),
                ("    p50 / p99 / max", f"{statistics.median(compute_ms):.1f} / {percentile(compute_ms, 0.99):.1f} / {max(compute_ms):.1f} ms  (floor 100 ms incl. the runtime command)"),
            ]
    width = max(len(k) for k, _ in rows)
    print(f"{'figure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
