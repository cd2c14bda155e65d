"""The ground floor's Consul client: the one health decoder and its status rule, pinned for every
caller (gateway, service discovery), and the generic blocking-query loop against a real catalog."""

from __future__ import annotations

import threading

from gateway.model import Instance
from services.discovery import endpoints_from_health
from shopgate.consul_client import CatalogUnavailable, QueryResult, connect, read
from shopgate.consul_client.blocking import BlockingQuery
from shopgate.consul_client.health import aggregate_status, decode_health_entries
from shopgate.consul_client.kv import kv_from_entries


def _entry(service_id: str, *statuses: str, address: str = "10.0.0.9", check_ids: tuple[str, ...] = ()) -> dict:
    ids = check_ids or tuple(f"c{n}" for n in range(len(statuses)))
    return {"Node": {"Node": "n1", "Address": "10.0.0.1"},
            "Service": {"ID": service_id, "Address": address, "Port": 5000, "Tags": ["a"], "Meta": {"v": "2"}},
            "Checks": [{"CheckID": cid, "Status": status} for cid, status in zip(ids, statuses)]}


def test_maintenance_wins_then_the_worst_check():
    assert aggregate_status([]) == "passing"
    assert aggregate_status([("a", "passing"), ("b", "warning")]) == "warning"
    assert aggregate_status([("a", "warning"), ("b", "critical")]) == "critical"
    assert aggregate_status([("_service_maintenance:web-1", "critical"), ("x", "passing")]) == "maintenance"
    assert aggregate_status([("_node_maintenance", "critical")]) == "maintenance"
    assert aggregate_status([("a", "bogus")]) == "critical", "an unknown status is not healthy"
    assert aggregate_status([("a", None)]) == "critical", "a missing status is not healthy"


def test_entries_use_the_node_address_when_the_service_has_none():
    entries = [{"Node": {"Node": "n1", "Address": "10.0.0.7"}, "Service": {"ID": "web-1", "Address": "", "Port": 8080, "Tags": ["a"], "Meta": {"v": "2"}},
                "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]}]
    (entry,) = decode_health_entries("web", entries, make=Instance)
    assert (entry.key, entry.address, entry.port, entry.tags, entry.meta, entry.status) == ("n1/web-1", "10.0.0.7", 8080, ("a",), (("v", "2"),), "passing")


def test_a_malformed_row_is_skipped_without_losing_the_others():
    entries = [None, {"Service": "text"}, {"Node": {}, "Service": {"ID": "ok", "Port": "80"}}, _entry("web-2", "passing")]
    decoded = decode_health_entries("web", entries)
    assert [(e.id, e.port) for e in decoded] == [("ok", 0), ("web-2", 5000)]
    assert decode_health_entries("web", None) == ()


def test_an_unknown_status_is_not_routed_by_any_caller():
    entries = [_entry("web-ok", "passing"), _entry("web-odd", "passing", "unknown-status"), _entry("web-maint", "passing", check_ids=("_service_maintenance:web-maint",))]
    decoded = {e.id: e for e in decode_health_entries("web", entries, make=Instance)}
    assert decoded["web-odd"].status == "critical" and not decoded["web-odd"].healthy, "the gateway would route it"
    assert decoded["web-maint"].status == "maintenance" and not decoded["web-maint"].healthy
    assert [e.id for e in endpoints_from_health("web", entries)] == ["web-ok"], "discovery would call it"


def test_kv_entries_become_raw_values(catalog):
    client = connect(catalog.address)
    client.kv.put("shopgate/t/a", "1")
    client.kv.put("shopgate/t/empty", "")
    result = read("kv", client.kv.get, "shopgate/t/", recurse=True)
    assert kv_from_entries(result.data) == {"shopgate/t/a": b"1", "shopgate/t/empty": b""}
    assert result.index > 0
    missing = read("kv", client.kv.get, "shopgate/none/", recurse=True)
    assert kv_from_entries(missing.data) == {} and missing.index > 0, "a 404 still carries the index"


def test_an_unreachable_catalog_is_one_error_naming_the_read(catalog):
    client = connect(catalog.address, timeout=1)
    catalog.stop()
    try:
        read("/v1/catalog/services", client.catalog.services)
    except CatalogUnavailable as error:
        assert "/v1/catalog/services" in str(error)
    else:
        raise AssertionError("a stopped catalog answered")


def test_the_blocking_loop_hands_on_changes_and_resets_an_index_that_goes_backwards():
    stop = threading.Event()
    answers = iter([QueryResult("a", 5), QueryResult("a", 5), QueryResult("b", 7), QueryResult("c", 3)])
    seen, asked, resets = [], [], []

    def fetch(index: int) -> QueryResult:
        asked.append(index)
        try:
            return next(answers)
        except StopIteration:
            stop.set()
            raise CatalogUnavailable("done") from None

    query = BlockingQuery("t", fetch, lambda data, seen_at, index: seen.append((data, index)), stop,
                          backoff=(0.01, 0.01), on_reset=lambda seen_at: resets.append(seen_at))
    query.run()
    assert seen == [("a", 5), ("b", 7)], "an unchanged index is the wait ending, not a change"
    assert asked == [0, 5, 5, 7, 0], "after an index went backwards the next read starts at 0"
    assert len(resets) == 1 and query.index == 0


def test_a_failed_read_is_retried_from_index_zero_with_backoff():
    stop = threading.Event()
    calls, errors = [], []

    def fetch(index: int) -> QueryResult:
        calls.append(index)
        if len(calls) == 2:
            raise CatalogUnavailable("away")
        if len(calls) == 4:
            stop.set()
        return QueryResult("x", 9)

    BlockingQuery("t", fetch, lambda *a: None, stop, backoff=(0.01, 0.02), on_error=errors.append).run()
    assert calls == [0, 9, 0, 9] and errors == ["away"]


def test_an_answer_the_owner_cannot_read_counts_as_a_failed_read():
    stop = threading.Event()
    calls, errors, seen = [], [], []

    def fetch(index: int) -> QueryResult:
        calls.append(index)
        if len(calls) == 3:
            stop.set()
        return QueryResult("garbled" if len(calls) == 1 else "good", 4)

    def on_change(data, seen_at, index):
        if data == "garbled":
            raise CatalogUnavailable("not a list of checks")
        seen.append(data)

    BlockingQuery("t", fetch, on_change, stop, backoff=(0.01, 0.02), on_error=errors.append).run()
    assert errors == ["not a list of checks"]
    assert calls == [0, 0, 4] and seen == ["good"], "read again from index 0, the good answer handed on"


def test_a_bug_in_handling_an_answer_is_logged_and_the_watch_goes_on(caplog):
    stop = threading.Event()
    calls, seen = [], []

    def fetch(index: int) -> QueryResult:
        calls.append(index)
        if len(calls) == 3:
            stop.set()
        return QueryResult(len(calls), 4)

    def on_change(data, seen_at, index):
        if data == 1:
            raise KeyError("a bug")
        seen.append(data)

    BlockingQuery("t", fetch, on_change, stop, backoff=(0.01, 0.02)).run()
    assert seen == [2], "the watch read again and handed the next answer on"
    assert "handling an answer failed" in caplog.text and "KeyError" in caplog.text
