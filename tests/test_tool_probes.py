"""The operator tool reads health with the one decoder: what cannot be read is never passing.

`shopgate status`, `up`, `scale`, the demo and the benches count an instance as passing through
`shopgate.tool.probes`. A canned `/v1/health/service` answer, handed over in place of py-consul's
(no catalog: the real one refuses a check status it does not know), pins that an unknown or
missing check status is critical there, as it is for the gateway.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from consul import ConsulException

from shopgate.consul_client import CatalogUnavailable
from shopgate.consul_client.protocol import service_maintenance_id
from shopgate.tool import probes
from shopgate.tool.probes import catalog_instances, passing_ports

CATALOG_URL = "http://127.0.0.1:8500"


def entry(port: int, *checks: dict) -> dict:
    service_id = f"products-{port}"
    return {
        "Node": {"Node": "local", "Address": "127.0.0.1"},
        "Service": {"ID": service_id, "Service": "products", "Address": "", "Port": port, "Tags": [], "Meta": {}},
        "Checks": [{"CheckID": f"service:{service_id}", **check} for check in checks],
    }


HEALTH = [
    entry(1001, {"Status": "passing"}),
    entry(1002, {"Status": "passing"}, {"Status": "unknown"}),   # a status no Consul sends
    entry(1003, {}),                                             # no status at all
    entry(1004, {"Status": "warning"}),
    entry(1005, {"Status": "passing"}, {"CheckID": service_maintenance_id("products-1005"), "Status": "critical"}),
]


class CannedClient:
    """Stands in for the py-consul client of `connect()`: HEALTH for products, a server error otherwise."""

    def __init__(self, address, timeout):
        self.health = SimpleNamespace(service=self.service)

    def service(self, name: str) -> tuple[str, list[dict]]:
        if name != "products":
            raise ConsulException("500 no such thing")
        return "7", HEALTH

    def __enter__(self) -> "CannedClient":
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.fixture(autouse=True)
def canned_catalog(monkeypatch):
    monkeypatch.setattr(probes, "connect", CannedClient)


def test_an_unreadable_check_status_is_critical_never_passing():
    statuses = {e.port: e.status for e in catalog_instances(CATALOG_URL, "products")}
    assert statuses == {1001: "passing", 1002: "critical", 1003: "critical", 1004: "warning", 1005: "maintenance"}
    assert passing_ports(CATALOG_URL, "products") == {1001}


def test_a_catalog_error_is_catalog_unavailable():
    with pytest.raises(CatalogUnavailable, match="health of orders"):
        catalog_instances(CATALOG_URL, "orders")
