"""Runtime-API mode vs DNS mode vs render-and-reload on every change, side by side; and the catalog's DNS queries/s.

    .venv/bin/python bench/discovery.py [--rounds 5] [--peak 5] [--rate 100] [--dns-seconds 10] [--senders 4]

(Not bench/dns.py: run as a script, that name would shadow dnspython's `dns` package.)

One catalog (its DNS on a free port), five real HTTP backends (tests/gateway_backend.py, serving all
along), and the same scale steps for each mode in turn: products 1 -> peak -> 1, `--rounds` times,
under a steady keep-alive GET load through the entry point (shopgate.tool.load, --rate req/s). A
scale step is a catalog write by this script: registering an instance (TTL check, passing) or
deregistering it; the backend processes keep running, so every failed request is the gateway's.
KV `slots` = 16 for products in every mode (the DNS mode's fixed server-template size), so the
runtime mode never grows its backend by a reload mid-run.

The three modes, each a fresh `shopgate gateway` on the same catalog:
  runtime  the default: the controller moves instances in and out of spare slots over the runtime API
  dns      KV shopgate/services/products/discovery = dns: HAProxy's resolver asks the catalog's DNS
           (SRV, `timeout resolve 1s`), the controller pushes nothing
  reload   `shopgate gateway --always-reload`: every membership change goes the structural way, i.e.
           render the whole haproxy.cfg -> haproxy -c -> master reload -> verify (consul-template's
           way: render on change, run the reload command), reloads spaced by the controller's 1 s
           RELOAD_INTERVAL (consul-template's `wait` plays that part)

Catalog change -> traffic follows: from the catalog API call returning until the first request sent
through the entry point that the new instance answers (X-Instance), and until the last request sent
to a removed one (0 when none was sent after the write). Resolution: the load's request spacing per
instance (--rate / instances). Includes HAProxy's own health-check rise where a mode has one.

DNS queries/s: --senders processes, each sending dnspython UDP queries one after another (A and SRV
for products at the peak size, EDNS 8192) for --dns-seconds, first alone, then while wrk (or the
Python generator) hits the catalog's HTTP API (/v1/health/service/products?passing) at full speed.
Prints the load average; no pass/fail.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gateway_rig import Rig  # noqa: E402
from _harness import drive, load_average, machine, percentile, table  # noqa: E402

from shopgate.processes import ManagedProcess, free_port, wait_for_http  # noqa: E402
from shopgate.tool.load import Load, RequestRecord, Target, summarize  # noqa: E402

BACKEND = Path(__file__).resolve().parent.parent / "tests" / "gateway_backend.py"
SERVICE = "products"
DISCOVERY_KEY = f"shopgate/services/{SERVICE}/discovery"
MODES = (("runtime", "runtime", ()), ("dns", "dns", ()), ("reload", "runtime", ("--always-reload",)))
STEADY = 1.5       # s of steady traffic between two scale steps
QUIET = 1.5        # s without a request to a removed instance before it counts as gone
GIVE_UP = 30.0     # s a step may take before it is reported as not followed


@dataclass
class Phase:
    mode: str
    adds: list[float] = field(default_factory=list)      # ms, catalog write -> first request routed to the instance
    removes: list[float] = field(default_factory=list)   # ms, catalog write -> last request routed to it
    missed: int = 0                                      # steps not followed within GIVE_UP
    summary: dict = field(default_factory=dict)
    reloads: float = 0.0
    runtime_updates: float = 0.0
    load: str = ""


def start_backends(rig: Rig, count: int, processes: list[ManagedProcess]) -> list[int]:
    """`count` real HTTP backends (they register under `benchpool`, which nothing here measures); their ports."""
    ports = []
    for _ in range(count):
        port = free_port()
        process = ManagedProcess(f"backend-{port}", [sys.executable, str(BACKEND), "--service", "benchpool", "--consul", rig.catalog_url,
                                                     "--port", str(port)], log_path=rig.dir / f"backend-{port}.log").start()
        processes.append(process)
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=30, process=process)
        ports.append(port)
    return ports


def instance_id(port: int) -> str:
    return f"{SERVICE}-bench-{port}"


class Follower:
    """Reads the load's records as they come in: which instance answered a request sent when."""

    def __init__(self, load: Load):
        self.load, self.seen = load, 0
        self.last_sent: dict[str, float] = {}   # instance -> latest send time (load clock) it answered
        self.waiting: dict[str, float] = {}     # instance -> write time it has not answered a request sent after yet

    def update(self) -> None:
        records = self.load.records
        end = len(records)
        for record in records[self.seen:end]:
            instance = record.instance
            if instance is None:
                continue
            self.last_sent[instance] = max(self.last_sent.get(instance, 0.0), record.started)
            if record.started >= self.waiting.get(instance, float("inf")):
                del self.waiting[instance]
        self.seen = end

    def wait(self, condition, timeout: float = GIVE_UP) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.update()
            if condition():
                return True
            time.sleep(0.02)
        return False


def first_after(records: list[RequestRecord], port: int, since: float) -> float | None:
    times = [r.started for r in records if r.instance == str(port) and r.started >= since]
    return min(times) if times else None


def last_between(records: list[RequestRecord], port: int, since: float, until: float) -> float | None:
    times = [r.started for r in records if r.instance == str(port) and since <= r.started < until]
    return max(times) if times else None


def run_phase(rig: Rig, mode: str, discovery: str, gateway_args: tuple[str, ...], ports: list[int], args) -> Phase:
    phase = Phase(mode)
    rig.kv_put(DISCOVERY_KEY, discovery)
    rig.start_gateway(*gateway_args)
    load = Load(f"http://127.0.0.1:{rig.listen_port}", [Target("GET", f"/api/v1/{SERVICE}")], rate=args.rate, concurrency=16,
                duration=3600, keepalive=True).start()
    follower = Follower(load)
    base, extra = ports[0], ports[1:args.peak]
    try:
        if not follower.wait(lambda: str(base) in follower.last_sent, timeout=60):
            raise RuntimeError(f"{mode}: the first instance never answered through the entry point\n{rig.gateway.log_tail()}")
        reloads, updates = rig.metric("shopgate_gateway_reloads_total"), rig.metric("shopgate_gateway_runtime_updates_total")
        events: list[tuple[str, int, float]] = []     # (up|down, port, load-clock time the write returned)
        for _ in range(args.rounds):
            time.sleep(STEADY)
            for port in extra:
                rig.register(SERVICE, instance_id(port), port)
                events.append(("up", port, load.now()))
                follower.waiting[str(port)] = events[-1][2]
            phase.missed += not follower.wait(lambda: not follower.waiting)
            follower.waiting.clear()
            time.sleep(STEADY)
            for port in extra:
                rig.deregister(instance_id(port))
                events.append(("down", port, load.now()))
            written = load.now()
            phase.missed += not follower.wait(lambda: load.now() - written >= QUIET and
                                              all(follower.last_sent.get(str(p), 0.0) < load.now() - QUIET for p in extra))
        time.sleep(STEADY)
        phase.reloads = rig.metric("shopgate_gateway_reloads_total") - reloads
        phase.runtime_updates = rig.metric("shopgate_gateway_runtime_updates_total") - updates
    finally:
        records = load.stop()
        phase.load = load_average()
        rig.stop_gateway()
    phase.summary = summarize(records)
    for index, (kind, port, at) in enumerate(events):
        later = [t for k, p, t in events[index + 1:] if p == port]
        if kind == "up":
            first = first_after(records, port, at)
            if first is not None and (not later or first < later[0]):
                phase.adds.append((first - at) * 1000)
        else:
            last = last_between(records, port, at, later[0] if later else float("inf"))
            phase.removes.append(max(0.0, (last - at) * 1000) if last is not None else 0.0)
    return phase


# ---------------------------------------------------------------- DNS queries/s


def dns_sender(job: tuple[int, float]) -> tuple[int, int, list[float]]:
    """One sender: UDP queries one after another for `seconds`; (answered, failed, latencies in ms)."""
    port, seconds = job
    queries = [dns.message.make_query(f"{SERVICE}.service.consul", dns.rdatatype.A, use_edns=0, payload=8192),
               dns.message.make_query(f"_{SERVICE}._tcp.service.consul", dns.rdatatype.SRV, use_edns=0, payload=8192)]
    answered = failed = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        query = queries[(answered + failed) % 2]
        started = time.monotonic()
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1.0)
            ok = reply.rcode() == dns.rcode.NOERROR and reply.answer
        except (dns.exception.Timeout, OSError):
            ok = False
        latencies.append((time.monotonic() - started) * 1000)
        answered, failed = answered + bool(ok), failed + (not ok)
    return answered, failed, latencies


def dns_rate(pool, port: int, senders: int, seconds: float) -> tuple:
    """Row: answered/s, failed, p50/p99 ms of `senders` processes querying the catalog's DNS for `seconds`."""
    results = pool.map(dns_sender, [(port, seconds)] * senders)
    answered = sum(r[0] for r in results)
    latencies = [ms for r in results for ms in r[2]]
    return (f"{answered / seconds:.0f}", sum(r[1] for r in results), f"{percentile(latencies, 0.5):.2f}", f"{percentile(latencies, 0.99):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak", type=int, default=5)
    parser.add_argument("--rate", type=float, default=100, help="requests/s through the entry point")
    parser.add_argument("--dns-seconds", type=float, default=10)
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"load average at the start: {load_average()}", flush=True)
    rig = Rig(0, 0, dns=True, kv={f"shopgate/services/{SERVICE}/slots": "16"})
    backends: list[ManagedProcess] = []
    phases = []
    try:
        rig.start_catalog()
        ports = start_backends(rig, args.peak, backends)
        rig.register(SERVICE, instance_id(ports[0]), ports[0])
        for mode, discovery, gateway_args in MODES:
            print(f"  {mode}: products 1 -> {args.peak} -> 1, {args.rounds} rounds, {args.rate:.0f} req/s", flush=True)
            phases.append(run_phase(rig, mode, discovery, gateway_args, ports, args))
        for port in ports[1:args.peak]:
            rig.register(SERVICE, instance_id(port), port)
        print(f"  DNS: {args.senders} senders x {args.dns_seconds:.0f}s, alone, then with HTTP API load", flush=True)
        http = {}
        with multiprocessing.get_context("fork").Pool(args.senders) as pool:   # forked before the HTTP load's thread starts
            alone = dns_rate(pool, rig.dns_port, args.senders, args.dns_seconds)
            hammer = threading.Thread(target=lambda: http.setdefault("load", drive(
                f"{rig.catalog_url}/v1/health/service/{SERVICE}?passing", args.dns_seconds + 2, connections=8)))
            hammer.start()
            time.sleep(1)
            busy = dns_rate(pool, rig.dns_port, args.senders, args.dns_seconds)
            hammer.join()
        dns_load = load_average()
    finally:
        for process in backends:
            process.stop(timeout=10)
        rig.close()

    print(f"\nside by side, products 1 -> {args.peak} -> 1 x {args.rounds}, GET load {args.rate:.0f} req/s (16 keep-alive connections)")
    print(table(("mode", "requests", "failed", "add p50 ms", "add p99 ms", "remove p50 ms", "remove p99 ms", "not followed", "reloads", "runtime cmds", "load avg at end"),
                [(p.mode, p.summary["requests"], p.summary["failed"], f"{percentile(p.adds, 0.5):.0f}", f"{percentile(p.adds, 0.99):.0f}",
                  f"{percentile(p.removes, 0.5):.0f}", f"{percentile(p.removes, 0.99):.0f}", p.missed, f"{p.reloads:.0f}",
                  f"{p.runtime_updates:.0f}", p.load.split(" (")[0]) for p in phases]))
    for p in phases:
        for line in p.summary["first_failures"][:3]:
            print(f"  {p.mode} failure: {line}")
    figures = http["load"]
    print(f"\ncatalog DNS over UDP ({args.senders} senders, A + SRV of {args.peak} instances)")
    print(table(("while", "answered/s", "failed", "p50 ms", "p99 ms"),
                [("DNS only", *alone), (f"HTTP API at {figures.rate:.0f} req/s ({figures.generator}, {figures.errors} errors)", *busy)]))
    print(f"load average at the end: {dns_load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
