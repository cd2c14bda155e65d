"""The gateway when things go wrong: a broken template, a catalog outage and wipe, HAProxy killed, bad KV values.

Each time HAProxy must keep serving what worked, and the controller must say what happened in /status.
"""

from __future__ import annotations

import os
import signal
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from gateway_harness import eventually, gateway, gateway_factory, server_limits  # noqa: F401  (gateway, gateway_factory: fixtures)
from shopgate.processes import group_members


def answered_by(gateway, path: str = "/api/v1/products/x") -> str:
    response = requests.get(gateway.url + path, timeout=5)
    assert response.status_code == 200, f"{path}: HTTP {response.status_code} {response.text[:200]}"
    return response.headers["X-Instance"]


def edit(path: Path, old: str, new: str) -> None:
    """Edit a template the way editors do: write a temporary file, rename it over the original."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    temporary = path.with_name(path.name + ".swp")
    temporary.write_text(text.replace(old, new, 1))
    os.replace(temporary, path)


@contextmanager
def reload_refused(gateway) -> Iterator[tuple[str, int]]:
    """Add a bind to a port a socket of ours holds: `haproxy -c` does not bind, so only the reload fails.
    Yields the rejection /status reports and the port, which stays taken inside the block."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        edit(gateway.templates / "stats.cfg.j2", "    bind {{ runtime.stats | token }}\n",
             f"    bind {{{{ runtime.stats | token }}}}\n    bind 127.0.0.1:{port}\n")
        rejected = eventually("the reload failure is reported", lambda: [r for r in gateway.status()["rejected"] if "reload" in r])
        yield rejected[0], port


def test_template_edits_apply_live_and_a_broken_one_is_rejected(gateway):
    backend = gateway.start_backend("products")
    eventually("products routed", lambda: gateway.routed("products", {backend.port}))
    reloads = gateway.status()["reloads"]

    edit(gateway.templates / "defaults.cfg.j2", "    mode http\n", "    mode http\n    bogus-keyword on\n")
    rejected = eventually("the broken edit is rejected", lambda: [r for r in gateway.status()["rejected"] if "bogus-keyword" in r])
    assert "unknown keyword" in rejected[0], "HAProxy's own error message is reported"
    assert gateway.status()["last_error"]
    assert answered_by(gateway) == str(backend.port), "the old config keeps serving"
    assert gateway.status()["reloads"] == reloads
    assert "bogus-keyword" not in (gateway.state_dir / "haproxy.cfg").read_text()
    assert gateway.metric("shopgate_gateway_rejected_configs_total") >= 1

    edit(gateway.templates / "defaults.cfg.j2", "    bogus-keyword on\n", "")
    edit(gateway.templates / "frontend.cfg.j2", "    acl replay_safe method GET HEAD OPTIONS\n",
         "    acl replay_safe method GET HEAD OPTIONS\n    http-response set-header X-Edited live\n")
    eventually("the fixed edit is live", lambda: requests.get(gateway.url + "/api/v1/products/x", timeout=5).headers.get("X-Edited") == "live")
    eventually("the reload is verified and counted", lambda: gateway.status()["reloads"] > reloads)
    assert gateway.status()["last_error"] is None

    edit(gateway.templates / "backend.cfg.j2", "{% for server in backend.servers %}", "{% for server in backend.servers %")
    eventually("a template syntax error is rejected", lambda: any("render" in r and "backend.cfg.j2" in r for r in gateway.status()["rejected"]))
    assert answered_by(gateway) == str(backend.port)


def test_a_config_that_validates_but_cannot_load_is_rolled_back(gateway):
    backend = gateway.start_backend("products")
    eventually("products routed", lambda: gateway.routed("products", {backend.port}))
    reloads = gateway.status()["reloads"]
    with reload_refused(gateway) as (rejected, port):
        assert "cannot bind" in rejected, "HAProxy's own alert is reported"
        assert f"127.0.0.1:{port}" not in (gateway.state_dir / "haproxy.cfg").read_text(), "the last good file is back"
        assert answered_by(gateway) == str(backend.port), "the previous config keeps serving"
    assert gateway.status()["reloads"] == reloads

    second = gateway.start_backend("products")   # and the gateway keeps working after the rollback
    eventually("a new instance is routed", lambda: gateway.routed("products", {backend.port, second.port}))


def test_catalog_outage_and_wipe_keep_haproxy_serving(gateway_factory, catalog):
    gateway = gateway_factory(guard_hold=120)
    backends = [gateway.start_backend("products") for _ in range(2)]
    ports = {b.port for b in backends}
    eventually("products routed", lambda: gateway.routed("products", ports))

    catalog.stop()
    eventually("the controller notices the outage", lambda: gateway.status()["catalog"]["reachable"] is False)
    assert {answered_by(gateway) for _ in range(8)} == {str(p) for p in ports}, "HAProxy keeps serving through the outage"

    catalog.wipe()
    catalog.start()   # back, but empty: the instances have not registered again yet
    eventually("the guard holds the empty view", lambda: gateway.status()["guard"]["holding"])
    assert gateway.status()["catalog"]["reachable"]
    assert gateway.routed("products", ports), "the last view is held"
    assert {answered_by(gateway) for _ in range(8)} == {str(p) for p in ports}

    newcomer = gateway.start_backend("products")
    for backend in backends:
        backend.process.signal(signal.SIGUSR1)   # register again
    eventually("the controller catches up", lambda: gateway.routed("products", ports | {newcomer.port}))
    assert not gateway.status()["guard"]["holding"]
    assert gateway.metric("shopgate_gateway_guard_holds_total") >= 1


def test_haproxy_killed_is_restarted_on_the_last_good_config(gateway):
    backends = [gateway.start_backend("products") for _ in range(2)]
    ports = {b.port for b in backends}
    eventually("products routed", lambda: gateway.routed("products", ports))
    old_pid = gateway.status()["haproxy_pid"]

    os.kill(old_pid, signal.SIGKILL)
    eventually("a new HAProxy runs", lambda: gateway.status()["haproxy_pid"] not in (None, old_pid))
    eventually("it routes to every instance", lambda: gateway.routed("products", ports))
    assert {answered_by(gateway) for _ in range(8)} == {str(p) for p in ports}
    eventually("the old workers are gone", lambda: not group_members(old_pid))
    # counted once HAProxy.start() returns, which can be after the new worker already serves
    eventually("the restart is counted", lambda: gateway.metric("shopgate_gateway_haproxy_restarts_total") == 1)


def test_kv_settings_are_applied_and_invalid_ones_reported(gateway):
    backend = gateway.start_backend("products")
    eventually("products routed", lambda: gateway.routed("products", {backend.port}))
    kv = gateway.catalog.client().kv

    kv.put("shopgate/services/products/maxconn", "250")
    eventually("a valid setting is applied", lambda: server_limits(gateway, "be_products") == {"250"})

    kv.put("shopgate/services/products/balance", "fastest\n    bind :1")
    kv.put("shopgate/gateway/retries", "many")
    def reported() -> list[str]:   # the two writes may reach the controller in two views: wait for both
        found = [r for r in gateway.status()["rejected"] if r.startswith(("shopgate/services/products/balance:", "shopgate/gateway/retries:"))]
        return found if len(found) >= 2 else []
    rejected = eventually("both invalid settings are reported", reported)
    assert len(rejected) == 2, rejected
    config = (gateway.state_dir / "haproxy.cfg").read_text()
    assert "fastest" not in config and "bind :1" not in config
    assert server_limits(gateway, "be_products") == {"250"}, "valid settings stay in force"
    assert answered_by(gateway) == str(backend.port)


def test_stats_login_from_the_environment_and_kv_overrides_it(gateway_factory):
    gateway = gateway_factory(env={"SHOPGATE_GATEWAY_STATS_AUTH": "ops:from-env"})
    stats = gateway.stats_url + "/"
    assert requests.get(stats, timeout=5).status_code == 401, "the stats page asks for the login"
    assert requests.get(stats, auth=("ops", "from-env"), timeout=5).status_code == 200

    gateway.catalog.client().kv.put("shopgate/gateway/stats_auth", "ops:from-kv")
    eventually("the KV login replaces the environment's",
               lambda: requests.get(stats, auth=("ops", "from-kv"), timeout=5).status_code == 200)
    assert requests.get(stats, auth=("ops", "from-env"), timeout=5).status_code == 401
