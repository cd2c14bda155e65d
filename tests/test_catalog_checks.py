"""The catalog runs HTTP, TCP and TTL checks against real targets, and reaps services left critical."""

from __future__ import annotations

import socket
import time
from typing import Callable

import consul
import pytest

from catalog_helpers import Api, GatedTarget, HealthTarget, eventually
from shopgate.processes import free_port


def test_http_check_follows_the_target_status(catalog):
    api = Api(catalog.url)
    with HealthTarget() as target:
        api.put("/v1/agent/service/register",
                json={"Name": "web", "Port": target.port, "Check": {"HTTP": target.url, "Interval": "100ms"}})
        eventually(lambda: api.check_status("service:web") == "passing", what="HTTP check passing")
        output = api.get("/v1/agent/checks")["service:web"]["Output"]
        assert f"HTTP GET {target.url}: 200 OK" in output

        target.status = 429
        eventually(lambda: api.check_status("service:web") == "warning", what="429 -> warning")
        target.status = 503
        eventually(lambda: api.check_status("service:web") == "critical", what="503 -> critical")
        assert api.get("/v1/health/service/web?passing") == []

        target.status = 204
        eventually(lambda: api.check_status("service:web") == "passing", what="back to passing")
        assert [e["Service"]["ID"] for e in api.get("/v1/health/service/web?passing")] == ["web"]


def test_http_check_against_a_dead_port_is_critical(catalog):
    api = Api(catalog.url)
    dead = free_port()
    api.put("/v1/agent/check/register",
            json={"Name": "dead", "HTTP": f"http://127.0.0.1:{dead}/", "Interval": "100ms", "Timeout": "1s",
                  "Status": "passing"})
    eventually(lambda: api.check_status("dead") == "critical", what="dead target -> critical")


def _listen(port: int = 0) -> socket.socket:
    """A loopback listener a TCP check can connect to (no accept needed: the kernel's backlog answers)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def test_tcp_check_passes_while_the_port_listens(catalog):
    api = Api(catalog.url)
    listener = _listen()
    port = listener.getsockname()[1]
    try:
        api.put("/v1/agent/service/register",
                json={"name": "db", "port": port, "check": {"tcp": f"127.0.0.1:{port}", "interval": "100ms"}})
        eventually(lambda: api.check_status("service:db") == "passing", what="TCP check passing")
    finally:
        listener.close()
    eventually(lambda: api.check_status("service:db") == "critical", what="closed port -> critical")
    assert api.get("/v1/agent/checks")["service:db"]["Output"].startswith(f"dial tcp 127.0.0.1:{port}:")


def test_ttl_check_expires_unless_refreshed(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "job", "Check": {"TTL": "300ms"}})
    assert api.check_status("service:job") == "critical"  # Consul starts checks critical
    api.put("/v1/agent/check/pass/service:job", params={"note": "alive"})
    check = api.get("/v1/agent/checks")["service:job"]
    assert (check["Status"], check["Output"]) == ("passing", "alive")
    api.put("/v1/agent/check/update/service:job", json={"Status": "warning", "Output": "slow"})
    assert api.check_status("service:job") == "warning"
    eventually(lambda: api.check_status("service:job") == "critical", what="TTL expiry")
    assert api.get("/v1/agent/checks")["service:job"]["Output"] == "TTL expired"


def test_reaper_deregisters_a_service_critical_for_too_long(catalog):
    api = Api(catalog.url)
    dead = free_port()
    with HealthTarget() as target:
        api.put("/v1/agent/service/register",
                json={"Name": "doomed", "Check": {"HTTP": f"http://127.0.0.1:{dead}/", "Interval": "100ms",
                                                  "DeregisterCriticalServiceAfter": "500ms"}})
        api.put("/v1/agent/service/register",
                json={"Name": "healthy", "Check": {"HTTP": target.url, "Interval": "100ms",
                                                   "DeregisterCriticalServiceAfter": "500ms"}})
        eventually(lambda: "doomed" not in api.get("/v1/agent/services"), what="reaper removing 'doomed'")
        assert "service:doomed" not in api.get("/v1/agent/checks")
        assert api.get("/v1/catalog/service/doomed") == []
        assert "healthy" in api.get("/v1/agent/services")
        assert api.check_status("service:healthy") == "passing"


def test_reregistering_keeps_the_check_status(catalog):
    """A registrar re-registering itself must not flap its instance to critical."""
    api = Api(catalog.url)
    definition = {"Name": "api", "ID": "api-1", "Check": {"TTL": "30s"}}
    api.put("/v1/agent/service/register", json=definition)
    api.put("/v1/agent/check/pass/service:api-1")
    api.put("/v1/agent/service/register", json=definition)
    assert api.check_status("service:api-1") == "passing"


def test_replace_existing_checks_drops_checks_not_in_the_new_definition(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "svc", "Checks": [{"TTL": "30s"}, {"TTL": "30s"}]})
    assert {"service:svc:1", "service:svc:2"} <= set(api.get("/v1/agent/checks"))
    api.put("/v1/agent/service/register?replace-existing-checks", json={"Name": "svc", "Check": {"TTL": "30s"}})
    assert [c for c in api.get("/v1/agent/checks") if c.startswith("service:svc")] == ["service:svc"]


# ---------------------------------------------------------------- flap damping (SuccessBeforePassing, FailuresBeforeCritical)


def _check(api: Api, check_id: str) -> tuple[str, str]:
    check = api.get("/v1/agent/checks")[check_id]
    return check["Status"], check["Output"]


def _answer(api: Api, target: GatedTarget, status: int, check_id: str, expect: str, output_start: str) -> None:
    """Let one probe through with `status`, then wait until the check records it (its Output starts anew)."""
    target.answers.put(status)
    eventually(lambda: _check(api, check_id)[1].startswith(output_start), what=f"{check_id} output {output_start!r}")
    assert _check(api, check_id)[0] == expect, _check(api, check_id)


def test_http_check_with_success_before_passing_stays_critical_for_two_successes(catalog):
    api = Api(catalog.url)
    with GatedTarget() as target:
        api.put("/v1/agent/service/register",
                json={"Name": "web", "Check": {"HTTP": target.url, "Interval": "100ms", "Timeout": "90s",
                                               "SuccessBeforePassing": 3}})
        _answer(api, target, 503, "service:web", "critical", f"HTTP GET {target.url}: 503 Service Unavailable")
        _answer(api, target, 200, "service:web", "critical", "Check passing but has not reached success threshold (1 of 3)")
        _answer(api, target, 200, "service:web", "critical", "Check passing but has not reached success threshold (2 of 3)")
        assert api.get("/v1/health/service/web?passing") == []
        _answer(api, target, 200, "service:web", "passing", f"HTTP GET {target.url}: 200 OK")
        assert [e["Service"]["ID"] for e in api.get("/v1/health/service/web?passing")] == ["web"]


def test_http_check_with_failures_before_critical_stays_passing_and_a_success_resets_the_count(catalog):
    api = Api(catalog.url)
    with GatedTarget() as target:
        api.put("/v1/agent/check/register",
                json={"name": "api", "http": target.url, "interval": "100ms", "timeout": "90s",
                      "failures_before_critical": 3})
        ok, held = f"HTTP GET {target.url}: 200 OK", "Check failed but has not reached failure threshold"
        _answer(api, target, 200, "api", "passing", ok)     # a new check's first result counts at once
        _answer(api, target, 500, "api", "passing", f"{held} (1 of 3)")
        _answer(api, target, 200, "api", "passing", ok)     # a success resets the failure count
        _answer(api, target, 500, "api", "passing", f"{held} (1 of 3)")
        _answer(api, target, 500, "api", "passing", f"{held} (2 of 3)")
        _answer(api, target, 500, "api", "critical", f"HTTP GET {target.url}: 500 Internal Server Error")


def test_http_check_failures_before_warning_warns_before_critical(catalog):
    api = Api(catalog.url)
    with GatedTarget() as target:
        api.put("/v1/agent/check/register",
                json={"Name": "warned", "HTTP": target.url, "Interval": "100ms", "Timeout": "90s",
                      "FailuresBeforeWarning": 1, "FailuresBeforeCritical": 2})
        _answer(api, target, 200, "warned", "passing", f"HTTP GET {target.url}: 200 OK")
        _answer(api, target, 500, "warned", "warning", f"HTTP GET {target.url}: 500 Internal Server Error")
        target.answers.put(500)
        eventually(lambda: _check(api, "warned")[0] == "critical", what="second failure -> critical")


def _follow(api: Api, service: str, until: Callable[[tuple[str, str]], bool]) -> list[tuple[str, str]]:
    """Every (status, output) the service's check goes through, by blocking queries, until `until` holds."""
    seen, index = [], 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = api.call("GET", f"/v1/health/checks/{service}", params={"index": index, "wait": "5s"})
        index = int(response.headers["X-Consul-Index"])
        state = next(((c["Status"], c["Output"]) for c in response.json()), None)
        if state is not None and (not seen or seen[-1] != state):
            seen.append(state)
            if until(state):
                return seen
    raise AssertionError(f"{service}: check never reached the end state; went through {seen}")


def test_tcp_check_with_failures_before_critical_counts_failures_then_success_before_passing(catalog):
    api = Api(catalog.url)
    listener = _listen()
    port = listener.getsockname()[1]
    api.put("/v1/agent/service/register",
            json={"Name": "db", "Port": port,
                  "Check": {"TCP": f"127.0.0.1:{port}", "Interval": "300ms",
                            "FailuresBeforeCritical": 2, "SuccessBeforePassing": 2}})
    eventually(lambda: api.check_status("service:db") == "passing", what="TCP check passing")
    listener.close()
    states = _follow(api, "db", lambda s: s[0] == "critical")
    held = [status for status, output in states
            if output.startswith(f"Check failed but has not reached failure threshold (1 of 2): dial tcp 127.0.0.1:{port}")]
    assert held == ["passing"], states
    listener = _listen(port)
    try:
        states = _follow(api, "db", lambda s: s[0] == "passing")
        assert ("critical", f"Check passing but has not reached success threshold (1 of 2): "
                f"TCP connect 127.0.0.1:{port}: Success") in states, states
    finally:
        listener.close()


def test_ttl_check_updates_are_damped_and_expiry_is_critical_at_once(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register",
            json={"Name": "job", "Check": {"TTL": "30s", "SuccessBeforePassing": 3, "FailuresBeforeCritical": 2}})
    api.put("/v1/agent/check/fail/service:job", params={"note": "down"})
    assert _check(api, "service:job") == ("critical", "down")
    for count in (1, 2):
        api.put("/v1/agent/check/pass/service:job", params={"note": "up"})
        assert _check(api, "service:job") == ("critical", f"Check passing but has not reached success threshold "
                                                          f"({count} of 3): up")
    api.put("/v1/agent/check/pass/service:job", params={"note": "up"})
    assert _check(api, "service:job") == ("passing", "up")
    api.put("/v1/agent/check/update/service:job", json={"Status": "critical", "Output": "hiccup"})
    assert _check(api, "service:job") == ("passing", "Check failed but has not reached failure threshold "
                                                     "(1 of 2): hiccup")
    api.put("/v1/agent/check/fail/service:job", params={"note": "down"})
    assert _check(api, "service:job") == ("critical", "down")

    api.put("/v1/agent/service/register",
            json={"Name": "short", "Check": {"TTL": "300ms", "FailuresBeforeCritical": 5}})
    api.put("/v1/agent/check/pass/service:short")
    eventually(lambda: _check(api, "service:short") == ("critical", "TTL expired"), what="TTL expiry, undamped")


def test_thresholds_through_py_consul_check_dicts(catalog):
    """py-consul's Check.http(...) is a dict: the extra keys ride along and the catalog honours them."""
    client = catalog.client()
    api = Api(catalog.url)
    with GatedTarget() as target:
        check = consul.Check.http(target.url, interval="100ms", timeout="90s") | {"SuccessBeforePassing": 2}
        client.agent.service.register("py", service_id="py-1", check=check)
        _answer(api, target, 503, "service:py-1", "critical", f"HTTP GET {target.url}: 503")
        _answer(api, target, 200, "service:py-1", "critical", "Check passing but has not reached success threshold (1 of 2)")
        _answer(api, target, 200, "service:py-1", "passing", f"HTTP GET {target.url}: 200 OK")


@pytest.mark.parametrize("check, message", [
    ({"TTL": "10s", "SuccessBeforePassing": -1}, "SuccessBeforePassing must be 0 or more, got -1"),
    ({"TTL": "10s", "failures_before_critical": "3"}, "FailuresBeforeCritical must be an integer"),
    ({"TTL": "10s", "FailuresBeforeCritical": 1.5}, "FailuresBeforeCritical must be an integer"),
    ({"TTL": "10s", "FailuresBeforeWarning": 3, "FailuresBeforeCritical": 2},
     "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"),
])
def test_bad_thresholds_are_400_and_register_nothing(catalog, check, message):
    api = Api(catalog.url)
    response = api.put("/v1/agent/service/register", json={"Name": "bad", "Check": check}, expect=400)
    assert message in response.text
    assert "bad" not in api.get("/v1/agent/services")


@pytest.mark.parametrize("key", ["SuccessBeforePassing", "successbeforepassing", "success_before_passing",
                                 "SUCCESSBEFOREPASSING"])
def test_threshold_keys_in_every_spelling_consul_accepts(catalog, key):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "spelled", "Check": {"TTL": "30s", key: 2}})
    api.put("/v1/agent/check/fail/service:spelled")
    api.put("/v1/agent/check/pass/service:spelled")
    assert _check(api, "service:spelled")[0] == "critical"      # 1 of 2: still critical whatever the spelling
    api.put("/v1/agent/check/pass/service:spelled")
    assert _check(api, "service:spelled")[0] == "passing"
