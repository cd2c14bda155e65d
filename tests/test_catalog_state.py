"""Properties of the pure store: whenever what a watcher sees changes, its index moves forward and its topic wakes.

A blocking client returns only when the index passes the one it holds; a
change whose index did not move, or whose topic was not notified, would be a
change that client never sees. Random histories of registrations, health
changes and KV writes check both, for every kind of read.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.records import Check, Node, Service
from catalog.shapes import catalog_service_json, check_json, health_service_json, kv_json
from catalog.state import Store, key_topic, service_topic
from shopgate.consul_client.protocol import CRITICAL, PASSING

NAMES = ["web", "api"]
IDS = ["1", "2", "3"]
KEYS = ["shopgate/a", "shopgate/b", "shopgate/c/d", "other"]

operations = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(NAMES), st.sampled_from(IDS), st.sampled_from(["v1", "v2"])),
    st.tuples(st.just("deregister"), st.sampled_from(NAMES), st.sampled_from(IDS)),
    st.tuples(st.just("check"), st.sampled_from(NAMES), st.sampled_from(IDS), st.sampled_from([PASSING, CRITICAL])),
    st.tuples(st.just("node-check"), st.sampled_from([PASSING, CRITICAL])),
    st.tuples(st.just("kv-put"), st.sampled_from(KEYS), st.binary(max_size=2)),
    st.tuples(st.just("kv-delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("kv-delete-tree"), st.sampled_from(["shopgate/", "shopgate/c/", "o"])),
)


def apply(store: Store, op: tuple) -> None:
    kind = op[0]
    if kind == "register":
        _, name, sid, tag = op
        store.put_service(Service("n1", f"{name}-{sid}", name, tags=[tag]))
    elif kind == "deregister":
        store.delete_service("n1", f"{op[1]}-{op[2]}")
    elif kind == "check":
        _, name, sid, status = op
        if ("n1", f"{name}-{sid}") in store.services:
            store.put_check(Check("n1", f"service:{name}-{sid}", "c", status, service_id=f"{name}-{sid}"))
    elif kind == "node-check":
        store.put_check(Check("n1", "node-health", "n", op[1]))
    elif kind == "kv-put":
        store.kv_put(op[1], op[2], 0, None)
    elif kind == "kv-delete":
        store.kv_delete(op[1])
    else:
        store.kv_delete_tree(op[1])


def views(store: Store) -> dict[str, tuple[int, object, str]]:
    """Every read a watcher may hold: name -> (index, result, topic that wakes it)."""
    out = {}
    for name in NAMES:
        health = [(health_service_json(s), [check_json(c) for c in store.checks_of(s.node, s.id)])
                  for s in store.service_instances(name)]
        out[f"health/service/{name}"] = (store.index_for_service(name), health, service_topic(name))
        rows = [catalog_service_json(s, store.nodes[s.node]) for s in store.service_instances(name)]
        out[f"catalog/service/{name}"] = (store.index_for_service(name), rows, service_topic(name))
        checks = [check_json(c) for c in store.checks_of_service_name(name)]
        out[f"health/checks/{name}"] = (store.table_index["checks"], checks, "checks")
    out["catalog/services"] = (store.table_index["services"], store.service_tags(), "services")
    out["health/state/any"] = (store.table_index["checks"], [check_json(c) for c in store.sorted_checks()], "checks")
    out["health/node/n1"] = (store.table_index["checks"], [check_json(c) for c in store.node_checks("n1")], "checks")
    for prefix in ["shopgate/", "shopgate/c/", ""]:
        index, entries = store.kv_list(prefix)
        out[f"kv/{prefix}?recurse"] = (index, [kv_json(e) for e in entries], "kvs")
    for key in KEYS:
        entry = store.kv.get(key)
        out[f"kv/{key}"] = (entry.modify_index if entry else store.kv_index(), entry and kv_json(entry),
                            key_topic(key))
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(operations, min_size=1, max_size=40))
def test_every_visible_change_moves_its_index_and_wakes_its_watchers(history):
    store = Store()
    store.ensure_node(Node("n1", "id-1", "10.0.0.1", "dc1"))
    store.take_pending()
    before = views(store)
    for op in history:
        last_global = store.index
        apply(store, op)
        pending = store.take_pending()
        assert store.index >= last_global
        after = views(store)
        for read, (index, result, topic) in after.items():
            old_index, old_result, _ = before[read]
            assert index >= old_index, f"{read}: index went back from {old_index} to {index} after {op}"
            if result != old_result:
                assert index > old_index, f"{read} changed after {op} but its index stayed {index}"
                assert topic in pending.topics, f"{read} changed after {op} but {topic!r} was not woken"
        before = after


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, min_size=1, max_size=30))
def test_a_reload_from_the_journal_rows_gives_the_same_catalog_and_no_lower_index(history):
    store = Store()
    store.ensure_node(Node("n1", "id-1", "10.0.0.1", "dc1"))
    journal: dict[tuple[str, str], dict] = {}
    for op in [None, *history]:
        if op is not None:
            apply(store, op)
        for table, key, doc in store.take_pending().rows:
            if doc is None:
                journal.pop((table, key), None)
            else:
                journal[(table, key)] = doc
    reloaded = Store()
    index = journal.pop(("meta", "index"))["index"]
    reloaded.load(index, [(table, doc) for (table, _), doc in sorted(journal.items())])
    assert reloaded.index == store.index
    before, after = views(store), views(reloaded)
    for read, (old_index, result, _) in before.items():
        assert after[read][1] == result, read
        assert after[read][0] >= old_index, read
