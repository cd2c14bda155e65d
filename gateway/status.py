"""The controller's own HTTP endpoint: `/status` (JSON for people and `shopgate status`) and `/metrics`."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("shopgate.gateway.status")


class StatusServer:
    """Serves `status()` as JSON on /status and `registry` on /metrics, in a daemon thread."""

    def __init__(self, bind: str, status: Callable[[], dict], registry: CollectorRegistry):
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--status: expected host:port, got {bind!r}")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/status":
                    body, kind, code = json.dumps(status(), indent=2).encode(), "application/json", 200
                elif path == "/metrics":
                    body, kind, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                else:
                    body, kind, code = b'{"error": "not found; try /status or /metrics"}', "application/json", 404
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
