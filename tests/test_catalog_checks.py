"""The catalog runs HTTP, TCP and TTL checks against real targets, and reaps services left critical."""

from __future__ import annotations

import socket

from catalog_helpers import Api, HealthTarget, eventually
from shopgate.processes import free_port


def test_http_check_follows_the_target_status(catalog):
    api = Api(catalog.url)
    with HealthTarget() as target:
        api.put("/v1/agent/service/register",
                json={"Name": "web", "Port": target.port, "Check": {"HTTP": target.url, "Interval": "100ms"}})
        eventually(lambda: api.check_status("service:web") == "passing", what="HTTP check passing")
        output = api.get("/v1/agent/checks")["service:web"]["Output"]
        assert f"HTTP GET {target.url}: 200 OK" in output

        target.status = 429
        eventually(lambda: api.check_status("service:web") == "warning", what="429 -> warning")
        target.status = 503
        eventually(lambda: api.check_status("service:web") == "critical", what="503 -> critical")
        assert api.get("/v1/health/service/web?passing") == []

        target.status = 204
        eventually(lambda: api.check_status("service:web") == "passing", what="back to passing")
        assert [e["Service"]["ID"] for e in api.get("/v1/health/service/web?passing")] == ["web"]


def test_http_check_against_a_dead_port_is_critical(catalog):
    api = Api(catalog.url)
    dead = free_port()
    api.put("/v1/agent/check/register",
            json={"Name": "dead", "HTTP": f"http://127.0.0.1:{dead}/", "Interval": "100ms", "Timeout": "1s",
                  "Status": "passing"})
    eventually(lambda: api.check_status("dead") == "critical", what="dead target -> critical")


def test_tcp_check_passes_while_the_port_listens(catalog):
    api = Api(catalog.url)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        api.put("/v1/agent/service/register",
                json={"name": "db", "port": port, "check": {"tcp": f"127.0.0.1:{port}", "interval": "100ms"}})
        eventually(lambda: api.check_status("service:db") == "passing", what="TCP check passing")
    finally:
        listener.close()
    eventually(lambda: api.check_status("service:db") == "critical", what="closed port -> critical")
    assert api.get("/v1/agent/checks")["service:db"]["Output"].startswith(f"dial tcp 127.0.0.1:{port}:")


def test_ttl_check_expires_unless_refreshed(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "job", "Check": {"TTL": "300ms"}})
    assert api.check_status("service:job") == "critical"  # Consul starts checks critical
    api.put("/v1/agent/check/pass/service:job", params={"note": "alive"})
    check = api.get("/v1/agent/checks")["service:job"]
    assert (check["Status"], check["Output"]) == ("passing", "alive")
    api.put("/v1/agent/check/update/service:job", json={"Status": "warning", "Output": "slow"})
    assert api.check_status("service:job") == "warning"
    eventually(lambda: api.check_status("service:job") == "critical", what="TTL expiry")
    assert api.get("/v1/agent/checks")["service:job"]["Output"] == "TTL expired"


def test_reaper_deregisters_a_service_critical_for_too_long(catalog):
    api = Api(catalog.url)
    dead = free_port()
    with HealthTarget() as target:
        api.put("/v1/agent/service/register",
                json={"Name": "doomed", "Check": {"HTTP": f"http://127.0.0.1:{dead}/", "Interval": "100ms",
                                                  "DeregisterCriticalServiceAfter": "500ms"}})
        api.put("/v1/agent/service/register",
                json={"Name": "healthy", "Check": {"HTTP": target.url, "Interval": "100ms",
                                                   "DeregisterCriticalServiceAfter": "500ms"}})
        eventually(lambda: "doomed" not in api.get("/v1/agent/services"), what="reaper removing 'doomed'")
        assert "service:doomed" not in api.get("/v1/agent/checks")
        assert api.get("/v1/catalog/service/doomed") == []
        assert "healthy" in api.get("/v1/agent/services")
        assert api.check_status("service:healthy") == "passing"


def test_reregistering_keeps_the_check_status(catalog):
    """A registrar re-registering itself must not flap its instance to critical."""
    api = Api(catalog.url)
    definition = {"Name": "api", "ID": "api-1", "Check": {"TTL": "30s"}}
    api.put("/v1/agent/service/register", json=definition)
    api.put("/v1/agent/check/pass/service:api-1")
    api.put("/v1/agent/service/register", json=definition)
    assert api.check_status("service:api-1") == "passing"


def test_replace_existing_checks_drops_checks_not_in_the_new_definition(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "svc", "Checks": [{"TTL": "30s"}, {"TTL": "30s"}]})
    assert {"service:svc:1", "service:svc:2"} <= set(api.get("/v1/agent/checks"))
    api.put("/v1/agent/service/register?replace-existing-checks", json={"Name": "svc", "Check": {"TTL": "30s"}})
    assert [c for c in api.get("/v1/agent/checks") if c.startswith("service:svc")] == ["service:svc"]
