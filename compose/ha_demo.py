#!/usr/bin/env python3
"""The HA demo: two gateways behind the outer L4 balancer (compose/cluster.yml + cluster-offline.yml),
under steady keep-alive load through the balancer, while

    (a) gateway-1 is stopped gracefully (SIGTERM: unready, the balancer drains it, it stops), then started;
    (b) gateway-2's controller is SIGKILLed; its supervisor starts it again and it adopts the HAProxy
        that kept serving (one HAProxy in the container);
    (c) the whole gateway-1 container is SIGKILLed (its in-flight requests may fail; gateway-2 takes all
        traffic), then started again.

    compose/ha-demo.sh [--rate N] [--hold SECONDS] [--keep]

Prints the failed requests of each phase; exits non-zero if (a) or (b) failed any, or if (c) failed
more than it could have had in flight. HADemo is also what tests/test_compose.py drives.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

COMPOSE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(COMPOSE_DIR.parent))
sys.path.insert(0, str(COMPOSE_DIR))

from scale_demo import ComposeStack, table  # noqa: E402
from shopgate import settings  # noqa: E402
from shopgate.tool.load import Load, shop_mix, summarize  # noqa: E402

HA_FILES = (COMPOSE_DIR / "cluster.yml", COMPOSE_DIR / "cluster-offline.yml")
GATEWAYS = ("gateway-1", "gateway-2")


@dataclass
class Phase:
    name: str
    summary: dict
    note: str


class HADemo:
    """The HA stack and the three faults, each measured with its own load."""

    def __init__(self, stack: ComposeStack, rate: float = 30.0, hold: float = 4.0, say=print):
        self.stack, self.rate, self.hold, self.say = stack, rate, hold, say

    # --- what the balancer and the containers say

    def balancer_rows(self) -> dict[str, dict[str, str]]:
        """The balancer's `gateways` servers (stats CSV): name -> row (status, stot, ...)."""
        text = requests.get(self.stack.url("SHOPGATE_STATS_PORT", "/stats;csv"), timeout=5).text.lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == "gateways" and row["svname"] in GATEWAYS}

    def wait_balancer(self, want: dict[str, str], timeout: float = 120) -> None:
        """Until each named gateway's status on the balancer starts with the wanted word (UP / DOWN)."""
        deadline = time.monotonic() + timeout
        rows: dict = {}
        while time.monotonic() < deadline:
            try:
                rows = self.balancer_rows()
                if all(rows.get(name, {}).get("status", "").startswith(word) for name, word in want.items()):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"balancer: wanted {want}, have { {n: r.get('status') for n, r in rows.items()} }\n{self.stack.logs()}")

    def container(self, service: str) -> str:
        return self.stack.compose("ps", "-q", service).stdout.strip()

    def processes(self, service: str) -> list[tuple[int, int, str]]:
        """(host pid, host ppid, command line) of every process in the service's container (`docker top`)."""
        out = subprocess.run(["docker", "top", self.container(service), "-eo", "pid,ppid,args"], capture_output=True,
                             text=True, env=self.stack.env, check=True).stdout.splitlines()[1:]
        return [(int(pid), int(ppid), args) for pid, ppid, args in (line.split(None, 2) for line in out)]

    def haproxy_masters(self, service: str) -> list[int]:
        procs = self.processes(service)
        haproxy = {pid for pid, _, args in procs if args.split()[0].endswith("haproxy")}
        return sorted(pid for pid, ppid, _ in procs if pid in haproxy and ppid not in haproxy)

    def controller(self, service: str) -> int | None:
        found = [pid for pid, _, args in self.processes(service) if args.startswith("python3 -m shopgate gateway")]
        return found[0] if len(found) == 1 else None

    # --- the stack

    def up(self) -> None:
        self.say("building and starting: embedded catalog, five services, gateway-1, gateway-2, balancer ...")
        self.stack.up()
        for service in settings.SHOP_SERVICES:
            self.stack.wait_routed(service, 1)
        self.wait_balancer({"gateway-1": "UP", "gateway-2": "UP"})
        self.wait_both_route()
        # The shop's mix: GETs across the five services and an order POST, which fans out service to
        # service through the catalog (`?passing`). The services' checks tolerate one slow answer
        # (FailuresBeforeCritical 2), so a busy lone replica on this loaded machine is not taken out.
        self.targets = shop_mix(self.stack.gateway_url)

    def wait_both_route(self, timeout: float = 120) -> None:
        """Until 10 requests in a row to each service answer 200 through the balancer (so through both gateways)."""
        deadline = time.monotonic() + timeout
        for service in settings.SHOP_SERVICES:
            streak = 0
            while streak < 10:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service}: not routed by both gateways\n{self.stack.logs()}")
                try:
                    ok = requests.get(f"{self.stack.gateway_url}/api/v1/{service}", timeout=5).status_code == 200
                except requests.RequestException:
                    ok = False
                streak = streak + 1 if ok else 0
                if not ok:
                    time.sleep(0.3)

    def under_load(self, name: str, fault) -> Phase:
        load = Load(self.stack.gateway_url, self.targets, rate=self.rate, concurrency=16,
                    duration=3600, keepalive=True).start()
        try:
            time.sleep(self.hold)
            note = fault()
            time.sleep(self.hold)
        finally:
            records = load.stop()
        summary = summarize(records)
        self.say(f"  {name}: {summary['requests']} requests, {summary['failed']} failed — {note}")
        for line in summary["first_failures"]:
            self.say(f"    failed: {line}")
        return Phase(name, summary, note)

    # --- the faults

    def graceful_stop(self) -> str:
        self.say("(a) docker compose stop gateway-1 (SIGTERM) ...")
        began = time.monotonic()
        self.stack.compose("stop", "gateway-1", timeout=120)
        stopped = time.monotonic() - began
        self.wait_balancer({"gateway-1": "DOWN", "gateway-2": "UP"})
        time.sleep(self.hold)
        self.stack.compose("start", "gateway-1", timeout=120)
        self.wait_balancer({"gateway-1": "UP", "gateway-2": "UP"})
        return f"gateway-1 unready, drained and stopped in {stopped:.1f}s, then started again"

    def controller_crash(self) -> str:
        masters = self.haproxy_masters("gateway-2")
        old = self.controller("gateway-2")
        if old is None or len(masters) != 1:
            raise RuntimeError(f"gateway-2 before: controller {old}, HAProxy masters {masters}")
        self.say(f"(b) SIGKILL gateway-2's controller (host pid {old}) ...")
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (new := self.controller("gateway-2")) in (None, old):
            if time.monotonic() > deadline:
                raise TimeoutError("gateway-2's controller was not started again")
            time.sleep(0.2)
        self.wait_balancer({"gateway-1": "UP", "gateway-2": "UP"})
        after = self.haproxy_masters("gateway-2")
        if after != masters:
            raise RuntimeError(f"gateway-2 runs HAProxy masters {after}, had {masters}")
        return f"controller {old} -> {new}; one HAProxy in the container, the same master (pid {masters[0]}) adopted"

    def container_kill(self) -> str:
        self.say("(c) docker kill gateway-1 (SIGKILL, the whole container) ...")
        self.stack.compose("kill", "-s", "SIGKILL", "gateway-1", timeout=60)
        killed_at = time.monotonic()
        self.wait_balancer({"gateway-1": "DOWN", "gateway-2": "UP"})
        down_after = time.monotonic() - killed_at
        before = self.balancer_rows()
        time.sleep(self.hold)
        during = self.balancer_rows()
        took = {name: int(during[name]["stot"]) - int(before[name]["stot"]) for name in GATEWAYS}
        self.stack.compose("start", "gateway-1", timeout=120)
        self.wait_balancer({"gateway-1": "UP", "gateway-2": "UP"}, timeout=180)
        return (f"balancer marked gateway-1 DOWN {down_after:.1f}s after the kill; new connections in the next {self.hold:.0f}s: "
                f"gateway-1 {took['gateway-1']}, gateway-2 {took['gateway-2']} (gateway-2 took all traffic); gateway-1 back UP")

    def run(self) -> list[Phase]:
        return [self.under_load("(a) graceful stop", self.graceful_stop),
                self.under_load("(b) controller SIGKILL", self.controller_crash),
                self.under_load("(c) gateway container SIGKILL", self.container_kill)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="two gateways behind an L4 balancer: graceful stop, controller crash, container kill under load")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second through the balancer (default %(default)s)")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds of load around each fault (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end")
    args = parser.parse_args(argv)
    say = lambda text: print(text, flush=True)  # noqa: E731
    stack = ComposeStack(offline=True, compose_files=HA_FILES)
    say(f"compose project {stack.project} (offline: embedded catalog, two gateways behind an L4 balancer)")
    ok = False
    try:
        demo = HADemo(stack, rate=args.rate, hold=args.hold, say=say)
        demo.up()
        say(table([("entry point (balancer)", stack.gateway_url + "/api/v1/products"),
                   ("balancer stats", stack.url("SHOPGATE_STATS_PORT", "/stats")),
                   ("catalog UI", stack.url("SHOPGATE_CONSUL_PORT", "/ui/"))], ("WHAT", "URL")) + "\n")
        phases = demo.run()
        say("")
        say(table([(p.name, p.summary["requests"], p.summary["failed"]) for p in phases], ("PHASE", "REQUESTS", "FAILED")))
        a, b, c = (p.summary["failed"] for p in phases)
        say(f"\nfailed requests: (a) graceful stop {a}, (b) controller SIGKILL {b}, (c) container SIGKILL {c} "
            f"(at most the 16 in flight may fail there); load average {os.getloadavg()[0]:.1f}")
        ok = a == 0 and b == 0 and c <= 16
    except (RuntimeError, TimeoutError, requests.RequestException, subprocess.CalledProcessError) as exc:
        say(f"HA demo failed: {exc}")
    finally:
        ok = stack.finish(args.keep, say) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
