"""Self-registration with real service processes against the real catalog.

Registration appears and turns passing; SIGTERM drains (maintenance, in-flight request
completes) and deregisters; a catalog that is down at start, or restarts empty, gets every
instance (re-)registered within seconds.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import requests

from catalog_helpers import Api, GatedTarget, eventually
from registrar.registration import Registration, instance_id, parse_tags
from services.discovery import Peers, PeerUnavailable
from shopgate.consul_client import ConsulAddress
from shopgate.processes import shopgate_argv
from shopgate.settings import SHOP_SERVICES

REGISTER_DEADLINE = 10.0  # the requirement: back in the catalog within 10 s


def passing_ids(catalog, name: str) -> set[str]:
    try:
        _, entries = catalog.client().health.service(name, passing=True)
    except requests.RequestException:
        return set()
    return {entry["Service"]["ID"] for entry in entries}


def checks_of(catalog, service_id: str) -> dict[str, dict]:
    return {cid: c for cid, c in catalog.client().agent.checks().items() if c.get("ServiceID") == service_id}


# --- the registration itself (pure) ---

def test_registration_carries_id_address_tags_meta_and_http_check():
    reg = Registration(name="products", address="10.0.0.7", port=31000, tags=("urlprefix-/shop/products strip=/shop",),
                       meta={"version": "1.2.3"})
    kwargs = reg.register_kwargs()
    assert reg.id == "products-31000"
    assert kwargs["name"] == "products" and kwargs["service_id"] == "products-31000"
    assert (kwargs["address"], kwargs["port"]) == ("10.0.0.7", 31000)
    assert kwargs["tags"] == ["urlprefix-/shop/products strip=/shop"]
    assert kwargs["meta"] == {"version": "1.2.3"}
    assert kwargs["check"] == {"http": "http://10.0.0.7:31000/health", "interval": "1s", "timeout": "1s",
                               "DeregisterCriticalServiceAfter": "1m", "FailuresBeforeCritical": 2}


def test_instance_ids_are_unique_per_host_and_port():
    assert instance_id("users", 41000) == "users-41000"
    assert instance_id("users", 8000, "172.18.0.5") == "users-172.18.0.5-8000"


@pytest.mark.parametrize("text, tags", [
    (None, ()),
    ("", ()),
    ("a", ("a",)),
    (" urlprefix-/shop/users strip=/shop , canary,,canary ", ("urlprefix-/shop/users strip=/shop", "canary")),
])
def test_service_tags_parse_like_registrator(text, tags):
    assert parse_tags(text) == tags


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_registration_refuses_an_unbound_port(port):
    with pytest.raises(ValueError, match="port"):
        Registration(name="users", address="127.0.0.1", port=port)


# --- real processes ---

def test_instance_registers_with_tags_and_turns_passing(catalog, shop_service):
    users = shop_service("users", env={"SERVICE_TAGS": "urlprefix-/shop/users strip=/shop, canary"})

    eventually(lambda: users.id in passing_ids(catalog, "users"), REGISTER_DEADLINE,
               f"{users.id} passing in the catalog")
    _, entries = catalog.client().health.service("users", passing=True)
    service = entries[0]["Service"]
    assert (service["ID"], service["Address"], service["Port"]) == (users.id, "127.0.0.1", users.port)
    assert service["Tags"] == ["urlprefix-/shop/users strip=/shop", "canary"]
    assert service["Meta"]["version"]
    answer = requests.get(f"{users.url}/api/v1/users", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["X-Instance"] == users.id


def test_sigterm_enters_maintenance_finishes_in_flight_request_then_deregisters(catalog, shop_service):
    payments = shop_service("payments", env={"SHOPGATE_PAYMENT_LATENCY": "4", "SHOPGATE_DRAIN_SECONDS": "2.5"})
    eventually(lambda: payments.id in passing_ids(catalog, "payments"), REGISTER_DEADLINE, f"{payments.id} passing")

    outcome: dict[str, requests.Response | Exception] = {}

    def slow_charge():
        try:
            outcome["response"] = requests.post(f"{payments.url}/api/v1/payments", timeout=20, json={
                "order_id": "ord_inflight", "user_id": 1, "amount_cents": 500, "payment_method": "pm_card_visa"})
        except requests.RequestException as exc:
            outcome["response"] = exc

    in_flight = threading.Thread(target=slow_charge)
    in_flight.start()
    time.sleep(0.5)  # the charge is now inside the 4 s provider call
    payments.process.signal(signal.SIGTERM)  # to the whole process group, like Ctrl-C or the stack runner

    maintenance = f"_service_maintenance:{payments.id}"
    eventually(lambda: maintenance in checks_of(catalog, payments.id), 5, "maintenance check while draining")
    assert payments.id not in passing_ids(catalog, "payments")
    assert payments.process.alive(), "the instance must keep serving during the drain"
    assert requests.get(f"{payments.url}/health", timeout=5).status_code == 200

    in_flight.join(timeout=20)
    response = outcome["response"]
    assert isinstance(response, requests.Response), f"in-flight request failed: {response}"
    assert response.status_code == 201 and response.json()["status"] == "approved"
    assert payments.process.popen.wait(timeout=15) == 0
    assert payments.id not in catalog.client().agent.services()
    assert checks_of(catalog, payments.id) == {}


def test_catalog_down_at_start_then_registration_once_it_is_back(catalog, shop_service):
    catalog.stop()
    products = shop_service("products")  # starts and serves without a catalog
    answer = requests.get(f"{products.url}/api/v1/products", timeout=5)
    assert answer.status_code == 200 and answer.json()[0]["id"] == 1

    catalog.start()
    eventually(lambda: products.id in passing_ids(catalog, "products"), REGISTER_DEADLINE,
               f"{products.id} registered after the catalog came back")
    assert "retrying" in products.process.log_tail(200)


def test_catalog_restarted_empty_gets_every_service_back(catalog, shop_service):
    instances = [shop_service(name) for name in SHOP_SERVICES]
    for instance in instances:
        eventually(lambda: instance.id in passing_ids(catalog, instance.name), REGISTER_DEADLINE,
                   f"{instance.id} passing")

    catalog.stop()
    catalog.wipe()
    catalog.start()
    restarted = time.monotonic()
    for instance in instances:
        remaining = max(0.1, REGISTER_DEADLINE - (time.monotonic() - restarted))
        eventually(lambda: instance.id in catalog.client().agent.services(), remaining,
                   f"{instance.id} re-registered")
    for instance in instances:
        eventually(lambda: instance.id in passing_ids(catalog, instance.name), REGISTER_DEADLINE,
                   f"{instance.id} passing again")


def test_port_0_registers_the_port_actually_bound_and_ctrl_c_leaves_cleanly(catalog, processes, tmp_path):
    service = processes("products-port0", shopgate_argv("service", "products", "--port", "0", "--data-dir", str(tmp_path)),
                        env={"CONSUL_HTTP_ADDR": catalog.url, "CONSUL_HTTP_TOKEN": "", "SHOPGATE_DRAIN_SECONDS": "0.3"})
    [service_id] = eventually(lambda: passing_ids(catalog, "products"), REGISTER_DEADLINE,
                              "an instance with port 0 registered and passing")
    port = catalog.client().agent.services()[service_id]["Port"]
    assert service_id == f"products-{port}" and port > 0
    answer = requests.get(f"http://127.0.0.1:{port}/api/v1/products", timeout=5)
    assert answer.headers["X-Instance"] == service_id

    service.signal(signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    assert service.popen.wait(timeout=15) == 0
    assert service_id not in catalog.client().agent.services()


def test_one_failed_check_keeps_a_lone_instance_in_discovery_two_in_a_row_take_it_out(catalog):
    """The HA demo once failed an order: `users unavailable: no healthy instance in the catalog` — one
    slow /health answer of the only users replica on a loaded machine had made it critical for an
    interval. The check the service registers tolerates one failure; a second in a row is an outage."""
    with GatedTarget() as target:   # each probe waits for the answer the test hands it (no timing)
        registration = Registration(name="users", address="127.0.0.1", port=target.port,
                                    check_interval="50ms", check_timeout="90s")
        catalog.client().agent.service.register(**registration.register_kwargs())
        peers = Peers(ConsulAddress.parse(catalog.url))
        check_id = f"service:{registration.id}"
        api = Api(catalog.url)

        def answer(status: int, recorded: str) -> None:
            """Hand the probe `status`; wait until the check's Output starts with `recorded`."""
            target.answers.put(status)
            eventually(lambda: (api.get("/v1/agent/checks")[check_id]["Output"] or "").startswith(recorded), what=recorded)

        answer(200, f"HTTP GET {target.url}: 200")
        assert [e.port for e in peers.healthy("users", fresh=True)] == [target.port]
        answer(503, "Check failed but has not reached failure threshold (1 of 2)")
        assert [e.port for e in peers.healthy("users", fresh=True)] == [target.port]   # failed before: []
        answer(200, f"HTTP GET {target.url}: 200")
        answer(503, "Check failed but has not reached failure threshold (1 of 2)")   # the count starts afresh
        answer(503, f"HTTP GET {target.url}: 503")
        assert api.get("/v1/agent/checks")[check_id]["Status"] == "critical"
        assert peers.healthy("users", fresh=True) == []
        with pytest.raises(PeerUnavailable, match="no healthy prod instance"):
            peers.request("users", "GET", "/api/v1/users/1")


class DroppingServer:
    """A real HTTP server that reads each request and closes the first connection without an answer
    (what a kept-alive connection looks like when the instance closes it as the request goes out),
    then answers 200. It records every request line it read."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0].decode())
                if len(self.requests) > 1:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


def test_a_dropped_connection_is_asked_again_once_for_a_get_never_for_a_post(catalog):
    """A lone instance whose connection drops as the request goes out: a GET is asked again and
    answered; a POST is not sent twice (the instance may have carried it out)."""
    for method, answered in (("GET", True), ("POST", False)):
        server = DroppingServer()
        try:
            catalog.client().agent.service.register("lone", service_id=f"lone-{server.port}", address="127.0.0.1",
                                                    port=server.port, check={"TTL": "10m", "Status": "passing"})
            peers = Peers(ConsulAddress.parse(catalog.url))
            if answered:
                assert peers.request("lone", method, "/x").status_code == 200
            else:
                with pytest.raises(PeerUnavailable, match="no instance answered"):
                    peers.request("lone", method, "/x")
            assert server.requests == [f"{method} /x HTTP/1.1"] * (2 if answered else 1)
        finally:
            catalog.client().agent.service.deregister(f"lone-{server.port}")
            server.close()
