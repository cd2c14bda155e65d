"""HAProxy's request log under load stays bounded: a real `shopgate gateway --log-max-bytes 20000 --log-keep 2`,
its HAProxy, a real backend, a few thousand requests through the entry point; then a reload HAProxy refuses
after rotations still reports HAProxy's own alert (read from the truncated log by offset). And a controller
that adopted a running HAProxy rotates its log too."""

from __future__ import annotations

import re
import signal
import threading

import requests

from gateway_harness import eventually, gateway_factory  # noqa: F401  (fixture)
from shopgate.settings import GATEWAY_LOG_CHECK_SECONDS
from shopgate.tool.load import Load, Target, summarize
from test_gateway_safety import reload_refused

LIMIT = 20_000
REQUESTS = 3000
RATE = 120
# The live log may pass the limit by what is written between two checks; allow several checks' worth.
SLACK_SECONDS = 5 * GATEWAY_LOG_CHECK_SECONDS
_NUMBERED = re.compile(r"GET /api/v1/products/load-(\d+) ")


def numbers(path) -> list[int]:
    """The load's request numbers logged in `path`."""
    return [int(n) for n in _NUMBERED.findall(path.read_text(errors="replace"))]


def test_the_request_log_stays_bounded_under_load_and_a_refused_reload_still_reports_haproxys_alert(gateway_factory):
    gateway = gateway_factory(args=("--log-max-bytes", str(LIMIT), "--log-keep", "2"))
    backend = gateway.start_backend("products")
    eventually("products routed", lambda: gateway.routed("products", {backend.port}))
    live = gateway.state_dir / "haproxy.log"

    sizes: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            sizes.append(live.stat().st_size)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    targets = [Target("GET", f"/api/v1/products/load-{i}") for i in range(REQUESTS)]   # request i has path load-i
    try:
        records = Load(gateway.url, targets, rate=RATE, concurrency=16, max_requests=REQUESTS, duration=REQUESTS / RATE + 60).run()
    finally:
        done.set()
        sampler.join()
    summary = summarize(records)
    assert (summary["requests"], summary["failed"]) == (REQUESTS, 0), summary["first_failures"]

    holes = [path.name for path in gateway.state_dir.glob("haproxy.log*") if b"\0" in path.read_bytes()]
    assert not holes, "no holes of zeros: after a truncation HAProxy writes at the new end"
    line_bytes = max(len(line) + 1 for path in gateway.state_dir.glob("haproxy.log*")
                     for line in path.read_text(errors="replace").splitlines() if _NUMBERED.search(line))
    written = REQUESTS * line_bytes
    bound = LIMIT + SLACK_SECONDS * RATE * line_bytes
    assert bound < written / 2, "the load writes enough to show the bound"
    assert max(sizes) < bound, f"the live log reached {max(sizes)} bytes (limit {LIMIT}, {written} written)"
    rotations = gateway.status()["log"]["rotations"]
    assert rotations >= 2, f"{rotations} rotation(s) for {written} bytes"
    assert gateway.metric("shopgate_gateway_log_rotations_total") == rotations

    # One request at a time until the controller rotates again: the live log is then nearly empty, so the
    # newest request stays in it (no rotation can move it to .1 before it is read).
    # (Until a deadline, not for a number of requests: the controller looks at the size every
    # GATEWAY_LOG_CHECK_SECONDS, and a quick machine sends many requests in that time.)
    ticks = iter(range(10**9))

    def rotated_again() -> bool:
        requests.get(f"{gateway.url}/api/v1/products/tick-{next(ticks)}", timeout=5).raise_for_status()
        return gateway.status()["log"]["rotations"] > rotations

    eventually("another rotation while requests keep coming", rotated_again, interval=0.01)
    requests.get(f"{gateway.url}/api/v1/products/newest", timeout=5).raise_for_status()
    eventually("the newest request is in the live log", lambda: "GET /api/v1/products/newest " in live.read_text())
    status_log = gateway.status()["log"]
    assert status_log["bytes"] < LIMIT and status_log["path"] == str(live) and status_log["last_error"] is None

    assert not numbers(live), "every request of the load is older than the last rotation"
    older = [gateway.state_dir / f"haproxy.log.{n}" for n in (1, 2)]
    kept = [numbers(path) for path in older]
    assert all("GET /api/v1/products/" in path.read_text() for path in older), "the older files hold request lines"
    assert kept[1] and max(kept[1]) > REQUESTS // 2, "haproxy.log.2 holds the later part of the load"
    assert not kept[0] or min(kept[0]) > min(kept[1]), "haproxy.log.1 is newer than haproxy.log.2"
    assert min(kept[1]) > 100, "the oldest requests' lines were dropped with the third older file"
    assert sorted(p.name for p in gateway.state_dir.glob("haproxy.log*")) == ["haproxy.log", "haproxy.log.1", "haproxy.log.2"]

    # A reload HAProxy refuses (the port is taken: only the reload finds out) still shows HAProxy's alert.
    reloads = gateway.status()["reloads"]
    with reload_refused(gateway) as (rejected, _):
        assert "cannot bind" in rejected, "HAProxy's own alert is read from the rotated log"
        assert requests.get(f"{gateway.url}/api/v1/products/x", timeout=5).status_code == 200
    assert gateway.status()["reloads"] == reloads


def test_a_new_controller_rotates_the_log_of_the_haproxy_it_adopted_without_holes(gateway_factory):
    gateway = gateway_factory(args=("--log-max-bytes", str(LIMIT), "--log-keep", "2"))
    backend = gateway.start_backend("products")
    eventually("products routed", lambda: gateway.routed("products", {backend.port}))
    haproxy_pid = gateway.status()["haproxy_pid"]
    gateway.process.signal(signal.SIGKILL)   # HAProxy keeps serving, its stdout still the first controller's file
    gateway.process.popen.wait(timeout=10)
    gateway.start()
    assert gateway.status()["haproxy_pid"] == haproxy_pid, "adopted, not replaced"

    sent = 0
    with requests.Session() as session:
        while gateway.status()["log"]["rotations"] < 2:
            assert sent < 20 * LIMIT // 100, f"fewer than 2 rotations after {sent} requests"
            for _ in range(20):
                session.get(f"{gateway.url}/api/v1/products/load-{sent}", timeout=5).raise_for_status()
                sent += 1
    assert gateway.status()["log"]["last_error"] is None
    files = sorted(gateway.state_dir.glob("haproxy.log*"))
    assert [p.name for p in files] == ["haproxy.log", "haproxy.log.1", "haproxy.log.2"]
    holes = [path.name for path in files if b"\0" in path.read_bytes()]
    assert not holes, "the adopted HAProxy writes at the new end after a truncation"
    assert numbers(gateway.state_dir / "haproxy.log.1"), "the rotated file holds the adopted HAProxy's request lines"
