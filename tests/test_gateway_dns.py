"""HAProxy as a DNS client: a backend in DNS mode follows the catalog through its DNS interface, no controller push.

Real catalog (its DNS on a free port), real `shopgate gateway` + HAProxy pointed at it with --consul-dns,
real backend processes, a steady keep-alive load through the entry point.
"""

from __future__ import annotations

import requests

from gateway_harness import eventually, gateway, gateway_factory  # noqa: F401  (fixtures)
from shopgate.tool.load import Load, Target, summarize


def test_products_in_dns_mode_scale_1_5_1_under_load_and_a_critical_instance_leaves(gateway, catalog):
    catalog.client().kv.put("shopgate/services/products/discovery", "dns")
    first = gateway.start_backend("products", drain=3.0)
    eventually("products in DNS mode", lambda: gateway.status()["services"]["products"]["discovery"] == "dns")
    eventually("HAProxy resolves the first instance", lambda: gateway.resolved("products") == {first.port})
    updates_before = gateway.status()["runtime_updates"]
    reloads_before = gateway.status()["reloads"]

    load = Load(gateway.url, [Target("GET", "/api/v1/products/item?sleep=0.02")], rate=80, concurrency=16,
                duration=90, keepalive=True).start()
    try:
        added = [gateway.start_backend("products", drain=3.0) for _ in range(4)]
        everyone = {b.port for b in [first, *added]}
        eventually("5 instances resolved and UP", lambda: gateway.resolved("products") == everyone)
        eventually("every instance takes traffic", lambda: {str(p) for p in everyone} <= {r.instance for r in load.records[-300:]})

        for backend in added[1:]:
            backend.process.signal(15)   # deregisters, then keeps serving while it drains
        eventually("back to 2 instances", lambda: gateway.resolved("products") == {first.port, added[0].port})

        requests.post(f"{added[0].url}/fail", timeout=5)   # critical in the catalog: out of the DNS answer
        # not merely DOWN by HAProxy's own check: the resolver takes it out of the backend (slot back in MAINT)
        eventually("the critical instance leaves", lambda: gateway.resolved("products", up=False) == {first.port})
        seen: set[str] = set()
        eventually("the last one serves", lambda: seen.update(r.instance for r in load.records[-40:]) or seen == {str(first.port)}
                   or (seen.clear() or False))
    finally:
        records = load.stop()

    summary = summarize(records)
    assert summary["requests"] > 100, summary
    assert summary["failed"] == 0, summary
    status = gateway.status()
    assert status["runtime_updates"] == updates_before   # the controller pushed nothing: HAProxy's resolver did it all
    assert status["reloads"] == reloads_before


def test_dns_mode_on_a_name_dns_cannot_carry_is_rejected_by_key_in_status_and_the_service_keeps_serving(gateway, catalog):
    catalog.client().kv.put("shopgate/services/cart_v2/discovery", "dns")
    backend = gateway.start_backend("cart_v2")
    rejected = eventually("reported in /status", lambda: [r for r in gateway.status()["rejected"]
                                                           if r.startswith("shopgate/services/cart_v2/discovery: ")])
    assert "_cart_v2._tcp.service.consul" in rejected[0] and "runtime API" in rejected[0]
    eventually("routed by the runtime API", lambda: gateway.routed("cart_v2", {backend.port}))
    assert gateway.status()["services"]["cart_v2"]["discovery"] == "runtime"
    answer = requests.get(f"{gateway.url}/api/v1/cart_v2/x", timeout=5)
    assert answer.status_code == 200 and answer.headers["X-Instance"] == str(backend.port)
    assert "server-template" not in (gateway.state_dir / "haproxy.cfg").read_text()
