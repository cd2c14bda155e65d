"""The gateway under load: instances come, go and fail, routes and settings change — and no request fails.

Real catalog, real `shopgate gateway` with its HAProxy, real backend processes, a steady
keep-alive load through the entry point (shopgate.tool.load). Every wait polls with a generous deadline;
the only hard assertion about the load is its failure count.
"""

from __future__ import annotations

import requests

from gateway_harness import eventually, gateway, gateway_factory, server_limits, stats_column  # noqa: F401  (gateway, gateway_factory: fixtures)
from shopgate.tool.load import Load, Target, summarize


def assert_no_failed_requests(records) -> dict:
    summary = summarize(records)
    assert summary["requests"] > 100, summary
    assert summary["failed"] == 0, summary
    return summary


def routed_products(gateway) -> list:
    """Two products instances, routed: the starting point of every test under load."""
    backends = [gateway.start_backend("products") for _ in range(2)]
    eventually("2 instances routed", lambda: gateway.routed("products", {b.port for b in backends}))
    return backends


def steady_load(gateway, path: str) -> Load:
    """A keep-alive load through the entry point, longer than any test needs (stopped by the test)."""
    return Load(gateway.url, [Target("GET", path)], rate=80, concurrency=16, duration=60, keepalive=True).start()


def test_instances_added_removed_and_failing_under_load(gateway):
    first = routed_products(gateway)
    reloads_before = gateway.status()["reloads"]

    load = steady_load(gateway, "/api/v1/products/item?sleep=0.02")
    try:
        added = [gateway.start_backend("products") for _ in range(2)]
        everyone = {b.port for b in first + added}
        eventually("4 instances routed", lambda: gateway.routed("products", everyone))
        eventually("the new instances take traffic", lambda: {str(b.port) for b in added} <= {r.instance for r in load.records[-200:]})

        leaving = added[0]
        leaving.process.signal(15)   # deregisters, keeps serving while it drains
        eventually("a deregistered instance leaves", lambda: gateway.routed("products", everyone - {leaving.port}))

        failing = first[0]
        requests.post(f"{failing.url}/fail", timeout=5)   # its health check fails in the catalog and in HAProxy
        remaining = everyone - {leaving.port, failing.port}
        eventually("a failing instance leaves", lambda: gateway.routed("products", remaining))
        served_at_end = set()
        eventually("the rest serve", lambda: served_at_end.update(r.instance for r in load.records[-40:]) or served_at_end >= {str(p) for p in remaining})
        after_the_steps = len(load.records)
        eventually("the load runs on after the last step", lambda: len(load.records) >= max(after_the_steps + 80, 160))
    finally:
        records = load.stop()

    assert_no_failed_requests(records)
    status = gateway.status()
    assert status["reloads"] == reloads_before, "membership changes went through the runtime API, without reloads"
    assert status["runtime_updates"] >= 4
    assert gateway.metric("shopgate_gateway_runtime_updates_total") == status["runtime_updates"]
    assert gateway.metric('shopgate_gateway_propagation_seconds_count{kind="runtime"}') >= 3


def test_structural_changes_under_load(gateway):
    routed_products(gateway)
    reloads_before = gateway.status()["reloads"]

    load = steady_load(gateway, "/api/v1/products/item")
    try:
        # a new service: a backend and a route appear (reload)
        users = gateway.start_backend("users", tags="urlprefix-/people strip=/people")
        eventually("the new route answers", lambda: requests.get(f"{gateway.url}/people/me", timeout=5).json()["path"] == "/me")
        # a per-service setting from KV (reload)
        gateway.catalog.client().kv.put("shopgate/services/products/maxconn", "500")
        eventually("the setting is live", lambda: server_limits(gateway, "be_products") == {"500"})
        eventually("some load after the last reload", lambda: len(load.records) > 300)
    finally:
        records = load.stop()

    assert_no_failed_requests(records)
    assert gateway.status()["reloads"] >= reloads_before + 2
    assert users.port in gateway.servers_up("users")


def test_a_burst_of_new_services_costs_few_reloads(gateway):
    client = gateway.catalog.client()
    reloads_before = gateway.status()["reloads"]
    names = [f"burst{n}" for n in range(12)]
    for n, name in enumerate(names):
        client.agent.service.register(name, service_id=f"{name}-1", address="127.0.0.1", port=40000 + n,
                                      check={"TTL": "10m", "Status": "passing"})
    eventually("every new service has its route", lambda: set(names) <= set(gateway.status()["services"]))
    reloads = gateway.status()["reloads"] - reloads_before
    assert 1 <= reloads <= 4, f"12 new services cost {reloads} reloads (debounced bursts, reloads spaced)"


def check_statuses(gateway, backend: str) -> dict[str, str]:
    """Server name -> the result of HAProxy's own last health check (`check_status`)."""
    return stats_column(gateway, backend, "check_status")


def test_an_instance_added_at_runtime_keeps_the_health_check_and_the_backend_limits(gateway):
    gateway.catalog.client().kv.put("shopgate/services/products/maxconn", "250")
    first = gateway.start_backend("products")
    eventually("1 instance routed with maxconn 250", lambda: gateway.routed("products", {first.port}) and server_limits(gateway, "be_products") == {"250"})
    reloads_before = gateway.status()["reloads"]

    added = gateway.start_backend("products")   # into an idle slot: recreated with `add server`, no reload
    eventually("the new instance routed", lambda: gateway.routed("products", {first.port, added.port}))
    slot = next(s["slot"] for s in gateway.status()["services"]["products"]["servers"] if s["port"] == added.port)
    assert gateway.status()["reloads"] == reloads_before
    assert server_limits(gateway, "be_products") == {"250"}, "the recreated server keeps the backend's maxconn"
    assert check_statuses(gateway, "be_products")[slot].startswith("L7OK"), "HAProxy's own check let it in"

    requests.post(f"{added.url}/fail", timeout=5)
    eventually("HAProxy's own check still watches it", lambda: check_statuses(gateway, "be_products")[slot].startswith("L7STS"))
