"""The flap hold-down (gateway.flap) as a pure function: flips counted in a window, holds, expiry, reset."""

from __future__ import annotations

from hypothesis import given, settings as hypothesis_settings, strategies as st

from gateway.flap import FlapState, observe
from gateway.model import BackendSettings, Instance, Snapshot
from gateway.routing import build_route_table

POLICY = {"web": BackendSettings(flap_limit=2, flap_window_ms=10_000, flap_hold_ms=30_000)}


def _web(*statuses: str) -> dict[str, tuple[Instance, ...]]:
    return {"web": tuple(Instance("web", f"web-{n}", "node1", "127.0.0.1", 9000 + n, status=status)
                         for n, status in enumerate(statuses))}


def _run(views: list[tuple[float, str]], policy=POLICY, state: FlapState | None = None) -> FlapState:
    """Observe instance web-0 with status `status` at each time `t`."""
    state = state or FlapState()
    for t, status in views:
        state = observe(state, _web(status), policy, t)
    return state


KEY = "node1/web-0"


def test_flips_up_to_the_limit_hold_nothing_and_one_more_holds():
    state = _run([(0, "passing"), (1, "critical"), (2, "passing")])    # 2 flips: the limit allows them
    assert state.held(2) == frozenset()
    state = _run([(3, "critical")], state=state)                        # the third flip: held
    assert state.held(3) == {KEY}
    assert state.report(3) == {"web": [{"instance": KEY, "flips": 3, "held_for_seconds": 30.0}]}


def test_flips_older_than_the_window_do_not_count():
    state = _run([(0, "passing"), (1, "critical"), (2, "passing"), (11.5, "critical")])   # flip at 1 is out of 10 s
    assert state.held(11.5) == frozenset()
    assert state.services["web"][KEY].flips == (2, 11.5)


def test_the_hold_lasts_flap_hold_after_the_last_flip_and_each_flip_extends_it():
    state = _run([(0, "passing"), (1, "critical"), (2, "passing"), (3, "critical")])
    assert state.next_expiry(3) == 33
    state = _run([(5, "passing")], state=state)                        # healthy again, but flipped: held to 35
    assert state.held(34.9) == {KEY} and state.next_expiry(5) == 35
    assert state.held(35) == frozenset() and state.next_expiry(35) is None


def test_after_the_hold_the_count_starts_afresh():
    state = _run([(0, "passing"), (1, "critical"), (2, "passing"), (3, "critical"), (4, "passing")])
    state = _run([(40, "passing")], state=state)        # hold over (34): history reset
    assert state.services["web"][KEY].flips == () and state.held(40) == frozenset()
    state = _run([(41, "critical"), (42, "passing")], state=state)
    assert state.held(42) == frozenset()                # two flips: within the limit again


def test_an_instance_that_leaves_and_a_service_without_flap_limit_lose_their_history():
    held = _run([(0, "passing"), (1, "critical"), (2, "passing"), (3, "critical")])
    assert observe(held, {"web": ()}, POLICY, 4).services == {"web": {}}
    assert observe(held, _web("critical"), {"web": BackendSettings()}, 4).held(4) == frozenset()   # flap_limit removed
    assert observe(held, _web("critical"), {}, 4).services == {}


def test_a_new_instance_coming_up_is_no_flip_whether_or_not_it_was_seen_critical_first():
    seen_critical = _run([(0, "critical"), (0.1, "passing"), (1, "critical"), (2, "passing")])
    seen_passing = _run([(0.1, "passing"), (1, "critical"), (2, "passing")])
    assert seen_critical.services["web"][KEY].flips == seen_passing.services["web"][KEY].flips == (1, 2)
    assert seen_critical.held(2) == frozenset(), "registered critical, first check passing: coming up, not flapping"
    never_up = _run([(0, "critical"), (1, "critical")])
    assert never_up.services["web"][KEY].flips == ()


def test_the_same_view_seen_twice_is_no_flip():
    state = _run([(0, "passing"), (1, "critical"), (1.5, "critical"), (2, "critical")])
    assert state.services["web"][KEY].flips == (1,)


def test_route_warning_decides_whether_warning_to_passing_is_a_flip():
    views = [(0, "passing"), (1, "warning"), (2, "passing"), (3, "warning")]
    assert _run(views).held(3) == {KEY}
    tolerant = {"web": BackendSettings(flap_limit=2, flap_window_ms=10_000, route_warning=True)}
    assert _run(views, policy=tolerant).held(3) == frozenset()


def test_routing_keeps_a_held_instance_out_like_an_unhealthy_one():
    snapshot = Snapshot(services=_web("passing", "passing"))
    table = build_route_table(snapshot, held=frozenset({KEY}))
    states = {s.instance_key: s.state for s in table.backend("be_web").servers if s.occupied}
    assert states == {KEY: "maint", "node1/web-1": "ready"}
    released = build_route_table(snapshot, table)        # the hold ran out: same slot, ready again
    assert {s.instance_key: s.state for s in released.backend("be_web").servers if s.occupied} == {KEY: "ready", "node1/web-1": "ready"}
    assert [s.slot for s in released.backend("be_web").servers if s.occupied] == [s.slot for s in table.backend("be_web").servers if s.occupied]


@hypothesis_settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 4), window=st.integers(1, 20), hold=st.integers(1, 20),
       views=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["passing", "warning", "critical", "maintenance"])), max_size=30))
def test_an_instance_is_held_exactly_when_it_flipped_more_than_the_limit_within_the_window_since_its_last_hold(limit, window, hold, views):
    """Against a plain re-count: held at t iff some flip f made (flips in (f-window, f] since the last hold) > limit
    and t < f + hold (with the count reset when a hold ran out); changes count once the instance was routable."""
    policy = {"web": BackendSettings(flap_limit=limit, flap_window_ms=window * 1000, flap_hold_ms=hold * 1000)}
    state, t = FlapState(), 0.0
    flips: list[float] = []
    held_until: float | None = None
    healthy: bool | None = None
    came_up = False   # routable once: only then do changes count (a new instance's first rise is no flip)
    for gap, status in views:
        t += gap
        state = observe(state, _web(status), policy, t)
        now_healthy = status == "passing"
        if held_until is not None and held_until <= t:
            flips, held_until = [], None
        if healthy is not None and now_healthy != healthy and came_up:
            flips.append(t)
            if len([f for f in flips if f > t - window]) > limit:
                held_until = t + hold
        healthy, came_up = now_healthy, came_up or now_healthy
        assert (KEY in state.held(t)) == (held_until is not None and held_until > t)
        assert state.next_expiry(t) == (held_until if held_until is not None and held_until > t else None)
