"""Environments, sticky sessions and the PROXY protocol through the real entry point (issue 12).

A real controller, HAProxy and backend processes; every answer names its instance in X-Instance.
"""

from __future__ import annotations

import json
import socket
import threading

import requests

from gateway_harness import eventually, gateway, gateway_factory, proxy_v2  # noqa: F401  (fixtures)
from shopgate.processes import free_port

PATH = "/api/v1/products/x"


def hammer(url: str, count: int, answers: list[str], failures: list[str]) -> None:
    """`count` GETs on a keep-alive session; records each answering instance or the failure."""
    with requests.Session() as session:
        for _ in range(count):
            try:
                response = session.get(url + PATH, timeout=10)
                if response.status_code == 200:
                    answers.append(response.headers["X-Instance"])
                else:
                    failures.append(f"HTTP {response.status_code}")
            except requests.RequestException as error:
                failures.append(repr(error))


def test_staging_never_answers_on_the_prod_port_and_prod_never_on_staging_under_load(gateway):
    staging_port = free_port()
    kv = gateway.catalog.client().kv
    kv.put("shopgate/gateway/environments/staging/bind", f"127.0.0.1:{staging_port}")
    kv.put("shopgate/gateway/environments/qa/hosts", "qa.example")
    prod = gateway.start_backend("products")
    staging = gateway.start_backend("products", tags="env=staging")
    qa = gateway.start_backend("products", tags="env=qa")
    eventually("prod routed", lambda: gateway.routed("products", {prod.port}))
    eventually("staging routed", lambda: gateway.routed("products@staging", {staging.port}))
    eventually("qa routed", lambda: gateway.routed("products@qa", {qa.port}))
    status = gateway.status()["services"]
    assert {key: (s["environment"], s["backend"]) for key, s in status.items()} == {
        "products": ("prod", "be_products"), "products@staging": ("staging", "be_products:staging"), "products@qa": ("qa", "be_products:qa")}

    staging_url = f"http://127.0.0.1:{staging_port}"
    results = {"prod": ([], []), "staging": ([], [])}
    threads = [threading.Thread(target=hammer, args=(url, 150, *results[name]))
               for name, url in (("prod", gateway.url), ("staging", staging_url)) for _ in range(3)]
    for thread in threads:
        thread.start()
    more_staging = gateway.start_backend("products", tags="env=staging")   # a scale-up during the load
    more_prod = gateway.start_backend("products")
    for thread in threads:
        thread.join()
    for name, (answers, failures) in results.items():
        assert failures == [], f"{name}: {failures[:5]}"
        assert len(answers) == 450
    assert set(results["prod"][0]) <= {str(prod.port), str(more_prod.port)}, "prod port answered by another environment"
    assert set(results["staging"][0]) <= {str(staging.port), str(more_staging.port)}, "staging port answered by another environment"

    by_host = requests.get(gateway.url + PATH, headers={"Host": "QA.example:80"}, timeout=5)
    assert by_host.headers["X-Instance"] == str(qa.port)
    assert requests.get(staging_url + PATH, headers={"Host": "qa.example"}, timeout=5).headers["X-Instance"] in {
        str(staging.port), str(more_staging.port)}, "a host name selects an environment only on the entry point"


def test_a_staging_only_service_gets_no_prod_route_and_an_unserved_environment_is_reported(gateway):
    gateway.start_backend("orders", tags="env=dev")
    eventually("unserved environment reported", lambda: any(r.startswith("environment dev:") for r in gateway.status()["rejected"]))
    eventually("its backend shown", lambda: gateway.status()["services"]["orders@dev"]["environment"] == "dev")
    assert requests.get(gateway.url + "/api/v1/orders/x", timeout=5).status_code == 503


def sticky_run(session: requests.Session, url: str, count: int) -> list[str]:
    answers = []
    for _ in range(count):
        response = session.get(url + PATH, timeout=10)
        assert response.status_code == 200, response.text[:200]
        answers.append(response.headers["X-Instance"])
    return answers


def test_a_cookie_keeps_a_client_on_its_instance_across_reload_and_scale_up_and_it_moves_once_on_drain(gateway):
    kv = gateway.catalog.client().kv
    kv.put("shopgate/services/products/sticky", "cookie")
    kv.put("shopgate/services/products/sticky_cookie", "shop_session")
    backends = {str(b.port): b for b in (gateway.start_backend("products"), gateway.start_backend("products"))}
    eventually("both routed", lambda: gateway.routed("products", {int(p) for p in backends}))
    session = requests.Session()
    answers = sticky_run(session, gateway.url, 30)
    assert set(answers) == {answers[0]}, answers
    assert session.cookies.get("shop_session")

    reloads = gateway.status()["reloads"]
    kv.put("shopgate/services/products/timeout_server", "20s")            # a structural change: reload
    eventually("reloaded", lambda: gateway.status()["reloads"] > reloads)
    answers += sticky_run(session, gateway.url, 20)
    third = gateway.start_backend("products")                               # a scale-up
    backends[str(third.port)] = third
    eventually("three routed", lambda: gateway.routed("products", {int(p) for p in backends}))
    answers += sticky_run(session, gateway.url, 20)
    assert set(answers) == {answers[0]}, "the client kept its instance"

    backends[answers[0]].process.stop(timeout=15)                           # drains: deregisters, then exits
    answers += sticky_run(session, gateway.url, 30)
    assert len(answers) == 100
    moves = [i for i in range(1, len(answers)) if answers[i] != answers[i - 1]]
    assert len(moves) == 1, f"moved {len(moves)} times: {answers}"
    assert answers[-1] != answers[0]


def test_two_gateways_give_the_same_cookie_for_the_same_instance(gateway_factory):
    first, second = gateway_factory(), gateway_factory()
    first.catalog.client().kv.put("shopgate/services/products/sticky", "cookie")
    ports = {first.start_backend("products").port, first.start_backend("products").port}
    for gw in (first, second):
        eventually("routed", lambda: gw.routed("products", ports))

    def cookies(gw) -> dict[str, str]:
        seen = {}
        for _ in range(10):
            response = requests.get(gw.url + PATH, timeout=5)   # no jar: every request is a new client
            seen[response.headers["X-Instance"]] = response.cookies["sg_products"]
        return seen

    assert cookies(first) == cookies(second) and len(cookies(first)) == 2


def send_raw(port: int, preamble: bytes) -> dict | None:
    """One request on a fresh connection, after `preamble` (a PROXY header, or nothing): the answer's
    JSON, or None when HAProxy refused it (400: a PROXY header where none is accepted, or the reverse)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(preamble + f"GET {PATH} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return json.loads(body) if head.startswith(b"HTTP/1.1 200") else None


def test_proxy_protocol_v1_and_v2_source_addresses_reach_the_service(gateway):
    gateway.start_backend("products")
    eventually("routed", lambda: gateway.servers_up("products"))
    assert send_raw(gateway.listen, b"")["forwarded_for"] == "127.0.0.1", "without PROXY: the peer address"

    v1 = f"PROXY TCP4 203.0.113.7 127.0.0.1 40000 {gateway.listen}\r\n".encode()
    assert send_raw(gateway.listen, v1) is None, "a PROXY header where none is expected is a bad request"

    gateway.catalog.client().kv.put("shopgate/gateway/accept_proxy", "true")
    assert eventually("v1 accepted", lambda: send_raw(gateway.listen, v1))["forwarded_for"] == "203.0.113.7"
    assert send_raw(gateway.listen, proxy_v2("198.51.100.9", 40001, gateway.listen))["forwarded_for"] == "198.51.100.9"
    eventually("both sources in HAProxy's log", lambda: request_log_clients(gateway) >= {"203.0.113.7:40000", "198.51.100.9:40001"})
    assert "127.0.0.1" in {client.split(":")[0] for client in request_log_clients(gateway)}, "the plain request: its peer"


def request_log_clients(gateway) -> set[str]:
    """The client address:port of every request line in <state-dir>/haproxy.log whose request went to PATH."""
    lines = (gateway.state_dir / "haproxy.log").read_text(errors="replace").splitlines()
    return {line.split(" ", 1)[0] for line in lines if f"GET {PATH} HTTP/1.1" in line}


def test_accept_proxy_flag(gateway_factory):
    gateway = gateway_factory(args=("--accept-proxy",))
    gateway.start_backend("products")
    eventually("routed", lambda: gateway.servers_up("products"))
    assert send_raw(gateway.listen, proxy_v2("192.0.2.44", 40002, gateway.listen))["forwarded_for"] == "192.0.2.44"
