"""`shopgate up --detach` → requests reach all five services → `scale` up and down → `status` → `down`.

One real stack (catalog, gateway with HAProxy, 5 services × 2 instances) on free ports in a tmp
state dir, shared by the tests of this module in order; the last test takes it down and checks
that no process of it is left.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import socket
import subprocess
import time

import pytest
import requests

from shopgate.processes import free_port, pid_alive, shopgate_argv
from shopgate.settings import SHOP_SERVICES
from shopgate.tool.manifest import Manifest, Ports, ProcessRecord
from stack_harness import StackUnderTest


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = StackUnderTest(tmp_path_factory.mktemp("stack"))
    try:
        stack.up_output = stack.up(instances=2).stdout
        yield stack
    finally:
        stack.cleanup()


def instances_answering(stack: StackUnderTest, service: str, requests_count: int = 12) -> set[str]:
    """The X-Instance values seen for `service` through the entry point."""
    seen = set()
    for _ in range(requests_count):
        response = requests.get(f"{stack.ports.entry_url}/api/v1/{service}", timeout=5)
        assert response.status_code == 200, f"{service}: HTTP {response.status_code} {response.text[:200]}"
        seen.add(response.headers["X-Instance"])
    return seen


def test_up_prints_progress_and_urls(stack):
    out = stack.up_output
    assert "✓ catalog" in out and "✓ gateway" in out
    for service in SHOP_SERVICES:
        assert f"✓ {service} ×2" in out and f"routed at /api/v1/{service}" in out
    assert f"{stack.ports.entry_url}/api/v1/<service>" in out
    assert stack.ports.stats_url in out
    assert f"{stack.ports.catalog_url}/ui/" in out
    assert stack.ports.status_url in out


def test_entry_point_routes_to_both_instances_of_every_service(stack):
    for service in SHOP_SERVICES:
        seen = instances_answering(stack, service)
        assert len(seen) == 2 and all(s.startswith(f"{service}-") for s in seen), seen


def test_https_with_the_local_ca_curl_line_and_status(stack):
    """The curl line `up` prints works as printed (the local CA verifies the KV certificate), over HTTP/2 too,
    and `status` names the certificate served; a client without SNI (by IP) gets the localhost one as default."""
    ca = stack.state_dir / "tls-local" / "ca.pem"
    line = next(line.split("try HTTPS", 1)[1].strip() for line in stack.up_output.splitlines() if "try HTTPS" in line)
    assert line == f"curl --cacert {ca} https://localhost:{stack.ports.https}/api/v1/products"
    assert f"local CA           {ca}" in stack.up_output and f"https://localhost:{stack.ports.https}/api/v1/<service>" in stack.up_output
    for extra in (["--http1.1"], ["--http2"]):
        result = subprocess.run([*shlex.split(line), *extra, "-sS", "-D", "-", "-o", "/dev/null"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        head = result.stdout.lower()
        assert head.startswith("http/2 200" if extra == ["--http2"] else "http/1.1 200") and "x-instance: products-" in head, head
    by_ip = subprocess.run(["curl", "--cacert", str(ca), "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            f"https://127.0.0.1:{stack.ports.https}/api/v1/users"], capture_output=True, text=True, timeout=30)
    assert by_ip.stdout == "200", by_ip.stderr
    assert stat.S_IMODE(os.stat(stack.state_dir / "tls-local" / "ca-key.pem").st_mode) == 0o600
    status = stack.run("status").stdout
    assert f"https: 127.0.0.1:{stack.ports.https} serves shopgate/tls/certs/localhost (localhost, expires in 90 days" in status, status
    assert "rejected 0" in status and f"try HTTPS          {line}" in status


def test_a_second_stack_in_the_same_dir_is_refused(stack):
    result = stack.run("up", "--detach", *stack.port_args(), timeout=30)
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_a_taken_port_is_refused(stack, tmp_path):
    other = StackUnderTest(tmp_path)
    args = other.port_args()
    args[args.index("--gateway-port") + 1] = str(stack.ports.gateway)   # the running stack's entry point
    result = other.run("up", "--detach", *args, timeout=30)
    assert result.returncode == 1
    assert f"{stack.ports.gateway} (gateway" in result.stderr
    assert other.manifest() is None


def test_scale_up_and_down(stack):
    result = stack.run("scale", "products", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "products: 2 → 4 instances" in result.stdout
    running = [r for r in stack.manifest().instances("products") if r.running()]
    assert len(running) == 4
    assert len(instances_answering(stack, "products", 16)) == 4

    result = stack.run("scale", "products", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "products: 4 → 1 instances" in result.stdout
    gone = [r for r in running if r not in stack.manifest().instances("products")]
    assert len(gone) == 3 and not any(pid_alive(r.pid) for r in gone)
    assert len(instances_answering(stack, "products", 6)) == 1
    catalog = requests.get(f"{stack.ports.catalog_url}/v1/health/service/products", timeout=5).json()
    assert len(catalog) == 1, "the stopped instances deregistered themselves"


def test_scale_rejects_unknown_service(stack):
    result = stack.run("scale", "billing", "2")
    assert result.returncode == 1 and "unknown service 'billing'" in result.stderr


def test_status_table_and_json(stack):
    result = stack.run("status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("SERVICE"))
    assert header.split() == ["SERVICE", "ENV", "INSTANCE", "ADDRESS", "PID", "HEALTH", "GATEWAY"]
    for service in SHOP_SERVICES:
        rows = [line for line in lines if line.startswith(service + " ")]
        assert len(rows) == (1 if service == "products" else 2), rows
        assert all(row.split()[1] == "prod" and "passing" in row and "ready" in row for row in rows), rows
    assert any(line.startswith("gateway: haproxy pid") for line in lines)

    report = json.loads(stack.run("status", "--json").stdout)
    assert set(report["services"]) >= set(SHOP_SERVICES)
    assert all(i["routed"] and i["environment"] == "prod" and i["backend"] == "be_users" for i in report["services"]["users"])
    assert report["gateway"]["haproxy_pid"]


def test_down_leaves_no_process(stack):
    pids = stack.live_pids()
    assert len(pids) >= 2 + 9, f"the stack's processes, children included: {pids}"
    result = stack.run("down")
    assert result.returncode == 0, result.stderr
    assert not [pid for pid in pids if pid_alive(pid)]
    assert stack.manifest() is None
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", stack.ports.gateway))   # the entry point's port is free again


@pytest.mark.parametrize("stop_with", ["ctrl-c", "shopgate down"])
def test_foreground_up_stops_cleanly(tmp_path, stop_with):
    stack = StackUnderTest(tmp_path)
    proc = subprocess.Popen(shopgate_argv("up", "--instances", "1", "--state-dir", str(stack.state_dir), *stack.port_args()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = []
        for line in proc.stdout:
            output.append(line)
            stack.remember()
            if "Ctrl-C stops the stack" in line:
                break
        assert proc.poll() is None, "".join(output)
        stack.remember()
        pids = stack.live_pids()
        assert requests.get(f"{stack.ports.entry_url}/api/v1/orders", timeout=5).status_code == 200
        if stop_with == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            down = stack.run("down", timeout=90)
            assert down.returncode == 0 and "asking the foreground shopgate" in down.stdout, down.stdout + down.stderr
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(output) + rest
        assert "stopped." in rest
        time.sleep(0.2)
        assert not [pid for pid in pids if pid_alive(pid)]
        assert stack.manifest() is None
    finally:
        if proc.poll() is None:
            proc.kill()
        stack.cleanup()


def test_down_never_signals_a_process_that_reused_a_recorded_pid(tmp_path):
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state_dir = tmp_path / "stale"
        state_dir.mkdir()
        record = ProcessRecord("catalog", bystander.pid, shopgate_argv("catalog", "--port", "1"), str(state_dir / "catalog.log"))
        Manifest(state_dir, Ports(), "config_templates", processes=[record]).save()
        result = subprocess.run(shopgate_argv("down", "--state-dir", str(state_dir)), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        time.sleep(0.2)
        assert bystander.poll() is None, "down signalled a process that is not the one it started"
        assert not (state_dir / "stack.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_status_without_a_stack_says_so(tmp_path):
    result = subprocess.run(shopgate_argv("status", "--state-dir", str(tmp_path)), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"no stack is running in {tmp_path}" in result.stderr


def test_up_with_a_staging_environment(tmp_path):
    """`up --env staging=PORT`: every service also runs in staging, served only on PORT; its orders stay
    in staging (its own database, its own peers); `status` shows both environments; `down` stops all."""
    stack = StackUnderTest(tmp_path)
    staging_port = free_port()
    staging_url = f"http://127.0.0.1:{staging_port}"
    try:
        result = stack.run("up", "--detach", "--instances", "1", "--env", f"staging={staging_port}", *stack.port_args(), timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{staging_url}/api/v1/<service>" in result.stdout and f"{stack.ports.entry_url}/api/v1/<service>" in result.stdout
        manifest = stack.manifest()
        ports = {env: {s: {r.port for r in manifest.instances(s, env)} for s in SHOP_SERVICES} for env in ("prod", "staging")}
        assert all(len(p) == 1 for by_service in ports.values() for p in by_service.values()), ports
        kv = requests.get(f"{stack.ports.catalog_url}/v1/kv/shopgate/gateway/environments/staging/bind?raw", timeout=5)
        assert kv.text == f"127.0.0.1:{staging_port}"

        for env, url in (("prod", stack.ports.entry_url), ("staging", staging_url)):
            for service in SHOP_SERVICES:
                answered = {requests.get(f"{url}/api/v1/{service}", timeout=5).headers["X-Instance"] for _ in range(6)}
                assert answered == {f"{service}-{port}" for port in ports[env][service]}, (env, service, answered)

        order = requests.post(f"{staging_url}/api/v1/orders", json={"user_id": 1, "product_id": 1, "quantity": 1}, timeout=15)
        assert order.status_code == 201, order.text
        location = order.headers["Location"]
        assert requests.get(staging_url + location, timeout=5).status_code == 200
        assert requests.get(stack.ports.entry_url + location, timeout=5).status_code == 404, "prod has its own orders"

        status = stack.run("status")
        assert "staging entry point" in status.stdout and staging_url in status.stdout
        rows = [line.split() for line in status.stdout.splitlines() if line.startswith("products ")]
        assert sorted(row[1] for row in rows) == ["prod", "staging"] and all("ready" in row for row in rows), rows

        pids = stack.live_pids()
        assert stack.run("down").returncode == 0
        assert not [pid for pid in pids if pid_alive(pid)]
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", staging_port))   # the staging entry point is closed
    finally:
        stack.cleanup()


def test_up_refuses_an_environment_port_that_is_taken_or_given_twice(tmp_path):
    stack = StackUnderTest(tmp_path)
    result = stack.run("up", "--detach", "--env", f"staging={stack.ports.gateway}", *stack.port_args(), timeout=30)
    assert result.returncode == 1 and f"{stack.ports.gateway} (environment staging" in result.stderr
    result = stack.run("up", "--detach", "--env", "prod=9999", *stack.port_args(), timeout=30)
    assert result.returncode == 2 and "prod is served on the entry point" in result.stderr
    assert stack.manifest() is None
