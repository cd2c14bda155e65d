"""gateway.watch against a real catalog: few long-polls whatever the service count, only changed services fetched;
and the empty-catalog guard's decisions (the health rules are pinned in test_consul_client.py)."""

from __future__ import annotations

import threading

from gateway.controller import EmptyCatalogGuard
from gateway.model import Instance, Snapshot
from gateway.watch import CatalogWatcher
from gateway_harness import eventually


def test_long_polls_do_not_grow_with_services_and_only_changed_services_are_fetched(catalog):
    client = catalog.client()
    snapshots: list[Snapshot] = []
    arrived = threading.Event()

    def on_snapshot(snapshot: Snapshot, seen_at: float) -> None:
        snapshots.append(snapshot)
        arrived.set()

    for n in range(30):
        client.agent.service.register(f"svc{n}", service_id=f"svc{n}-1", address="127.0.0.1", port=9000 + n, check={"TTL": "10m", "Status": "passing"})
    watcher = CatalogWatcher(catalog.address, on_snapshot, wait_seconds=10).start()
    try:
        eventually("the first full snapshot", lambda: snapshots and len(snapshots[-1].services) == 30)
        eventually("three long-polls held", lambda: watcher.long_polls_in_flight == 3)
        requests_before = watcher.requests_made

        client.agent.check.ttl_fail("service:svc7-1")
        eventually("the failing check is seen", lambda: snapshots[-1].services["svc7"][0].status == "critical")
        # one fetch of svc7, plus the blocking queries that answered and were issued again
        assert watcher.requests_made - requests_before <= 4
        assert watcher.long_polls_in_flight <= 3

        client.kv.put("shopgate/gateway/retries", "2")
        eventually("KV is part of the snapshot", lambda: snapshots[-1].kv.get("shopgate/gateway/retries") == b"2")
        client.agent.service.deregister("svc3-1")
        eventually("a deregistered service leaves the snapshot", lambda: "svc3" not in snapshots[-1].services)
    finally:
        watcher.stop()


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
