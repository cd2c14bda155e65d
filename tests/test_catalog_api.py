"""The catalog's HTTP API as a Consul client sees it: shapes, ordering, maintenance, ACL, the UI redirect."""

from __future__ import annotations

import http.client
import socket

import pytest
import requests

from catalog_helpers import Api


def test_health_service_entries_carry_node_service_and_all_checks(catalog):
    api = Api(catalog.url)
    for n, tags in ((2, ["v2", "blue"]), (1, ["v1", "blue"])):
        api.put("/v1/agent/service/register",
                json={"name": "products", "id": f"products-{n}", "port": 9000 + n, "address": "127.0.0.1",
                      "tags": tags, "meta": {"version": str(n)}, "check": {"ttl": "60s"}})
    entries = api.get("/v1/health/service/products")
    assert [e["Service"]["ID"] for e in entries] == ["products-1", "products-2"]  # ordered by node, then ID
    first = entries[0]
    assert set(first) == {"Node", "Service", "Checks"}
    assert first["Service"]["Port"] == 9001 and first["Service"]["Meta"] == {"version": "1"}
    assert first["Service"]["Weights"] == {"Passing": 1, "Warning": 1}
    assert {c["CheckID"] for c in first["Checks"]} == {"serfHealth", "service:products-1"}
    assert api.get("/v1/health/service/products?passing") == []

    api.put("/v1/agent/check/pass/service:products-2")
    assert [e["Service"]["ID"] for e in api.get("/v1/health/service/products?passing=1")] == ["products-2"]
    assert [e["Service"]["ID"] for e in api.get("/v1/health/service/products?tag=blue&tag=v1")] == ["products-1"]
    rows = api.get("/v1/catalog/service/products?tag=blue")
    assert [(r["ServiceID"], r["ServicePort"], r["ServiceAddress"]) for r in rows] == [
        ("products-1", 9001, "127.0.0.1"), ("products-2", 9002, "127.0.0.1")]
    assert api.get("/v1/catalog/services") == {"consul": [], "products": ["blue", "v1", "v2"]}
    assert api.get("/v1/health/service/nothing") == [] and api.get("/v1/catalog/service/nothing") == []


def test_maintenance_takes_instances_out_of_passing_results(catalog):
    api = Api(catalog.url)
    api.put("/v1/agent/service/register", json={"Name": "web", "Check": {"TTL": "60s", "Status": "passing"}})
    assert len(api.get("/v1/health/service/web?passing")) == 1

    api.put("/v1/agent/service/maintenance/web?enable=true&reason=deploy")
    check = api.get("/v1/agent/checks")["_service_maintenance:web"]
    assert (check["Status"], check["Notes"], check["ServiceID"]) == ("critical", "deploy", "web")
    assert api.get("/v1/health/service/web?passing") == []
    api.put("/v1/agent/service/maintenance/web?enable=false")
    assert len(api.get("/v1/health/service/web?passing")) == 1

    api.put("/v1/agent/maintenance?enable=true")
    assert "_node_maintenance" in {c["CheckID"] for c in api.get("/v1/health/service/web")[0]["Checks"]}
    assert api.get("/v1/health/service/web?passing") == []
    api.put("/v1/agent/maintenance?enable=false")
    assert len(api.get("/v1/health/service/web?passing")) == 1
    api.call("PUT", "/v1/agent/service/maintenance/nope?enable=true", expect=404)


def test_kv_semantics_consul_template_relies_on(catalog):
    api = Api(catalog.url)
    missing = api.call("GET", "/v1/kv/shopgate/nothing", expect=404)
    assert int(missing.headers["X-Consul-Index"]) >= 1
    assert api.call("GET", "/v1/kv/shopgate/?recurse", expect=404).headers["X-Consul-Index"]
    assert api.put("/v1/kv/shopgate/b", data="2").json() is True
    assert api.put("/v1/kv/shopgate/a/x", data="1", params={"flags": "7"}).json() is True
    assert api.put("/v1/kv/shopgate/b?cas=0", data="3").json() is False  # create-only
    entries = api.get("/v1/kv/shopgate/?recurse")
    assert [(e["Key"], e["Flags"]) for e in entries] == [("shopgate/a/x", 7), ("shopgate/b", 0)]
    assert api.get("/v1/kv/shopgate/?keys&separator=/") == ["shopgate/a/", "shopgate/b"]
    assert api.get("/v1/kv/?keys") == ["shopgate/a/x", "shopgate/b"]
    raw = api.call("GET", "/v1/kv/shopgate/b?raw")
    assert raw.content == b"2" and raw.headers["X-Content-Type-Options"] == "nosniff"

    # Deleting under a prefix moves the prefix's index forward (Consul keeps a tombstone).
    index = api.index("/v1/kv/shopgate/?recurse")
    assert api.call("DELETE", "/v1/kv/shopgate/a/x").json() is True
    assert api.index("/v1/kv/shopgate/?recurse") > index
    assert api.call("DELETE", "/v1/kv/shopgate/?recurse").json() is True
    api.call("GET", "/v1/kv/shopgate/?recurse", expect=404)


def test_index_headers_are_present_and_never_zero(catalog):
    api = Api(catalog.url)
    for path in ("/v1/catalog/services", "/v1/catalog/nodes", "/v1/health/state/any", "/v1/health/service/x",
                 "/v1/catalog/service/x", "/v1/health/checks/x", "/v1/health/node/x", "/v1/kv/x?recurse"):
        response = api.call("GET", path, expect=None)
        assert int(response.headers["X-Consul-Index"]) >= 1, path
        assert response.headers["X-Consul-KnownLeader"] == "true"
        assert "X-Consul-LastContact" in response.headers


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw HTTP bytes on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_indexed_answers_keep_http_semantics_on_every_kind_of_request(catalog):
    """Indexed answers are written as prepared bytes: keep-alive, Connection: close, HEAD and HTTP/1.0 still hold."""
    api = Api(catalog.url)
    api.put("/v1/kv/app/colour", data="blue")
    expected = api.call("GET", "/v1/kv/app/colour")

    kept = http.client.HTTPConnection("127.0.0.1", catalog.port, timeout=10)
    answers = []
    for _ in range(2):      # two requests on one connection: the first answer left it usable
        kept.request("GET", "/v1/kv/app/colour?stale")
        response = kept.getresponse()
        answers.append((response.status, response.getheader("X-Consul-Index"),
                        response.getheader("X-Consul-Effective-Consistency"), response.getheader("Date"),
                        response.read()))
    kept.request("HEAD", "/v1/kv/app/colour")
    head = kept.getresponse()
    assert head.read() == b"" and int(head.getheader("Content-Length")) == len(expected.content)
    kept.close()
    for status, index, consistency, date, body in answers:
        assert (status, index, consistency, body) == (200, expected.headers["X-Consul-Index"], "stale",
                                                       expected.content)
        assert date.endswith(" GMT")

    closing = raw_exchange(catalog.port, b"GET /v1/kv/app/colour HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head_bytes, _, body = closing.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close" in head_bytes
    assert body == expected.content      # and the server closed the connection after it (recv returned b"")

    old = raw_exchange(catalog.port, b"GET /v1/kv/app/colour HTTP/1.0\r\n\r\n")
    assert old.startswith(b"HTTP/1.0 200 OK\r\n") and old.endswith(expected.content)

    missing = raw_exchange(catalog.port, b"GET /v1/kv/app/none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"\r\nX-Consul-Index: " in missing
    assert b"\r\nContent-Length: 0\r\n" in missing and missing.endswith(b"\r\n\r\n")  # no body


def test_acl_token_is_required_when_configured(catalog_factory):
    secured = catalog_factory("secured", extra_args=("--acl-token", "s3cret"))
    assert requests.get(f"{secured.url}/v1/catalog/services", timeout=5).status_code == 403
    assert requests.get(f"{secured.url}/v1/catalog/services", headers={"X-Consul-Token": "wrong"},
                        timeout=5).text == "Permission denied"
    assert requests.put(f"{secured.url}/v1/kv/k", data="v", timeout=5).status_code == 403
    api = Api(secured.url, token="s3cret")
    api.put("/v1/kv/k", data="v")
    assert api.call("GET", "/v1/kv/k?raw").text == "v"
    assert requests.get(f"{secured.url}/v1/kv/k?raw&token=s3cret", timeout=5).text == "v"
    assert requests.get(f"{secured.url}/v1/kv/k", headers={"Authorization": "Bearer s3cret"},
                        timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/", "/ui"])
def test_root_redirects_to_the_ui(catalog, path):
    response = requests.get(catalog.url + path, allow_redirects=False, timeout=5)
    assert response.status_code == 302 and response.headers["Location"] == "/ui/"
    assert requests.get(f"{catalog.url}/ui/", timeout=5).status_code < 500


def test_catalog_register_and_node_meta_filters(catalog):
    api = Api(catalog.url)
    for node, zone in (("edge-1", "a"), ("edge-2", "b")):
        registration = {"Node": node, "Address": f"10.0.0.{node[-1]}", "NodeMeta": {"zone": zone},
                        "Service": {"Service": "cache", "Port": 6379},
                        "Check": {"CheckID": "cache-alive", "Name": "alive", "Status": "passing", "ServiceID": "cache"}}
        assert api.put("/v1/catalog/register", json=registration).json() is True
    assert [r["Node"] for r in api.get("/v1/catalog/service/cache?node-meta=zone:b")] == ["edge-2"]
    assert [e["Node"]["Node"] for e in api.get("/v1/health/service/cache?passing&node-meta=zone:a")] == ["edge-1"]
    assert [n["Node"] for n in api.get("/v1/catalog/nodes?node-meta=zone:a")] == ["edge-1"]
    # Catalog-registered instances are reported with their node's address (ServiceAddress left empty).
    row = api.get("/v1/catalog/service/cache")[0]
    assert (row["Address"], row["ServiceAddress"], row["ServicePort"]) == ("10.0.0.1", "", 6379)
    # A node's services: keyed by ID (and filterable) on catalog/node, a list on catalog/node-services.
    node = api.get("/v1/catalog/node/edge-2")
    assert node["Node"]["Meta"] == {"zone": "b"} and node["Services"]["cache"]["Port"] == 6379
    assert api.get("/v1/catalog/node/edge-2", params={"filter": "Port == 1"})["Services"] == {}
    listed = api.get("/v1/catalog/node-services/edge-2")
    assert listed["Node"]["Node"] == "edge-2" and [s["ID"] for s in listed["Services"]] == ["cache"]
    assert api.get("/v1/catalog/node-services/nowhere") is None

    api.put("/v1/catalog/deregister", json={"Node": "edge-1", "ServiceID": "cache"})
    assert [r["Node"] for r in api.get("/v1/catalog/service/cache")] == ["edge-2"]
    assert "edge-1" in [n["Node"] for n in api.get("/v1/catalog/nodes")]
    api.put("/v1/catalog/deregister", json={"Node": "edge-1"})
    assert api.get("/v1/catalog/node/edge-1") is None


def test_advertised_address_is_the_nodes_address(catalog_factory):
    """Instances registered without an Address are reached at their node's address, as in Consul."""
    server = catalog_factory("advertised", extra_args=("--advertise", "10.1.2.3"))
    api = Api(server.url)
    api.put("/v1/agent/service/register", json={"Name": "web", "Port": 8080})
    row = api.get("/v1/catalog/service/web")[0]
    assert (row["Address"], row["ServiceAddress"], row["ServicePort"]) == ("10.1.2.3", "", 8080)
    assert api.get("/v1/status/leader") == "10.1.2.3:8300"


def test_ui_without_its_files_says_so_plainly(tmp_path, monkeypatch):
    """A checkout without catalog/ui/ still serves the API, and /ui/ explains what is missing (no 500)."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from catalog import server
    from catalog.agent import Agent, AgentConfig

    monkeypatch.setattr(server, "UI_DIR", tmp_path / "ui")

    async def fetch() -> tuple[int, str, int]:
        app = server.build_app(Agent(AgentConfig("127.0.0.1", "test-node")))
        async with TestClient(TestServer(app)) as client:
            ui = await client.get("/ui/")
            api = await client.get("/v1/catalog/services")
            return ui.status, await ui.text(), api.status

    status, text, api_status = asyncio.run(fetch())
    assert status == 404 and "The web UI is not installed" in text and "index.html is missing" in text
    assert api_status == 200
