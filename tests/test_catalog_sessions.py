"""Sessions own KV locks: a lock goes when its session ends — destroyed, or its check gone critical."""

from __future__ import annotations

from catalog_helpers import Api


def test_a_lock_is_released_when_its_sessions_check_goes_critical(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/check/register", json={"Name": "leader-alive", "TTL": "60s", "Status": "passing"})
    holder = api.put("/v1/session/create", json={"Name": "leader", "Checks": ["serfHealth", "leader-alive"],
                                                  "LockDelay": "1ms"}).json()["ID"]
    other = api.put("/v1/session/create", json={"Name": "standby"}).json()["ID"]

    assert api.put(f"/v1/kv/shopgate/leader?acquire={holder}", data="gw-1").json() is True
    assert api.put(f"/v1/kv/shopgate/leader?acquire={other}", data="gw-2").json() is False
    entry = api.get("/v1/kv/shopgate/leader")[0]
    assert (entry["Session"], entry["LockIndex"]) == (holder, 1)

    api.put("/v1/agent/check/fail/leader-alive")
    assert [s["ID"] for s in api.get("/v1/session/list")] == [other]
    entry = api.get("/v1/kv/shopgate/leader")[0]
    assert "Session" not in entry and entry["Value"] == "Z3ctMQ=="  # released, value kept ("gw-1")
    assert api.put(f"/v1/kv/shopgate/leader?acquire={other}", data="gw-2").json() is True


def test_lock_delay_keeps_a_released_key_from_being_taken_at_once(catalog):
    api = Api(catalog.url)
    first = api.put("/v1/session/create", json={"LockDelay": "60s"}).json()["ID"]
    second = api.put("/v1/session/create", json={}).json()["ID"]
    assert api.put(f"/v1/kv/lock?acquire={first}", data="a").json() is True
    api.put(f"/v1/session/destroy/{first}")
    assert api.put(f"/v1/kv/lock?acquire={second}", data="b").json() is False


def test_sessions_survive_a_restart(catalog):
    api = Api(catalog.url)
    session = api.put("/v1/session/create", json={"Name": "keeper", "TTL": "30s"}).json()["ID"]
    assert api.put(f"/v1/kv/held?acquire={session}", data="x").json() is True
    catalog.stop()
    catalog.start()
    assert api.get(f"/v1/session/info/{session}")[0]["TTL"] == "30s"
    assert api.get("/v1/kv/held")[0]["Session"] == session
    assert api.put(f"/v1/session/renew/{session}").json()[0]["ID"] == session
