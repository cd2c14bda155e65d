"""gateway.guard: when the empty-catalog guard holds a view back, and for how long (pure decisions)."""

from __future__ import annotations

from gateway.guard import EmptyCatalogGuard
from gateway.model import Instance, Snapshot


def _snapshot(healthy: int, sick: int = 0) -> Snapshot:
    instances = tuple(Instance("web", f"w{i}", "n1", "127.0.0.1", 8000 + i) for i in range(healthy))
    instances += tuple(Instance("web", f"s{i}", "n1", "127.0.0.1", 9000 + i, status="critical") for i in range(sick))
    return Snapshot(services={"web": instances})


def test_guard_holds_a_vanished_view_after_a_catalog_recovery_for_a_bounded_time():
    guard = EmptyCatalogGuard(hold=30, window=60)
    applied = _snapshot(6)
    assert guard.check(applied, _snapshot(2), recovered_at=100.0, now=101.0) is not None, "4 of 6 vanished right after a recovery"
    assert guard.check(applied, _snapshot(2, sick=4), recovered_at=100.0, now=110.0) is not None, "re-registered but not passing yet"
    assert guard.check(applied, _snapshot(5), recovered_at=100.0, now=112.0) is None, "released once they are back"
    assert guard.check(applied, _snapshot(1), recovered_at=100.0, now=113.0) is not None
    assert guard.check(applied, _snapshot(1), recovered_at=100.0, now=143.5) is None, "bounded: applied after the hold"


def test_guard_lets_a_scale_down_in_a_healthy_catalog_through_but_not_an_empty_view():
    guard = EmptyCatalogGuard(hold=30, window=60)
    assert guard.check(_snapshot(6), _snapshot(1), recovered_at=None, now=500.0) is None
    assert guard.check(_snapshot(6), _snapshot(1), recovered_at=100.0, now=500.0) is None, "the recovery was long ago"
    assert guard.check(_snapshot(6), _snapshot(0), recovered_at=None, now=500.0) is not None, "everything vanished at once"
