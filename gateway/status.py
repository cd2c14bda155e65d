"""The controller's own HTTP endpoint: `/status` (JSON for people and `shopgate status`), `/ready`
(200 or 503, for an outer balancer's health check) and `/metrics`.

/status `services` is keyed by service name for prod backends and `<service>@<env>` for the
others; every entry names its service, environment and backend.

`status_view` writes the /status document from plain data (the tables, HAProxy's `show stat`
rows, counters), so what /status says is decided here, away from the controller's loop.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.model import BackendSettings, RouteTable
from gateway.tls import CertEntry
from shopgate.settings import DEFAULT_ENVIRONMENT

log = logging.getLogger("shopgate.gateway.status")


def status_view(running: RouteTable, wanted: RouteTable, live: Mapping[tuple[str, str], Mapping[str, str]], *,
                last_apply: float | None, last_error: str | None, reloads: int, runtime_updates: int,
                rejected_configs: Iterable[str], last_good_at: float | None, haproxy_pid: int | None,
                config_hash: str | None, ready: str | None, catalog: Mapping[str, object], guard_reason: str | None, now: float,
                flap_held: Mapping[str, list[dict]] | None = None, tls: dict | None = None, request_log: dict | None = None) -> dict:
    """The /status document: per service what HAProxy runs (`live`: (backend, slot) -> `show stat` row),
    then what was applied, refused (by routing in `wanted`, or by HAProxy) and held back.

    `flap_held`: gateway.flap's report (service -> held instances with `held_for_seconds`); shown per
    service as `flap_held` with `held_until` in wall-clock seconds. `request_log`: HAProxy's request log, its
    size and rotations (gateway.log_rotation.LogRotator.view)."""
    services = {}
    for backend in running.backends:
        services[status_key(backend.service, backend.environment)] = {
            "service": backend.service,
            "environment": backend.environment,
            "backend": backend.name,
            "discovery": backend.settings.discovery,
            "routes": [r.url_prefix + r.strip_option for r in running.routes if r.backend == backend.name],
            "slots": len(backend.servers),
            "dynamic_servers": len(backend.extra),
            "guards": guards_view(backend.settings),
            "flap_held": [{**held, "held_until": round(now + held["held_for_seconds"], 3)}
                          for held in (flap_held or {}).get(backend.service, [])
                          if any(s.instance_key == held["instance"] for s in backend.all_servers)],   # this environment's
            "servers": dns_servers(backend.name, [s.slot for s in backend.servers], live) if backend.settings.by_dns else [
                {"slot": s.slot, "instance": s.instance_key, "address": s.address, "port": s.port, "weight": s.weight,
                 "state": s.state, "haproxy_status": live.get((backend.name, s.slot), {}).get("status"), "dynamic": dynamic}
                for servers, dynamic in ((backend.servers, False), (backend.extra, True)) for s in servers if s.occupied
            ],
        }
    return {
        "services": services,
        "last_apply": last_apply,
        "last_error": last_error,
        "reloads": reloads,
        "runtime_updates": runtime_updates,
        "rejected": list(wanted.rejected) + list(rejected_configs),
        "config_age_seconds": round(now - last_good_at, 3) if last_good_at else None,
        "haproxy_pid": haproxy_pid,
        "config_hash": config_hash,
        "ready": ready is None,
        "not_ready_reason": ready,
        "catalog": dict(catalog),
        "guard": {"holding": guard_reason is not None, "reason": guard_reason},
        "tls": tls or {"https": None},
        "log": request_log,
    }


def tls_view(https: str | None, held: Iterable[CertEntry], rejected: Iterable[str], refused: Iterable[str],
             now: float, expiring_days: float) -> dict:
    """The /status `tls` section: the certificates served (names, SANs, dates; never a key) and the skipped ones."""
    if not https:
        return {"https": None}
    certificates = [entry.summary(now, expiring_days) for entry in held]
    return {
        "https": https,
        "certificates": certificates,
        "expiring": [c["id"] for c in certificates if c["expiring"]],
        "rejected": list(rejected) + list(refused),
    }


def guards_view(settings: BackendSettings) -> dict:
    """The route guards and routing choices a service runs with (user names only, never their hashes)."""
    return {"rate_limit": settings.rate_limit, "rate_burst": settings.rate_burst or settings.rate_limit,
            "allow": list(settings.allow), "deny": list(settings.deny), "auth_users": [u for u, _ in settings.auth],
            "route_warning": settings.route_warning, "flap_limit": settings.flap_limit,
            "flap_window_seconds": settings.flap_window_ms / 1000, "flap_hold_seconds": settings.flap_hold_ms / 1000}


def status_key(service: str, environment: str) -> str:
    """A backend's key in /status `services`: the service name for prod (as before environments), else service@env."""
    return service if environment == DEFAULT_ENVIRONMENT else f"{service}@{environment}"
def dns_servers(backend: str, slots: list[str], live: Mapping[tuple[str, str], Mapping[str, str]]) -> list[dict]:
    """A DNS-mode backend's servers as HAProxy's resolver filled them (`show stat`): slots it left in MAINT are empty."""
    found = []
    for slot in slots:
        row = live.get((backend, slot), {})
        if row and not row.get("status", "").startswith("MAINT"):
            address, _, port = row.get("addr", "").rpartition(":")
            found.append({"slot": slot, "address": address, "port": int(port) if port.isdigit() else None,
                          "haproxy_status": row.get("status")})
    return found


class StatusServer:
    """Serves `status()` as JSON on /status, `ready()` on /ready (None: 200, else 503 with the reason)
    and `registry` on /metrics, in a daemon thread."""

    def __init__(self, bind: str, status: Callable[[], dict], registry: CollectorRegistry, ready: Callable[[], str | None]):
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--status: expected host:port, got {bind!r}")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/status":
                    body, kind, code = json.dumps(status(), indent=2).encode(), "application/json", 200
                elif path == "/ready":
                    reason = ready()
                    body = json.dumps({"ready": reason is None, "reason": reason}).encode()
                    kind, code = "application/json", 200 if reason is None else 503
                elif path == "/metrics":
                    body, kind, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                else:
                    body, kind, code = b'{"error": "not found; try /status, /ready or /metrics"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True)

    def start(self) -> "StatusServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
