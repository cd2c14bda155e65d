"""gateway.watch against a real catalog: few long-polls whatever the service count, only changed services fetched
(the health rules are pinned in test_consul_client.py, the guard's decisions in test_guard.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.model import Snapshot
from gateway.watch import CatalogWatcher
from gateway_harness import eventually
from shopgate.consul_client import ConsulAddress


def test_long_polls_do_not_grow_with_services_and_only_changed_services_are_fetched(catalog):
    client = catalog.client()
    snapshots: list[Snapshot] = []
    arrived = threading.Event()

    def on_snapshot(snapshot: Snapshot, seen_at: float) -> None:
        snapshots.append(snapshot)
        arrived.set()

    for n in range(30):
        client.agent.service.register(f"svc{n}", service_id=f"svc{n}-1", address="127.0.0.1", port=9000 + n, check={"TTL": "10m", "Status": "passing"})
    watcher = CatalogWatcher(catalog.address, on_snapshot, wait_seconds=10).start()
    try:
        eventually("the first full snapshot", lambda: snapshots and len(snapshots[-1].services) == 30)
        eventually("three long-polls held", lambda: watcher.long_polls_in_flight == 3)
        requests_before = watcher.requests_made

        client.agent.check.ttl_fail("service:svc7-1")
        eventually("the failing check is seen", lambda: snapshots[-1].services["svc7"][0].status == "critical")
        # one fetch of svc7, plus the blocking queries that answered and were issued again
        assert watcher.requests_made - requests_before <= 4
        assert watcher.long_polls_in_flight <= 3

        client.kv.put("shopgate/gateway/retries", "2")
        eventually("KV is part of the snapshot", lambda: snapshots[-1].kv.get("shopgate/gateway/retries") == b"2")
        client.agent.service.deregister("svc3-1")
        eventually("a deregistered service leaves the snapshot", lambda: "svc3" not in snapshots[-1].services)
    finally:
        watcher.stop()


class MisbehavingConsul(BaseHTTPRequestHandler):
    """Stands in for a Consul whose answers turn unreadable (our own catalog never sends one): one
    service `web` with one instance in `status`; at index 11 the `broken` answer is malformed (checks:
    a ModifyIndex that is not a number; services: tags that are not a list). Real HTTP, real py-consul."""

    status = "passing"
    index = 10
    broken = "checks"

    @classmethod
    def checks(cls, modify_index: int | str) -> bytes:
        return json.dumps([{"Node": "n1", "CheckID": "service:web-1", "Status": cls.status, "ServiceID": "web-1",
                            "ServiceName": "web", "ModifyIndex": modify_index}]).encode()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if "index=" in self.path and f"index={MisbehavingConsul.index}" in self.path:
            time.sleep(0.2)   # a blocking query with nothing new: its wait ends
        if path == "/v1/health/state/any":
            unreadable = MisbehavingConsul.index == 11 and MisbehavingConsul.broken == "checks"
            body = MisbehavingConsul.checks("eleven" if unreadable else MisbehavingConsul.index)
        elif path == "/v1/catalog/services":
            unreadable = MisbehavingConsul.index == 11 and MisbehavingConsul.broken == "services"
            body = json.dumps({"web": "eleven" if unreadable else [f"v{MisbehavingConsul.index}"]}).encode()
        elif path == "/v1/health/service/web":
            body = json.dumps([{"Node": {"Node": "n1", "Address": "127.0.0.1"},
                                "Service": {"ID": "web-1", "Service": "web", "Port": 9001, "Tags": [], "Meta": {}},
                                "Checks": [{"CheckID": "service:web-1", "Status": MisbehavingConsul.status}]}]).encode()
        elif path.startswith("/v1/kv/"):
            self.send_response(404)
            self.send_header("X-Consul-Index", str(MisbehavingConsul.index))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            body = b"[]"
        self.send_response(200)
        self.send_header("X-Consul-Index", str(MisbehavingConsul.index))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("broken, error", [("checks", "not a list of checks"), ("services", "not an object of service names and tags")])
def test_an_answer_the_watcher_cannot_read_keeps_the_last_snapshot_until_a_good_one_comes(broken, error):
    MisbehavingConsul.status, MisbehavingConsul.index, MisbehavingConsul.broken = "passing", 10, broken
    server = ThreadingHTTPServer(("127.0.0.1", 0), MisbehavingConsul)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    snapshots: list[Snapshot] = []
    watcher = CatalogWatcher(ConsulAddress("http", "127.0.0.1", server.server_address[1]), lambda s, _: snapshots.append(s), wait_seconds=1).start()
    try:
        eventually("the first snapshot", lambda: snapshots and [i.port for i in snapshots[-1].services["web"]] == [9001])
        MisbehavingConsul.index = 11
        eventually("the unreadable answer is reported", lambda: watcher.last_error and error in watcher.last_error)
        assert not watcher.reachable
        assert [i.status for i in watcher.current().services["web"]] == ["passing"], "the last snapshot stays"
        MisbehavingConsul.status, MisbehavingConsul.index = "critical", 12
        eventually("the next good answer is read", lambda: watcher.reachable and [i.status for i in snapshots[-1].services["web"]] == ["critical"])
    finally:
        watcher.stop()
        server.shutdown()
        server.server_close()


class LateChecksConsul(BaseHTTPRequestHandler):
    """Stands in for a Consul whose checks answer comes after a fetch already read past it (two reads of one
    catalog race; our own catalog does this under load): one service `web`, one instance. The checks answer
    is (`checks_index`, `checks_status`, `output`), the fetch of `web` (`fetch_index`, `fetch_status`);
    a blocking read on the current index waits 0.2 s. Real HTTP, real py-consul."""

    checks_index, checks_status, output = 5, "critical", "registered"
    fetch_index, fetch_status = 5, "critical"
    checks_served: list[int] = []

    def do_GET(self) -> None:
        cls, path = LateChecksConsul, self.path.split("?")[0]
        index = cls.checks_index if path == "/v1/health/state/any" else cls.fetch_index if path == "/v1/health/service/web" else 5
        if f"index={index}" in self.path:
            time.sleep(0.2)   # nothing new: the wait ends
        if path == "/v1/health/state/any":
            cls.checks_served.append(index)
            body = json.dumps([{"Node": "n1", "CheckID": "service:web-1", "Status": cls.checks_status, "Output": cls.output,
                                "ServiceID": "web-1", "ServiceName": "web", "ModifyIndex": index}]).encode()
        elif path == "/v1/catalog/services":
            body = json.dumps({"web": []}).encode()
        elif path == "/v1/health/service/web":
            body = json.dumps([{"Node": {"Node": "n1", "Address": "127.0.0.1"},
                                "Service": {"ID": "web-1", "Service": "web", "Port": 9001, "Tags": [], "Meta": {}},
                                "Checks": [{"CheckID": "service:web-1", "Status": cls.fetch_status}]}]).encode()
        else:
            body = b"[]"
        self.send_response(200)
        self.send_header("X-Consul-Index", str(index))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_checks_answer_older_than_a_fetch_does_not_flap_the_instance_in_the_views():
    cls = LateChecksConsul
    cls.checks_index, cls.checks_status, cls.output, cls.fetch_index, cls.fetch_status = 5, "critical", "registered", 5, "critical"
    cls.checks_served = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), LateChecksConsul)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    statuses: list[str] = []
    watcher = CatalogWatcher(ConsulAddress("http", "127.0.0.1", server.server_address[1]),
                             lambda snapshot, _: statuses.append(snapshot.services["web"][0].status), wait_seconds=1).start()
    try:
        eventually("the first view", lambda: statuses == ["critical"])
        # The check passes at 8; the checks answer at 6 (only its output moved) makes the watcher fetch, which reads 8.
        cls.fetch_index, cls.fetch_status = 8, "passing"
        cls.checks_index, cls.output = 6, "still starting"
        eventually("the fetch shows it passing", lambda: statuses[-1] == "passing")
        # Now the checks answer at 7 arrives: older than what the fetch read.
        cls.checks_index, cls.output = 7, "starting, once more"
        eventually("the answer at 7 was read and the next one asked for", lambda: cls.checks_served.count(7) >= 2)
        time.sleep(0.3)   # time for a view the late answer would have caused
        assert statuses == ["critical", "passing"], "a late checks answer must not take a passing instance back to critical"
        # A real failure, newer than every read so far, still goes out straight from the checks.
        cls.checks_index, cls.checks_status, cls.fetch_index, cls.fetch_status = 9, "critical", 9, "critical"
        eventually("the real failure is seen", lambda: statuses[-1] == "critical")
    finally:
        watcher.stop()
        server.shutdown()
        server.server_close()
