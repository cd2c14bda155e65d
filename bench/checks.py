"""What reading `/v1/health/state/any` costs per change, whole or by difference (shopgate.consul_client.checks).

    .venv/bin/python bench/checks.py [--checks 10000] [--rounds 30]

An answer shaped as the catalog sends it (compact JSON, every Consul field, ordered by node and
check ID; one service per 5 checks), then `--rounds` changes of one check's status. Printed, median
and max per change: the standard library's `json.loads` of the whole answer (what the watcher did
before), a whole typed decode (`CheckList` on a fresh list: the first answer, or one it cannot read
by difference), and `CheckList.update` by difference (what the watcher does now).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import load_average, machine, table  # noqa: E402
from shopgate.consul_client.checks import CheckList  # noqa: E402


def check(n: int, status: str, modify_index: int) -> dict:
    service = f"svc{n // 5:05d}"
    return {"Node": "vm", "CheckID": f"service:{service}-{n % 5}", "Name": f"Service '{service}' check", "Status": status,
            "Notes": "", "Output": "", "ServiceID": f"{service}-{n % 5}", "ServiceName": service, "ServiceTags": [],
            "Type": "ttl", "Interval": "", "Timeout": "", "ExposedPort": 0, "Definition": {},
            "CreateIndex": n + 5, "ModifyIndex": modify_index}


def body(checks: list[dict]) -> bytes:
    return json.dumps(checks, separators=(",", ":")).encode()


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    checks = [check(n, "passing", n + 5) for n in range(args.checks)]
    kept = CheckList()
    kept.update(body(checks))
    whole_json, whole_typed, by_difference = [], [], []
    for round_ in range(args.rounds):
        n = (round_ * 7919) % args.checks
        checks[n] = check(n, "critical" if checks[n]["Status"] == "passing" else "passing", args.checks + 10 + round_)
        answer = body(checks)
        whole_json.append(timed(lambda: json.loads(answer)))
        whole_typed.append(timed(lambda: CheckList().update(answer)))
        by_difference.append(timed(lambda: kept.update(answer)))
    print(f"answer: {len(answer) / 1e6:.1f} MB, {args.checks:,} checks")
    print(table(("one change read as", "median ms", "max ms"),
                [(name, f"{statistics.median(values):.1f}", f"{max(values):.1f}")
                 for name, values in (("json.loads of the whole answer", whole_json),
                                      ("CheckList, whole (first answer)", whole_typed),
                                      ("CheckList.update, by difference", by_difference))]))
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
