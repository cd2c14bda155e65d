"""Running table vs wanted table (gateway.diff.plan_changes): reload only for structure, runtime changes otherwise."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from gateway.apply import membership_commands
from gateway.diff import as_reload, plan_changes
from gateway.model import Instance, MembershipChange, Snapshot
from gateway.routing import build_route_table, rebuilt_services


def inst(n: int, status: str = "passing", tags: tuple[str, ...] = (), service: str = "p") -> Instance:
    return Instance(service=service, id=f"{service}-{n}", node="node1", address=f"10.0.0.{n}", port=9000 + n, tags=tags, status=status)


def table(*instances: Instance, kv: dict[str, bytes] | None = None, previous=None, services: tuple[str, ...] = ()):
    services: dict[str, tuple[Instance, ...]] = {name: () for name in services}
    for instance in instances:
        services[instance.service] = services.get(instance.service, ()) + (instance,)
    return build_route_table(Snapshot(services=services, kv=kv or {}), previous)


def plan_between(before: tuple[Instance, ...], after: tuple[Instance, ...], kv_before=None, kv_after=None):
    running = table(*before, kv=kv_before)
    return plan_changes(running, table(*after, kv=kv_after, previous=running))


def test_nothing_running_needs_a_full_config():
    plan = plan_changes(None, table(inst(1)))
    assert plan.needs_reload and plan.structural_reasons == ("no running configuration",)


def test_the_same_table_needs_nothing():
    running = table(inst(1), inst(2))
    assert plan_changes(running, table(inst(1), inst(2), previous=running)).empty


def test_a_new_instance_is_added_to_a_spare_slot_without_reload():
    plan = plan_between((inst(1),), (inst(1), inst(2)))
    assert not plan.needs_reload
    assert plan.membership == (MembershipChange("be_p", "s2", "add", "10.0.0.2", 9002, 100),)


def test_always_reload_turns_a_membership_change_into_a_reload_and_leaves_the_rest():
    membership = plan_between((inst(1),), (inst(1), inst(2)))
    assert as_reload(membership, "--always-reload").structural_reasons == ("--always-reload: 1 slot change(s)",)
    assert as_reload(membership, "--always-reload").membership == ()
    running = table(inst(1))
    assert as_reload(plan_changes(running, table(inst(1), previous=running)), "--always-reload").empty
    structural = plan_changes(None, running)
    assert as_reload(structural, "--always-reload") == structural


def test_a_vanished_instance_is_removed_through_drain():
    plan = plan_between((inst(1), inst(2)), (inst(1),))
    assert plan.membership == (MembershipChange("be_p", "s2", "remove", "10.0.0.2", 9002, 100),)


def test_failing_and_recovering_instances_are_runtime_changes():
    assert plan_between((inst(1), inst(2)), (inst(1), inst(2, "critical"))).membership == (MembershipChange("be_p", "s2", "remove", "10.0.0.2", 9002, 100),)
    assert plan_between((inst(1), inst(2, "critical")), (inst(1), inst(2))).membership == (MembershipChange("be_p", "s2", "add", "10.0.0.2", 9002, 100),)
    # A failing instance that then leaves: nothing serves differently.
    assert plan_between((inst(1), inst(2, "critical")), (inst(1),)).empty


def test_an_instance_entering_maintenance_drains():
    plan = plan_between((inst(1),), (inst(1, "maintenance"),))
    assert plan.membership == (MembershipChange("be_p", "s1", "drain", "10.0.0.1", 9001, 100),)


def test_an_instance_moving_to_a_new_port_is_re_added_in_its_slot():
    plan = plan_between((inst(1),), (replace(inst(1), port=9999),))
    assert plan.membership == (MembershipChange("be_p", "s1", "add", "10.0.0.1", 9999, 100),)


def test_service_maintenance_and_canary_weights_need_no_reload():
    instances = (inst(1, tags=("canary",)), inst(2))
    drained = plan_between(instances, instances, kv_after={"shopgate/services/p/maintenance": b"true"})
    assert not drained.needs_reload
    assert {(c.slot, c.action) for c in drained.membership} == {("s1", "drain"), ("s2", "drain")}
    weighted = plan_between(instances, instances, kv_after={"shopgate/services/p/weights": b'{"canary": 5}'})
    assert weighted.membership == (MembershipChange("be_p", "s1", "weight", "10.0.0.1", 9001, 5),)


def test_structural_changes_say_why():
    base = (inst(1),)
    assert plan_between(base, base + (inst(1, service="q"),)).structural_reasons == (
        "route added: /api/v1/q -> be_q", "backend be_q added")
    assert plan_between(base + (inst(1, service="q"),), base).structural_reasons == (
        "route removed: /api/v1/q -> be_q", "backend be_q removed")
    assert plan_between(base, (inst(1, tags=("urlprefix-/shop/p strip=/shop",)),)).structural_reasons == (
        "route added: /shop/p -> be_p strip=/shop", "route removed: /api/v1/p -> be_p")
    assert plan_between(base, base, kv_after={"shopgate/services/p/balance": b"leastconn"}).structural_reasons == (
        "backend be_p: settings changed (balance)",)
    assert plan_between(base, base, kv_after={"shopgate/gateway/retries": b"1"}).structural_reasons == (
        "gateway setting retries: 3 -> 1",)
    assert plan_between(base, base, kv_after={"shopgate/gateway/stats_auth": b"a:secret"}).structural_reasons == (
        "gateway setting stats_user: None -> a", "gateway setting stats_password: changed")


def test_exhausted_slots_mean_dynamic_servers_created_and_deleted_without_reload():
    two = (inst(1), inst(2))                     # 4 slots (headroom x2)
    grown = two + (inst(3), inst(4), inst(5), inst(6))
    plan = plan_between(two, grown)
    assert not plan.needs_reload
    assert [(c.slot, c.action) for c in plan.membership] == [("s3", "add"), ("s4", "add"), ("p-5", "create"), ("p-6", "create")]
    running = table(*two)
    wanted = table(*grown, previous=running)
    back = plan_changes(wanted, table(*two, previous=wanted))
    assert [(c.slot, c.action) for c in back.membership] == [("s3", "remove"), ("s4", "remove"), ("p-5", "delete"), ("p-6", "delete")]
    assert membership_commands(plan.membership[2], None) == [
        "add server be_p/p-5 10.0.0.5:9005 weight 100 check inter 1s downinter 20ms fall 2 rise 1", "enable health be_p/p-5",
        "set server be_p/p-5 state ready", "set server be_p/p-5 health down"]
    assert membership_commands(back.membership[2]) == ["set server be_p/p-5 state drain"]


def test_exhausted_slots_of_a_static_balance_backend_mean_a_reload_with_more_slots():
    static = {"shopgate/services/p/balance": b"source"}
    two = (inst(1), inst(2))
    plan = plan_between(two, two + (inst(3), inst(4), inst(5)), kv_before=static, kv_after=static)
    assert plan.structural_reasons == ("backend be_p: slots 4 -> 16",)
    assert plan.membership == ()


def test_an_invalid_kv_value_changes_nothing():
    base = (inst(1),)
    assert plan_between(base, base, kv_after={"shopgate/services/p/balance": b"fastest"}).empty


def test_a_hostname_instance_needs_a_reload_because_the_runtime_api_takes_ips_only():
    named = Instance(service="p", id="p-2", node="node1", address="app-2.internal", port=9002)
    plan = plan_between((inst(1),), (inst(1), named))
    assert plan.structural_reasons == ("backend be_p: s2 gets hostname address app-2.internal (the runtime API sets IP addresses only)",)
    # Once loaded, it fails and recovers through the runtime API like any other.
    running = table(inst(1), named)
    failing = table(inst(1), replace(named, status="critical"), previous=running)
    assert plan_changes(running, failing).membership == (MembershipChange("be_p", "s2", "remove", "app-2.internal", 9002, 100),)


def serving_view(servers) -> dict[str, tuple]:
    """slot -> (address, port, weight) of the slots that take new requests."""
    return {s.slot: (s.address, s.port, s.weight) for s in servers if s.state == "ready"}


@settings(max_examples=150, deadline=None)
@given(
    before=st.dictionaries(st.integers(1, 10), st.sampled_from(["passing", "critical", "maintenance"]), max_size=10),
    after=st.dictionaries(st.integers(1, 10), st.sampled_from(["passing", "critical", "maintenance"]), max_size=10),
    canary=st.sets(st.integers(1, 10)),
    weights=st.sampled_from([None, b'{"canary": 0}', b'{"canary": 30}']),
)
def test_applying_the_membership_plan_to_the_running_servers_gives_the_wanted_servers(before, after, canary, weights):
    def instances(view):
        return tuple(inst(n, status, tags=("canary",) if n in canary else ()) for n, status in view.items())

    kv = {"shopgate/services/p/weights": weights} if weights else {}
    running = table(*instances(before), services=("p",))
    wanted = table(*instances(after), kv=kv, previous=running, services=("p",))
    plan = plan_changes(running, wanted)
    if plan.needs_reload:
        return  # the reload writes `wanted` whole
    runtime = {s.slot: [s.address, s.port, s.weight, s.state == "ready"] for s in running.backend("be_p").all_servers}
    for change in plan.membership:
        if change.action == "create":
            assert change.slot not in runtime
            runtime[change.slot] = [change.address, change.port, change.weight, change.ready]
            continue
        if change.action == "delete":
            del runtime[change.slot]
            continue
        slot = runtime[change.slot]
        if change.action == "add":
            slot[:] = [change.address, change.port, change.weight, True]
        elif change.action == "weight":
            slot[2] = change.weight
        else:  # drain, remove: no new requests
            slot[3] = False
    assert {name: tuple(v[:3]) for name, v in runtime.items() if v[3]} == serving_view(wanted.backend("be_p").all_servers)


STICKY = {"shopgate/services/p/sticky": b"cookie"}


def test_a_sticky_slot_getting_a_new_instance_reloads_because_cookies_cannot_be_set_at_runtime():
    plan = plan_between((inst(1),), (inst(1), inst(2)), STICKY, STICKY)
    assert plan.structural_reasons == ("backend be_p: sticky slot(s) s2 get another instance (cookies change only by reload)",)


def test_a_sticky_instance_leaving_or_failing_goes_straight_to_maint_so_its_clients_move_at_once():
    plan = plan_between((inst(1), inst(2)), (inst(1),), STICKY, STICKY)
    assert plan.membership == (MembershipChange("be_p", "s2", "remove", "10.0.0.2", 9002, 100, sticky=True),)
    assert membership_commands(plan.membership[0]) == ["set server be_p/s2 state maint"]
    plain = plan_between((inst(1), inst(2)), (inst(1),))
    assert membership_commands(plain.membership[0]) == ["set server be_p/s2 state drain"]


def test_a_sticky_instance_recovering_in_its_own_slot_and_canary_weights_stay_runtime_changes():
    weights = {**STICKY, "shopgate/services/p/weights": b'{"canary": 10}'}
    recovered = plan_between((inst(1), inst(2, status="critical")), (inst(1), inst(2)), STICKY, STICKY)
    assert recovered.membership == (MembershipChange("be_p", "s2", "add", "10.0.0.2", 9002, 100),)
    canary = plan_between((inst(1), inst(2, tags=("canary",))), (inst(1), inst(2, tags=("canary",))), STICKY, weights)
    assert canary.membership == (MembershipChange("be_p", "s2", "weight", "10.0.0.2", 9002, 10),)


def test_staging_instances_never_join_a_prod_backend_and_their_arrival_adds_a_backend():
    plan = plan_between((inst(1),), (inst(1), inst(2, tags=("env=staging",))))
    assert plan.structural_reasons[:2] == ("route added: /api/v1/p -> be_p:staging", "backend be_p:staging added")


def test_one_changed_service_among_1000_is_planned_alone():
    """The incremental path: one instance failing among 1,000 services rebuilds that service only, and
    the plan is that one slot's runtime commands, no reload; the table is what a full rebuild gives."""
    services = [f"svc{n:04d}" for n in range(1000)]
    running = table(*(inst(n, service=name) for name in services for n in (1, 2)))
    changed = {name: running.memo["services"][name].instances for name in services}   # the watcher's tuples, reused
    changed["svc0500"] = (changed["svc0500"][0], replace(changed["svc0500"][1], status="critical"))
    snapshot = Snapshot(services=changed)
    wanted = build_route_table(snapshot, running)
    plan = plan_changes(running, wanted)
    assert not plan.needs_reload
    commands = [c for change in plan.membership for c in membership_commands(change)]
    assert commands == ["set server be_svc0500/s2 state drain"]
    assert rebuilt_services(wanted) == ("svc0500",)
    assert wanted == build_route_table(snapshot, replace(running, memo={}))   # the full pass agrees


def test_a_new_service_among_many_rebuilds_only_itself():
    running = table(*(inst(1, service=f"svc{n:03d}") for n in range(50)))
    services = {name: running.memo["services"][name].instances for name in running.memo["services"]}
    wanted = build_route_table(Snapshot(services={**services, "extra": (inst(1, service="extra"),)}), running)
    assert rebuilt_services(wanted) == ("extra",)
    assert plan_changes(running, wanted).structural_reasons == ("route added: /api/v1/extra -> be_extra", "backend be_extra added")
