"""Small helpers shared by the catalog's tests: HTTP calls on a catalog, waiting for a condition, a target server."""

from __future__ import annotations

import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import requests


class Api:
    """requests on one catalog, failing loudly on an unexpected status."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url
        self.session = requests.Session()
        if token:
            self.session.headers["X-Consul-Token"] = token

    def call(self, method: str, path: str, expect: int | None = 200, **kwargs) -> requests.Response:
        response = self.session.request(method, self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text!r}"
        return response

    def get(self, path: str, **kwargs) -> Any:
        return self.call("GET", path, **kwargs).json()

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.call("PUT", path, **kwargs)

    def index(self, path: str) -> int:
        """The X-Consul-Index of a read (a 404 carries one too)."""
        return int(self.call("GET", path, expect=None).headers["X-Consul-Index"])

    def check_status(self, check_id: str) -> str | None:
        check = self.get("/v1/agent/checks").get(check_id)
        return check and check["Status"]

    def held(self) -> int:
        gauges = {g["Name"]: g["Value"] for g in self.get("/v1/agent/metrics")["Gauges"]}
        return gauges["shopgate.catalog.blocking_queries_held"]


def eventually(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds (a deadline, not a timing claim)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(0.05)


class HealthTarget:
    """A real HTTP server whose answer status the test sets (what an HTTP check probes)."""

    def __init__(self) -> None:
        self.status = 200
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = target.answer()
                body = f"status {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def answer(self) -> int:
        return self.status

    def __enter__(self) -> "HealthTarget":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """Let any held probe go (only a GatedTarget holds probes)."""


class GatedTarget(HealthTarget):
    """A HealthTarget that holds each probe until the test hands it the status to answer, one at a time.

    The check's results then come in the order and number the test chooses, however slow the machine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.server.daemon_threads = True   # a probe still held at the end must not hold up server_close
        self.answers: queue.Queue[int] = queue.Queue()

    def answer(self) -> int:
        try:
            return self.answers.get(timeout=60)
        except queue.Empty:
            return 503

    def release(self) -> None:
        for _ in range(8):
            self.answers.put(503)
