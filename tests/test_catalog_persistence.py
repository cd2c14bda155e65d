"""With --data-dir, every acknowledged write survives a restart and a kill -9, and the index never goes back."""

from __future__ import annotations

import signal
import sqlite3
import threading
from contextlib import closing

from catalog_helpers import Api, eventually


def _register_some(api: Api) -> None:
    api.put("/v1/agent/service/register",
            json={"Name": "web", "ID": "web-1", "Port": 8081, "Tags": ["urlprefix-/web"], "Meta": {"v": "1"},
                  "Check": {"TTL": "60s"}})
    api.put("/v1/agent/check/pass/service:web-1", params={"note": "ok"})
    api.put("/v1/kv/shopgate/balance", data="roundrobin")
    api.put("/v1/kv/shopgate/gone", data="x")
    api.call("DELETE", "/v1/kv/shopgate/gone")


def test_restart_keeps_services_checks_kv_and_indexes(catalog):
    api = Api(catalog.url)
    _register_some(api)
    before = {path: api.index(path) for path in
              ("/v1/kv/shopgate/?recurse", "/v1/catalog/services", "/v1/health/service/web", "/v1/health/state/any")}
    services_before = api.get("/v1/agent/services")

    catalog.stop()
    catalog.start()

    assert api.get("/v1/agent/services") == services_before
    check = api.get("/v1/agent/checks")["service:web-1"]
    assert (check["Status"], check["Output"]) == ("passing", "ok")
    assert api.call("GET", "/v1/kv/shopgate/balance?raw").text == "roundrobin"
    api.call("GET", "/v1/kv/shopgate/gone", expect=404)
    for path, index in before.items():
        assert api.index(path) >= index, f"{path} went backwards across a restart"
    # The TTL timer runs again after the restart.
    api.put("/v1/agent/check/fail/service:web-1")
    assert api.check_status("service:web-1") == "critical"


def test_kill_9_loses_no_acknowledged_write(catalog):
    api = Api(catalog.url)
    acknowledged: dict[str, int] = {}
    highest_seen = 0
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            key = f"load/{n}"
            try:
                response = api.session.put(f"{api.url}/v1/kv/{key}", data=str(n), timeout=5)
            except Exception:
                return  # the server died mid-request: that write was never acknowledged
            if response.status_code == 200 and response.json() is True:
                acknowledged[key] = n
            n += 1

    def registrar() -> None:
        n = 0
        while not stop.is_set():
            try:
                response = api.session.put(f"{api.url}/v1/agent/service/register",
                                           json={"Name": "svc", "ID": f"svc-{n}"}, timeout=5)
            except Exception:
                return
            if response.status_code == 200:
                acknowledged[f"service svc-{n}"] = n
            n += 1

    threads = [threading.Thread(target=writer), threading.Thread(target=registrar)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 300 and all(thread.is_alive() for thread in threads):
        highest_seen = max(highest_seen, api.index("/v1/kv/load/?recurse"))
    assert len(acknowledged) >= 300, "a writer stopped before the crash: the catalog refused or dropped writes"
    catalog.stop(signum=signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()

    catalog.start()
    keys = {entry["Key"]: entry for entry in api.get("/v1/kv/load/?recurse")}
    services = api.get("/v1/agent/services")
    lost = [name for name in acknowledged
            if (name.startswith("service ") and name.split(" ", 1)[1] not in services)
            or (not name.startswith("service ") and name not in keys)]
    assert not lost, f"{len(lost)} acknowledged writes lost after kill -9, e.g. {lost[:5]}"
    assert api.index("/v1/kv/load/?recurse") >= highest_seen
    # New writes continue above every index handed out before the crash.
    api.put("/v1/kv/after", data="1")
    assert api.get("/v1/kv/after")[0]["ModifyIndex"] > max(e["ModifyIndex"] for e in keys.values())


def test_the_node_keeps_its_name_and_services_across_restarts(catalog_factory):
    """A container's host name changes with every run; its catalog node and agent services must not."""
    server = catalog_factory("named", extra_args=("--node", "edge-a"))
    api = Api(server.url)
    api.put("/v1/agent/service/register", json={"Name": "web"})
    server.stop()
    server.extra_args = ()
    server.start()
    assert api.get("/v1/agent/self")["Config"]["NodeName"] == "edge-a"
    assert set(api.get("/v1/agent/services")) == {"web"}
    assert [n["Node"] for n in api.get("/v1/catalog/nodes")] == ["edge-a"]


def test_the_write_ahead_log_is_checkpointed_in_the_background(catalog, tmp_path):
    """Checkpoints run off the commit path; they must still run, or the WAL would grow without end."""
    api = Api(catalog.url)
    for n in range(50):
        api.put(f"/v1/kv/shopgate/many/{n}", data=str(n))

    def in_the_database_file_alone() -> bool:
        copy = tmp_path / "copy.db"     # the database file without its -wal: only what was checkpointed
        copy.write_bytes((catalog.data_dir / "catalog.db").read_bytes())
        with closing(sqlite3.connect(copy)) as db:
            try:
                return db.execute("SELECT count(*) FROM records WHERE tbl='kvs' AND key LIKE 'shopgate/many/%'"
                                  ).fetchone()[0] == 50
            except sqlite3.OperationalError:    # not even the table was checkpointed yet
                return False

    eventually(in_the_database_file_alone, timeout=20, what="the 50 writes to reach the database file")
