"""A tiny real HTTP backend for the gateway tests: it registers itself in the catalog like a service.

    python tests/gateway_backend.py --service products --consul URL [--port 0 | --ports P1,P2,...] [--tags a,b]

GET /health answers 200 (500 after POST /fail, 429 — a warning check — after POST /warn; POST /recover
undoes both), any other path answers JSON naming this instance (and the request's X-Forwarded-For),
`?sleep=0.5` delays the answer. SIGUSR1 registers it again (after a catalog wipe). On SIGTERM it deregisters first, keeps serving for
--drain seconds (the gateway moves traffic away meanwhile), then exits: a well-behaved instance.

`--ports P1,P2,...` runs one such instance per port in this one process, each registered under its
own id with its own health state and X-Instance: many instances without as many interpreters on a
small machine (SIGTERM makes all of them leave). It prints one JSON line per instance.
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
    parser.add_argument("--ports", default="", help="comma-separated ports: one instance on each (instead of --port)")
    args = parser.parse_args()
    consul = connect(ConsulAddress.parse(args.consul, token=""))
    ports = [int(p) for p in args.ports.split(",") if p] or [args.port]
    instances = [Instance(args, consul, port) for port in ports]
    for instance in instances:
        instance.register()
        print(json.dumps({"port": instance.port, "id": instance.service_id}), flush=True)

    def leave(*_) -> None:
        def drain() -> None:
            for instance in instances:
                try:
                    consul.agent.service.deregister(instance.service_id)
                except Exception as error:  # the catalog may be down: still leave
                    print(f"deregister failed: {error}", file=sys.stderr)
            time.sleep(args.drain)
            for instance in instances:
                instance.server.shutdown()
        threading.Thread(target=drain, daemon=True).start()

    def register_again(*_) -> None:
        for instance in instances:
            threading.Thread(target=instance.register, daemon=True).start()

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGUSR1, register_again)
    threads = [threading.Thread(target=i.server.serve_forever, daemon=True) for i in instances[1:]]
    for thread in threads:
        thread.start()
    instances[0].server.serve_forever()
    for thread in threads:
        thread.join()
    for instance in instances:
        instance.server.server_close()
    return 0


class Instance:
    """One registered instance: its port, its health state, its HTTP server."""

    def __init__(self, args: argparse.Namespace, consul, port: int):
        self.args, self.consul = args, consul
        self.healthy = threading.Event()
        self.healthy.set()
        self.warning = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.service_id = instance_id(args.service, self.port)

    def register(self) -> None:
        self.consul.agent.service.register(
            self.args.service, service_id=self.service_id, address="127.0.0.1", port=self.port,
            tags=list(parse_tags(self.args.tags)),
            check={"HTTP": f"http://127.0.0.1:{self.port}/health", "Interval": "1s", "Timeout": "1s"},
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        instance, service = self, self.args.service
        healthy, warning = self.healthy, self.warning

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
                self._answer(200, {"service": service, "port": instance.port, "path": self.path, "host": self.headers.get("Host"),
                                   "forwarded_for": self.headers.get("X-Forwarded-For"),
                                   "forwarded_proto": self.headers.get("X-Forwarded-Proto")})

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
                self.send_header("X-Instance", str(instance.port))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


if __name__ == "__main__":
    sys.exit(main())
