"""The controller's own HTTP endpoint: `/status` (JSON for people and `shopgate status`), `/ready`
(200 or 503, for an outer balancer's health check) and `/metrics`.

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

from gateway.model import RouteTable

log = logging.getLogger("shopgate.gateway.status")


def status_view(running: RouteTable, wanted: RouteTable, live: Mapping[tuple[str, str], Mapping[str, str]], *,
                last_apply: float | None, last_error: str | None, reloads: int, runtime_updates: int,
                rejected_configs: Iterable[str], last_good_at: float | None, haproxy_pid: int | None,
                config_hash: str | None, ready: str | None, catalog: Mapping[str, object], guard_reason: str | None, now: float) -> dict:
    """The /status document: per service what HAProxy runs (`live`: (backend, slot) -> `show stat` row),
    then what was applied, refused (by routing in `wanted`, or by HAProxy) and held back."""
    services = {}
    for backend in running.backends:
        services[backend.service] = {
            "backend": backend.name,
            "routes": [r.url_prefix + r.strip_option for r in running.routes if r.backend == backend.name],
            "slots": len(backend.servers),
            "servers": [
                {"slot": s.slot, "instance": s.instance_key, "address": s.address, "port": s.port, "weight": s.weight,
                 "state": s.state, "haproxy_status": live.get((backend.name, s.slot), {}).get("status")}
                for s in backend.servers if s.occupied
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
    }


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
