"""Bad input gets a 400 (413 for an oversized value) that says what is wrong — never a 500 — and loses nothing."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_helpers import Api

REGISTER = "/v1/agent/service/register"

# (method, path, body: bytes | JSON-able, status, a phrase the message must contain)
CASES = [
    ("PUT", REGISTER, b"{not json", 400, "not valid JSON"),
    ("PUT", REGISTER, [1, 2], 400, "must be a JSON object"),
    ("PUT", REGISTER, {}, 400, "Missing service name"),
    ("PUT", REGISTER, {"Name": 5}, 400, "Name must be a string"),
    ("PUT", REGISTER, {"Name": "a/b"}, 400, "Invalid service name"),
    ("PUT", REGISTER, {"Name": "two words"}, 400, "Invalid service name"),
    ("PUT", REGISTER, {"Name": "consul"}, 400, "reserved"),
    ("PUT", REGISTER, {"Name": "x", "Port": "80"}, 400, "Port must be an integer"),
    ("PUT", REGISTER, {"Name": "x", "Port": 70000}, 400, "Port must be between 0 and 65535"),
    ("PUT", REGISTER, {"Name": "x", "Tags": "a"}, 400, "Tags must be a list of strings"),
    ("PUT", REGISTER, {"Name": "x", "Meta": {"a": 1}}, 400, "Meta must be an object with string values"),
    ("PUT", REGISTER, {"Name": "x", "Weights": {"Passing": 0}}, 400, "Weights.Passing must be greater than 0"),
    ("PUT", REGISTER, {"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/", "Interval": "soon"}}, 400,
     "Invalid service definition.Check.Interval"),
    ("PUT", REGISTER, {"Name": "x", "Check": {"HTTP": "http://127.0.0.1:1/"}}, 400, "Interval must be > 0"),
    ("PUT", REGISTER, {"Name": "x", "Check": {"HTTP": "ftp://h/", "Interval": "1s"}}, 400, "http:// or https://"),
    ("PUT", REGISTER, {"Name": "x", "Check": {"TCP": "nohost", "Interval": "1s"}}, 400, "TCP must be host:port"),
    ("PUT", REGISTER, {"Name": "x", "Check": {"TTL": "10s", "Status": "bogus"}}, 400, "Status must be one of"),
    ("PUT", REGISTER, {"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "1s"}}, 400, "Scripts are disabled"),
    ("PUT", "/v1/agent/check/register", {"TTL": "1s"}, 400, "Missing check name"),
    ("PUT", "/v1/agent/check/register", {"Name": "c"}, 400, "Must provide TTL"),
    ("PUT", "/v1/agent/check/update/ttl", {"Status": "meh"}, 400, "Invalid check status"),
    ("PUT", "/v1/agent/check/pass/probe", None, 400, "does not have associated TTL"),
    ("PUT", "/v1/agent/service/maintenance/web", None, 400, "Missing value for enable"),
    ("PUT", "/v1/agent/service/maintenance/web?enable=maybe", None, 400, "Invalid value for enable"),
    ("GET", "/v1/kv/k?index=abc", None, 400, "Invalid index"),
    ("GET", "/v1/kv/k?index=-1", None, 400, "Invalid index"),
    ("GET", "/v1/kv/k?index=1&wait=forever", None, 400, "Invalid wait time"),
    ("GET", "/v1/health/service/web?stale&consistent", None, 400, "Cannot specify ?stale with ?consistent"),
    ("GET", "/v1/health/service/web?passing=maybe", None, 400, "Invalid value for passing"),
    ("GET", "/v1/health/state/sick", None, 400, "Bad check state"),
    ("GET", "/v1/catalog/nodes?filter=Node%20==%20(((", None, 400, "Failed to create boolean expression evaluator"),
    ("GET", "/v1/catalog/nodes?dc=dc2", None, 400, "No path to datacenter"),
    ("GET", "/v1/kv/", None, 400, "Missing key name"),
    ("PUT", "/v1/kv/", b"v", 400, "Missing key name"),
    ("PUT", "/v1/kv/k?flags=x", b"v", 400, "Invalid flags"),
    ("PUT", "/v1/kv/k?cas=-3", b"v", 400, "Invalid cas"),
    ("PUT", "/v1/kv/k?cas=1&acquire=s", b"v", 400, "Conflicting flags"),
    ("PUT", "/v1/kv/a/%2e%2e/b", b"v", 400, "path traversal"),
    ("PUT", "/v1/kv/bad%01key", b"v", 400, "control character"),
    ("DELETE", "/v1/kv/k?recurse&cas=1", None, 400, "Conflicting flags"),
    ("PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1), 413, "too large"),
    ("PUT", "/v1/kv/k?acquire=no-such-session", b"v", 400, "invalid session"),
    ("PUT", "/v1/session/create", {"TTL": "5s"}, 400, "Invalid Session TTL"),
    ("PUT", "/v1/session/create", {"Behavior": "explode"}, 400, "Invalid Behavior setting"),
    ("PUT", "/v1/session/create", {"Node": "nowhere"}, 400, "Missing node registration"),
    ("PUT", "/v1/session/create", {"Checks": ["service:web"]}, 400, "is in critical state"),
    ("PUT", "/v1/catalog/register", {"Node": "n1"}, 400, "Must provide address"),
    ("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc2"}, 400,
     "No path to datacenter"),
    ("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": ""}}, 400,
     "Missing service name"),
    ("PUT", "/v1/catalog/register", {"Node": "n1", "Address": "10.0.0.1", "Check": {"Name": "c", "Status": "x"}},
     400, "Status must be one of"),
]


@pytest.fixture(scope="module")
def catalog_module(tmp_path_factory):
    """One catalog for the whole table (a process per case would cost more than the cases), seeded with data to keep."""
    from conftest import CatalogProcess

    base = tmp_path_factory.mktemp("catalog")
    (base / "data").mkdir()
    server = CatalogProcess(base / "data", base).start()
    try:
        api = Api(server.url)
        api.put("/v1/kv/shopgate/keep", data="precious")
        api.put(REGISTER, json={"Name": "web", "Check": {"TTL": "60s"}})
        api.put("/v1/agent/check/register", json={"Name": "ttl", "TTL": "60s"})
        api.put("/v1/agent/check/register", json={"Name": "probe", "TCP": "127.0.0.1:1", "Interval": "60s"})
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("method, path, body, status, phrase", CASES, ids=[f"{c[0]} {c[1][:60]}" for c in CASES])
def test_bad_input_is_refused_clearly(catalog_module, method, path, body, status, phrase):
    api = Api(catalog_module.url)
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    response = api.call(method, path, expect=None, **kwargs)
    assert response.status_code == status, f"{response.status_code} {response.text!r}"
    assert phrase in response.text


def test_nothing_stored_before_is_lost(catalog_module):
    api = Api(catalog_module.url)
    assert api.call("GET", "/v1/kv/shopgate/keep?raw").text == "precious"
    assert set(api.get("/v1/agent/services")) == {"web"}
    assert set(api.get("/v1/agent/checks")) == {"service:web", "ttl", "probe"}
    assert api.get("/v1/catalog/node/n1") is None, "a refused catalog registration left its node behind"
    assert api.call("GET", "/v1/kv/k", expect=404).headers["X-Consul-Index"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["Name", "ID", "Port", "Tags", "Meta", "Check", "Checks", "TTL", "HTTP", "TCP",
                               "Interval", "Timeout", "Status", "ServiceID", "Node", "Address", "Service",
                               "TaggedAddresses", "Weights", "Header", "Behavior", "LockDelay", "Connect", "name"])
bodies = st.dictionaries(field_names, json_values, max_size=6) | json_values
WRITE_PATHS = ["/v1/agent/service/register", "/v1/agent/check/register", "/v1/catalog/register",
               "/v1/catalog/deregister", "/v1/session/create", "/v1/agent/check/update/ttl"]
READ_PATHS = ["/v1/kv/k", "/v1/kv/", "/v1/health/service/web", "/v1/health/state/any", "/v1/catalog/nodes",
              "/v1/catalog/service/web", "/v1/agent/services", "/v1/catalog/services"]
params = st.dictionaries(st.sampled_from(["index", "wait", "passing", "tag", "filter", "recurse", "keys",
                                          "separator", "dc", "stale", "node-meta", "cas", "flags"]),
                         st.text(max_size=10), max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(WRITE_PATHS), body=bodies)
def test_no_body_makes_a_server_error(catalog_module, path, body):
    response = requests.put(catalog_module.url + path, data=json.dumps(body), timeout=10)
    assert response.status_code < 500, f"{path} {body!r}: {response.status_code} {response.text!r}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(READ_PATHS), query=params)
def test_no_query_string_makes_a_server_error(catalog_module, path, query):
    query = {**query, "wait": query.get("wait", "1ms")}  # a valid index may block: keep any wait short
    if "index" in query and query["wait"] and not query["wait"].endswith("ms"):
        query["wait"] = "1ms"
    response = requests.get(catalog_module.url + path, params=query, timeout=30)
    assert response.status_code < 500, f"{path} {query!r}: {response.status_code} {response.text!r}"
