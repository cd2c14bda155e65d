"""The rendered config in a real HAProxy: routes, host routes, strip, longest prefix, 503s, stats and /metrics.

Backends are small real HTTP servers on free loopback ports that echo what they received.
"""

from __future__ import annotations

import json
import socket
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from gateway.model import Instance, RuntimePaths, Snapshot
from gateway.render import render_config
from gateway.routing import build_route_table
from shopgate.processes import ManagedProcess, free_port, wait_for_http
from shopgate.settings import TEMPLATES_DIR

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class EchoServer:
    """An HTTP server that answers every path with {"service", "path", "host"} as JSON (and 200 on /health)."""

    def __init__(self, service: str):
        service_name = service

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"service": service_name, "path": self.path, "host": self.headers.get("Host")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """HAProxy running the rendered config for a small shop; yields (gateway url, stats url)."""
    tmp_path = tmp_path_factory.mktemp("render-live")
    echoes = {name: EchoServer(name) for name in ("products", "products-b", "users", "orders", "specials")}
    haproxy = None
    try:
        def instance(name: str, *tags: str, port: int | None = None) -> Instance:
            return Instance(name, f"{name}-1", "node1", "127.0.0.1", port or echoes[name].port, tags=tags)

        snapshot = Snapshot(
            services={
                "products": (instance("products"),),
                "users": (instance("users", "urlprefix-shop.example/shop/users strip=/shop"),),
                "orders": (instance("orders", "urlprefix-/orders"),),
                "specials": (instance("specials", "urlprefix-/orders/special strip=/orders"),),
                "down": (instance("down", port=free_port()),),           # nothing listens there
            },
            kv={"shopgate/gateway/stats_auth": b"admin:s3cret"},
        )
        listen, stats = free_port(), free_port()
        runtime = RuntimePaths(admin_socket=tmp_path / "admin.sock", listen=f"127.0.0.1:{listen}", stats=f"127.0.0.1:{stats}")
        config = tmp_path / "haproxy.cfg"
        config.write_text(render_config(build_route_table(snapshot), TEMPLATES_DIR, runtime))
        haproxy = ManagedProcess("haproxy", [HAPROXY, "-W", "-f", str(config)], log_path=tmp_path / "haproxy.log").start()
        wait_for_http(f"http://127.0.0.1:{stats}/metrics", timeout=15, process=haproxy, ok=lambda r: r.status_code == 200)
        yield f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{stats}", runtime.admin_socket, echoes
    finally:
        if haproxy is not None:
            haproxy.stop()
        for echo in echoes.values():
            echo.close()


def test_requests_reach_the_right_service_with_the_right_path(gateway):
    url = gateway[0]
    # Default route /api/v1/<service>, path unchanged.
    assert requests.get(f"{url}/api/v1/products/7?x=1", timeout=5).json() == {"service": "products", "path": "/api/v1/products/7?x=1", "host": url[7:]}
    assert requests.get(f"{url}/api/v1/products", timeout=5).json()["service"] == "products"
    # Host route with strip (the Host header's port does not matter, case neither).
    answer = requests.get(f"{url}/shop/users/3", headers={"Host": "Shop.Example:8080"}, timeout=5).json()
    assert (answer["service"], answer["path"]) == ("users", "/users/3")
    assert requests.get(f"{url}/shop", headers={"Host": "shop.example"}, timeout=5).status_code == 503
    # Longest prefix wins; its strip applies only to its own requests.
    assert requests.get(f"{url}/orders/special/1", timeout=5).json() == {"service": "specials", "path": "/special/1", "host": url[7:]}
    assert requests.get(f"{url}/orders/1", timeout=5).json()["path"] == "/orders/1"
    assert requests.get(f"{url}/orders", timeout=5).json()["service"] == "orders"


def test_no_route_and_no_server_answer_503_json(gateway):
    url = gateway[0]
    for path, headers in (("/api/v1/productsX", {}), ("/shop/users/1", {}), ("/nothing", {})):
        response = requests.get(f"{url}{path}", headers=headers, timeout=5)
        assert (response.status_code, response.json()) == (503, {"error": "no route"}), path
    response = wait_for_http(f"{url}/api/v1/down", timeout=10, ok=lambda r: r.status_code == 503)
    assert response.json() == {"error": "no server available"}


def test_stats_page_needs_the_kv_credentials_and_metrics_are_served(gateway):
    stats = gateway[1]
    assert requests.get(f"{stats}/", timeout=5).status_code == 401
    page = requests.get(f"{stats}/;csv", auth=("admin", "s3cret"), timeout=5)
    assert page.status_code == 200 and "be_products,s1," in page.text
    metrics = requests.get(f"{stats}/metrics", timeout=5)
    assert metrics.status_code == 200 and 'haproxy_backend_status{proxy="be_products"' in metrics.text


def admin_command(socket_path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: sock.recv(65536), b"")).decode()


def test_a_spare_slot_takes_a_new_instance_through_the_runtime_api_without_reload(gateway):
    url, _, admin_socket, echoes = gateway
    port = echoes["products-b"].port
    # What the apply stage does for MembershipChange("be_products", "s2", "add", ...).
    admin_command(admin_socket, f"set server be_products/s2 addr 127.0.0.1 port {port}; set server be_products/s2 state ready")
    seen = {requests.get(f"{url}/api/v1/products", timeout=5).json()["service"] for _ in range(8)}
    assert seen == {"products", "products-b"}
    admin_command(admin_socket, "set server be_products/s2 state maint")
    assert {requests.get(f"{url}/api/v1/products", timeout=5).json()["service"] for _ in range(4)} == {"products"}
