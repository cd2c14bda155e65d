"""Serve a WSGI app with gunicorn, and drain before stopping.

Plain gunicorn stops accepting the moment it gets SIGTERM. An instance behind a gateway
must keep serving while the gateway learns that it is leaving, so here:

    SIGTERM / SIGINT -> lifecycle.draining()      (maintenance on in the catalog)
                     -> keep serving for drain_seconds
                     -> workers stop gracefully  (in-flight requests finish)
                     -> lifecycle.stopped()       (deregister) -> exit 0

A signal sent to the whole process group (Ctrl-C in a terminal, `kill -- -PGID`) reaches
the workers as well; they ignore it until the master itself tells them to stop. A second
signal during the drain cuts the drain short.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
from typing import Callable, Protocol

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

#: How long stopping workers may take to finish in-flight requests before they are killed.
GRACEFUL_TIMEOUT_SECONDS = 8

#: Set by the master just before it stops its workers; forked workers share this memory.
_master_stopping = multiprocessing.RawValue("b", 0)


class Lifecycle(Protocol):
    def listening(self, host: str, port: int) -> None:
        """Called in the master once the socket is bound, before any worker forks."""

    def tick(self) -> None:
        """Called about once a second from the master's loop (the thread that forks workers)."""

    def draining(self) -> None:
        """Called on SIGTERM/SIGINT while the workers still serve."""

    def stopped(self) -> None:
        """Called after the workers finished, just before the process exits."""


class DrainAwareWorker(ThreadWorker):
    """gthread worker that leaves only when its master says so."""

    def handle_exit(self, sig, frame):
        if _master_stopping.value:
            super().handle_exit(sig, frame)

    def handle_quit(self, sig, frame):
        if sig == signal.SIGINT and not _master_stopping.value:
            return
        super().handle_quit(sig, frame)


class _Application(BaseApplication):
    def __init__(self, options: dict, load_app: Callable[[], Callable]):
        self.options = options
        self.load_app = load_app
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable:
        return self.load_app()


class DrainingArbiter(Arbiter):
    def __init__(self, app: _Application, lifecycle: Lifecycle, drain_seconds: float):
        self.lifecycle = lifecycle
        self.drain_seconds = drain_seconds
        super().__init__(app)

    def start(self) -> None:
        super().start()
        host, port = self.LISTENERS[0].sock.getsockname()[:2]
        self.lifecycle.listening(host, port)

    def manage_workers(self) -> None:
        super().manage_workers()
        self.lifecycle.tick()

    def handle_term(self) -> None:
        self._drain("SIGTERM")
        raise StopIteration

    def handle_int(self) -> None:
        self._drain("SIGINT")
        raise StopIteration

    def stop(self, graceful: bool = True) -> None:
        _master_stopping.value = 1
        super().stop(graceful)

    def _drain(self, why: str) -> None:
        self.log.info("%s: draining for %.1fs before stopping", why, self.drain_seconds)
        self.lifecycle.draining()
        deadline = time.monotonic() + self.drain_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                sig = self.SIG_QUEUE.get(timeout=remaining)
            except queue.Empty:
                break
            if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                self.log.info("second stop signal: cutting the drain short")
                break
            if sig == signal.SIGCHLD:
                self.reap_workers()


def serve(load_app: Callable[[], Callable], bind: str, lifecycle: Lifecycle, *, workers: int, threads: int,
          drain_seconds: float) -> int:
    """Run gunicorn in this process until stopped; returns the exit code."""
    options = {
        "bind": [bind],
        "workers": workers,
        "threads": threads,
        "worker_class": f"{__name__}.DrainAwareWorker",
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "control_socket_disable": True,  # one fixed socket path would be shared by every instance
        "on_exit": lambda server: lifecycle.stopped(),
    }
    try:
        DrainingArbiter(_Application(options, load_app), lifecycle, drain_seconds).run()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
