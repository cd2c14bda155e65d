"""The operator tool reads health with the one decoder: what cannot be read is never passing.

`shopgate status`, `up`, `scale`, the demo and the benches count an instance as passing through
`shopgate.tool.probes`. A fake Consul over real HTTP (our own catalog refuses a check status it
does not know) pins that an unknown or missing check status is critical there, as it is for the
gateway.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shopgate.consul_client import CatalogUnavailable
from shopgate.consul_client.protocol import service_maintenance_id
from shopgate.tool.probes import catalog_instances, passing_ports


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


class FakeConsulServer(BaseHTTPRequestHandler):
    """Stands in for a Consul that sends statuses our own catalog refuses to store: HEALTH for
    products (with its index header), a server error for anything else. Real HTTP, real py-consul."""

    def do_GET(self) -> None:
        known = self.path.split("?")[0] == "/v1/health/service/products"
        body = json.dumps(HEALTH if known else "no such thing").encode()
        self.send_response(200 if known else 500)
        self.send_header("X-Consul-Index", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def catalog_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeConsulServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreadable_check_status_is_critical_never_passing(catalog_url):
    statuses = {e.port: e.status for e in catalog_instances(catalog_url, "products")}
    assert statuses == {1001: "passing", 1002: "critical", 1003: "critical", 1004: "warning", 1005: "maintenance"}
    assert passing_ports(catalog_url, "products") == {1001}


def test_a_catalog_error_is_catalog_unavailable(catalog_url):
    with pytest.raises(CatalogUnavailable, match="health of orders"):
        catalog_instances(catalog_url, "orders")
