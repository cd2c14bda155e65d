"""What an adopted HAProxy runs (gateway.adopt) and how its process is recognised (gateway.haproxy). Plain data only."""

from __future__ import annotations

from pathlib import Path

from gateway.adopt import running_table, same_structure, seed_table, served_snapshot
from gateway.diff import plan_changes
from gateway.guard import EmptyCatalogGuard
from gateway.haproxy import haproxy_argv, read_pidfile, runs_config
from gateway.model import Instance, Snapshot
from gateway.routing import build_route_table


def inst(n: int) -> Instance:
    return Instance(service="products", id=f"products-{n}", node="node1", address="10.0.0.1", port=9000 + n, create_index=n)


def rows(*slots: tuple[str, str, str]) -> dict:
    """(slot, addr, status) -> the `show stat` rows HAProxy would give for be_products."""
    return {("be_products", slot): {"addr": addr, "status": status, "weight": "100"} for slot, addr, status in slots}


LIVE = rows(("s1", "10.0.0.1:9002", "UP"), ("s2", "10.0.0.1:9001", "UP"), ("s3", "127.0.0.1:1", "MAINT"), ("s4", "127.0.0.1:1", "MAINT"))


def test_instances_keep_the_slots_the_adopted_haproxy_has_them_in():
    snapshot = Snapshot(services={"products": (inst(1), inst(2), inst(3))})
    wanted = build_route_table(snapshot, seed_table(LIVE, snapshot))
    slots = {s.slot: s.port for s in wanted.backend("be_products").servers if s.occupied}
    assert slots == {"s1": 9002, "s2": 9001, "s3": 9003}   # 1 and 2 stay where they run, 3 takes a free slot
    running = running_table(wanted, LIVE, snapshot)
    plan = plan_changes(running, wanted)
    assert not plan.needs_reload
    assert [(c.slot, c.action, c.port) for c in plan.membership] == [("s3", "add", 9003)]


def test_a_server_the_catalog_no_longer_has_is_removed_through_the_runtime_api():
    snapshot = Snapshot(services={"products": (inst(1),)})
    wanted = build_route_table(snapshot, seed_table(LIVE, snapshot))
    plan = plan_changes(running_table(wanted, LIVE, snapshot), wanted)
    assert [(c.slot, c.action, c.port) for c in plan.membership] == [("s1", "remove", 9002)]


def test_other_backends_or_slot_counts_need_a_reload():
    snapshot = Snapshot(services={"products": (inst(1),), "users": ()})
    wanted = build_route_table(snapshot, seed_table(LIVE, snapshot))
    assert running_table(wanted, LIVE, snapshot) is None   # be_users is not in the running HAProxy
    fewer = {key: row for key, row in LIVE.items() if key[1] != "s4"}
    only_products = Snapshot(services={"products": (inst(1),)})
    assert running_table(build_route_table(only_products), fewer, only_products) is None


def test_structure_ignores_only_what_the_runtime_api_changes():
    base = "backend be_x\n    balance roundrobin\n    server s1 10.0.0.1:9001 weight 100\n    server s2 127.0.0.1:1 weight 100 disabled\n"
    moved = base.replace("10.0.0.1:9001 weight 100", "10.0.0.2:9005 weight 40 disabled")
    assert same_structure(base, moved)
    assert not same_structure(base, base.replace("roundrobin", "leastconn"))
    assert not same_structure(base, base.replace("server s2", "server s3"))


def test_only_an_haproxy_of_this_state_dir_is_recognised(tmp_path):
    cfg, sock, pidfile = tmp_path / "haproxy.cfg", tmp_path / "master.sock", tmp_path / "haproxy.pid"
    argv = haproxy_argv("haproxy", cfg, sock, pidfile)
    assert runs_config(argv, cfg, sock)
    assert runs_config(argv + ["-sf", "123", "-x", "sockpair@4"], cfg, sock), "a reloaded master adds arguments"
    assert not runs_config(haproxy_argv("haproxy", Path("/other/haproxy.cfg"), sock, pidfile), cfg, sock)
    assert not runs_config(haproxy_argv("haproxy", cfg, Path("/other/master.sock"), pidfile), cfg, sock)
    assert not runs_config(["sleep", "100"], cfg, sock)
    assert not runs_config(None, cfg, sock)
    for text, pid in (("4242\n", 4242), ("", None), ("not a pid", None), ("1", None)):
        pidfile.write_text(text)
        assert read_pidfile(pidfile) == pid
    assert read_pidfile(tmp_path / "missing.pid") is None


def test_the_guard_holds_a_wiped_catalogs_first_view_against_what_the_adopted_haproxy_serves():
    served = served_snapshot({**LIVE, ("be_users", "s1"): {"addr": "10.0.0.2:7000", "status": "UP", "weight": "100"}})
    assert {name: [(i.address, i.port) for i in instances] for name, instances in served.services.items()} == {
        "products": [("10.0.0.1", 9002), ("10.0.0.1", 9001)], "users": [("10.0.0.2", 7000)]}, "ready slots only"
    guard = EmptyCatalogGuard(hold=30, window=60)
    adopted_at = 100.0
    assert guard.check(served, Snapshot(), recovered_at=adopted_at, now=101.0) is not None, "an empty first view is held"
    assert guard.check(served, Snapshot(services={"products": (inst(1),)}), recovered_at=adopted_at, now=102.0) is not None, \
        "1 of 3 is much smaller right after the adoption"
    assert guard.check(served, Snapshot(services={"products": (inst(1), inst(2))}), recovered_at=adopted_at, now=103.0) is None
