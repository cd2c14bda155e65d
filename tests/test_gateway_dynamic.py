"""Dynamic servers beyond the slots, under load: a service outgrows its slots and shrinks back with no
reload and no failed request; a later reload folds the dynamic servers into slots, also without a failure.

Real catalog, real `shopgate gateway` with its HAProxy, real backend processes (many instances served by
one process: gateway_backend.py --ports), a steady keep-alive load through the entry point.
"""

from __future__ import annotations

from gateway_harness import eventually, gateway, gateway_factory, server_limits, stats_column  # noqa: F401  (fixtures)
from shopgate.tool.load import Load, Target, summarize

SLOTS = {f"s{n}" for n in range(1, 5)}   # a backend of 1 instance: 4 slots


def steady_load(gateway) -> Load:
    return Load(gateway.url, [Target("GET", "/api/v1/products/item")], rate=80, concurrency=16, duration=120, keepalive=True).start()


def served_by(load: Load, ports: set[int], last: int = 300) -> set[str]:
    return {r.instance for r in load.records[-last:]} & {str(p) for p in ports}


def test_one_service_scales_1_to_64_to_1_under_load_without_a_reload(gateway):
    first = gateway.start_backend("products")
    eventually("1 instance routed", lambda: gateway.routed("products", {first.port}))
    reloads_before = gateway.status()["reloads"]

    load = steady_load(gateway)
    try:
        more = gateway.start_backends("products", 63)
        everyone = {first.port} | {b.port for b in more}
        eventually("64 instances routed", lambda: gateway.routed("products", everyone), timeout=90)
        products = gateway.status()["services"]["products"]
        assert (products["slots"], products["dynamic_servers"]) == (4, 60)
        dynamic = {s["port"]: s["slot"] for s in products["servers"] if s["dynamic"]}
        assert all(name == f"products-{port}" for port, name in dynamic.items()), "named after the instance id"
        haproxy_servers = stats_column(gateway, "be_products", "status")
        assert set(dynamic.values()) <= set(haproxy_servers), "HAProxy's stats page names them so"
        eventually("dynamic servers take traffic", lambda: len(served_by(load, set(dynamic))) >= 10)

        more[0].process.signal(15)   # all 63 deregister, keep serving while they drain, then exit
        eventually("back to 1 instance", lambda: gateway.routed("products", {first.port}), timeout=90)
        eventually("the dynamic servers are deleted from HAProxy", lambda: set(stats_column(gateway, "be_products", "status")) == SLOTS,
                   timeout=60)
        eventually("the first instance serves alone", lambda: served_by(load, everyone, last=40) == {str(first.port)})
    finally:
        records = load.stop()

    summary = summarize(records)
    assert summary["requests"] > 100 and summary["failed"] == 0, summary
    status = gateway.status()
    assert status["reloads"] == reloads_before, "scaling went through the runtime API only"
    assert status["services"]["products"]["dynamic_servers"] == 0


def test_a_reload_folds_dynamic_servers_into_slots_without_a_failed_request(gateway):
    first = gateway.start_backend("products")
    eventually("1 instance routed", lambda: gateway.routed("products", {first.port}))
    load = steady_load(gateway)
    try:
        more = gateway.start_backends("products", 5)
        everyone = {first.port} | {b.port for b in more}
        eventually("6 instances routed", lambda: gateway.routed("products", everyone), timeout=60)
        assert gateway.status()["services"]["products"]["dynamic_servers"] == 2
        reloads_before = gateway.status()["reloads"]

        gateway.catalog.client().kv.put("shopgate/services/products/maxconn", "300")   # structural: a reload
        eventually("the reload is done", lambda: server_limits(gateway, "be_products") == {"300"})
        eventually("folded into slots", lambda: (lambda p: (p["slots"], p["dynamic_servers"]) == (6, 0))(gateway.status()["services"]["products"]))
        assert gateway.status()["reloads"] == reloads_before + 1
        assert set(stats_column(gateway, "be_products", "status")) == {f"s{n}" for n in range(1, 7)}   # a slot each
        eventually("all 6 routed from slots", lambda: gateway.routed("products", everyone))
        eventually("all 6 take traffic", lambda: served_by(load, everyone) == {str(p) for p in everyone})
        eventually("some load after the reload", lambda: len(load.records) > 300)
    finally:
        records = load.stop()

    summary = summarize(records)
    assert summary["requests"] > 100 and summary["failed"] == 0, summary
