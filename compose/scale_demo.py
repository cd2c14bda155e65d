#!/usr/bin/env python3
"""The compose scale demo: the whole stack in containers, under steady load, while products
scales 1 -> 5 -> 1. Exits non-zero if a single request failed.

    compose/scale-demo.sh [--real] [--rate N] [--hold SECONDS] [--keep]

(the .sh wrapper starts the private engine and the offline base image, then runs this file with
the project's Python). The stack runs as its own compose project on free loopback ports, so it
never collides with a stack on the default ports; `--keep` leaves it up to look around.
ComposeStack is also what tests/test_compose.py drives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

COMPOSE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(COMPOSE_DIR.parent))

from shopgate import settings  # noqa: E402
from shopgate.tool.load import Load, shop_mix, summarize  # noqa: E402
from shopgate.processes import free_port  # noqa: E402

REAL_FILE = COMPOSE_DIR / "docker-compose.yml"
OFFLINE_FILE = COMPOSE_DIR / "offline.yml"
#: Host-side published ports, as the compose file names them (each bound on 127.0.0.1 only).
PORT_VARIABLES = ("SHOPGATE_CONSUL_PORT", "SHOPGATE_GATEWAY_PORT", "SHOPGATE_STATS_PORT", "SHOPGATE_STATUS_PORT", "SHOPGATE_HTTPS_PORT")




@dataclass
class ComposeStack:
    """One compose project of shopgate: up, scale, ask, down — through `docker compose`."""

    offline: bool = True
    project: str = field(default_factory=lambda: f"shopgate-{uuid.uuid4().hex[:6]}")
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PORT_VARIABLES})
    docker_env: dict[str, str] = field(default_factory=dict)  # DOCKER_HOST, DOCKER_CONFIG (else the environment's)
    compose_files: tuple[Path, ...] = ()   # other compose files than docker-compose.yml (+ offline.yml)

    @property
    def files(self) -> list[Path]:
        if self.compose_files:
            return list(self.compose_files)
        return [REAL_FILE, OFFLINE_FILE] if self.offline else [REAL_FILE]

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.docker_env, **{k: str(v) for k, v in self.ports.items()}}
        # The registrar container mounts the engine's socket, wherever this engine keeps it.
        env["SHOPGATE_DOCKER_SOCKET"] = env.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
        return env

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["docker", "compose", "-p", self.project]
        for path in self.files:
            argv += ["-f", str(path)]
        result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    # --- lifecycle

    def up(self, **scale: int) -> None:
        args = ["up", "-d", "--build", "--wait", "--wait-timeout", "180"]
        for service, count in scale.items():
            args += ["--scale", f"{service}={count}"]
        self.compose(*args, timeout=600)

    def scale(self, service: str, count: int) -> None:
        """Change one service's replica count; the others are left as they are."""
        self.compose("up", "-d", "--no-build", "--no-recreate", "--no-deps", "--wait", "--wait-timeout", "120",
                     "--scale", f"{service}={count}", service, timeout=300)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, listing in (("containers", ["ps", "-a"]), ("networks", ["network", "ls"]), ("volumes", ["volume", "ls"])):
            out = subprocess.run(["docker", *listing, "-q", "--filter", label], capture_output=True, text=True,
                                 env=self.env, check=True).stdout.split()
            found[kind] = out
        return found

    def logs(self, service: str = "", tail: int = 40) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), *([service] if service else []), check=False).stdout

    def finish(self, keep: bool, say) -> bool:
        """Take the stack down (or say how, with `keep`); False when something was left behind."""
        if keep:
            say(f"\nleft running: docker compose -p {self.project} {' '.join('-f ' + str(f) for f in self.files)} down -v")
            return True
        say("taking the stack down ...")
        self.down()
        left = self.leftovers()
        if any(left.values()):
            say(f"left behind after down: {json.dumps(left)}")
            return False
        return True

    # --- where it is

    def url(self, variable: str, path: str = "") -> str:
        return f"http://{settings.LOOPBACK}:{self.ports[variable]}{path}"

    @property
    def gateway_url(self) -> str:
        return self.url("SHOPGATE_GATEWAY_PORT")

    @property
    def catalog_url(self) -> str:
        return self.url("SHOPGATE_CONSUL_PORT")

    def urls(self) -> list[tuple[str, str]]:
        return [
            ("gateway", self.gateway_url + "/api/v1/products"),
            ("HAProxy stats", self.url("SHOPGATE_STATS_PORT", "/stats")),
            ("catalog UI", self.url("SHOPGATE_CONSUL_PORT", "/ui/")),
            ("controller status", self.url("SHOPGATE_STATUS_PORT", "/status")),
        ]

    # --- what it does

    def passing(self, service: str) -> int:
        response = requests.get(f"{self.catalog_url}/v1/health/service/{service}?passing=1", timeout=5)
        response.raise_for_status()
        return len(response.json())

    def instances_answering(self, service: str, probes: int) -> set[str]:
        """The X-Instance values of `probes` requests to `service` through the gateway (errors skipped)."""
        seen = set()
        for _ in range(probes):
            try:
                response = requests.get(f"{self.gateway_url}/api/v1/{service}", timeout=5)
            except requests.RequestException:
                continue
            if response.status_code == 200 and response.headers.get("X-Instance"):
                seen.add(response.headers["X-Instance"])
        return seen

    def wait_routed(self, service: str, count: int, timeout: float = 90) -> set[str]:
        """Until the catalog has `count` passing instances of `service` and the gateway reaches each of them."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        passing = -1
        while time.monotonic() < deadline:
            try:
                passing = self.passing(service)
            except requests.RequestException:
                passing = -1
            if passing == count:
                seen = self.instances_answering(service, probes=4 * count)
                if len(seen) == count:
                    return seen
            time.sleep(0.5)
        raise TimeoutError(f"{service}: wanted {count} instances routed; catalog has {passing} passing, "
                           f"gateway reached {sorted(seen)}\n{self.logs()}")


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def scale_under_load(stack: ComposeStack, steps: list[int], rate: float, hold: float, say=print) -> dict:
    """Steady load on the gateway while `products` goes through `steps` replicas; the load's summary,
    plus per step: how long until the gateway reached every instance, and who answered."""
    targets = shop_mix(stack.gateway_url)
    load = Load(stack.gateway_url, targets, rate=rate, concurrency=16, duration=3600).start()
    step_rows = []
    try:
        time.sleep(hold)
        for count in steps:
            began = time.monotonic()
            say(f"scaling products to {count} ...")
            stack.scale("products", count)
            reached = stack.wait_routed("products", count)
            step_rows.append((f"products={count}", f"{time.monotonic() - began:.1f}s", len(reached)))
            time.sleep(hold)
    finally:
        records = load.stop()
    summary = summarize(records)
    summary["steps"] = step_rows
    summary["instances"] = dict(Counter(r.instance.rsplit("-", 1)[0] for r in records if r.instance))
    summary["products_instances"] = len({r.instance for r in records if r.instance and r.instance.startswith("products-")})
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="shopgate in docker compose: products 1 -> 5 -> 1 under steady load")
    parser.add_argument("--real", action="store_true", help="the real-Consul file alone (needs an image registry)")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second through the gateway (default %(default)s)")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds of load between the steps (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="leave the stack up at the end")
    args = parser.parse_args(argv)
    stack = ComposeStack(offline=not args.real)
    say = lambda text: print(text, flush=True)  # noqa: E731
    say(f"compose project {stack.project} ({'offline: local images, embedded catalog' if stack.offline else 'real Consul'})")
    started = time.monotonic()
    failed = None
    try:
        say("building and starting the stack (products=1) ...")
        stack.up(products=1)
        for service in settings.SHOP_SERVICES:
            stack.wait_routed(service, 1)
        say(f"up in {time.monotonic() - started:.0f}s; all five services answer through the gateway\n")
        say(table(stack.urls(), ("WHAT", "URL")) + "\n")
        summary = scale_under_load(stack, [5, 1], rate=args.rate, hold=args.hold, say=say)
        failed = summary["failed"]
        say("")
        say(table(summary["steps"], ("STEP", "ALL ROUTED AFTER", "INSTANCES")))
        say("")
        say(table([(summary["requests"], summary["failed"], summary["rate"], summary["p50_ms"], summary["p99_ms"],
                    summary["products_instances"])],
                  ("REQUESTS", "FAILED", "REQ/S", "P50 MS", "P99 MS", "PRODUCTS INSTANCES SEEN")))
        for line in summary["first_failures"]:
            say(f"  failed: {line}")
        say(f"\nrequests: {summary['requests']}, failed requests: {summary['failed']}")
    except (RuntimeError, TimeoutError, requests.RequestException) as exc:
        say(f"compose demo failed: {exc}")
    finally:
        if not stack.finish(args.keep, say):
            failed = failed or -1
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
