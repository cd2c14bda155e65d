"""Flap hold-down: an instance whose health flips too often is kept out of rotation for a while.

Per service KV (gateway.kv_settings): `flap_limit` (flips allowed; absent = off), `flap_window`
(how far back flips count, default 60s) and `flap_hold` (default 60s). An instance that flips
between routable and not routable (gateway.routing.routable: passing, or warning where
`route_warning` is on) more than `flap_limit` times within `flap_window` is *held*: routed as if it
were unhealthy (`maint`) until `flap_hold` after its last flip. Every flip while held extends the
hold. When the hold runs out the instance is routed again if healthy, and its count starts from
zero. The window is its own key because "how often is too often" (a rate) and "how long to stay
out" (a penalty) are different questions; with the defaults they are equal.

Pure: `observe(state, services, settings, now)` takes the last FlapState, the catalog's instances,
each service's settings and the time (monotonic seconds, passed in), and returns the new state;
`held(now)` is the set of instance keys routing keeps out, `next_expiry(now)` when the controller
must look again so a held instance comes back without any catalog change.

What counts as a flip is what the controller sees: it observes each catalog view it plans from, so
two flips folded into one view (the watcher's, or a burst waiting for a reload) count as none. A new
instance registers critical and turns passing on its first check: that first rise is an instance
coming up, not a flip (whether the controller happened to see it critical first used to decide
whether it counted). The history is kept for
services with a `flap_limit` only; it is dropped for an instance that leaves the catalog (it starts
afresh when it re-registers) and for a service whose `flap_limit` is removed (its holds end at once).

Faults:
* Controller restart: the history lives in memory only and is lost; nothing is held until an
  instance flips more than `flap_limit` times again (a restart errs towards routing).
* Catalog outage: the watcher emits no views, so no flips are counted; holds still run out on
  time (the controller's wake-up re-evaluates its last view) and an instance held healthy comes
  back. A view the empty-catalog guard holds back is not observed, so a catalog that restarts
  empty does not wipe the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from gateway.model import BackendSettings, Instance
from gateway.routing import routable


@dataclass(frozen=True)
class History:
    """What one instance did lately: its last health, its flips still inside the window, its hold."""

    healthy: bool
    flips: tuple[float, ...] = ()      # times of the flips counted now, oldest first
    held_until: float | None = None
    came_up: bool = False              # routable at least once: before that, its first rise is no flip


@dataclass(frozen=True)
class FlapState:
    """service -> instance key -> History, for the services with a `flap_limit`."""

    services: Mapping[str, Mapping[str, History]] = field(default_factory=dict)

    def held(self, now: float) -> frozenset[str]:
        """Instance keys held out at `now`."""
        return frozenset(key for instances in self.services.values() for key, history in instances.items()
                         if history.held_until is not None and history.held_until > now)

    def next_expiry(self, now: float) -> float | None:
        """The earliest time after `now` a hold runs out (the controller's wake-up), or None."""
        ends = [h.held_until for instances in self.services.values() for h in instances.values()
                if h.held_until is not None and h.held_until > now]
        return min(ends, default=None)

    def report(self, now: float) -> dict[str, list[dict]]:
        """For /status: per service the held instances, with their counted flips and seconds left."""
        return {service: [{"instance": key, "flips": len(h.flips), "held_for_seconds": round(h.held_until - now, 3)}
                          for key, h in sorted(instances.items()) if h.held_until is not None and h.held_until > now]
                for service, instances in sorted(self.services.items())
                if any(h.held_until is not None and h.held_until > now for h in instances.values())}


def observe(state: FlapState, services: Mapping[str, Iterable[Instance]], settings: Mapping[str, BackendSettings],
            now: float) -> FlapState:
    """The state after seeing `services` (service -> instances) at `now`; `settings` holds each service's flap keys."""
    observed: dict[str, Mapping[str, History]] = {}
    for service, service_settings in settings.items():   # only services with KV: not every service per view
        instances = services.get(service)
        if instances is None or service_settings.flap_limit is None:
            continue
        before = state.services.get(service, {})
        after = {}
        for instance in instances:
            history = before.get(instance.key)
            healthy = routable(instance, service_settings)
            after[instance.key] = History(healthy, came_up=healthy) if history is None else _step(history, healthy, service_settings, now)
        observed[service] = after
    return FlapState(observed)


def _step(history: History, healthy: bool, settings: BackendSettings, now: float) -> History:
    flips, held_until = history.flips, history.held_until
    if held_until is not None and held_until <= now:
        flips, held_until = (), None     # the hold has run out: count afresh
    window_start = now - settings.flap_window_ms / 1000
    if flips and flips[0] <= window_start:
        flips = tuple(t for t in flips if t > window_start)
    if healthy != history.healthy and history.came_up:
        flips += (now,)
        if len(flips) > settings.flap_limit:
            held_until = now + settings.flap_hold_ms / 1000
    if (flips, held_until) == (history.flips, history.held_until) and healthy == history.healthy:
        return history
    return History(healthy, flips, held_until, history.came_up or healthy)
