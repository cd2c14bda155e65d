"""The commands `shopgate up`, `down`, `status` and `scale`: argument parsing, output, exit codes.

Thin on purpose: each parses its arguments, calls the lifecycle (`shopgate.tool.lifecycle`) and
the probes, and turns a StackError into one clear message and exit code 1. Nothing imports this
module but the dispatcher (`shopgate.tool.cli`); the demo and the benches use the library below it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import requests

from shopgate import settings
from shopgate.consul_client import CatalogUnavailable
from shopgate.tool.display import Progress, format_age, print_urls, table
from shopgate.tool.lifecycle import prepare, scale, start_stack, stop_stack
from shopgate.tool.local_tls import tls_lines
from shopgate.tool.manifest import SERVICE_STOP_TIMEOUT, Manifest, StackError, ensure_alive, manifest_lock, running_manifest
from shopgate.tool.options import add_stack_arguments, environment_port, ports_from_args, stop_on_sigterm
from shopgate.tool.probes import catalog_instances, gateway_status, is_routed



# ---------------------------------------------------------------- up


def up_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shopgate up", description="Run the whole local stack: catalog, gateway with HAProxy, 5 services.")
    add_stack_arguments(parser)
    parser.add_argument("--detach", action="store_true", help="leave the stack running and return (stop it with `shopgate down`)")
    parser.add_argument("--env", type=environment_port, action="append", default=[], metavar="NAME=PORT",
                        help="also run every service in environment NAME, served on 127.0.0.1:PORT (repeatable)")
    args = parser.parse_args(argv)
    environments = dict(args.env)
    if len(environments) != len(args.env):
        parser.error("--env: an environment is given twice")
    stop_on_sigterm()
    try:
        manifest = prepare(args.state_dir, ports_from_args(args), args.templates, supervised=not args.detach, environments=environments)
    except StackError as exc:
        print(f"shopgate up: {exc}", file=sys.stderr)
        return 1
    progress = Progress()
    print(f"starting shopgate in {manifest.state_dir}")
    try:
        start_stack(manifest, args.instances, progress)
        print(f"ready in {progress.elapsed():.1f}s")
        print_urls(stack_urls(manifest))
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


def stack_urls(manifest: Manifest) -> list[tuple[str, str]]:
    """Every URL of the stack, then the local CA and a curl line that trusts it."""
    return [*manifest.urls(), *tls_lines(manifest.state_dir, manifest.ports)]


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
        for record in manifest.instances(service, environment=None):
            if record.running():
                rows[(settings.LOOPBACK, record.port)] = {"process": record.name, "pid": record.pid, "environment": record.environment}
        try:
            for entry in catalog_instances(manifest.ports.catalog_url, service):
                rows.setdefault((entry.address, entry.port), {}).update({"id": entry.id, "health": entry.status})
        except (CatalogUnavailable, ValueError):
            pass
        backends = [b for key, b in gateway.get("services", {}).items() if b.get("service", key) == service]   # every environment
        for backend in backends:
            for server in backend.get("servers", []):
                if not (server.get("port") and server.get("instance")):
                    continue
                rows.setdefault((server.get("address"), int(server["port"])), {}).update({
                    "environment": backend.get("environment", settings.DEFAULT_ENVIRONMENT), "backend": backend.get("backend"),
                    "slot": server.get("slot"), "gateway_state": server.get("state"),
                    "haproxy_status": server.get("haproxy_status"), "routed": is_routed(server)})
        services[service] = [
            {"address": f"{addr}:{port}", "process": None, "pid": None, "id": None, "health": "not registered",
             "environment": None, "backend": None, "slot": None, "gateway_state": None, "haproxy_status": None, "routed": False, **row}
            for (addr, port), row in sorted(rows.items(), key=lambda kv: kv[0][1])
        ]
    return {
        "state_dir": str(manifest.state_dir),
        "urls": dict(stack_urls(manifest)),
        "uptime_seconds": round(time.time() - manifest.started_at, 1),
        "components": {name: (r.pid if (r := manifest.component(name)) and r.running() else None) for name in ("catalog", "gateway")},
        "services": services,
        "gateway": {k: gateway.get(k) for k in ("last_apply", "last_error", "reloads", "runtime_updates", "rejected", "config_age_seconds", "haproxy_pid", "tls")},
        "gateway_error": gateway_error,
    }


def format_tls(tls: dict) -> str:
    """One line on the HTTPS entry point: each certificate served, by name and expiry, and what was refused."""
    if not tls.get("https"):
        return "https: off"
    served = ", ".join(f"{c['source']} ({' '.join(c['sni'])}, expires in {c['expires_in_days']:.0f} days"
                       f"{', EXPIRING' if c['expiring'] else ''}, sha256 {c['fingerprint_sha256'][:16]}…)"
                       for c in tls.get("certificates", [])) or "the default certificate only"
    return f"https: {tls['https']} serves {served}; rejected {len(tls.get('rejected', []))}"


def format_status(report: dict) -> str:
    lines = [f"shopgate stack in {report['state_dir']} — up {report['uptime_seconds']:.0f}s"]
    lines += [f"  {label:<18} {url}" for label, url in report["urls"].items()]
    lines.append("")
    header = ("SERVICE", "ENV", "INSTANCE", "ADDRESS", "PID", "HEALTH", "GATEWAY")
    rows = []
    for service, instances in report["services"].items():
        if not instances:
            rows.append((service, "", "—", "", "", "no instances", ""))
        for inst in instances:
            gateway = "not in gateway"
            if inst["slot"]:
                gateway = f"{inst['slot']} {inst['gateway_state']} {inst['haproxy_status'] or ''}".strip()
            rows.append((service, inst.get("environment") or "—", inst["id"] or inst["process"] or "?", inst["address"],
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
        lines.append(format_tls(gw.get("tls") or {}))
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
