"""A real `shopgate gateway` (with its HAProxy) and real backend processes, for the gateway's integration tests.

Test modules import the fixtures (`gateway`, `gateway_factory`) by name."""

from __future__ import annotations

import shutil
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import requests

from shopgate.processes import ManagedProcess, free_port, process_cmdline, processes_matching, shopgate_argv, stop_pid, wait_for_http
from shopgate.settings import GATEWAY_GUARD_HOLD_SECONDS, TEMPLATES_DIR

BACKEND_SCRIPT = Path(__file__).resolve().parent / "gateway_backend.py"


def eventually(what: str, predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy; fail with `what` after a generous deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (requests.RequestException, KeyError, ValueError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:.0f}s: {what} (last: {last!r})")


@dataclass
class Backend:
    service: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Gateway:
    """One controller process with free ports; knows its catalog and starts backends registered there."""

    catalog: object
    tmp_path: Path
    start_process: Callable[..., ManagedProcess]
    guard_hold: float = GATEWAY_GUARD_HOLD_SECONDS
    listen: int = field(default_factory=free_port)
    stats: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    haproxy_pids: set[int] = field(default_factory=set)
    env: dict[str, str] | None = None
    name: str = "gateway"
    args: tuple[str, ...] = ()          # further `shopgate gateway` flags, e.g. ("--accept-proxy",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats}"

    @property
    def templates(self) -> Path:
        return self.tmp_path / f"templates-{self.listen}"      # one per gateway: a test may run several

    @property
    def state_dir(self) -> Path:
        return self.tmp_path / f"gateway-state-{self.listen}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    def start(self) -> "Gateway":
        """Start the controller and wait until its HAProxy serves."""
        self.launch()
        wait_for_http(f"{self.status_url}/status", timeout=30, process=self.process,
                      ok=lambda r: r.status_code == 200 and r.json().get("haproxy_pid"))
        return self

    def launch(self) -> "Gateway":
        """Start the controller (same ports and state dir on every call) without waiting for anything."""
        shutil.copytree(TEMPLATES_DIR, self.templates, dirs_exist_ok=True)
        argv = shopgate_argv(
            "gateway", "--consul", self.catalog.url, "--listen", f"127.0.0.1:{self.listen}",
            "--stats", f"127.0.0.1:{self.stats}", "--status", f"127.0.0.1:{self.status_port}",
            "--state-dir", str(self.state_dir), "--templates", str(self.templates),
            "--guard-hold", str(self.guard_hold), "--drain-timeout", "5", *self.args,
            "--consul-dns", f"127.0.0.1:{self.catalog.dns_port}",
        )
        self.process = self.start_process(self.name, argv, env=self.env)
        return self

    def haproxy_masters(self) -> list[int]:
        """Pids of every HAProxy master running this gateway's state dir (from /proc, not from the controller)."""
        state = self.state_dir / "haproxy.cfg"
        found = processes_matching(lambda argv: "-f" in argv and str(state) in argv)
        return sorted(pid for pid, parent in found.items() if parent not in found)

    def status(self) -> dict:
        status = requests.get(f"http://127.0.0.1:{self.status_port}/status", timeout=5).json()
        if status.get("haproxy_pid"):
            self.haproxy_pids.add(status["haproxy_pid"])
        return status

    def metric(self, sample: str) -> float:
        """One sample of the controller's /metrics, e.g. 'name' or 'name{label="x"}' (0 when absent)."""
        text = requests.get(f"http://127.0.0.1:{self.status_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[1])
        return 0.0

    def servers_up(self, service: str) -> set[int]:
        """Ports of `service`'s servers that are wanted ready and UP in HAProxy (`service@env` outside prod)."""
        servers = self.status()["services"].get(service, {}).get("servers", [])
        return {s["port"] for s in servers if s["state"] == "ready" and str(s["haproxy_status"]).startswith("UP")}

    def resolved(self, service: str, up: bool = True) -> set[int]:
        """Ports of a DNS-mode service's servers that HAProxy's resolver filled (and, with `up`, that are UP)."""
        servers = self.status()["services"].get(service, {}).get("servers", [])
        return {s["port"] for s in servers if not up or str(s["haproxy_status"]).startswith("UP")}

    def routed(self, service: str, ports: set[int]) -> bool:
        """True once exactly `ports` serve `service` (HAProxy UP and wanted ready)."""
        return self.servers_up(service) == ports

    def start_backend(self, service: str, tags: str = "", drain: float = 1.0, name: str | None = None) -> Backend:
        port = free_port()
        process = self.start_process(name or f"{service}-{port}", [
            sys.executable, str(BACKEND_SCRIPT), "--service", service, "--consul", self.catalog.url,
            "--port", str(port), "--tags", tags, "--drain", str(drain)])
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=15, process=process)
        return Backend(service, port, process)

    def start_backends(self, service: str, count: int, drain: float = 1.0) -> list[Backend]:
        """`count` instances of `service` served by ONE backend process (gateway_backend.py --ports), which
        all leave together on its SIGTERM: many instances without as many interpreters."""
        ports = [free_port() for _ in range(count)]   # never the same port twice
        process = self.start_process(f"{service}-x{count}-{ports[0]}", [
            sys.executable, str(BACKEND_SCRIPT), "--service", service, "--consul", self.catalog.url,
            "--ports", ",".join(map(str, ports)), "--drain", str(drain)])
        for port in ports:
            wait_for_http(f"http://127.0.0.1:{port}/health", timeout=30, process=process)
        return [Backend(service, port, process) for port in ports]

    def stop(self) -> None:
        """Stop the controller, then any HAProxy it left behind (by pid)."""
        if self.process is not None:
            self.process.stop(timeout=45)
        self.haproxy_pids.update(self.haproxy_masters())
        for pid in self.haproxy_pids:
            cmdline = process_cmdline(pid)
            if cmdline is None:
                continue   # gone
            if str(self.state_dir) in " ".join(cmdline):   # still our HAProxy (not a reused pid)
                stop_pid(pid, timeout=5, group=True)


@pytest.fixture
def gateway_factory(catalog, processes, tmp_path):
    made: list[Gateway] = []

    def make(wait: bool = True, **kwargs) -> Gateway:
        """A started gateway; with wait=False only launched (its HAProxy may not run yet)."""
        gateway = Gateway(catalog, tmp_path, processes, **kwargs)
        made.append(gateway)
        return gateway.start() if wait else gateway.launch()

    yield make
    for gateway in made:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


def stats_column(gateway: Gateway, backend: str, column: str) -> dict[str, str]:
    """Server name -> one column of HAProxy's stats page (CSV) for `backend`'s servers."""
    text = requests.get(f"{gateway.stats_url}/;csv", timeout=5).text.lstrip("# ")
    header, *rows = [line.split(",") for line in text.splitlines() if line]
    index = header.index(column)
    return {row[1]: row[index] for row in rows if row[0] == backend and row[1] not in ("FRONTEND", "BACKEND")}


def server_limits(gateway: Gateway, backend: str) -> set[str]:
    """The session limits (`slim`) of `backend`'s servers, as HAProxy's stats page reports them."""
    return set(stats_column(gateway, backend, "slim").values())


def proxy_v2(source: str, source_port: int, destination_port: int) -> bytes:
    """A binary PROXY v2 header (what an outer L4 balancer's send-proxy-v2 sends): PROXY command, TCP over IPv4."""
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", source_port, destination_port)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses
