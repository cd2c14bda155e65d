"""10,000 servers inside the default descriptor limit, with the default flags, and 100 more as dynamic servers.

    .venv/bin/python bench/descriptors.py [--services 5] [--instances 2000] [--more 100]

A catalog with `--services` x `--instances` instances and a real `shopgate gateway` with NO sizing
flags and no KV (default `--slot-headroom`, default `maxconn`). Printed, once it runs its first
config, again after one service gets `--more` instances, and again after a structural change (KV
`maxconn` of that service) folds them into slots: the slots and dynamic servers per service, HAProxy's
`show info` (Maxsock: the descriptors it reserved; Ulimit-n: the limit it raised itself to; Maxconn;
CurrConns), the worker's open descriptors and soft limit (/proc), reloads and rejected configs, and
whether `haproxy -c` accepts the config the controller wrote. HAProxy refuses to start on a config
whose Maxsock exceeds the hard limit ("Cannot raise FD limit"), so "runs" here is the real test.

Instances point at closed loopback ports (bench/_gateway_rig.py): HAProxy's checks keep them DOWN and
CurrConns stays near 0; the descriptors counted are the reserved ones and those the checks hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig  # noqa: E402
from _harness import load_average, machine, table, wait  # noqa: E402
from gateway.haproxy import check_config  # noqa: E402
from shopgate.processes import process_open_files  # noqa: E402

INFO_FIELDS = ("Maxsock", "Ulimit-n", "Maxconn", "Hard_maxconn", "CurrConns")


def show_info(rig: Rig) -> dict[str, str]:
    """The current worker's `show info` fields named in INFO_FIELDS."""
    fields = dict(line.split(": ", 1) for line in rig.cli.send("@1 show info", connect_for=5.0).splitlines() if ": " in line)
    return {name: fields.get(name, "?") for name in INFO_FIELDS}


def snapshot(rig: Rig, label: str) -> tuple:
    """One row: what the controller, HAProxy and the kernel say now."""
    services = rig.gateway.status()["services"]
    slots = sum(s["slots"] for s in services.values())
    dynamic = sum(s["dynamic_servers"] for s in services.values())
    per_service = sorted({(s["slots"], s["dynamic_servers"]) for s in services.values()})
    info = show_info(rig)
    worker = rig.cli.show_proc(connect_for=5.0).workers[0]
    open_files, limit = process_open_files(worker) or (None, None)
    problem = check_config("haproxy", rig.dir / "gateway" / "haproxy.cfg")
    print(f"  {label}: slots {slots:,} + dynamic {dynamic:,} (per service slots/dynamic: {per_service}); show info {info}; "
          f"worker pid {worker}: {open_files} descriptors open, soft limit {limit}; haproxy -c: {'ok' if problem is None else problem}; "
          f"load average {load_average()}")
    return (label, f"{slots:,}", f"{dynamic:,}", info["Maxsock"], info["Ulimit-n"], info["Maxconn"], info["CurrConns"],
            f"{open_files}/{limit}", f"{rig.metric('shopgate_gateway_reloads_total'):.0f}",
            f"{rig.metric('shopgate_gateway_rejected_configs_total'):.0f}", "ok" if problem is None else "REFUSED", load_average())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--more", type=int, default=100, help="instances added to the first service after the start")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    rig = Rig(args.services, args.instances)
    rows = []
    try:
        rig.start()
        rows.append(snapshot(rig, f"{args.services * args.instances:,} servers"))

        service = "svc00000"
        reloads = rig.metric("shopgate_gateway_reloads_total")
        ids = [f"{service}-more-{n}" for n in range(args.more)]
        for service_id in ids:
            rig.register(service, service_id)
        took = wait(f"{args.more} dynamic servers in HAProxy's be_{service}",
                    lambda: len(rig.admin_states(f"be_{service}")) == args.instances + args.more, timeout=600, interval=0.5)
        print(f"  {args.more} more instances of {service}: all in HAProxy's runtime state {took:.1f}s after the last registration, "
              f"reloads {rig.metric('shopgate_gateway_reloads_total') - reloads:.0f}")
        rows.append(snapshot(rig, f"+{args.more} in {service}"))

        rig.kv_put(f"shopgate/services/{service}/maxconn", "100")   # structural: a reload, which folds them into slots
        took = wait("the fold", lambda: rig.gateway.status()["services"][service]["dynamic_servers"] == 0
                    and rig.metric("shopgate_gateway_reloads_total") > reloads
                    or rig.metric("shopgate_gateway_rejected_configs_total") > 0, timeout=600, interval=0.5)
        print(f"  KV maxconn of {service} (a reload folding the dynamic servers): {took:.1f}s")
        rows.append(snapshot(rig, "after the fold"))
    finally:
        rig.close()
    print(table(("state", "slots", "dynamic", "Maxsock", "Ulimit-n", "Maxconn", "CurrConns", "worker fds open/limit", "reloads",
                 "rejected configs", "haproxy -c", "load average"), rows))
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
