"""Start, scale and stop a local stack: what `up`, `down` and `scale`, the demo and the benches do.

A library, not a command: every function takes a Manifest (or makes one) and a Progress to report
on, and raises StackError for what the user must hear about. The commands in
`shopgate.tool.commands` parse arguments and print around these; the demo and the benchmarks call
them directly (`scratch_stack` runs a whole stack on free ports for the length of a `with`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, TextIO

import requests

from gateway.routing import KV_ENVIRONMENTS
from gateway.status import status_key
from shopgate import settings
from shopgate.processes import ManagedProcess, free_port, group_members, pid_alive, process_cmdline, shopgate_argv
from shopgate.tool.display import Progress
from shopgate.tool.local_tls import LOCAL_CERT_KEY, LOCAL_NAMES, issue_local_certificate, leaf_der, local_cert_path, put_local_certificate
from shopgate.tool.manifest import SERVICE_STOP_TIMEOUT, Manifest, Ports, ProcessRecord, StackError, manifest_lock
from shopgate.tool.probes import entry_routes, gateway_status, passing_ports, routed_ports, served_certificate


def stop_records(records: list[ProcessRecord], timeout: float) -> None:
    """SIGTERM each verified process group, wait for all of them together, SIGKILL what is left."""
    live = [r for r in records if r.running()]
    for record in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(r.pid) or group_members(r.pid) for r in live):
        time.sleep(0.05)
    for record in live:
        if group_members(record.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(r.pid) or group_members(r.pid) for r in live):
        time.sleep(0.05)


def start_process(manifest: Manifest, name: str, argv: list[str], *, env: dict[str, str] | None = None,
                  service: str | None = None, port: int | None = None, environment: str = settings.DEFAULT_ENVIRONMENT) -> ProcessRecord:
    """Start a component in its own process group, log to the state dir, and record it in the manifest."""
    log = manifest.state_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(name, argv, log_path=log, env=env).start()
    record = ProcessRecord(name, proc.pid, argv, str(log), service, port, environment)
    manifest.processes.append(record)
    manifest.save()
    return record


def start_instance(manifest: Manifest, service: str, environment: str = settings.DEFAULT_ENVIRONMENT) -> ProcessRecord:
    """One more self-registering instance of `service` in `environment`, on a port chosen here so we
    know its address. Outside prod it is tagged `env=<environment>` and has that environment's database."""
    key = status_key(service, environment)   # "products", "products@staging"
    index = manifest.next_index.get(key, 0) + 1
    manifest.next_index[key] = index
    port = free_port()
    data_dir = manifest.state_dir / "data" / service   # one database per service and environment, shared by its instances
    env = {"CONSUL_HTTP_ADDR": manifest.ports.catalog_url}
    if environment != settings.DEFAULT_ENVIRONMENT:
        data_dir = manifest.state_dir / "data" / environment / service
        env["SERVICE_TAGS"] = f"env={environment}"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = shopgate_argv("service", service, "--port", str(port), "--bind", settings.LOOPBACK, "--data-dir", str(data_dir))
    return start_process(manifest, f"{key}-{index}", argv, service=service, port=port, env=env, environment=environment)


def wait_for_instances(manifest: Manifest, service: str, progress: Progress, timeout: float = 60,
                       environment: str = settings.DEFAULT_ENVIRONMENT) -> None:
    """Until every local instance of `service` in `environment` passes in the catalog and the gateway
    routes to each one on that environment's entry point."""
    wanted = {r.port for r in manifest.instances(service, environment) if r.running()}
    key, entry_url = status_key(service, environment), manifest.environment_url(environment)

    def ready() -> tuple[bool, str]:
        passing = passing_ports(manifest.ports.catalog_url, service)
        routed = routed_ports(gateway_status(manifest.ports), key)
        ok = wanted <= passing and wanted <= routed and (not wanted or entry_routes(entry_url, service))
        return ok, f"{len(wanted & passing)}/{len(wanted)} passing in the catalog, {len(wanted & routed)}/{len(wanted)} routed"

    watch = [r for r in manifest.instances(service, environment) if r.port in wanted]
    where = "" if environment == settings.DEFAULT_ENVIRONMENT else f" on {entry_url}"
    progress.wait(f"{key} ×{len(wanted)}", ready, timeout, watch, f"passing, routed at /api/v1/{service}{where}")


def taken_ports(ports: Ports, environments: dict[str, int]) -> list[str]:
    """The stack's ports (and its environments' entry ports) that are in use, or given twice."""
    wanted = [(port, f"{name}, --{name}-port") for name, port in asdict(ports).items()]
    wanted += [(port, f"environment {name}, --env {name}={port}") for name, port in environments.items()]
    taken, seen = [], set()
    for port, what in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                if port in seen:
                    raise OSError
                sock.bind((settings.LOOPBACK, port))
            except OSError:
                taken.append(f"{port} ({what})")
        seen.add(port)
    return taken


def prepare(state_dir: Path, ports: Ports, templates: Path, supervised: bool, environments: dict[str, int] | None = None) -> Manifest:
    """Refuse a second stack in the same directory or on taken ports; write the new, empty manifest.
    `environments` (name -> entry port) are started next to prod by `start_stack`."""
    state_dir = state_dir.resolve()
    if not templates.is_dir() or not any(templates.iterdir()):
        raise StackError(f"--templates {templates}: not a directory of haproxy.cfg templates")
    with manifest_lock(state_dir):
        old = Manifest.load(state_dir)
        if old is not None and old.running():
            pids = ", ".join(str(p.pid) for p in old.running())
            raise StackError(f"a stack is already running in {state_dir} (pids {pids}); stop it with `shopgate down --state-dir {state_dir}`")
        taken = taken_ports(ports, environments or {})
        if taken:
            raise StackError("port already in use on 127.0.0.1 (or given twice): " + ", ".join(taken) + " — stop what uses it or choose another port")
        if old is not None:
            print(f"(a stale manifest of a stopped stack in {state_dir} was replaced)")
        supervisor = None
        if supervised:
            supervisor = ProcessRecord("shopgate up", os.getpid(), process_cmdline(os.getpid()) or [], "")
        manifest = Manifest(state_dir, ports, str(templates.resolve()), supervisor=supervisor, environments=dict(environments or {}))
        manifest.save()
    return manifest


def stack_dns_port() -> int:
    """The catalog's DNS port: Consul's 8600 where it is free; else another free one, said aloud. DNS is a
    convenience of the local stack (dig, backends in DNS mode), not a reason to refuse to start it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind((settings.LOOPBACK, settings.DNS_PORT))
            tcp.bind((settings.LOOPBACK, settings.DNS_PORT))
        return settings.DNS_PORT
    except OSError:
        port = free_port(settings.LOOPBACK, udp_too=True)
        print(f"(DNS port {settings.DNS_PORT} is in use: the catalog answers DNS on {port}: "
              f"dig @{settings.LOOPBACK} -p {port} products.service.consul)")
        return port


def start_stack(manifest: Manifest, instances: int, progress: Progress) -> None:
    """Catalog, the local certificate in KV, then gateway (HTTP and HTTPS), then every service in prod and
    in each further environment (whose bind is written to KV first); return once the gateway serves the
    certificate and each environment's entry point routes to each service."""
    state, ports = manifest.state_dir, manifest.ports
    dns_port = stack_dns_port()
    catalog = start_process(manifest, "catalog", shopgate_argv(
        "catalog", "--bind", settings.LOOPBACK, "--port", str(ports.catalog), "--data-dir", str(state / "data" / "catalog"),
        "--dns-port", str(dns_port)))
    progress.wait("catalog", lambda: (requests.get(f"{ports.catalog_url}/v1/status/leader", timeout=2).status_code == 200, "starting"),
                  30, [catalog], ports.catalog_url)
    bundle = issue_local_certificate(state)
    put_local_certificate(ports.catalog_url, bundle)   # in KV before the gateway's first view
    gateway = start_process(manifest, "gateway", shopgate_argv(
        "gateway", "--consul", ports.catalog_url,
        "--listen", f"{settings.LOOPBACK}:{ports.gateway}", "--stats", f"{settings.LOOPBACK}:{ports.stats}",
        "--status", f"{settings.LOOPBACK}:{ports.status}", "--state-dir", str(state / "gateway"),
        "--templates", manifest.templates, "--consul-dns", f"{settings.LOOPBACK}:{dns_port}",
        "--https", f"{settings.LOOPBACK}:{ports.https}", "--default-cert", str(local_cert_path(state))))
    progress.wait("gateway + HAProxy", lambda: (gateway_status(ports).get("haproxy_pid") is not None, "starting"),
                  30, [catalog, gateway], ports.entry_url)
    progress.wait("HTTPS certificate", lambda: (served_certificate(ports.https, LOCAL_NAMES[0]) == leaf_der(bundle), "adding it through the runtime API"),
                  30, [catalog, gateway], f"{ports.https_entry_url} (KV {LOCAL_CERT_KEY})")
    environments = [settings.DEFAULT_ENVIRONMENT, *manifest.environments]
    for environment, port in manifest.environments.items():
        put_environment_bind(manifest, environment, f"{settings.LOOPBACK}:{port}")
    with manifest_lock(manifest.state_dir):
        for environment in environments:
            for service in settings.SHOP_SERVICES:
                for _ in range(instances):
                    start_instance(manifest, service, environment)
    for environment in environments:
        for service in settings.SHOP_SERVICES:
            wait_for_instances(manifest, service, progress, environment=environment)


def put_environment_bind(manifest: Manifest, environment: str, bind: str | None) -> None:
    """Write (or with None delete) KV `shopgate/gateway/environments/<env>/bind`: the gateway opens
    or closes that environment's entry point."""
    url = f"{manifest.ports.catalog_url}/v1/kv/{KV_ENVIRONMENTS}{environment}/bind"
    response = requests.put(url, data=bind, timeout=5) if bind is not None else requests.delete(url, timeout=5)
    response.raise_for_status()


def stop_stack(manifest: Manifest, out: TextIO | None = None) -> None:
    """Services first (they drain and deregister), then the gateway, then the catalog."""
    out = out or sys.stdout
    with manifest_lock(manifest.state_dir):
        current = Manifest.load(manifest.state_dir) or manifest   # `scale` may have added instances
        services = [p for p in current.processes if p.service]
        print(f"stopping {len(services)} service instances (drain, deregister)…", file=out, flush=True)
        stop_records(services, SERVICE_STOP_TIMEOUT)
        for environment in current.environments:   # what `up --env` wrote; the catalog keeps its data
            with contextlib.suppress(requests.RequestException):
                put_environment_bind(current, environment, None)
        for name in ("gateway", "catalog"):
            record = current.component(name)
            if record is not None:
                print(f"stopping {name}…", file=out, flush=True)
                stop_records([record], 15)
        current.remove()
    print("stopped.", file=out, flush=True)


@contextlib.contextmanager
def scratch_stack(instances: int = 1, out: TextIO = sys.stderr) -> Iterator[Manifest]:
    """A whole stack on free ports in a temporary directory, stopped on exit — for benchmarks."""
    with tempfile.TemporaryDirectory(prefix="shopgate-stack-") as tmp:
        ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port())
        manifest = prepare(Path(tmp), ports, settings.TEMPLATES_DIR, supervised=True)
        try:
            with contextlib.redirect_stdout(out):
                start_stack(manifest, instances, Progress(out))
            yield manifest
        finally:
            stop_stack(manifest, out)


def scale(manifest: Manifest, service: str, count: int, progress: Progress) -> tuple[int, int]:
    """Start or stop local prod instances until `count` run; wait for the gateway to follow. Returns (before, after)."""
    alive = [r for r in manifest.instances(service) if r.running()]
    dead = [r for r in manifest.instances(service) if r not in alive]
    manifest.processes = [p for p in manifest.processes if p not in dead]   # forget dead ones
    if count > len(alive):
        for _ in range(count - len(alive)):
            start_instance(manifest, service)
        wait_for_instances(manifest, service, progress)
    elif count < len(alive):
        leaving = alive[count:]
        stop_records(leaving, SERVICE_STOP_TIMEOUT)
        manifest.processes = [p for p in manifest.processes if p not in leaving]
        manifest.save()
        gone = {r.port for r in leaving}
        progress.wait(f"{service} −{len(leaving)}", lambda: (not gone & routed_ports(gateway_status(manifest.ports), service), "draining"),
                      30, detail="drained, deregistered, no longer routed")
    manifest.save()
    return len(alive), count
