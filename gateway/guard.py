"""The empty-catalog guard: whether to hold back a catalog view in which most healthy instances vanished at once.

A catalog that restarts (or resets its index) answers with an empty or half-filled view while its
services re-register; applied at once, that view would take every route down. The guard decides
from plain data (the applied and the new Snapshot, when the watcher last recovered, the time)
and holds such a view for a bounded time; the controller only acts on its answer.
"""

from __future__ import annotations

import logging

from gateway.model import Snapshot
from shopgate import settings

log = logging.getLogger("shopgate.gateway.guard")

GUARD_WINDOW = 60.0       # s after a catalog outage/reset during which the guard is armed


class EmptyCatalogGuard:
    """Holds back a view in which most healthy instances vanished at once, for at most `hold` seconds.

    Armed after a catalog outage or index reset (a restarted catalog fills up again as services
    re-register), and always when every healthy instance vanished at once. A scale-down in a
    healthy catalog passes straight through."""

    def __init__(self, hold: float = settings.GATEWAY_GUARD_HOLD_SECONDS, window: float = GUARD_WINDOW, vanished_fraction: float = 0.5, min_instances: int = 2):
        self.hold = hold
        self.window = window
        self.vanished_fraction = vanished_fraction
        self.min_instances = min_instances
        self.holding_since: float | None = None
        self.reason: str | None = None
        self._counted: tuple[Snapshot | None, int] = (None, 0)   # the applied view's healthy count, computed once

    def check(self, applied: Snapshot | None, new: Snapshot, recovered_at: float | None, now: float) -> str | None:
        """The reason to hold `new` back, or None to apply it."""
        recent_recovery = recovered_at is not None and now - recovered_at < self.window
        if not recent_recovery and any(i.healthy for instances in new.services.values() for i in instances):
            suspicious = False   # the common case, decided without counting 10,000 instances
        else:
            if applied is not self._counted[0]:
                self._counted = (applied, _healthy(applied) if applied is not None else 0)
            before, after = self._counted[1], _healthy(new)
            suspicious = before >= self.min_instances and after < before * (1 - self.vanished_fraction)
        if not suspicious:
            if self.holding_since is not None:
                log.info("empty-catalog guard released: %d healthy instances", _healthy(new))
            self.holding_since = self.reason = None
            return None
        if self.holding_since is None:
            self.holding_since = now
            log.warning("empty-catalog guard: %d of %d healthy instances vanished at once; holding the last view up to %.0fs", before - after, before, self.hold)
        if now - self.holding_since >= self.hold:
            log.warning("empty-catalog guard: still %d of %d after %.0fs; applying the catalog's view", after, before, self.hold)
            self.holding_since = self.reason = None
            return None
        self.reason = f"{before - after} of {before} healthy instances vanished at once (held {now - self.holding_since:.0f}s of at most {self.hold:.0f}s)"
        return self.reason


def _healthy(snapshot: Snapshot) -> int:
    return sum(1 for instances in snapshot.services.values() for i in instances if i.healthy)
