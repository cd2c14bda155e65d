"""A steady, bounded HTTP load that records every request.

Requests are scheduled at a fixed rate (request i is due at i/rate seconds) and sent by a bounded
pool of asyncio workers, so the load stays steady while the gateway changes underneath it and a slow
moment shows up as latency, not as a gap. It stops at a duration, a request count, or `stop()`.
Every request is kept — start time, latency, status, error, and the X-Instance that answered — so
that nothing can fall out of the count.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import statistics
import threading
import time
import ssl
from dataclasses import dataclass, replace

import aiohttp
import requests

from shopgate import settings


@dataclass(frozen=True)
class Target:
    """One kind of request in the mix; `weight` is how many of every cycle of the mix it gets.

    `expect` lists the statuses the API documents as correct answers to this request; any other
    status, and no response at all, counts as a failed request.
    """

    method: str
    path: str
    body: dict | None = None
    weight: int = 1
    expect: tuple[int, ...] = (200,)
    base: str | None = None      # another base URL than the load's (the HTTPS entry point)


@dataclass(frozen=True)
class RequestRecord:
    started: float               # seconds since the load started
    latency: float               # seconds until the full response (or the error)
    method: str
    path: str
    status: int                  # 0 when no HTTP response came back
    error: str | None = None     # set exactly when the request failed
    instance: str | None = None  # X-Instance response header: which service instance answered
    tls: bool = False            # sent over HTTPS

    @property
    def failed_handshake(self) -> bool:
        """No TLS session: the certificate did not verify or the handshake broke off."""
        return self.tls and self.error is not None and any(word in self.error for word in ("SSL", "Certificate"))

    @property
    def failed(self) -> bool:
        return self.error is not None


#: The shop's documented answers to an order: 201 confirmed, 402 payment declined, 409 sold out.
ORDER_ANSWERS = (201, 402, 409)


def shop_mix(base_url: str, products: int = 3, gets_per_order: int = 8) -> list[Target]:
    """GETs across all five services (products twice as often), and an order POST after every `gets_per_order` GETs.

    The orders are for the `products` best-stocked products, by every user in turn, so that most are
    confirmed for as long as stock lasts (one user's card is always declined: 402).
    """
    user_ids = [user["id"] for user in requests.get(f"{base_url}/api/v1/users", timeout=5).json()]
    stock = requests.get(f"{base_url}/api/v1/inventory", timeout=5).json()
    product_ids = [s["product_id"] for s in sorted(stock, key=lambda s: -s.get("available", 0))][:products]
    if not user_ids or not product_ids:
        raise RuntimeError(f"{base_url}: the shop has no users or no products to order with")
    gets = itertools.cycle([Target("GET", f"/api/v1/{service}") for service in (*settings.SHOP_SERVICES, "products")])
    mix = []
    for product in product_ids:
        for user in user_ids:
            mix += [next(gets) for _ in range(gets_per_order)]
            mix.append(Target("POST", "/api/v1/orders", {"user_id": user, "product_id": product, "quantity": 1}, expect=ORDER_ANSWERS))
    return mix


def over_https(targets: list[Target], https_base: str, every: int = 3) -> list[Target]:
    """The same mix with every `every`-th request sent to `https_base`: the same routes over TLS."""
    return [replace(t, base=https_base) if index % every == every - 1 else t for index, t in enumerate(targets)]


class Load:
    """Run `targets` against `base_url` at `rate` req/s in a background thread (or in the caller's, with `run`)."""

    def __init__(self, base_url: str, targets: list[Target], *, rate: float = 100, concurrency: int = 32,
                 duration: float | None = None, max_requests: int | None = None, timeout: float = 10,
                 keepalive: bool = False, ssl_context: ssl.SSLContext | None = None):
        if duration is None and max_requests is None:
            raise ValueError("a load needs a bound: duration or max_requests")
        self.base_url = base_url.rstrip("/")
        self.schedule = [t for t in targets for _ in range(t.weight)]
        self.rate, self.concurrency, self.duration, self.max_requests = rate, concurrency, duration, max_requests
        self.timeout, self.keepalive, self.ssl_context = timeout, keepalive, ssl_context
        self.records: list[RequestRecord] = []
        self.started_at: float | None = None     # time.monotonic() of request 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = itertools.count()

    # -- control

    def start(self) -> "Load":
        self._thread = threading.Thread(target=self.run, name="load", daemon=True)
        self._thread.start()
        while self.started_at is None and self._thread.is_alive():
            time.sleep(0.01)
        return self

    def stop(self) -> list[RequestRecord]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.records

    def run(self) -> list[RequestRecord]:
        asyncio.run(self._main())
        return self.records

    def now(self) -> float:
        """Seconds on the load's clock (the `started` clock of the records)."""
        return time.monotonic() - (self.started_at or time.monotonic())

    # -- the load itself

    async def _main(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=not self.keepalive, ssl=self.ssl_context or True)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.started_at = time.monotonic()
            await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            index = next(self._next)
            due = index / self.rate
            if (self.max_requests is not None and index >= self.max_requests) or (self.duration is not None and due >= self.duration):
                return
            delay = due - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stop.is_set():
                return
            self.records.append(await self._send(session, self.schedule[index % len(self.schedule)]))

    async def _send(self, session: aiohttp.ClientSession, target: Target) -> RequestRecord:
        started = self.now()
        base = (target.base or self.base_url).rstrip("/")
        tls = base.startswith("https:")
        try:
            async with session.request(target.method, base + target.path, json=target.body) as response:
                body = await response.read()
                error = None if response.status in target.expect else f"HTTP {response.status}: {body[:120].decode(errors='replace')}"
                return RequestRecord(started, self.now() - started, target.method, target.path, response.status,
                                     error, response.headers.get("X-Instance"), tls)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return RequestRecord(started, self.now() - started, target.method, target.path, 0, f"{type(exc).__name__}: {exc}", tls=tls)


# ---------------------------------------------------------------- figures


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarize(records: list[RequestRecord]) -> dict:
    """Requests, failures, throughput and latency of a finished load (latencies in milliseconds)."""
    latencies = [r.latency * 1000 for r in records]
    span = max((r.started + r.latency for r in records), default=0.0)
    failures = [r for r in records if r.failed]
    return {
        "requests": len(records),
        "failed": len(failures),
        "https_requests": sum(r.tls for r in records),
        "failed_handshakes": sum(r.failed_handshake for r in records),
        "statuses": dict(sorted(collections.Counter(f"{r.method} {r.status}" for r in records).items())),
        "rate": round(len(records) / span, 1) if span else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
        "first_failures": [f"{r.started:7.2f}s {r.method} {'https' if r.tls else 'http'} {r.path}: {r.error}" for r in failures[:10]],
    }
