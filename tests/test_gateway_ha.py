"""One HAProxy per state dir through controller crashes, restarts and stops; several gateways alike.

Real catalog, real `shopgate gateway` processes with their HAProxy, real backends, a steady
keep-alive load (shopgate.tool.load). HAProxy runs in a session of its own, so signalling the
controller's process group (as the tests do) leaves it alone, as an OOM kill of the controller would.
"""

from __future__ import annotations

import signal
import threading
import time

import requests

from gateway_harness import eventually, gateway, gateway_factory  # noqa: F401  (fixtures)
from shopgate.processes import ManagedProcess, free_port, pid_alive
from shopgate.tool.load import Load, Target, summarize


def steady_load(gateway) -> Load:
    return Load(gateway.url, [Target("GET", "/api/v1/products/item?sleep=0.02")], rate=80, concurrency=16,
                duration=90, keepalive=True).start()


def ready(gateway) -> int:
    return requests.get(f"{gateway.status_url}/ready", timeout=5).status_code


def answered_by(gateway) -> str:
    response = requests.get(f"{gateway.url}/api/v1/products/item", timeout=5)
    assert response.status_code == 200, response.text[:200]
    return response.headers["X-Instance"]


def served_by(load: Load, ports: set[int]) -> bool:
    return {str(p) for p in ports} <= {r.instance for r in load.records[-200:]}


def test_controller_killed_and_restarted_under_load_adopts_its_haproxy(gateway):
    backends = [gateway.start_backend("products") for _ in range(2)]
    eventually("2 instances routed", lambda: gateway.routed("products", {b.port for b in backends}))
    haproxy_pid = gateway.status()["haproxy_pid"]
    load = steady_load(gateway)
    try:
        eventually("the load is flowing", lambda: len(load.records) > 20)
        gateway.process.signal(signal.SIGKILL)
        gateway.process.popen.wait(timeout=10)
        controller_gone = load.now()
        # While no controller runs, the catalog moves on: one more instance.
        backends.append(gateway.start_backend("products"))
        eventually("HAProxy answers while no controller runs",
                   lambda: any(r.started > controller_gone and r.status == 200 for r in load.records))
        gateway.start()
        ports = {b.port for b in backends}
        eventually("the new controller routes the instance registered while none ran", lambda: gateway.routed("products", ports))
        assert gateway.status()["haproxy_pid"] == haproxy_pid, "the running HAProxy was adopted, not replaced"
        assert gateway.haproxy_masters() == [haproxy_pid]
        assert gateway.status()["reloads"] == 0, "an adopted HAProxy with the wanted structure is updated through the runtime API"
        eventually("/ready once the adopted HAProxy serves the catalog's view", lambda: ready(gateway) == 200)

        # A scale change after the restart reaches all traffic: nothing stale keeps serving.
        backends += [gateway.start_backend("products") for _ in range(2)]
        ports = {b.port for b in backends}
        eventually("5 instances routed", lambda: gateway.routed("products", ports))
        eventually("every instance takes traffic", lambda: served_by(load, ports))
    finally:
        records = load.stop()
    summary = summarize(records)
    assert summary["failed"] == 0, summary
    assert gateway.haproxy_masters() == [haproxy_pid]


def test_a_restart_after_a_catalog_wipe_keeps_the_adopted_haproxy_serving(gateway_factory, catalog):
    gateway = gateway_factory(guard_hold=120)
    backends = [gateway.start_backend("products") for _ in range(3)]
    ports = {str(b.port) for b in backends}
    eventually("3 instances routed", lambda: gateway.routed("products", {b.port for b in backends}))
    haproxy_pid = gateway.status()["haproxy_pid"]
    gateway.process.signal(signal.SIGKILL)
    gateway.process.popen.wait(timeout=10)
    catalog.stop()
    catalog.wipe()
    catalog.start()   # empty: the instances have not registered again yet
    gateway.start()
    eventually("the guard holds the wiped catalog's first view", lambda: gateway.status()["guard"]["holding"])
    assert gateway.status()["haproxy_pid"] == haproxy_pid
    assert {answered_by(gateway) for _ in range(12)} == ports, "the adopted HAProxy keeps serving all three"

    for backend in backends:
        backend.process.signal(signal.SIGUSR1)   # register again
    eventually("released once the instances are back", lambda: gateway.routed("products", {b.port for b in backends}))
    assert not gateway.status()["guard"]["holding"]
    assert gateway.haproxy_masters() == [haproxy_pid]


def test_a_stale_pid_file_is_neither_adopted_nor_signalled(gateway_factory, processes, tmp_path):
    stranger: ManagedProcess = processes("stranger", ["sleep", "120"])
    listen = free_port()
    state = tmp_path / f"gateway-state-{listen}"   # the harness's state dir for that entry port
    state.mkdir()
    (state / "haproxy.pid").write_text(f"{stranger.pid}\n")
    gateway = gateway_factory(listen=listen)
    assert gateway.state_dir == state
    assert gateway.status()["haproxy_pid"] != stranger.pid
    assert gateway.haproxy_masters() == [gateway.status()["haproxy_pid"]]
    assert stranger.alive(), "a process named by a stale pid file was signalled"


def test_ready_and_entry_point_wait_for_the_first_catalog_view(gateway_factory, catalog):
    catalog.stop()
    gateway = gateway_factory(wait=False)
    eventually("the status port answers", lambda: ready(gateway) == 503)
    assert requests.get(f"{gateway.status_url}/ready", timeout=5).json()["reason"] == "no catalog view applied yet"
    assert gateway.status()["haproxy_pid"] is None
    try:
        answer = requests.get(f"{gateway.url}/api/v1/products/item", timeout=5).status_code
    except requests.ConnectionError:
        answer = "refused"
    assert answer == "refused", "no HAProxy (and no empty-config 503) before the catalog's first view"

    catalog.start()
    backend = gateway.start_backend("products")
    eventually("ready once the first view is applied", lambda: ready(gateway) == 200)
    eventually("routed", lambda: gateway.routed("products", {backend.port}))
    assert requests.get(f"{gateway.url}/api/v1/products/item", timeout=5).status_code == 200


def test_sigterm_finishes_in_flight_requests_and_turns_unready(gateway):
    backend = gateway.start_backend("products")
    eventually("routed", lambda: gateway.routed("products", {backend.port}))
    haproxy_pid = gateway.status()["haproxy_pid"]
    answers: list[object] = []

    def slow_request() -> None:
        try:
            answers.append(requests.get(f"{gateway.url}/api/v1/products/item?sleep=3", timeout=20).status_code)
        except requests.RequestException as error:
            answers.append(error)

    clients = [threading.Thread(target=slow_request) for _ in range(4)]
    for client in clients:
        client.start()
    eventually("4 requests in flight", lambda: int(_server_row(gateway, "be_products")["scur"]) >= 4)
    gateway.process.signal(signal.SIGTERM)
    eventually("/ready says 503 while stopping", lambda: ready(gateway) == 503, interval=0.05)
    for client in clients:
        client.join(timeout=30)
    assert answers == [200] * 4, "in-flight requests finish through HAProxy's soft stop"
    assert gateway.process.popen.wait(timeout=30) == 0
    assert not pid_alive(haproxy_pid), "SIGTERM without --keep-haproxy stops HAProxy"
    assert gateway.haproxy_masters() == []


def test_keep_haproxy_leaves_it_serving_for_the_next_controller(gateway_factory):
    gateway = gateway_factory(args=("--keep-haproxy",))
    backend = gateway.start_backend("products")
    eventually("routed", lambda: gateway.routed("products", {backend.port}))
    haproxy_pid = gateway.status()["haproxy_pid"]
    gateway.process.signal(signal.SIGTERM)
    assert gateway.process.popen.wait(timeout=30) == 0
    assert requests.get(f"{gateway.url}/api/v1/products/item", timeout=5).status_code == 200, "HAProxy serves on without its controller"
    gateway.start()
    assert gateway.status()["haproxy_pid"] == haproxy_pid
    assert gateway.haproxy_masters() == [haproxy_pid]
    eventually("ready after adopting", lambda: ready(gateway) == 200)


def _server_row(gateway, backend: str) -> dict:
    """The BACKEND row of `backend` on HAProxy's stats page (CSV)."""
    text = requests.get(f"{gateway.stats_url}/;csv", timeout=5).text.lstrip("# ")
    header, *rows = [line.split(",") for line in text.splitlines() if line]
    return next(dict(zip(header, row)) for row in rows if row[0] == backend and row[1] == "BACKEND")


def _metric_hash(gateway) -> str | None:
    text = requests.get(f"{gateway.status_url}/metrics", timeout=5).text
    line = next((l for l in text.splitlines() if l.startswith("shopgate_gateway_config_info{")), None)
    return line.split('hash="', 1)[1].split('"', 1)[0] if line else None


def test_two_gateways_on_one_catalog_route_alike(gateway_factory, catalog):
    # Slot counts follow each gateway's history (growth hysteresis); a fleet pins them in KV.
    catalog.client().kv.put("shopgate/services/products/slots", "8")
    first, second = gateway_factory(name="gw1"), gateway_factory(name="gw2")
    products = [first.start_backend("products") for _ in range(3)]
    users = first.start_backend("users", tags="urlprefix-/people strip=/people")
    for gateway in (first, second):
        eventually("routed", lambda: gateway.routed("products", {b.port for b in products}) and gateway.routed("users", {users.port}))
    catalog_requests = [gateway.status()["catalog"]["requests"] for gateway in (first, second)]
    products[1].process.signal(signal.SIGTERM)   # deregisters: both free the same slot
    products.append(first.start_backend("products"))
    ports = {b.port for b in products if b is not products[1]}
    for gateway in (first, second):
        eventually("the change reached both", lambda: gateway.routed("products", ports))
    # each read the change from the catalog itself (what a fleet costs the catalog: bench/gateways.py)
    assert all(gateway.status()["catalog"]["requests"] > before for gateway, before in zip((first, second), catalog_requests))

    def routing(gateway) -> dict:
        """Per service: its routes, slot count, and which instance sits in which slot."""
        return {name: (service["routes"], service["slots"], [(s["slot"], s["port"], s["weight"], s["state"]) for s in service["servers"]])
                for name, service in gateway.status()["services"].items()}

    assert routing(first) == routing(second)
    hashes = {first.status()["config_hash"], second.status()["config_hash"], _metric_hash(first), _metric_hash(second)}
    assert len(hashes) == 1 and None not in hashes, hashes
    for gateway in (first, second):   # the same answer through either entry point
        assert requests.get(f"{gateway.url}/people/item", timeout=5).json()["service"] == "users"
