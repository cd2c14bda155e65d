"""Route guards and flap damping through the real entry point: a real controller, HAProxy and backends.

KV `shopgate/services/<name>/{rate_limit,rate_burst,allow,deny,auth,route_warning,flap_*}`, written
with py-consul into the real catalog; every request goes through HAProxy's listening port.
"""

from __future__ import annotations

import subprocess
import time

import requests

from gateway_harness import eventually, gateway, gateway_factory  # noqa: F401  (gateway, gateway_factory: fixtures)

PREFIX = "shopgate/services/guarded/"


def _put(gateway, key: str, value: str) -> None:
    gateway.catalog.client().kv.put(PREFIX + key, value)


def _delete(gateway, key: str) -> None:
    gateway.catalog.client().kv.delete(PREFIX + key)


def _get(gateway, source: str = "127.0.0.1", **kwargs) -> requests.Response:
    """One request to the guarded service's default route, from `source` (any 127/8 address is loopback)."""
    with requests.Session() as session:
        session.mount("http://", _SourceAdapter(source))
        return session.get(f"{gateway.url}/api/v1/guarded/x", timeout=10, **kwargs)


class _SourceAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def _crypt(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", password], check=True, capture_output=True, text=True).stdout.strip()


def _serving(gateway, backend) -> None:
    eventually("the guarded service routed", lambda: gateway.routed("guarded", {backend.port}))
    eventually("a 200 through the entry point", lambda: _get(gateway).status_code == 200)


def test_rate_limit_answers_429_with_retry_after_and_200_after_the_window(gateway):
    backend = gateway.start_backend("guarded")
    _serving(gateway, backend)
    _put(gateway, "rate_limit", "5")           # burst defaults to the rate: 5 per 1 s window
    eventually("the rate limit applied", lambda: any(_get(gateway, "127.0.0.9").status_code == 429 for _ in range(12)))
    refused = next(r for r in (_get(gateway, "127.0.0.9") for _ in range(12)) if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {"error": "too many requests"}
    assert _get(gateway, "127.0.0.10").status_code == 200      # per client address: another client is unaffected
    time.sleep(2 * int(refused.headers["Retry-After"]))         # the window HAProxy counts over has passed
    assert _get(gateway, "127.0.0.9").status_code == 200


def test_clients_within_the_limit_never_fail_while_the_guard_is_applied(gateway):
    backend = gateway.start_backend("guarded")
    _serving(gateway, backend)
    _put(gateway, "rate_limit", "50")
    _put(gateway, "rate_burst", "100")
    codes = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        codes.append(_get(gateway, "127.0.0.11").status_code)
        guard = gateway.status()["services"]["guarded"].get("guards", {})
        if guard.get("rate_limit") == 50 and len(codes) > 5:
            break
        time.sleep(0.25)        # 4 requests/s: far within 50/s
    assert set(codes) == {200}, codes


def test_deny_and_allow_lists_answer_403(gateway):
    backend = gateway.start_backend("guarded")
    _serving(gateway, backend)
    _put(gateway, "deny", "127.0.0.66/32, 10.0.0.0/8")
    eventually("denied address refused", lambda: _get(gateway, "127.0.0.66").status_code == 403)
    assert _get(gateway, "127.0.0.66").json() == {"error": "forbidden"}
    assert _get(gateway, "127.0.0.1").status_code == 200
    _put(gateway, "allow", "127.0.0.1")
    eventually("only the allowed address passes", lambda: _get(gateway, "127.0.0.2").status_code == 403)
    assert _get(gateway, "127.0.0.1").status_code == 200
    _put(gateway, "deny", "127.0.0.0/8")        # deny wins over allow
    eventually("the whole loopback net denied", lambda: _get(gateway, "127.0.0.1").status_code == 403)


def test_basic_auth_answers_401_with_www_authenticate_and_200_with_the_password(gateway):
    backend = gateway.start_backend("guarded")
    _serving(gateway, backend)
    _put(gateway, "auth", f"alice:{_crypt('wonderland')}\nbob:{_crypt('builder')}")
    eventually("auth required", lambda: _get(gateway).status_code == 401)
    assert _get(gateway).headers["WWW-Authenticate"] == 'Basic realm="guarded"'
    assert _get(gateway, auth=("alice", "wrong")).status_code == 401
    assert _get(gateway, auth=("alice", "wonderland")).status_code == 200
    assert _get(gateway, auth=("bob", "builder")).status_code == 200


def test_a_bad_guard_value_keeps_the_last_good_guard_and_is_reported(gateway):
    backend = gateway.start_backend("guarded")
    _serving(gateway, backend)
    _put(gateway, "deny", "127.0.0.66")
    eventually("denied address refused", lambda: _get(gateway, "127.0.0.66").status_code == 403)
    _put(gateway, "deny", "127.0.0.300/8")
    _put(gateway, "auth", "mallory:plaintext")
    # Two KV writes, two changes: wait until both are reported (the first may be applied before the second is seen).
    def reported() -> list[str] | None:
        found = [r for r in gateway.status()["rejected"] if r.startswith(PREFIX)]
        return found if len(found) >= 2 else None

    rejected = eventually("both bad values reported", reported)
    assert any("deny" in r and "the last good value stays" in r for r in rejected), rejected
    assert any("auth" in r and "crypt(3) hash" in r for r in rejected), rejected
    assert _get(gateway, "127.0.0.66").status_code == 403       # still denied
    assert _get(gateway, "127.0.0.1").status_code == 200        # and no auth was made up


def test_route_warning_decides_whether_warning_instances_keep_traffic(gateway):
    backend = gateway.start_backend("guarded")
    _serving(gateway, backend)
    requests.post(f"{backend.url}/warn", timeout=5)
    eventually("a warning instance is taken out by default", lambda: _get(gateway).status_code == 503)
    _put(gateway, "route_warning", "true")
    eventually("route_warning=true routes it again", lambda: _get(gateway).status_code == 200)
    _put(gateway, "route_warning", "false")
    eventually("route_warning=false takes it out", lambda: _get(gateway).status_code == 503)


def _server(gateway, port: int) -> dict:
    return next(s for s in gateway.status()["services"]["guarded"]["servers"] if s["port"] == port)


def _held(gateway) -> list[dict]:
    return gateway.status()["services"]["guarded"]["flap_held"]


def _flap_until_held(gateway, hold: str):
    """Two instances of `guarded` with flap_limit 2; one flips four times: held (healthy) for `hold`. -> (flappy, steady, held)"""
    _put(gateway, "flap_limit", "2")
    _put(gateway, "flap_hold", hold)
    flappy, steady = gateway.start_backend("guarded"), gateway.start_backend("guarded")
    eventually("both instances routed", lambda: gateway.routed("guarded", {flappy.port, steady.port}))
    for flip, action, state in ((1, "fail", "maint"), (2, "recover", "ready")):   # two flips: within the limit
        requests.post(f"{flappy.url}/{action}", timeout=5)
        eventually(f"flip {flip} seen", lambda: _server(gateway, flappy.port)["state"] == state)
    assert _held(gateway) == []
    requests.post(f"{flappy.url}/fail", timeout=5)                  # the third flip: held
    held = eventually("held after the third flip", lambda: _held(gateway))
    assert [(h["instance"].endswith(str(flappy.port)), h["flips"]) for h in held] == [(True, 3)]
    requests.post(f"{flappy.url}/recover", timeout=5)               # healthy again, and still held (4th flip)
    held = eventually("the fourth flip seen", lambda: [h for h in _held(gateway) if h["flips"] == 4])
    return flappy, steady, held[0]


def test_a_flapping_instance_is_held_out_and_comes_back_after_the_hold(gateway):
    flappy, steady, held = _flap_until_held(gateway, "8s")
    assert 0 < held["held_until"] - time.time() <= 8.5
    answered_while_held: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = _get(gateway)
        assert answer.status_code == 200
        if not _held(gateway):                      # the hold ran out (maybe during that request): stop counting
            break
        answered_while_held.add(answer.headers["X-Instance"])
        time.sleep(0.1)
    assert answered_while_held == {str(steady.port)}
    eventually("back in rotation without a catalog change", lambda: _server(gateway, flappy.port)["state"] == "ready")
    eventually("the flappy instance answers again",
               lambda: _get(gateway).headers["X-Instance"] == str(flappy.port), interval=0.05)


def test_a_hold_runs_out_during_a_catalog_outage(gateway, catalog):
    flappy, steady, held = _flap_until_held(gateway, "10s")
    catalog.stop()
    eventually("the controller notices the outage", lambda: gateway.status()["catalog"]["reachable"] is False)
    assert _held(gateway), "still held when the outage began"
    eventually("the held instance answers again with the catalog down",
               lambda: _get(gateway).headers["X-Instance"] == str(flappy.port), interval=0.05)
    assert gateway.status()["catalog"]["reachable"] is False


def test_a_controller_restart_forgets_the_flap_history(gateway):
    flappy, steady, held = _flap_until_held(gateway, "10m")
    gateway.stop()
    gateway.start()              # same catalog, same KV: the history is gone, the healthy instance is routed
    eventually("routed again after the restart", lambda: gateway.routed("guarded", {flappy.port, steady.port}))
    assert _held(gateway) == []
