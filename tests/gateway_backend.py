"""A tiny real HTTP backend for the gateway tests: it registers itself in the catalog like a service.

    python tests/gateway_backend.py --service products --consul URL [--port 0] [--tags a,b]

GET /health answers 200 (500 after POST /fail, 429 — a warning check — after POST /warn; POST /recover
undoes both), any other path answers JSON naming this instance (and the request's X-Forwarded-For),
`?sleep=0.5` delays the answer. SIGUSR1 registers it again (after a catalog wipe). On SIGTERM it deregisters first, keeps serving for
--drain seconds (the gateway moves traffic away meanwhile), then exits: a well-behaved instance.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registrar.registration import instance_id, parse_tags  # noqa: E402
from shopgate.consul_client import ConsulAddress, connect  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)
    parser.add_argument("--consul", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tags", default="")
    parser.add_argument("--drain", type=float, default=2.0)
    args = parser.parse_args()
    healthy = threading.Event()
    healthy.set()
    warning = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/health":
                code = 500 if not healthy.is_set() else 429 if warning.is_set() else 200
                self._answer(code, {"healthy": healthy.is_set(), "warning": warning.is_set()})
                return
            delay = float(parse_qs(url.query).get("sleep", ["0"])[0])
            if delay:
                time.sleep(delay)
            self._answer(200, {"service": args.service, "port": port, "path": self.path, "host": self.headers.get("Host"),
                                "forwarded_for": self.headers.get("X-Forwarded-For"), "forwarded_proto": self.headers.get("X-Forwarded-Proto")})

        def do_POST(self) -> None:
            if self.path == "/fail":
                healthy.clear()
            elif self.path == "/warn":
                warning.set()
            elif self.path == "/recover":
                healthy.set()
                warning.clear()
            self._answer(200, {"healthy": healthy.is_set()})

        def _answer(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Instance", str(port))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    service_id = instance_id(args.service, port)
    consul = connect(ConsulAddress.parse(args.consul, token=""))

    def register(*_) -> None:
        consul.agent.service.register(
            args.service, service_id=service_id, address="127.0.0.1", port=port,
            tags=list(parse_tags(args.tags)),
            check={"HTTP": f"http://127.0.0.1:{port}/health", "Interval": "1s", "Timeout": "1s"},
        )

    register()
    print(json.dumps({"port": port, "id": service_id}), flush=True)

    def leave(*_) -> None:
        def drain() -> None:
            try:
                consul.agent.service.deregister(service_id)
            except Exception as error:  # the catalog may be down: still leave
                print(f"deregister failed: {error}", file=sys.stderr)
            time.sleep(args.drain)
            server.shutdown()
        threading.Thread(target=drain, daemon=True).start()

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=register, daemon=True).start())
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
