"""The local stack: `shopgate up`, `down`, `status` and `scale`.

A stack is one state directory: a manifest (`stack.json`) with the pid and argv of every process
`up` or `scale` started, plus their logs and data. `down`, `status` and `scale` work from that
manifest alone, and check `/proc/<pid>/cmdline` before they signal anything, so they touch exactly
the processes the stack started — never a process that merely reused a pid.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import requests

from catalog.records import NODE_MAINTENANCE_ID, SERVICE_MAINTENANCE_PREFIX
from shopgate import settings
from shopgate.processes import (ManagedProcess, file_tail, free_port, group_members, pid_alive, process_cmdline,
                                shopgate_argv)

MANIFEST = "stack.json"
#: How long a service instance may take to drain and deregister after SIGTERM before it is killed.
SERVICE_STOP_TIMEOUT = settings.drain_seconds_from_env() + 15


class StackError(Exception):
    """Something the user must hear about: printed as one clear message, exit code 1."""


# ---------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Ports:
    catalog: int = settings.CATALOG_PORT
    gateway: int = settings.GATEWAY_PORT
    stats: int = settings.STATS_PORT
    status: int = settings.STATUS_PORT

    @property
    def catalog_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.catalog}"

    @property
    def entry_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.gateway}"

    @property
    def stats_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.stats}/"

    @property
    def status_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.status}/status"

    def urls(self) -> list[tuple[str, str]]:
        return [
            ("entry point", self.entry_url + "/api/v1/<service>"),
            ("HAProxy stats", self.stats_url),
            ("catalog UI", self.catalog_url + "/ui/"),
            ("controller status", self.status_url),
        ]


@dataclass
class ProcessRecord:
    """One process the stack started, with what it takes to recognise it later."""

    name: str                    # "catalog", "gateway", "products-3"
    pid: int
    argv: list[str]
    log: str
    service: str | None = None   # set for shop service instances
    port: int | None = None

    def running(self) -> bool:
        """Alive and still running our argv (a reused pid runs something else)."""
        deadline = time.monotonic() + 1
        while pid_alive(self.pid):
            cmdline = process_cmdline(self.pid)
            if cmdline or time.monotonic() > deadline:
                return cmdline == self.argv
            time.sleep(0.01)   # just exec'ed: the kernel fills in the new command line a moment later
        return False


@dataclass
class Manifest:
    """Everything `down`, `status` and `scale` need to know about a stack."""

    state_dir: Path
    ports: Ports
    templates: str
    processes: list[ProcessRecord] = field(default_factory=list)
    next_index: dict[str, int] = field(default_factory=dict)
    supervisor: ProcessRecord | None = None   # the foreground `shopgate up`, None when detached
    started_at: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return self.state_dir / MANIFEST

    def component(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name and p.service is None), None)

    def instances(self, service: str) -> list[ProcessRecord]:
        return [p for p in self.processes if p.service == service]

    def services(self) -> list[str]:
        seen = [p.service for p in self.processes if p.service]
        return list(dict.fromkeys([*settings.SHOP_SERVICES, *seen]))

    def running(self) -> list[ProcessRecord]:
        return [p for p in [self.supervisor, *self.processes] if p is not None and p.running()]

    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, state_dir: Path) -> "Manifest | None":
        path = state_dir / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            supervisor = data.pop("supervisor")
            return cls(
                state_dir=state_dir,
                ports=Ports(**data.pop("ports")),
                processes=[ProcessRecord(**p) for p in data.pop("processes")],
                supervisor=ProcessRecord(**supervisor) if supervisor else None,
                **{k: v for k, v in data.items() if k != "state_dir"},
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"{path}: not a readable stack manifest ({exc}); remove it if no stack runs there")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def manifest_lock(state_dir: Path) -> Iterator[None]:
    """Serialise every read-modify-write of one state directory's manifest."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_manifest(state_dir: Path) -> Manifest:
    """The manifest of a stack that runs in state_dir, or a StackError that says what to do."""
    manifest = Manifest.load(state_dir)
    if manifest is None or not manifest.running():
        raise StackError(f"no stack is running in {state_dir} (start one with `shopgate up --detach --state-dir {state_dir}`)")
    return manifest


# ---------------------------------------------------------------- processes


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
                  service: str | None = None, port: int | None = None) -> ProcessRecord:
    """Start a component in its own process group, log to the state dir, and record it in the manifest."""
    log = manifest.state_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = ManagedProcess(name, argv, log_path=log, env=env).start()
    record = ProcessRecord(name, proc.pid, argv, str(log), service, port)
    manifest.processes.append(record)
    manifest.save()
    return record


def start_instance(manifest: Manifest, service: str) -> ProcessRecord:
    """One more self-registering instance of `service`, on a port chosen here so we know its address."""
    index = manifest.next_index.get(service, 0) + 1
    manifest.next_index[service] = index
    port = free_port()
    data_dir = manifest.state_dir / "data" / service   # one database per service, shared by its instances
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = shopgate_argv("service", service, "--port", str(port), "--bind", settings.LOOPBACK, "--data-dir", str(data_dir))
    return start_process(manifest, f"{service}-{index}", argv, service=service, port=port,
                         env={"CONSUL_HTTP_ADDR": manifest.ports.catalog_url})


def ensure_alive(records: list[ProcessRecord]) -> None:
    for record in records:
        if not record.running():
            raise StackError(f"{record.name} (pid {record.pid}) exited; last lines of {record.log}:\n{file_tail(Path(record.log), 25)}")


# ---------------------------------------------------------------- what the catalog and the gateway say


def catalog_instances(catalog_url: str, service: str) -> list[dict]:
    """Every registered instance of `service` with its aggregated health (passing/warning/critical)."""
    response = requests.get(f"{catalog_url}/v1/health/service/{service}", timeout=3)
    response.raise_for_status()
    result = []
    for entry in response.json():
        svc = entry["Service"]
        statuses = {check.get("Status", "critical") for check in entry.get("Checks", [])}
        health = next((s for s in ("critical", "warning") if s in statuses), "passing")
        maintenance = any(c.get("CheckID", "").startswith((SERVICE_MAINTENANCE_PREFIX, NODE_MAINTENANCE_ID))
                          for c in entry.get("Checks", []))
        result.append({
            "id": svc["ID"],
            "address": svc.get("Address") or entry["Node"].get("Address", ""),
            "port": svc["Port"],
            "health": "maintenance" if maintenance else health,
        })
    return result


def passing_ports(catalog_url: str, service: str) -> set[int]:
    """Ports of the instances of `service` that the catalog reports passing (maintenance is not passing)."""
    return {i["port"] for i in catalog_instances(catalog_url, service) if i["health"] == "passing"}


def gateway_status(ports: Ports) -> dict:
    response = requests.get(ports.status_url, timeout=3)
    response.raise_for_status()
    return response.json()


def is_routed(server: dict) -> bool:
    """A gateway server slot that takes new requests: wanted ready, and HAProxy sees it UP."""
    haproxy_status = str(server.get("haproxy_status") or "").upper()
    return server.get("state") == "ready" and (haproxy_status.startswith("UP") or haproxy_status == "NO CHECK")


def routed_ports(status: dict, service: str) -> set[int]:
    servers = status.get("services", {}).get(service, {}).get("servers", [])
    return {int(s["port"]) for s in servers if is_routed(s) and s.get("port")}


def entry_routes(ports: Ports, service: str) -> bool:
    try:
        return requests.get(f"{ports.entry_url}/api/v1/{service}", timeout=3).status_code == 200
    except requests.RequestException:
        return False


# ---------------------------------------------------------------- progress display


class Progress:
    """A line per component: a spinner while it starts, then ✓ with the elapsed time."""

    SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def done(self, label: str, detail: str = "") -> None:
        self._clear()
        print(f"  ✓ {label:<30} {self.elapsed():5.1f}s  {detail}".rstrip(), file=self.stream, flush=True)

    def wait(self, label: str, probe: Callable[[], tuple[bool, str]], timeout: float,
             watch: list[ProcessRecord] = (), detail: str = "") -> None:
        """Poll `probe` (→ ready, what it saw) until ready; fail with what it saw, or with the log of a process that died."""
        deadline = time.monotonic() + timeout
        seen, tick = "no answer yet", 0
        while True:
            ensure_alive(list(watch))
            try:
                ready, seen = probe()
            except (requests.RequestException, ValueError, KeyError) as exc:
                ready, seen = False, str(exc)
            if ready:
                self.done(label, detail)
                return
            if time.monotonic() > deadline:
                self._clear()
                raise StackError(f"{label}: not ready after {timeout:.0f}s ({seen})")
            if self.live:
                tick += 1
                self.stream.write(f"\r  {self.SPINNER[tick % len(self.SPINNER)]} {label:<30} {self.elapsed():5.1f}s  {seen[:70]}\033[K")
                self.stream.flush()
            time.sleep(0.1)

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")


def wait_for_instances(manifest: Manifest, service: str, progress: Progress, timeout: float = 60) -> None:
    """Until every local instance of `service` passes in the catalog and the gateway routes to each one."""
    wanted = {r.port for r in manifest.instances(service) if r.running()}

    def ready() -> tuple[bool, str]:
        passing = passing_ports(manifest.ports.catalog_url, service)
        routed = routed_ports(gateway_status(manifest.ports), service)
        ok = wanted <= passing and wanted <= routed and (not wanted or entry_routes(manifest.ports, service))
        return ok, f"{len(wanted & passing)}/{len(wanted)} passing in the catalog, {len(wanted & routed)}/{len(wanted)} routed"

    watch = [r for r in manifest.instances(service) if r.port in wanted]
    progress.wait(f"{service} ×{len(wanted)}", ready, timeout, watch, f"passing, routed at /api/v1/{service}")


# ---------------------------------------------------------------- up


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `up` and `demo` share: where the state lives and which ports to use."""
    parser.add_argument("--state-dir", type=Path, default=settings.STATE_DIR, help="pids, logs and data of the stack (default: %(default)s)")
    parser.add_argument("--instances", type=positive_int, default=2, help="instances per service (default: %(default)s)")
    parser.add_argument("--catalog-port", type=int, default=settings.CATALOG_PORT)
    parser.add_argument("--gateway-port", type=int, default=settings.GATEWAY_PORT)
    parser.add_argument("--stats-port", type=int, default=settings.STATS_PORT)
    parser.add_argument("--status-port", type=int, default=settings.STATUS_PORT)
    parser.add_argument("--templates", type=Path, default=settings.TEMPLATES_DIR, help="haproxy.cfg templates, watched live (default: %(default)s)")


def taken_ports(ports: Ports) -> list[str]:
    taken = []
    for name, port in asdict(ports).items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((settings.LOOPBACK, port))
            except OSError:
                taken.append(f"{port} ({name}, --{name}-port)")
    return taken


def ports_from_args(args: argparse.Namespace) -> Ports:
    return Ports(args.catalog_port, args.gateway_port, args.stats_port, args.status_port)


def prepare(state_dir: Path, ports: Ports, templates: Path, supervised: bool) -> Manifest:
    """Refuse a second stack in the same directory or on taken ports; write the new, empty manifest."""
    state_dir = state_dir.resolve()
    if not templates.is_dir() or not any(templates.iterdir()):
        raise StackError(f"--templates {templates}: not a directory of haproxy.cfg templates")
    with manifest_lock(state_dir):
        old = Manifest.load(state_dir)
        if old is not None and old.running():
            pids = ", ".join(str(p.pid) for p in old.running())
            raise StackError(f"a stack is already running in {state_dir} (pids {pids}); stop it with `shopgate down --state-dir {state_dir}`")
        taken = taken_ports(ports)
        if taken:
            raise StackError("port already in use on 127.0.0.1: " + ", ".join(taken) + " — stop what uses it or choose another port")
        if old is not None:
            print(f"(a stale manifest of a stopped stack in {state_dir} was replaced)")
        supervisor = None
        if supervised:
            supervisor = ProcessRecord("shopgate up", os.getpid(), process_cmdline(os.getpid()) or [], "")
        manifest = Manifest(state_dir, ports, str(templates.resolve()), supervisor=supervisor)
        manifest.save()
    return manifest


def start_stack(manifest: Manifest, instances: int, progress: Progress) -> None:
    """Catalog, then gateway, then every service; return once the entry point routes to each service."""
    state, ports = manifest.state_dir, manifest.ports
    catalog = start_process(manifest, "catalog", shopgate_argv(
        "catalog", "--bind", settings.LOOPBACK, "--port", str(ports.catalog), "--data-dir", str(state / "data" / "catalog")))
    progress.wait("catalog", lambda: (requests.get(f"{ports.catalog_url}/v1/status/leader", timeout=2).status_code == 200, "starting"),
                  30, [catalog], ports.catalog_url)
    gateway = start_process(manifest, "gateway", shopgate_argv(
        "gateway", "--consul", ports.catalog_url,
        "--listen", f"{settings.LOOPBACK}:{ports.gateway}", "--stats", f"{settings.LOOPBACK}:{ports.stats}",
        "--status", f"{settings.LOOPBACK}:{ports.status}", "--state-dir", str(state / "gateway"),
        "--templates", manifest.templates))
    progress.wait("gateway + HAProxy", lambda: (gateway_status(ports).get("haproxy_pid") is not None, "starting"),
                  30, [catalog, gateway], ports.entry_url)
    with manifest_lock(manifest.state_dir):
        for service in settings.SHOP_SERVICES:
            for _ in range(instances):
                start_instance(manifest, service)
    for service in settings.SHOP_SERVICES:
        wait_for_instances(manifest, service, progress)


def stop_stack(manifest: Manifest, out=None) -> None:
    """Services first (they drain and deregister), then the gateway, then the catalog."""
    out = out or sys.stdout
    with manifest_lock(manifest.state_dir):
        current = Manifest.load(manifest.state_dir) or manifest   # `scale` may have added instances
        services = [p for p in current.processes if p.service]
        print(f"stopping {len(services)} service instances (drain, deregister)…", file=out, flush=True)
        stop_records(services, SERVICE_STOP_TIMEOUT)
        for name in ("gateway", "catalog"):
            record = current.component(name)
            if record is not None:
                print(f"stopping {name}…", file=out, flush=True)
                stop_records([record], 15)
        current.remove()
    print("stopped.", file=out, flush=True)


@contextlib.contextmanager
def scratch_stack(instances: int = 1, out=sys.stderr) -> Iterator[Manifest]:
    """A whole stack on free ports in a temporary directory, stopped on exit — for benchmarks."""
    with tempfile.TemporaryDirectory(prefix="shopgate-stack-") as tmp:
        ports = Ports(free_port(), free_port(), free_port(), free_port())
        manifest = prepare(Path(tmp), ports, settings.TEMPLATES_DIR, supervised=True)
        try:
            with contextlib.redirect_stdout(out):
                start_stack(manifest, instances, Progress(out))
            yield manifest
        finally:
            stop_stack(manifest, out)


def print_urls(ports: Ports, out=None) -> None:
    out = out or sys.stdout
    print("", file=out)
    for label, url in ports.urls():
        print(f"  {label:<18} {url}", file=out)
    print("", file=out, flush=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM stops a foreground command the way Ctrl-C does: through its cleanup."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def up_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shopgate up", description="Run the whole local stack: catalog, gateway with HAProxy, 5 services.")
    add_stack_arguments(parser)
    parser.add_argument("--detach", action="store_true", help="leave the stack running and return (stop it with `shopgate down`)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    try:
        manifest = prepare(args.state_dir, ports_from_args(args), args.templates, supervised=not args.detach)
    except StackError as exc:
        print(f"shopgate up: {exc}", file=sys.stderr)
        return 1
    progress = Progress()
    print(f"starting shopgate in {manifest.state_dir}")
    try:
        start_stack(manifest, args.instances, progress)
        print(f"ready in {progress.elapsed():.1f}s")
        print_urls(manifest.ports)
        if args.detach:
            print(f"running detached; `shopgate status --state-dir {manifest.state_dir}` shows it, `shopgate down --state-dir {manifest.state_dir}` stops it")
            return 0
        print("Ctrl-C stops the stack.", flush=True)
        while True:
            time.sleep(0.5)
            ensure_alive([r for r in manifest.processes if r.service is None])
    except KeyboardInterrupt:
        code = 0
    except StackError as exc:
        print(f"\nshopgate up: {exc}", file=sys.stderr)
        code = 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("")
    stop_stack(manifest)
    return code


# ---------------------------------------------------------------- down


def down_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shopgate down", description="Stop the stack that `shopgate up` started in a state directory.")
    parser.add_argument("--state-dir", type=Path, default=settings.STATE_DIR)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    manifest = Manifest.load(state_dir)
    if manifest is None:
        print(f"shopgate down: no stack in {state_dir} (nothing to stop)")
        return 0
    supervisor = manifest.supervisor
    if supervisor is not None and supervisor.running():
        # It shares its terminal's process group: signal the pid alone; it stops the stack itself.
        print(f"asking the foreground shopgate (pid {supervisor.pid}) that runs this stack to stop it…", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.pid, signal.SIGTERM)
        deadline = time.monotonic() + SERVICE_STOP_TIMEOUT + 35
        while supervisor.running() and time.monotonic() < deadline:
            time.sleep(0.1)
    if Manifest.load(state_dir) is not None:
        stop_stack(manifest)
    return 0


# ---------------------------------------------------------------- status


def collect_status(manifest: Manifest) -> dict:
    """One joined view: local processes, catalog health and gateway slots, keyed by instance address."""
    try:
        gateway = gateway_status(manifest.ports)
        gateway_error = None
    except (requests.RequestException, ValueError) as exc:
        gateway, gateway_error = {}, f"controller status unreachable: {exc}"
    services = {}
    for service in manifest.services():
        rows: dict[tuple[str, int], dict] = {}
        for record in manifest.instances(service):
            if record.running():
                rows[(settings.LOOPBACK, record.port)] = {"process": record.name, "pid": record.pid}
        try:
            for inst in catalog_instances(manifest.ports.catalog_url, service):
                rows.setdefault((inst["address"], inst["port"]), {}).update({"id": inst["id"], "health": inst["health"]})
        except (requests.RequestException, ValueError):
            pass
        for server in gateway.get("services", {}).get(service, {}).get("servers", []):
            if server.get("port") and server.get("instance"):
                rows.setdefault((server.get("address"), int(server["port"])), {}).update({
                    "slot": server.get("slot"), "gateway_state": server.get("state"),
                    "haproxy_status": server.get("haproxy_status"), "routed": is_routed(server)})
        services[service] = [
            {"address": f"{addr}:{port}", "process": None, "pid": None, "id": None, "health": "not registered",
             "slot": None, "gateway_state": None, "haproxy_status": None, "routed": False, **row}
            for (addr, port), row in sorted(rows.items(), key=lambda kv: kv[0][1])
        ]
    return {
        "state_dir": str(manifest.state_dir),
        "urls": dict(manifest.ports.urls()),
        "uptime_seconds": round(time.time() - manifest.started_at, 1),
        "components": {name: (r.pid if (r := manifest.component(name)) and r.running() else None) for name in ("catalog", "gateway")},
        "services": services,
        "gateway": {k: gateway.get(k) for k in ("last_apply", "last_error", "reloads", "runtime_updates", "rejected", "config_age_seconds", "haproxy_pid")},
        "gateway_error": gateway_error,
    }


def format_age(value) -> str:
    """Gateway times arrive as epoch seconds or text; show seconds-ago for the former."""
    if isinstance(value, (int, float)) and value > 1e9:
        return f"{time.time() - value:.0f}s ago"
    return "—" if value in (None, "") else str(value)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Lines of columns padded to their widest cell, header first (the tables of `status` and `demo`)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]


def format_status(report: dict) -> str:
    lines = [f"shopgate stack in {report['state_dir']} — up {report['uptime_seconds']:.0f}s"]
    lines += [f"  {label:<18} {url}" for label, url in report["urls"].items()]
    lines.append("")
    header = ("SERVICE", "INSTANCE", "ADDRESS", "PID", "HEALTH", "GATEWAY")
    rows = []
    for service, instances in report["services"].items():
        if not instances:
            rows.append((service, "—", "", "", "no instances", ""))
        for inst in instances:
            gateway = "not in gateway"
            if inst["slot"]:
                gateway = f"{inst['slot']} {inst['gateway_state']} {inst['haproxy_status'] or ''}".strip()
            rows.append((service, inst["id"] or inst["process"] or "?", inst["address"],
                         str(inst["pid"] or "—"), inst["health"], gateway))
    lines += table(header, rows)
    gw = report["gateway"]
    lines.append("")
    if report["gateway_error"]:
        lines.append(f"gateway: {report['gateway_error']}")
    else:
        rejected = gw.get("rejected") or []
        lines.append(
            f"gateway: haproxy pid {gw.get('haproxy_pid') or '—'}, last apply {format_age(gw.get('last_apply'))}, "
            f"last error {gw.get('last_error') or '—'}, reloads {gw.get('reloads', 0)}, "
            f"runtime updates {gw.get('runtime_updates', 0)}, rejected inputs {len(rejected) if isinstance(rejected, list) else rejected}")
    return "\n".join(lines)


def status_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shopgate status", description="Services, instances and gateway state of a running stack.")
    parser.add_argument("--state-dir", type=Path, default=settings.STATE_DIR)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        report = collect_status(running_manifest(args.state_dir.resolve()))
    except StackError as exc:
        print(f"shopgate status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


# ---------------------------------------------------------------- scale


def scale(manifest: Manifest, service: str, count: int, progress: Progress) -> tuple[int, int]:
    """Start or stop local instances until `count` run; wait for the gateway to follow. Returns (before, after)."""
    alive = [r for r in manifest.instances(service) if r.running()]
    manifest.processes = [p for p in manifest.processes if p.service != service or p in alive]   # forget dead ones
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


def scale_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shopgate scale", description="Change the number of local instances of a service in a running stack.")
    parser.add_argument("service")
    parser.add_argument("count", type=int)
    parser.add_argument("--state-dir", type=Path, default=settings.STATE_DIR)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    try:
        if args.count < 0:
            raise StackError(f"instance count must be 0 or more, not {args.count}")
        with manifest_lock(state_dir):
            manifest = running_manifest(state_dir)
            if args.service not in manifest.services():
                raise StackError(f"unknown service {args.service!r}; this stack runs: {', '.join(manifest.services())}")
            before, after = scale(manifest, args.service, args.count, Progress())
    except StackError as exc:
        print(f"shopgate scale: {exc}", file=sys.stderr)
        return 1
    print(f"{args.service}: {before} → {after} instances")
    return 0
