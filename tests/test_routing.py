"""Snapshot -> RouteTable (gateway.routing): routes, stable slots, sizing, states, validation. Plain data only."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from gateway.model import Instance, Route, RouteTable, Snapshot
from gateway.haproxy_syntax import SERVER_NAME
from gateway.routing import build_route_table, cookie_value, dynamic_server_name, fold_extra, frontends, parse_route_tag, slot_count


def inst(service: str, n: int, status: str = "passing", tags: tuple[str, ...] = (), address: str | None = None, port: int | None = None) -> Instance:
    return Instance(service=service, id=f"{service}-{n}", node="node1", address=address or f"10.0.0.{n}", port=port or 9000 + n, tags=tags, status=status)


def snap(*instances: Instance, services: tuple[str, ...] = (), kv: dict[str, bytes] | None = None) -> Snapshot:
    catalog: dict[str, tuple[Instance, ...]] = {name: () for name in services}
    for instance in instances:
        catalog[instance.service] = catalog.get(instance.service, ()) + (instance,)
    return Snapshot(services=catalog, kv=kv or {})


def slots_of(table: RouteTable, service: str) -> dict[str, str]:
    """instance id -> slot name."""
    return {s.instance_key.split("/", 1)[1]: s.slot for s in table.backend(f"be_{service}").servers if s.occupied}


def names_of(table: RouteTable, service: str) -> dict[str, str]:
    """instance id -> server name, slots and dynamic servers."""
    return {s.instance_key.split("/", 1)[1]: s.slot for s in table.backend(f"be_{service}").all_servers if s.occupied}


# ---------------------------------------------------------------- routes


def test_every_service_gets_a_backend_and_the_default_route():
    table = build_route_table(snap(inst("products", 1), inst("users", 1)))
    assert [b.name for b in table.backends] == ["be_products", "be_users"]
    assert set(table.routes) == {Route("be_products", "/api/v1/products"), Route("be_users", "/api/v1/users")}
    assert table.rejected == ()


def test_urlprefix_tags_replace_the_default_route_with_host_path_and_strip():
    tags = ("urlprefix-/shop/products strip=/shop", "urlprefix-Shop.Example/catalog", "v2")
    table = build_route_table(snap(inst("products", 1, tags=tags)))
    assert set(table.routes) == {
        Route("be_products", "/shop/products", strip="/shop"),
        Route("be_products", "/catalog", host="shop.example"),
    }


def test_routes_are_ordered_host_first_then_longest_prefix_first():
    table = build_route_table(snap(
        inst("a", 1, tags=("urlprefix-/",)),
        inst("b", 1, tags=("urlprefix-/shop",)),
        inst("c", 1, tags=("urlprefix-/shop/cart/",)),
        inst("d", 1, tags=("urlprefix-shop.example/",)),
    ))
    assert [(r.host, r.path_prefix) for r in table.routes] == [("shop.example", "/"), (None, "/shop/cart"), (None, "/shop"), (None, "/")]


@pytest.mark.parametrize("tag, problem", [
    ("urlprefix-", "no path"),
    ("urlprefix-shop.example", "has no path"),
    ("urlprefix-/a b", "unknown option 'b'"),
    ("urlprefix-/a\nbackend evil", "unknown option"),
    ("urlprefix-/a#x", "characters outside"),
    ("urlprefix-/a'x", "characters outside"),
    ("urlprefix-/a//b", "empty segment"),
    ("urlprefix-/a/../b", "'..'"),
    ("urlprefix-bad_host!/a", "not a hostname"),
    ("urlprefix-/shop/x strip=/other", "not a leading part"),
    ("urlprefix-/shop/x strip=/sh", "not a leading part"),
    ("urlprefix-/shop proto=https", "unknown option 'proto=https'"),
])
def test_a_bad_route_tag_is_rejected_with_service_instance_and_tag(tag, problem):
    table = build_route_table(snap(inst("products", 1, tags=(tag,))))
    assert len(table.rejected) == 1
    message = table.rejected[0]
    assert message.startswith("service products, instance 'node1/products-1', tag ")
    assert problem in message
    assert "\n" not in message
    # The service keeps serving on its default route.
    assert table.routes == (Route("be_products", "/api/v1/products"),)


def test_parse_route_tag_normalises_trailing_slashes():
    assert parse_route_tag("urlprefix-/shop/ strip=/shop/", "be_x") == Route("be_x", "/shop", strip="/shop")
    assert parse_route_tag("urlprefix-/", "be_x") == Route("be_x", "/")


def test_conflicting_routes_are_reported_and_the_previous_holder_keeps_the_route():
    first = build_route_table(snap(inst("zeta", 1, tags=("urlprefix-/shop",))))
    both = snap(inst("zeta", 1, tags=("urlprefix-/shop",)), inst("alpha", 1, tags=("urlprefix-/shop",)))
    table = build_route_table(both, first)
    assert table.routes == (Route("be_zeta", "/shop"),)
    assert table.rejected == ("route /shop: claimed by be_alpha and be_zeta; kept be_zeta",)
    # Without history the choice is still deterministic (name order).
    assert build_route_table(both).routes == (Route("be_alpha", "/shop"),)


def test_a_tag_beats_another_service_default_route_on_the_same_path():
    table = build_route_table(snap(inst("products", 1), inst("products-v2", 1, tags=("urlprefix-/api/v1/products",))))
    assert Route("be_products-v2", "/api/v1/products") in table.routes
    assert any("claimed by be_products and be_products-v2" in r for r in table.rejected)


# ---------------------------------------------------------------- validation of catalog input


@pytest.mark.parametrize("name", ["bad name", "a\nbackend evil", "-lead", "x" * 64, "wéird", "a#b", ""])
def test_unsafe_service_names_are_rejected_and_skipped(name):
    table = build_route_table(snap(inst("products", 1), services=(name,)))
    assert [b.service for b in table.backends] == ["products"]
    assert len(table.rejected) == 1 and table.rejected[0].startswith("service ") and "name must be" in table.rejected[0]


@pytest.mark.parametrize("address, port, problem", [
    ("10.0.0.1 backup", 80, "neither an IP address nor a hostname"),
    ("10.0.0.1\nserver x", 80, "neither an IP address nor a hostname"),
    ("fe80::1%eth0", 80, "neither an IP address nor a hostname"),
    ("", 80, "no address"),
    ("10.0.0.1", 0, "port 0 is not in 1..65535"),
    ("10.0.0.1", 65536, "port 65536 is not in 1..65535"),
])
def test_instances_with_bad_addresses_or_ports_are_rejected_and_the_rest_kept(address, port, problem):
    bad = replace(inst("products", 2), address=address, port=port)
    table = build_route_table(snap(inst("products", 1), bad))
    assert list(slots_of(table, "products")) == ["products-1"]
    assert len(table.rejected) == 1
    assert table.rejected[0].startswith("service products, instance 'node1/products-2': ") and problem in table.rejected[0]


def test_hostnames_and_ipv6_addresses_are_accepted():
    table = build_route_table(snap(inst("a", 1, address="localhost"), inst("a", 2, address="::1"), inst("a", 3, address="app-3.internal")))
    assert table.rejected == ()
    assert {s.address for s in table.backend("be_a").servers if s.occupied} == {"localhost", "::1", "app-3.internal"}


# ---------------------------------------------------------------- slots


def test_instances_keep_their_slots_when_others_come_and_go():
    t1 = build_route_table(snap(inst("p", 1), inst("p", 2), inst("p", 3)))
    assert slots_of(t1, "p") == {"p-1": "s1", "p-2": "s2", "p-3": "s3"}
    t2 = build_route_table(snap(inst("p", 1), inst("p", 3)), t1)          # p-2 leaves
    assert slots_of(t2, "p") == {"p-1": "s1", "p-3": "s3"}
    assert not t2.backend("be_p").server("s2").occupied
    t3 = build_route_table(snap(inst("p", 1), inst("p", 3), inst("p", 4)), t2)   # p-4 arrives
    assert slots_of(t3, "p")["p-1"] == "s1" and slots_of(t3, "p")["p-3"] == "s3"


def test_a_newcomer_prefers_a_long_free_slot_over_one_vacated_in_the_same_change():
    t1 = build_route_table(snap(inst("p", 1), inst("p", 2)))            # s1, s2 of 4
    t2 = build_route_table(snap(inst("p", 2), inst("p", 9)), t1)         # p-1 leaves, p-9 arrives
    assert slots_of(t2, "p") == {"p-2": "s2", "p-9": "s3"}               # s1 may still be draining p-1


def test_slot_stability_does_not_depend_on_the_memo():
    t1 = build_route_table(snap(inst("p", 1), inst("p", 2), inst("p", 3)))
    later = snap(inst("p", 3), inst("p", 4))
    assert build_route_table(later, t1) == build_route_table(later, replace(t1, memo={}))


def test_slot_count_has_headroom_where_slots_grow_by_reload_grows_when_full_and_shrinks_with_hysteresis():
    static = dict(floor=4, headroom=2, runtime_servers=False)    # balance source, sticky: growing means a reload
    assert slot_count(0, None, **static) == 4
    assert slot_count(5, None, **static) == 16
    assert slot_count(16, 16, **static) == 16        # full but fits: no reload
    assert slot_count(17, 16, **static) == 64        # does not fit: grow with headroom
    assert slot_count(9, 64, **static) == 64         # flapping back: keep
    assert slot_count(5, 64, **static) == 64
    assert slot_count(4, 64, **static) == 8          # far below (8 x 8 <= 64): shrink
    assert slot_count(1, 16, **static) == 16         # 4 x 8 > 16: keep
    assert slot_count(1, 4, floor=8, headroom=2, runtime_servers=False) == 8   # a raised floor (KV slots) grows


def test_slot_count_is_a_slot_per_instance_where_dynamic_servers_take_the_rest():
    dynamic = dict(floor=4, headroom=2, runtime_servers=True)    # the headroom does not apply
    assert slot_count(0, None, **dynamic) == 4       # the floor
    assert slot_count(5, None, **dynamic) == 5
    assert slot_count(2000, None, **dynamic) == 2000             # not 4,096: 5 x 2,000 fit 20,000 descriptors
    assert slot_count(2100, None, **dynamic) == 2100             # a fold after 100 more: still one each
    assert slot_count(1999, 2000, **dynamic) == 2000             # one leaves: keep
    assert slot_count(250, 2000, **dynamic) == 250               # 250 x 8 <= 2,000: shrink (as with headroom)
    assert slot_count(251, 2000, **dynamic) == 2000
    assert slot_count(3, 4, floor=8, headroom=2, runtime_servers=True) == 8    # a raised floor (KV slots) grows


STATIC = {"shopgate/services/p/balance": b"source"}   # `add server` refused: the slots grow (by reload)


def test_slots_are_kept_through_growth_and_shrink():
    five = [inst("p", n) for n in range(1, 6)]
    t1 = build_route_table(snap(*five[:2], kv=STATIC))
    assert len(t1.backend("be_p").servers) == 4
    t2 = build_route_table(snap(*five, kv=STATIC), t1)
    assert len(t2.backend("be_p").servers) == 16
    assert slots_of(t2, "p")["p-1"] == "s1" and slots_of(t2, "p")["p-2"] == "s2"
    t3 = build_route_table(snap(five[4], kv=STATIC), t2)
    assert len(t3.backend("be_p").servers) == 16                  # 1 of 16: not worth a reload
    assert slots_of(t3, "p") == {"p-5": "s5"}
    many = [inst("p", n) for n in range(1, 18)]
    t4 = build_route_table(snap(*many, kv=STATIC), t3)
    assert len(t4.backend("be_p").servers) == 64 and slots_of(t4, "p")["p-5"] == "s5"
    t5 = build_route_table(snap(*many[12:], kv=STATIC), t4)                   # p-13..p-17 sit in s6..s17
    assert len(t5.backend("be_p").servers) == 64                  # 5 of 64: keep
    t6 = build_route_table(snap(*many[13:], kv=STATIC), t5)                   # 4 of 64 (needs 8, 8 x 8 <= 64): shrink
    assert len(t6.backend("be_p").servers) == 8
    assert sorted(slots_of(t6, "p").values()) == ["s1", "s2", "s3", "s4"]   # moved inside the smaller range
    assert build_route_table(snap(*many[13:], kv=STATIC), replace(t5, memo={})) == t6


def test_out_of_slots_further_instances_become_dynamic_servers_named_after_them():
    t1 = build_route_table(snap(inst("p", 1)))
    assert len(t1.backend("be_p").servers) == 4
    ten = [inst("p", n) for n in range(1, 11)]
    t2 = build_route_table(snap(*ten), t1)
    backend = t2.backend("be_p")
    assert len(backend.servers) == 4 and all(s.occupied for s in backend.servers)   # no new slots: no reload
    assert [s.slot for s in backend.extra] == [f"p-{n}" for n in sorted(range(5, 11), key=str)]
    assert {s.state for s in backend.extra} == {"ready"}
    # they keep their names while others come and go; a newcomer takes a freed slot first
    t3 = build_route_table(snap(*ten[1:], inst("p", 11)), t2)
    assert names_of(t3, "p")["p-11"] == "s1" and names_of(t3, "p")["p-7"] == "p-7"
    # gone again: no dynamic server left, the slots stay
    t4 = build_route_table(snap(ten[1]), t3)
    assert t4.backend("be_p").extra == () and len(t4.backend("be_p").servers) == 4


def test_dynamic_server_names_are_haproxy_server_names_unique_and_never_a_slots():
    odd = [replace(inst("p", n), id=name) for n, name in enumerate(["s1", "a b/c#d", "a_b_c_d", "x" * 80, "é"], start=5)]
    table = build_route_table(snap(inst("p", 1)))                                 # 4 slots
    table = build_route_table(snap(*[inst("p", n) for n in range(1, 5)], *odd), table)
    names = [s.slot for s in table.backend("be_p").extra]
    assert len(set(names)) == 5 and all(SERVER_NAME.fullmatch(n) for n in names)
    assert "s1" not in names and "a_b_c_d" in names and "x" * 48 in names


def test_fold_extra_moves_dynamic_servers_into_enough_slots_and_keeps_the_slots():
    t1 = build_route_table(snap(inst("p", 1)))
    ten = [inst("p", n) for n in range(1, 11)]
    t2 = build_route_table(snap(*ten), t1)
    folded = fold_extra(t2)
    backend = folded.backend("be_p")
    assert backend.extra == () and len(backend.servers) == 10          # as a backend of 10 gets from scratch: one each
    assert names_of(folded, "p") == {**{f"p-{n}": f"s{n}" for n in range(1, 5)},
                                     **{s.instance_key.split("/")[1]: s.slot for s in backend.servers[4:] if s.occupied}}
    assert len(names_of(folded, "p")) == 10
    # the next build starts from the folded slots (the memo follows)
    assert build_route_table(snap(*ten), folded) == folded


def test_sticky_dns_and_static_balance_backends_grow_slots_instead():
    for kv in ({"shopgate/services/p/sticky": b"cookie"}, STATIC):
        t1 = build_route_table(snap(inst("p", 1), kv=kv))
        t2 = build_route_table(snap(*[inst("p", n) for n in range(1, 11)], kv=kv), t1)
        assert t2.backend("be_p").extra == () and len(t2.backend("be_p").servers) == 32


def test_kv_slots_raises_the_floor_for_one_service():
    table = build_route_table(snap(inst("p", 1), inst("q", 1), kv={"shopgate/services/p/slots": b"32"}))
    assert len(table.backend("be_p").servers) == 32
    assert len(table.backend("be_q").servers) == 4


def test_spare_slots_point_nowhere_and_are_disabled():
    table = build_route_table(snap(inst("p", 1)))
    spare = table.backend("be_p").server("s4")
    assert (spare.occupied, spare.address, spare.port, spare.enabled) == (False, "127.0.0.1", 1, False)


# ---------------------------------------------------------------- states and weights


def test_server_states_follow_health_and_maintenance():
    table = build_route_table(snap(inst("p", 1), inst("p", 2, status="critical"), inst("p", 3, status="maintenance"), inst("p", 4, status="warning")))
    states = {s.instance_key: s.state for s in table.backend("be_p").servers if s.occupied}
    assert states == {"node1/p-1": "ready", "node1/p-2": "maint", "node1/p-3": "drain", "node1/p-4": "maint"}
    # An unhealthy instance keeps its slot, so recovering is a runtime change.
    assert slots_of(table, "p")["p-2"] == "s2"


def test_service_maintenance_from_kv_drains_every_healthy_instance():
    table = build_route_table(snap(inst("p", 1), inst("p", 2, status="critical"), kv={"shopgate/services/p/maintenance": b"true"}))
    states = {s.instance_key: s.state for s in table.backend("be_p").servers if s.occupied}
    assert states == {"node1/p-1": "drain", "node1/p-2": "maint"}


def test_tag_weights_set_canary_weights_and_the_lowest_matching_weight_wins():
    kv = {"shopgate/services/p/weights": b'{"canary": 10, "stable": 200, "slow": 5}'}
    table = build_route_table(snap(inst("p", 1, tags=("stable",)), inst("p", 2, tags=("canary",)), inst("p", 3), inst("p", 4, tags=("canary", "slow")), kv=kv))
    weights = {s.instance_key: s.weight for s in table.backend("be_p").servers if s.occupied}
    assert weights == {"node1/p-1": 200, "node1/p-2": 10, "node1/p-3": 100, "node1/p-4": 5}


def test_kv_errors_land_in_rejected_and_defaults_stay():
    table = build_route_table(snap(inst("p", 1), kv={"shopgate/services/p/balance": b"fastest"}))
    assert table.backend("be_p").settings.balance == "roundrobin"
    assert table.rejected == ("shopgate/services/p/balance: 'fastest' is not one of roundrobin, leastconn, source, first, random",)


def test_the_same_snapshot_gives_an_equal_table():
    s = snap(inst("p", 1, tags=("urlprefix-/x",)), inst("q", 1), kv={"shopgate/gateway/retries": b"2"})
    first = build_route_table(s)
    assert build_route_table(s, first) == first == build_route_table(s)


# ---------------------------------------------------------------- properties of slots over time

#: A history of catalog views of one service: which of 12 instances are present, and their health.
histories = st.lists(st.dictionaries(st.integers(1, 12), st.sampled_from(["passing", "passing", "critical", "maintenance"]), max_size=12), min_size=2, max_size=12)


@settings(max_examples=150, deadline=None)
@given(history=histories, kv=st.sampled_from([{}, STATIC]))
def test_slots_are_unique_sized_and_kept_unless_the_backend_shrinks(history, kv):
    """Sized a slot each where dynamic servers take the rest (default balance), with headroom x2 where not (STATIC)."""
    per_instance = 1 if not kv else 2
    previous = None
    for view in history:
        table = build_route_table(snap(*(inst("p", n, status) for n, status in view.items()), services=("p",), kv=kv), previous)
        backend = table.backend("be_p")
        servers = backend.servers
        occupied = [s.instance_key for s in backend.all_servers if s.occupied]
        assert sorted(occupied) == sorted(f"node1/p-{n}" for n in view)           # everyone has exactly one server
        assert len({s.slot for s in backend.all_servers}) == len(backend.all_servers)   # under a name of its own
        assert len(servers) >= max(4, per_instance * len(view)) or (previous and len(servers) == len(previous.backend("be_p").servers))
        if previous is None:
            assert len(servers) == max(4, len(view) if not kv else 1 << max(0, 2 * len(view) - 1).bit_length())
        assert not backend.extra or (not kv and previous and len(servers) == len(previous.backend("be_p").servers))   # dynamic: the slots ran out
        if previous is not None and len(servers) >= len(previous.backend("be_p").servers):
            before = names_of(previous, "p")
            assert all(names_of(table, "p")[i] == name for i, name in before.items() if int(i.split("-")[1]) in view)
        previous = table


def test_arrivals_take_slots_in_registration_order_however_they_were_batched():
    """Two gateways on one catalog: one saw the instances arrive one by one, the other in one view."""
    # Registered in the order c, a, b (CreateIndex); their ids sort a, b, c.
    arrivals = [replace(inst("products", n), create_index=index) for n, index in ((3, 10), (1, 11), (2, 12))]
    one_by_one = None
    for count in range(1, 4):
        one_by_one = build_route_table(snap(*arrivals[:count]), one_by_one)
    at_once = build_route_table(snap(*sorted(arrivals, key=lambda i: i.id)))
    assert slots_of(one_by_one, "products") == slots_of(at_once, "products") == {"products-3": "s1", "products-1": "s2", "products-2": "s3"}


# ---------------------------------------------------------------- environments and sticky cookies


ENVIRONMENTS_KV = {"shopgate/gateway/environments/staging/bind": b"127.0.0.1:8081",
                   "shopgate/gateway/environments/qa/hosts": b"qa.example"}


def test_each_environment_gets_its_own_backend_and_routes_and_prod_keeps_its_names():
    staging = inst("products", 2, tags=("env=staging",))
    qa = replace(inst("products", 3), meta=(("env", "qa"),))
    table = build_route_table(snap(inst("products", 1), staging, qa, kv=ENVIRONMENTS_KV))
    assert [(b.name, b.environment) for b in table.backends] == [
        ("be_products", "prod"), ("be_products:qa", "qa"), ("be_products:staging", "staging")]
    members = {b.name: {s.instance_key for s in b.servers if s.occupied} for b in table.backends}
    assert members == {"be_products": {"node1/products-1"}, "be_products:qa": {"node1/products-3"},
                       "be_products:staging": {"node1/products-2"}}
    assert {(r.environment, r.backend, r.path_prefix) for r in table.routes} == {
        ("prod", "be_products", "/api/v1/products"), ("qa", "be_products:qa", "/api/v1/products"),
        ("staging", "be_products:staging", "/api/v1/products")}
    assert table.rejected == ()


def test_the_env_tag_wins_over_meta_and_unreadable_environments_are_rejected_not_routed_to_prod():
    tag_and_meta = replace(inst("p", 1, tags=("env=staging",)), meta=(("env", "qa"),))
    two_tags = inst("p", 2, tags=("env=staging", "env=qa"))
    bad_tag = inst("p", 3, tags=("env=Staging",))
    bad_meta = replace(inst("p", 4), meta=(("env", "a b"),))
    table = build_route_table(snap(tag_and_meta, two_tags, bad_tag, bad_meta, kv=ENVIRONMENTS_KV))
    assert [(b.name, [s.instance_key for s in b.servers if s.occupied]) for b in table.backends] == [("be_p:staging", ["node1/p-1"])]
    assert table.rejected == (
        "service p, instance 'node1/p-2': tags name several environments ('qa', 'staging')",
        "service p, instance 'node1/p-3': environment 'Staging' is not 1-32 of a-z 0-9 _ - starting with a letter or digit",
        "service p, instance 'node1/p-4': environment 'a b' is not 1-32 of a-z 0-9 _ - starting with a letter or digit",
    )


def test_an_environment_without_a_bind_or_hosts_is_reported_and_gets_no_frontend():
    table = build_route_table(snap(inst("p", 1, tags=("env=dev",))))
    assert table.rejected == ("environment dev: no shopgate/gateway/environments/dev/bind or /hosts, its instances get no traffic",)
    assert [(f.name, f.routes) for f in frontends(table, "127.0.0.1:8080")] == [("shopgate", ())]


def test_frontends_carry_only_their_environments_routes():
    table = build_route_table(snap(inst("p", 1), inst("p", 2, tags=("env=staging",)), inst("p", 3, tags=("env=qa",)), kv=ENVIRONMENTS_KV))
    entry, staging = frontends(table, "127.0.0.1:8080")
    assert (entry.name, entry.bind, entry.selectors, entry.default_environment) == ("shopgate", "127.0.0.1:8080", (("qa", ("qa.example",)),), "prod")
    assert {r.environment for _, r in entry.routes} == {"prod", "qa"}
    assert (staging.name, staging.bind, staging.selectors, staging.default_environment) == ("fe_staging", "127.0.0.1:8081", (), "staging")
    assert [r.backend for _, r in staging.routes] == ["be_p:staging"]


def test_an_environment_may_not_take_the_gateways_own_listeners():
    table = build_route_table(snap(inst("p", 1), kv=ENVIRONMENTS_KV), taken_binds={"127.0.0.1:8081": "the entry point"})
    assert [e.name for e in table.settings.environments] == ["qa"]
    assert "shopgate/gateway/environments/staging/bind: 127.0.0.1:8081 is already the entry point's bind; staging is not served" in table.rejected


def test_sticky_slots_carry_a_cookie_derived_from_the_instance_whatever_its_slot():
    kv = {"shopgate/services/p/sticky": b"cookie"}
    first = build_route_table(snap(inst("p", 1), inst("p", 2), kv=kv))
    # the same instances in another order, on a gateway with no history: other slots, same cookies
    other = build_route_table(snap(inst("p", 2), kv=kv))
    cookies = {s.instance_key: s.cookie for s in first.backend("be_p").servers if s.occupied}
    assert cookies["node1/p-1"] != cookies["node1/p-2"] and all(len(c) == 12 for c in cookies.values())
    assert other.backend("be_p").server("s1").cookie == cookies["node1/p-2"] == cookie_value("node1/p-2")
    plain = build_route_table(snap(inst("p", 1)))
    assert all(s.cookie is None for s in plain.backend("be_p").servers)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.text(max_size=80), min_size=1, max_size=8))
def test_any_instance_id_gives_a_safe_unique_dynamic_server_name(ids):
    """Instance ids come from the catalog: as server names they reach `add server be/<name>` on the runtime API."""
    taken: set[str] = set()
    for n, instance_id in enumerate(ids):
        name = dynamic_server_name(instance_id, f"node1/{n}", taken)
        assert SERVER_NAME.fullmatch(name) and name not in taken and not (name[0] == "s" and name[1:].isdigit())
        taken.add(name)


#: Views of four services, each instance with a status and maybe a route tag, an environment, or a bad port.
INSTANCE_VIEW = st.tuples(st.sampled_from(["passing", "critical"]),
                          st.sampled_from([(), ("urlprefix-/shared",), ("urlprefix-/own/x",), ("env=staging",), ("urlprefix-bad path",)]),
                          st.sampled_from([None, 70000]))
SERVICE_VIEWS = st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                                         st.dictionaries(st.integers(1, 6), INSTANCE_VIEW, max_size=6), max_size=4),
                         min_size=2, max_size=10)


@settings(max_examples=150, deadline=None)
@given(views=SERVICE_VIEWS)
def test_a_table_built_on_the_previous_one_is_the_table_the_full_pass_builds(views):
    """Unchanged services come as the very same tuples (as the watcher hands them on), so only the
    changed ones are looked at; routes, conflicts, reports and backends must still be the full pass's."""
    previous, tuples = None, {}
    for view in views:
        services = {}
        for service, members in view.items():
            instances = tuple(inst(service, n, status, tags, port=port) for n, (status, tags, port) in sorted(members.items()))
            services[service] = tuples[service] if tuples.get(service) == instances else instances
        tuples = services
        snapshot = Snapshot(services=dict(services))
        table = build_route_table(snapshot, previous)
        assert table == build_route_table(snapshot, replace(previous, memo={}) if previous else None)
        assert table.backends == tuple(b for s in sorted(services) for b in table.backends if b.service == s)
        previous = table
