"""A catalog full of services and a real `shopgate gateway` watching it, for the gateway benchmarks.

Instances get TTL checks that start passing (so 10,000 instances cost the catalog no check
traffic) and point at closed loopback ports: HAProxy's own checks keep them DOWN, which the
benchmarks do not care about — they time when HAProxy's *runtime state* changes (the
health-check rise is excluded, as in the issue's definition).
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import percentile  # noqa: E402
from gateway.haproxy import HAProxyError, MasterCLI  # noqa: E402
from shopgate.processes import ManagedProcess, free_port, group_members, process_cpu_seconds, process_rss_kib, shopgate_argv, wait_for_http  # noqa: E402

FIRST_PORT = 20000
#: srv_admin_state flags (HAProxy's SRV_ADMF_FMAINT, SRV_ADMF_FDRAIN): set by `state maint` / `state drain`.
FORCED_MAINT, FORCED_DRAIN = 0x01, 0x08


class Gateway:
    """One `shopgate gateway` (its own state dir, ports and HAProxy) on a catalog; `stop()` stops it by pid."""

    def __init__(self, catalog_url: str, state_dir: Path, args: tuple[str, ...] = (), ports: tuple[int, int, int] | None = None):
        self.catalog_url, self.state_dir, self.args = catalog_url, state_dir, args
        self.listen_port, self.stats_port, self.status_port = ports or (free_port(), free_port(), free_port())
        self.process: ManagedProcess | None = None
        self.http = requests.Session()

    @property
    def cli(self) -> MasterCLI:
        return MasterCLI(self.state_dir / "master.sock")

    def start(self, timeout: float = 600) -> "Gateway":
        """Start it on a fresh state dir; returns once HAProxy runs its first full config."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.process = ManagedProcess(self.state_dir.name, shopgate_argv(
            "gateway", "--consul", self.catalog_url, "--listen", f"127.0.0.1:{self.listen_port}",
            "--stats", f"127.0.0.1:{self.stats_port}", "--status", f"127.0.0.1:{self.status_port}",
            "--state-dir", str(self.state_dir), *self.args), log_path=self.state_dir.parent / f"{self.state_dir.name}.log").start()
        # /ready: 200 once HAProxy serves the first full catalog view (a cold start opens with it: no reload)
        wait_for_http(f"http://127.0.0.1:{self.status_port}/ready", timeout=timeout, process=self.process,
                      ok=lambda r: r.status_code == 200 or self.metric("shopgate_gateway_rejected_configs_total") > 0)
        if self.metric("shopgate_gateway_rejected_configs_total") > 0:
            raise RuntimeError(f"gateway did not load the catalog:\n{self.process.log_tail()}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=20)
            self.process = None

    def log_tail(self) -> str:
        return self.process.log_tail() if self.process else ""

    def metric(self, name: str, labels: str = "") -> float:
        text = self.http.get(f"http://127.0.0.1:{self.status_port}/metrics", timeout=30).text
        match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+|NaN)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    def status(self) -> dict:
        return self.http.get(f"http://127.0.0.1:{self.status_port}/status", timeout=30).json()

    def admin_states(self, backend: str) -> dict[str, int]:
        """HAProxy's runtime view of `backend`: "addr:port" -> srv_admin_state flags (`show servers state`)."""
        text = self.cli.send(f"@1 show servers state {backend}", connect_for=2.0)
        states = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 18 and fields[0].isdigit():
                states[f"{fields[4]}:{fields[18]}"] = int(fields[6])
        return states

    def wait_for(self, backend: str, address: str, predicate, timeout: float = 30.0, interval: float = 0.002) -> float:
        """Poll HAProxy every `interval` until predicate(admin state of `address` or None); the monotonic time it held.
        A master socket that is busy (its accept queue full: EAGAIN) is asked again at the next poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate(self.admin_states(backend).get(address)):
                    return time.monotonic()
            except HAProxyError:
                pass
            time.sleep(interval)
        raise TimeoutError(f"{backend} {address}: not within {timeout}s\n{self.log_tail()}")

    def rss_mb(self) -> float:
        return (process_rss_kib(self.process.pid) or 0) / 1024

    def cpu_seconds(self) -> float:
        """CPU time the controller process has used so far (user + system, every thread)."""
        return process_cpu_seconds(self.process.pid) or 0.0

    def haproxy_cpu_percent(self, seconds: float = 2.0) -> float:
        """HAProxy's CPU (master and workers: its own process group) over `seconds`, % of one core."""
        group = self.status()["haproxy_pid"]

        def used() -> float:
            return sum(process_cpu_seconds(pid) or 0.0 for pid in group_members(group))

        before = used()
        time.sleep(seconds)
        return (used() - before) / seconds * 100


class Rig:
    """Catalog + controller (+ its HAProxy) in a temporary directory; `close()` stops them by pid.

    `add_gateway()` starts more controllers on the same catalog (each with its own HAProxy)."""

    def __init__(self, services: int, instances: int, progress=print, gateway_args: tuple[str, ...] = (), kv: dict[str, str] | None = None,
                 dns: bool = False):
        self.services, self.instances = services, instances
        self.gateway_args, self.kv = gateway_args, kv or {}
        self.dir = Path(tempfile.mkdtemp(prefix="shopgate-bench-"))
        self.catalog_port = free_port()
        self.dns_port = free_port(udp_too=True) if dns else None   # the catalog's DNS, and the gateway's --consul-dns
        self.status_port, self.listen_port, self.stats_port = free_port(), free_port(), free_port()
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        self.catalog: ManagedProcess | None = None
        self.gateway: Gateway | None = None
        self.more_gateways: list[Gateway] = []
        self.progress = progress
        self.next_port = FIRST_PORT + services * instances

    @property
    def catalog_url(self) -> str:
        return f"http://127.0.0.1:{self.catalog_port}"

    @property
    def cli(self) -> MasterCLI:
        return self.gateway.cli

    def start(self) -> "Rig":
        """The catalog, every instance registered, then the gateway with its first full config."""
        self.start_catalog()
        self.register_all()
        started = time.monotonic()
        self.start_gateway()
        self.progress(f"  gateway: first full config of {self.services * self.instances} servers running {time.monotonic() - started:.1f}s after start")
        return self

    def register_all(self, status: str = "passing") -> None:
        """Every service's instances, each with a TTL check in `status`, on ports from FIRST_PORT up."""
        started = time.monotonic()
        names = [(f"svc{s:05d}", f"svc{s:05d}-{i}", FIRST_PORT + s * self.instances + i) for s in range(self.services) for i in range(self.instances)]
        with ThreadPoolExecutor(8) as pool:
            for done, _ in enumerate(pool.map(lambda item: self.register(*item, status=status), names), 1):
                if done % 2000 == 0:
                    self.progress(f"  registered {done}/{len(names)} instances")
        self.progress(f"  catalog: {len(names)} instances of {self.services} services registered in {time.monotonic() - started:.1f}s")

    def start_catalog(self) -> None:
        dns_port = str(self.dns_port) if self.dns_port else "-1"
        self.catalog = ManagedProcess("catalog", shopgate_argv("catalog", "--bind", "127.0.0.1", "--port", str(self.catalog_port),
                                                               "--data-dir", str(self.dir / "catalog"), "--dns-port", dns_port),
                                      log_path=self.dir / "catalog.log").start()
        wait_for_http(f"{self.catalog_url}/v1/status/leader", timeout=30, process=self.catalog)
        for key, value in self.kv.items():
            self.kv_put(key, value)

    def _dns_args(self) -> tuple[str, ...]:
        return ("--consul-dns", f"127.0.0.1:{self.dns_port}") if self.dns_port else ()

    def start_gateway(self, *extra_args: str) -> None:
        """A `shopgate gateway` (fresh state dir, the rig's ports) on the catalog; returns once HAProxy runs its first full config."""
        self.gateway = Gateway(self.catalog_url, self.dir / "gateway", (*self._dns_args(), *self.gateway_args, *extra_args),
                               (self.listen_port, self.stats_port, self.status_port)).start()

    def add_gateway(self) -> Gateway:
        """One more controller (own ports, state dir, HAProxy) on the catalog, with the rig's gateway arguments."""
        gateway = Gateway(self.catalog_url, self.dir / f"gateway{len(self.more_gateways) + 2}", (*self._dns_args(), *self.gateway_args))
        self.more_gateways.append(gateway)
        return gateway.start()

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def register(self, service: str, service_id: str, port: int | None = None, status: str = "passing") -> int:
        if port is None:
            port = self.next_port
            self.next_port += 1
        body = {"Name": service, "ID": service_id, "Address": "127.0.0.1", "Port": port,
                "Check": {"CheckID": f"service:{service_id}", "TTL": "1h", "Status": status}}
        self.http.put(f"{self.catalog_url}/v1/agent/service/register", json=body, timeout=30).raise_for_status()
        return port

    def pass_check(self, service_id: str) -> None:
        self.http.put(f"{self.catalog_url}/v1/agent/check/pass/service:{service_id}", timeout=30).raise_for_status()

    def fail_check(self, service_id: str) -> None:
        self.http.put(f"{self.catalog_url}/v1/agent/check/fail/service:{service_id}", timeout=30).raise_for_status()

    def deregister(self, service_id: str) -> None:
        self.http.put(f"{self.catalog_url}/v1/agent/service/deregister/{service_id}", timeout=30).raise_for_status()

    def kv_put(self, key: str, value: str) -> None:
        self.http.put(f"{self.catalog_url}/v1/kv/{key}", data=value, timeout=30).raise_for_status()

    def catalog_metrics(self) -> dict[str, float]:
        """The catalog's own gauges and counters (`/v1/agent/metrics`) by name."""
        body = self.http.get(f"{self.catalog_url}/v1/agent/metrics", timeout=30).json()
        return {**{g["Name"]: g["Value"] for g in body["Gauges"]}, **{c["Name"]: c["Count"] for c in body["Counters"]}}

    def admin_states(self, backend: str) -> dict[str, int]:
        return self.gateway.admin_states(backend)

    def wait_for(self, backend: str, address: str, predicate, timeout: float = 30.0) -> float:
        return self.gateway.wait_for(backend, address, predicate, timeout)

    def metric(self, name: str, labels: str = "") -> float:
        return self.gateway.metric(name, labels)

    def rss_mb(self) -> float:
        return self.gateway.rss_mb()

    def cpu_seconds(self) -> float:
        return self.gateway.cpu_seconds()

    def close(self) -> None:
        for gateway in (*self.more_gateways, self.gateway):
            if gateway is not None:
                gateway.stop()
        if self.catalog is not None:
            self.catalog.stop(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)


def measure_changes(rig: Rig, changes: int, services: list[str]) -> tuple[list[float], list[float], list[float]]:
    """`changes` rounds of: an instance turns passing (-> slot leaves MAINT), then deregisters (-> DRAIN/MAINT).

    Returns (add latencies, removal latencies, controller-side seen->applied latencies), in ms."""
    adds, removes, controller = [], [], []
    runtime_sum = 'shopgate_gateway_propagation_seconds_sum', '{kind="runtime"}'
    for round_ in range(changes):
        service = services[round_ % len(services)]
        backend, service_id = f"be_{service}", f"{service}-bench-{round_}"
        port = rig.register(service, service_id, status="critical")
        address = f"127.0.0.1:{port}"
        time.sleep(0.15)   # the critical registration settles (no change in HAProxy)
        before = rig.metric(*runtime_sum)
        started = time.monotonic()
        rig.pass_check(service_id)
        adds.append((rig.wait_for(backend, address, lambda s: s is not None and not s & FORCED_MAINT) - started) * 1000)
        time.sleep(0.05)
        after_add = rig.metric(*runtime_sum)
        started = time.monotonic()
        rig.deregister(service_id)
        removes.append((rig.wait_for(backend, address, lambda s: s is None or s & (FORCED_MAINT | FORCED_DRAIN)) - started) * 1000)
        time.sleep(0.05)
        controller += [(after_add - before) * 1000, (rig.metric(*runtime_sum) - after_add) * 1000]
    return adds, removes, controller


def latency_rows(adds: list[float], removes: list[float], controller: list[float]) -> list[tuple]:
    """Table rows (name, n, p50, p99, max, mean) for the three series `measure_changes` returns."""
    return [(name, len(values), f"{percentile(values, 0.5):.1f}", f"{percentile(values, 0.99):.1f}",
             f"{max(values):.1f}", f"{statistics.fmean(values):.1f}")
            for name, values in (("passing -> slot ready (API call -> HAProxy)", adds),
                                 ("deregistered -> slot draining (API call -> HAProxy)", removes),
                                 ("controller: change seen -> runtime API done", controller))]
