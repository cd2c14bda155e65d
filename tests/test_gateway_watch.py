"""gateway.watch against a real catalog: few long-polls whatever the service count, only changed services fetched
(the health rules are pinned in test_consul_client.py, the guard's decisions in test_guard.py)."""

from __future__ import annotations

import threading

from gateway.model import Snapshot
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
