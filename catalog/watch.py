"""Blocking queries: hold a request until its index passes the client's, or its wait ends.

Waiters park on futures keyed by topic (`kvs`, `checks`, `service:web` ...);
a commit resolves the futures of the topics it touched — no polling loop —
in the order they parked, so the watcher that waited longest is answered first.
A woken waiter re-reads its result and parks again if its index did not move.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")


class Watchers:
    def __init__(self) -> None:
        # topic -> its parked futures, in parking order (a dict keeps insertion order; the values are unused)
        self._parked: dict[str, dict[asyncio.Future, None]] = defaultdict(dict)
        self.held = 0  # blocking queries waiting right now

    def notify(self, topics: Iterable[str]) -> None:
        for topic in topics:
            for future in self._parked.pop(topic, ()):
                _resolve(future)

    async def block(self, topics: tuple[str, ...], min_index: int, wait: float,
                    read: Callable[[], tuple[int, T]]) -> tuple[int, T]:
        """`read()` returns (index, result); return the first whose index exceeds min_index, or the last on timeout."""
        index, result = read()
        if min_index <= 0 or index > min_index:
            return index, result
        loop = asyncio.get_running_loop()
        # Consul adds up to wait/16 of jitter so that many watchers do not return in one burst.
        deadline = loop.time() + wait + random.uniform(0, wait / 16)
        self.held += 1
        try:
            while index <= min_index and loop.time() < deadline:
                await self._park(topics, deadline - loop.time())
                index, result = read()
        finally:
            self.held -= 1
        return index, result

    async def _park(self, topics: tuple[str, ...], timeout: float) -> None:
        """Sleep until one of `topics` changes or `timeout` passes (one future, one timer: a single wake-up hop)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timer = loop.call_later(timeout, _resolve, future)
        for topic in topics:
            self._parked[topic][future] = None
        try:
            await future
        finally:
            timer.cancel()
            for topic in topics:
                parked = self._parked.get(topic)
                if parked is not None:
                    parked.pop(future, None)
                    if not parked:
                        del self._parked[topic]


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
