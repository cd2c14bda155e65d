"""`shopgate registrar` against the real Docker engine and a real catalog.

Plain containers (python3 -m http.server from the offline base image) carry registrator-style
labels; the registrar runs as its own process and must register, drain and remove them.
"""

from __future__ import annotations

import socket
import threading
import uuid
from functools import partial
from pathlib import Path

import pytest
import requests

import catalog_helpers
from shopgate.processes import free_port, shopgate_argv

pytest_plugins = ["docker_engine"]
pytestmark = pytest.mark.compose

HTTP_SERVER = ["python3", "-m", "http.server", "8000"]


#: The shared poll, with a longer deadline: a container's HEALTHCHECK and the engine's events take longer than a catalog write.
eventually = partial(catalog_helpers.eventually, timeout=15.0)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def base_image(docker_engine) -> str:
    return docker_engine.base_image()


@pytest.fixture
def start_registrar(catalog, docker_engine, processes):
    def start(*flags: str, docker_host: str | None = None, name: str = "registrar"):
        argv = shopgate_argv("registrar", "--consul", catalog.url, "--docker", docker_host or docker_engine.host, *flags)
        return processes(name, argv)
    return start


def services_named(catalog, name: str, passing: bool = False) -> list[dict]:
    return catalog.client().health.service(name, passing=passing)[1]


def test_labelled_container_is_registered_checked_and_removed_when_it_stops(
        catalog, start_registrar, containers, docker_network, base_image):
    registrar = start_registrar("--resync", "30")
    port = free_port()
    name = unique("web")
    container = containers(base_image, HTTP_SERVER, name=name, init=True, network=docker_network.name,
                           ports={"8000/tcp": ("127.0.0.1", port)},
                           labels={"SERVICE_NAME": "web", "SERVICE_TAGS": "urlprefix-/web,demo",
                                   "SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1s",
                                   "SERVICE_REGION": "test"})
    # The catalog's own HTTP check must pass: the registered address really serves.
    (entry,) = eventually(lambda: services_named(catalog, "web", passing=True), what="web passing in the catalog")
    service = entry["Service"]
    assert (service["Address"], service["Port"]) == ("127.0.0.1", port)
    assert service["Tags"] == ["urlprefix-/web", "demo"]
    assert service["Meta"]["region"] == "test" and service["Meta"]["container_name"] == name
    assert service["ID"].endswith(f":{name}:8000")
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200

    container.stop(timeout=5)
    eventually(lambda: not services_named(catalog, "web"), timeout=10, what="web to leave the catalog")
    assert registrar.alive()


def test_internal_address_on_the_project_network_and_docker_health_as_ttl(
        catalog, start_registrar, containers, docker_network, base_image, docker_engine):
    start_registrar("--internal", "--network", docker_network.name, "--resync", "30")
    container = containers(
        base_image, HTTP_SERVER, name=unique("stock"), init=True, network=docker_network.name,
        labels={"SERVICE_NAME": "stock"},
        ports={"8000/tcp": None},  # exposed, not published
        healthcheck={"test": ["CMD", "test", "-f", "/tmp/ready"], "interval": 300_000_000, "retries": 1},
    )
    container.reload()
    ip = container.attrs["NetworkSettings"]["Networks"][docker_network.name]["IPAddress"]
    (entry,) = eventually(lambda: services_named(catalog, "stock"), what="stock registered")
    assert (entry["Service"]["Address"], entry["Service"]["Port"]) == (ip, 8000)
    # Docker says "starting" until the health command succeeds: not passing in the catalog.
    health = {c["CheckID"]: c for c in entry["Checks"]}
    docker_check = health[f"service:{entry['Service']['ID']}:docker-health"]
    assert docker_check["Status"] == "critical"
    assert services_named(catalog, "stock", passing=True) == []

    docker_engine.docker("exec", container.id, "touch", "/tmp/ready")
    eventually(lambda: services_named(catalog, "stock", passing=True), what="stock passing after HEALTHCHECK healthy")
    docker_engine.docker("exec", container.id, "rm", "/tmp/ready")
    eventually(lambda: not services_named(catalog, "stock", passing=True), what="stock critical after unhealthy")


def test_stop_puts_the_container_in_maintenance_while_it_drains_then_deregisters(
        catalog, start_registrar, containers, docker_network, base_image):
    start_registrar("--resync", "30")
    port = free_port()
    # Without an init, python as PID 1 ignores SIGTERM: the container drains for the whole stop timeout.
    container = containers(base_image, HTTP_SERVER, name=unique("slow"), network=docker_network.name,
                           ports={"8000/tcp": ("127.0.0.1", port)}, labels={"SERVICE_NAME": "slow"})
    (entry,) = eventually(lambda: services_named(catalog, "slow"), what="slow registered")
    service_id = entry["Service"]["ID"]
    # Registered as soon as the engine started it, which can be before python listens: the engine's port
    # proxy then resets a connection. It must be serving before "still serving while draining" can hold.
    eventually(lambda: answers(f"http://127.0.0.1:{port}/"), what="slow serving before the stop")

    # The stop timeout leaves room for a loaded machine: maintenance must show, and the container still
    # answer, before the engine kills it (a 4 s timeout once lost that race in CI: connection reset).
    stopper = threading.Thread(target=container.stop, kwargs={"timeout": 10})
    stopper.start()
    try:
        checks = eventually(lambda: [c for c in services_named(catalog, "slow")[0]["Checks"]
                                     if c["CheckID"] == f"_service_maintenance:{service_id}"],
                            timeout=6, what="maintenance during the stop timeout")
        assert checks[0]["Status"] == "critical"
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200, "still serving while draining"
    finally:
        stopper.join()
    eventually(lambda: not services_named(catalog, "slow"), timeout=10, what="slow deregistered after die")


def test_a_paused_container_is_in_maintenance_until_unpaused(
        catalog, start_registrar, containers, docker_network, base_image):
    start_registrar("--resync", "30")
    container = containers(base_image, HTTP_SERVER, name=unique("nap"), init=True, network=docker_network.name,
                           ports={"8000/tcp": ("127.0.0.1", free_port())}, labels={"SERVICE_NAME": "nap"})
    (entry,) = eventually(lambda: services_named(catalog, "nap"), what="nap registered")
    maintenance_id = f"_service_maintenance:{entry['Service']['ID']}"

    def in_maintenance() -> bool:
        return any(c["CheckID"] == maintenance_id for c in services_named(catalog, "nap")[0]["Checks"])

    container.pause()
    eventually(in_maintenance, what="maintenance while paused")
    container.unpause()
    eventually(lambda: not in_maintenance(), what="maintenance lifted after unpause")
    assert services_named(catalog, "nap", passing=True)


def test_resync_registers_running_containers_and_cleans_up_gone_ones(
        catalog, start_registrar, containers, docker_network, base_image):
    labels = {"SERVICE_NAME": "early", "SERVICE_CHECK_TCP": "true"}
    first = containers(base_image, HTTP_SERVER, name=unique("early"), init=True, network=docker_network.name,
                       ports={"8000/tcp": ("127.0.0.1", free_port())}, labels=labels)
    # A registration this registrar does not own must survive every cleanup.
    catalog.client().agent.service.register("foreign", service_id="foreign-1", address="127.0.0.1", port=1)

    registrar = start_registrar("--resync", "1")
    eventually(lambda: services_named(catalog, "early", passing=True), what="running container registered at start")
    registrar.stop()

    # While no registrar runs, the container goes away and the catalog forgets the rest.
    first.remove(force=True)
    assert services_named(catalog, "early"), "nobody deregistered it while the registrar was down"
    containers(base_image, HTTP_SERVER, name=unique("late"), init=True, network=docker_network.name,
                        ports={"8000/tcp": ("127.0.0.1", free_port())}, labels={"SERVICE_NAME": "late"})

    start_registrar("--resync", "1", name="registrar-again")
    eventually(lambda: not services_named(catalog, "early"), what="cleanup of the gone container's service")
    eventually(lambda: services_named(catalog, "late"), what="the new container registered")
    # The catalog loses its registrations (e.g. restarted empty): the next resync restores them.
    catalog.client().agent.service.deregister(services_named(catalog, "late")[0]["Service"]["ID"])
    eventually(lambda: services_named(catalog, "late"), what="re-registration by the periodic resync")
    assert [e["Service"]["ID"] for e in services_named(catalog, "foreign")] == ["foreign-1"]


class SocketRelay:
    """A unix-socket relay in front of the engine socket whose connections the test can cut."""

    def __init__(self, path: Path, target: Path):
        self.path, self.target = path, target
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            with self.lock:
                self.connections += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> int:
        """Drop every open connection (as an engine restart or a proxy timeout does)."""
        with self.lock:
            cut, self.connections = self.connections, []
        for sock in cut:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        return len(cut)

    def close(self):
        self.server.close()
        self.cut()


def test_event_stream_is_reopened_after_it_drops(catalog, start_registrar, containers, docker_network, base_image,
                                                 docker_engine):
    relay = SocketRelay(Path("/tmp") / f"sg-relay-{uuid.uuid4().hex[:8]}.sock", docker_engine.socket_path)
    try:
        # A resync period far beyond the test: only the event stream can register the container.
        registrar = start_registrar("--resync", "3600", docker_host=f"unix://{relay.path}")
        eventually(lambda: "watching engine events" in registrar.log_tail(), what="registrar watching")
        assert relay.cut() >= 2
        eventually(lambda: "event stream reconnected" in registrar.log_tail(), what="the stream re-opened")
        containers(base_image, HTTP_SERVER, name=unique("after-cut"), init=True, network=docker_network.name,
                   ports={"8000/tcp": ("127.0.0.1", free_port())}, labels={"SERVICE_NAME": "aftercut"})
        eventually(lambda: services_named(catalog, "aftercut"), what="registration from the re-opened stream")
    finally:
        relay.close()
        relay.path.unlink(missing_ok=True)
