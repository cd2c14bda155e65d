"""The one generic blocking-query loop: hold a Consul read open on its index, hand on each change.

Consul's rules for clients, kept here once (consul-template's `watch/view.go`):
- the first read has no index and returns at once; later reads wait on the last index seen;
- an answer with the same index is the wait ending without a change (nothing to hand on);
- an index that goes backwards (a restarted or replaced server) resets to 0, so the next read
  returns at once instead of waiting its full wait;
- after any failure the pause doubles from the first to the last backoff, and the next read
  starts at index 0 to catch up at once when the catalog is back.
What a result means is not this loop's business: `on_change` decodes it, and raises
CatalogUnavailable for an answer it cannot read, which then counts as a failed read. Any other
error out of `on_change` is a bug, but it must not end the watch for good: it is logged with its
traceback and treated as a failed read too, so the next answer is read afresh.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from shopgate.consul_client.client import CatalogUnavailable, QueryResult
from shopgate.settings import RETRY_BACKOFF_SECONDS

log = logging.getLogger("shopgate.consul_client.blocking")


@dataclass(eq=False)
class BlockingQuery:
    """One read held open on its index by `run()` until `stop` is set.

    `fetch(index)` performs the read (index 0: do not block). `on_change(data, seen_at, index)` gets
    each changed answer, `seen_at` being the monotonic time it arrived and `index` its own index (what
    orders it against other reads of the same catalog). `on_error(message)`, `on_success()` and
    `on_reset(seen_at)` let the owner report reachability; they default to doing nothing."""

    name: str
    fetch: Callable[[int], QueryResult]
    on_change: Callable[[Any, float, int], None]
    stop: threading.Event
    backoff: tuple[float, float] = RETRY_BACKOFF_SECONDS
    on_error: Callable[[str], None] = lambda message: None
    on_success: Callable[[], None] = lambda: None
    on_reset: Callable[[float], None] = lambda seen_at: None
    index: int = field(default=0, init=False)
    waiting: bool = field(default=False, init=False)   # a read is held open on an index right now
    reads: int = field(default=0, init=False)

    def run(self) -> None:
        first_backoff, last_backoff = self.backoff
        pause = first_backoff
        while not self.stop.is_set():
            try:
                self._read_once()
            except Exception as error:   # noqa: BLE001 (see the module docstring)
                if self.stop.is_set():
                    return
                if not isinstance(error, CatalogUnavailable):
                    log.exception("watch %s: handling an answer failed; reading afresh", self.name)
                self.index = 0
                self.on_error(str(error))
                self.stop.wait(pause)
                pause = min(pause * 2, last_backoff)
                continue
            pause = first_backoff

    def _read_once(self) -> None:
        index = self.index
        self.reads += 1
        self.waiting = bool(index)
        try:
            result = self.fetch(index)
        finally:
            self.waiting = False
        seen_at = time.monotonic()
        if result.index < index:
            self.index = 0
            self.on_reset(seen_at)
        elif result.index > index or not index:
            self.index = max(result.index, 1)
            self.on_change(result.data, seen_at, result.index)
        self.on_success()

    def start(self) -> threading.Thread:
        """Run in a daemon thread named after the query."""
        thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        thread.start()
        return thread
