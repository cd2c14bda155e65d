"""Blocking queries: held until their index moves, woken by the change that moves it, never by others."""

from __future__ import annotations

import asyncio
import resource
from concurrent.futures import ThreadPoolExecutor

import aiohttp

from catalog.watch import Watchers
from catalog_helpers import Api, eventually


def test_kv_watch_wakes_on_write_with_the_new_value(catalog):
    api = Api(catalog.url)
    api.put("/v1/kv/shopgate/timeout", data="1s")
    index = api.index("/v1/kv/shopgate/?recurse")
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(api.call, "GET", f"/v1/kv/shopgate/?recurse&index={index}&wait=30s")
        eventually(lambda: api.held() == 1, what="the watch to be held")
        assert not watch.done()
        api.put("/v1/kv/shopgate/timeout", data="2s")
        response = watch.result(timeout=10)
    assert int(response.headers["X-Consul-Index"]) > index
    assert response.json()[0]["Value"] == "MnM="  # base64 of "2s"


def test_watch_times_out_with_the_same_index_and_data(catalog):
    api = Api(catalog.url)
    api.put("/v1/kv/k", data="v")
    first = api.call("GET", "/v1/kv/k")
    index = first.headers["X-Consul-Index"]
    again = api.call("GET", f"/v1/kv/k?index={index}&wait=200ms")
    assert again.headers["X-Consul-Index"] == index
    assert again.json() == first.json()


def test_health_watch_ignores_unrelated_changes_and_wakes_on_its_service(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "web", "ID": "web-1", "Check": {"TTL": "60s"}})
    index = api.index("/v1/health/service/web")
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(api.call, "GET", f"/v1/health/service/web?passing&index={index}&wait=30s")
        eventually(lambda: api.held() == 1, what="the watch to be held")
        # Changes elsewhere do not answer this watch.
        api.put("/v1/kv/unrelated", data="x")
        api.put("/v1/agent/service/register", json={"Name": "other", "Check": {"TTL": "60s"}})
        api.put("/v1/agent/check/pass/service:other")
        assert api.held() == 1 and not watch.done()
        api.put("/v1/agent/check/pass/service:web-1")
        response = watch.result(timeout=10)
    assert [e["Service"]["ID"] for e in response.json()] == ["web-1"]
    assert int(response.headers["X-Consul-Index"]) > index


def test_catalog_services_index_ignores_health_changes(catalog):
    """The gateway watches catalog/services for membership; a check flapping must not wake it."""
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "web", "Check": {"TTL": "60s"}})
    services_index = api.index("/v1/catalog/services")
    state_index = api.index("/v1/health/state/any")
    api.put("/v1/agent/check/pass/service:web")
    assert api.index("/v1/catalog/services") == services_index
    assert api.index("/v1/health/state/any") > state_index
    api.put("/v1/agent/service/register", json={"Name": "api"})
    assert api.index("/v1/catalog/services") > services_index


def test_a_thousand_blocking_queries_are_held_and_all_return_on_one_change(catalog):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    api = Api(catalog.url)
    api.put("/v1/kv/shopgate/weights", data="1")
    index = api.index("/v1/kv/shopgate/?recurse")
    watchers = 1000

    async def run() -> list[tuple[int, int]]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            async def watch() -> tuple[int, int]:
                url = f"{catalog.url}/v1/kv/shopgate/?recurse&index={index}&wait=60s"
                async with session.get(url) as response:
                    await response.read()
                    return response.status, int(response.headers["X-Consul-Index"])

            tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: eventually(lambda: api.held() == watchers, timeout=60,
                                                                what=f"{watchers} held watches"))
            assert not any(t.done() for t in tasks), "a watch returned before anything changed"
            await loop.run_in_executor(None, lambda: api.put("/v1/kv/shopgate/weights", data="2"))
            return await asyncio.gather(*tasks)

    results = asyncio.run(run())
    assert len(results) == watchers
    assert all(status == 200 and new_index > index for status, new_index in results)
    assert api.held() == 0


def test_a_missing_key_watch_waits_for_that_key_only(catalog):
    """consul-template watches keys that do not exist yet: a 404 that keeps blocking until the key appears."""
    api = Api(catalog.url)
    index = api.index("/v1/kv/shopgate/maintenance")
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(api.call, "GET", f"/v1/kv/shopgate/maintenance?index={index}&wait=30s", expect=None)
        eventually(lambda: api.held() == 1, what="the watch to be held")
        api.put("/v1/kv/shopgate/other", data="x")
        api.put("/v1/kv/shopgate/maintenance", data="on")
        response = watch.result(timeout=10)
    # Had the unrelated write answered the watch, it would have been a 404.
    assert response.status_code == 200 and response.json()[0]["Value"] == "b24="


def test_metrics_count_every_request_the_catalog_received(catalog):
    """What a fleet of watchers costs the catalog is read from its own counter (bench/gateways.py does)."""
    api = Api(catalog.url)

    def received() -> int:
        counters = {c["Name"]: c["Count"] for c in api.get("/v1/agent/metrics")["Counters"]}
        return counters["shopgate.catalog.http_requests"]

    before = received()
    for _ in range(5):
        api.get("/v1/catalog/services")
    api.call("GET", "/v1/kv/missing", expect=404)
    api.call("GET", "/v1/health/service/web?index=notanumber", expect=400)
    assert received() == before + 7 + 1   # the seven above and this read itself
    text = api.call("GET", "/v1/agent/metrics?format=prometheus").text
    assert "# TYPE shopgate_catalog_http_requests counter" in text
    assert f"shopgate_catalog_http_requests_total {before + 9}" in text.splitlines()


def test_one_change_answers_watchers_in_the_order_they_parked():
    """Fairness under a burst: the watcher that has waited longest is answered first."""
    watchers = Watchers()
    answered: list[int] = []

    async def watch(number: int) -> None:
        await watchers.block(("kvs",), 1, 30.0, lambda: (index, None))
        answered.append(number)

    async def run() -> None:
        tasks = []
        for number in range(50):
            tasks.append(asyncio.create_task(watch(number)))
            await asyncio.sleep(0)          # let it park before the next one
        assert watchers.held == 50 and not answered
        nonlocal index
        index = 2
        watchers.notify(["kvs"])
        await asyncio.gather(*tasks)

    index = 1
    asyncio.run(run())
    assert answered == list(range(50))
