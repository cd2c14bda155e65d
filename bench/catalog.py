"""Benchmark the embedded catalog: registrations/s, held blocking watchers, wake-up latency, server RSS.

Prints figures (not pass/fail). Starts its own `shopgate catalog` on a free
port with a fresh --data-dir (so every write goes through the write-ahead
journal, as in production). Watchers are raw asyncio HTTP/1.1 connections on
uvloop so that the client's own cost stays small next to the server's; the
latency of a watcher is from just before the change's request is sent until
its whole response has arrived. Next to each latency the bench prints the
server's main thread time on a CPU and time spent waiting for one (the
kernel's schedstat): on a shared machine the waiting shows what others' work
added to the figure.

    .venv/bin/python bench/catalog.py [--watchers 1000] [--registrations 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
import uvloop  # noqa: E402

from _harness import percentile  # noqa: E402
from shopgate.processes import (ManagedProcess, free_port, main_thread_schedstat, process_rss_kib,  # noqa: E402
                                shopgate_argv, wait_for_http)


class Exchange(asyncio.Protocol):
    """One HTTP/1.1 request on its own connection; `done` resolves at the end of the response, with its arrival time."""

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.buffer = b""
        self.done: asyncio.Future[tuple[float, int, bytes]] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length and not self.done.done():
            status = int(head.split(b" ", 2)[1])
            self.done.set_result((time.perf_counter(), status, head))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))


async def open_watchers(port: int, path: str, count: int) -> list[Exchange]:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    watchers = []
    for _ in range(count):
        _, protocol = await loop.create_connection(lambda: Exchange(request, loop), "127.0.0.1", port)
        watchers.append(protocol)
    return watchers


def held(url: str) -> int:
    gauges = requests.get(f"{url}/v1/agent/metrics", timeout=10).json()["Gauges"]
    return next(g["Value"] for g in gauges if g["Name"] == "shopgate.catalog.blocking_queries_held")


def rss_mib(pid: int) -> float:
    kib = process_rss_kib(pid)
    return float("nan") if kib is None else kib / 1024


async def registrations_per_second(url: str, total: int, concurrency: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        queue = list(range(total))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                body = {"Name": f"bench-{n % 50}", "ID": f"bench-{n}", "Port": 10000 + n % 50000,
                        "Tags": ["urlprefix-/bench"], "Check": {"TTL": "600s"}}
                async with session.put(f"{url}/v1/agent/service/register", json=body) as response:
                    assert response.status == 200, await response.text()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)


def schedstat_delta(pid: int, before: tuple[float, float]) -> tuple[float, float]:
    after = main_thread_schedstat(pid) or before
    return after[0] - before[0], after[1] - before[1]


async def wake_round(url: str, port: int, path_of, watchers: int, change, pid: int
                     ) -> tuple[list[float], tuple[float, float]]:
    """Hold `watchers` blocking queries, make one change; each watcher's latency (s) from the change, and the
    server's main thread (seconds on a CPU, seconds waiting for one) from the change until all returned."""
    index = int(requests.get(url + path_of(0), timeout=10).headers["X-Consul-Index"])  # index=0: answers at once
    exchanges = await open_watchers(port, path_of(index), watchers)
    deadline = time.monotonic() + 60
    while held(url) < watchers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {held(url)} of {watchers} watchers held")
        await asyncio.sleep(0.05)
    assert not any(e.done.done() for e in exchanges), "a watcher returned before the change"
    sched = main_thread_schedstat(pid) or (0.0, 0.0)
    started = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(None, change)
    results = await asyncio.gather(*(e.done for e in exchanges))
    server = schedstat_delta(pid, sched)
    assert all(status == 200 for _, status, _ in results)
    return [finished - started for finished, _, _ in results], server


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


async def run(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = ManagedProcess("catalog", shopgate_argv("catalog", "--port", str(port), "--data-dir", f"{tmp}/data",
                                                         "--log-level", "WARNING", "--dns-port", "-1"),
                                log_path=Path(tmp) / "catalog.log").start()
        try:
            wait_for_http(f"{url}/v1/status/leader", process=server)
            rows = [("server RSS at start", f"{rss_mib(server.pid):.1f} MiB")]

            sched = main_thread_schedstat(server.pid) or (0.0, 0.0)
            rate1 = await registrations_per_second(url, args.registrations // 4, 1)
            rate = await registrations_per_second(url, args.registrations, 16)
            on_cpu, waiting = schedstat_delta(server.pid, sched)
            registered = args.registrations // 4 + args.registrations
            rows += [("registrations/s (1 client, sequential)", f"{rate1:,.0f}"),
                     ("registrations/s (16 concurrent clients)", f"{rate:,.0f}"),
                     ("server main thread per registration: on a CPU / waiting for one",
                      f"{on_cpu / registered * 1e6:.0f} / {waiting / registered * 1e6:.0f} us"),
                     ("server RSS after registrations", f"{rss_mib(server.pid):.1f} MiB")]
            print(table(rows), flush=True)

            def kv_watch(index: int) -> str:
                return f"/v1/kv/shopgate/?recurse&index={index}&wait=60s"

            def health_watch(index: int) -> str:
                return f"/v1/health/service/web?index={index}&wait=60s"

            kv_rounds = []
            for round_ in range(args.rounds):
                kv_rounds.append(await wake_round(url, port, kv_watch, args.watchers, lambda: requests.put(
                    f"{url}/v1/kv/shopgate/round", data=str(round_), timeout=10), server.pid))
            held_rss = rss_mib(server.pid)

            reg_rounds = []
            for round_ in range(args.rounds):
                registration = {"Name": "web", "ID": f"web-{round_}", "Port": 9000 + round_}
                reg_rounds.append(await wake_round(url, port, health_watch, args.watchers, lambda: requests.put(
                    f"{url}/v1/agent/service/register", json=registration, timeout=10), server.pid))

            def latency_rows(what: str, rounds: list[tuple[list[float], tuple[float, float]]]
                             ) -> list[tuple[str, str]]:
                values = [latency for one_round, _ in rounds for latency in one_round]
                per_round = " ".join(f"{max(one_round) * 1000:.0f}" for one_round, _ in rounds)
                on_cpu = sum(server[0] for _, server in rounds) / len(rounds)
                waiting = sum(server[1] for _, server in rounds) / len(rounds)
                return [(f"wake-up after {what}: p50", f"{percentile(values, 0.5) * 1000:.1f} ms"),
                        (f"wake-up after {what}: p99", f"{percentile(values, 0.99) * 1000:.1f} ms"),
                        (f"wake-up after {what}: all returned", f"{max(values) * 1000:.1f} ms "
                                                                f"(per round: {per_round} ms)"),
                        (f"wake-up after {what}: server on a CPU / waiting for one",
                         f"{on_cpu * 1000:.1f} / {waiting * 1000:.1f} ms per round")]

            rows = [("blocking watchers held at once", f"{args.watchers} (x {args.rounds} rounds each)"),
                    *latency_rows("a KV write", kv_rounds),
                    *latency_rows("a service registration", reg_rounds),
                    (f"server RSS with {args.watchers} watchers held", f"{held_rss:.1f} MiB"),
                    ("server RSS at the end", f"{rss_mib(server.pid):.1f} MiB"),
                    ("machine load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")]
            print(table(rows), flush=True)
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--registrations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"shopgate catalog benchmark: {args.watchers} watchers, {args.registrations} registrations, "
          f"{args.rounds} rounds per latency figure")
    # The client runs on uvloop too (the catalog's loop), so that its own cost stays small next to the server's.
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(run(args))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
