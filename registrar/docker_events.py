"""`shopgate registrar`: register Docker containers in the catalog from engine events.

    shopgate registrar [--consul URL] [--docker URL] [--internal] [--explicit] [--ip ADDR]
                       [--network NAME] [--tags a,b] [--resync SECONDS] [--deregister always|on-success]

For containers that do not register themselves: registrator's rules (see registrar.labels),
plus what registrator lacks:

- the event stream is re-opened when it drops (engine restart, proxy timeout), followed by a
  full resync, so nothing that happened meanwhile is missed;
- a Docker HEALTHCHECK is mirrored into a TTL check (`health_status` events, and every resync);
- on the stop signal (`kill` with TERM/INT/QUIT/KILL) the container's services go into
  maintenance at once, so gateways drain them while the container shuts down within its stop
  timeout; on `die` they are deregistered;
- a paused container cannot answer: maintenance while it is paused.

Every resync (at start, after a reconnect, every --resync seconds) registers what is missing —
also after the catalog lost its state — and removes the registrations this registrar made for
containers that are gone.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any, Iterable, Mapping

import docker
import requests
import urllib3
from docker.errors import DockerException, NotFound

from registrar.labels import ContainerInfo, ContainerService, RegistrarOptions, docker_health_status, owned_by, plan_services
from registrar.registration import parse_tags
from shopgate import settings
from shopgate.consul_client import CATALOG_ERRORS, ConsulAddress, connect
from shopgate.consul_client.protocol import CRITICAL, PASSING, WARNING

log = logging.getLogger("shopgate.registrar.docker")

#: Signals whose `kill` event means "this container is stopping".
STOP_SIGNALS = frozenset({"15", "2", "3", "9", "SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL", "TERM", "INT", "QUIT", "KILL"})
#: Errors that mean "the engine did not answer", never "our bug".
ENGINE_ERRORS = (DockerException, requests.RequestException, urllib3.exceptions.HTTPError, OSError)
FIRST_BACKOFF_SECONDS = 0.5
PAUSED = "container paused"


class DockerRegistrar:
    """Keeps the catalog in step with the running containers of one Docker engine."""

    def __init__(self, engine: docker.DockerClient, catalog, options: RegistrarOptions,
                 resync_seconds: float = settings.DOCKER_RESYNC_SECONDS, cleanup: bool = True,
                 deregister_on_failure: bool = True):
        self.engine = engine
        self.catalog = catalog
        self.options = options
        self.resync_seconds = resync_seconds
        self.cleanup = cleanup
        self.deregister_on_failure = deregister_on_failure
        self.registered: dict[str, tuple[ContainerService, ...]] = {}  # container id -> its services
        self.maintenance: dict[str, str] = {}  # container id -> why its services are in maintenance
        self.explained: set[str] = set()  # containers whose skipped ports were logged once
        self.reconnects = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._stream = None

    # --- reacting to one container --------------------------------------------------------------

    def container_started(self, container_id: str) -> None:
        container = self._inspect(container_id)
        if container is not None:
            with self._lock:
                self.maintenance.pop(container_id, None)
                self._apply(container, force=True)

    def container_stopping(self, container_id: str, signal_name: str) -> None:
        self._maintenance_on(container_id, f"container stopping (signal {signal_name}): draining")

    def container_paused(self, container_id: str) -> None:
        self._maintenance_on(container_id, PAUSED)

    def container_unpaused(self, container_id: str) -> None:
        with self._lock:
            if self.maintenance.get(container_id) != PAUSED:
                return  # not ours to lift (a stop is under way)
            del self.maintenance[container_id]
            for service in self.registered.get(container_id, ()):
                self._call(f"end of maintenance for {service.id}", self.catalog.agent.service.maintenance, service.id, "false")
            log.info("maintenance off for container %s (unpaused)", container_id[:12])

    def container_died(self, container_id: str, exit_code: str | None) -> None:
        with self._lock:
            if exit_code not in (None, "0") and not self.deregister_on_failure:
                log.info("container %s exited with %s: kept registered (--deregister on-success)", container_id[:12], exit_code)
                return
            self._deregister_container(container_id, f"container exited ({exit_code or '?'})")

    def health_changed(self, container_id: str, health: str) -> None:
        with self._lock:
            for service in self.registered.get(container_id, ()):
                self._set_health(service, health)

    # --- the whole engine -----------------------------------------------------------------------

    def sync(self) -> None:
        """Make the catalog match the running containers: register what is missing, remove what is gone.

        Holds the lock throughout, so that an event (a container dying meanwhile) is applied after
        the resync, never overtaken by it."""
        with self._lock:
            try:
                listed = self.engine.api.containers(quiet=True)
            except ENGINE_ERRORS as exc:
                log.warning("resync skipped: engine did not answer (%s)", _short(exc))
                return
            # A container may go between the listing and its inspection: it is simply not running.
            running = [c for c in (self._inspect(item["Id"]) for item in listed) if c is not None and c.running]
            try:
                in_catalog = self.catalog.agent.services()
            except CATALOG_ERRORS as exc:
                log.warning("resync skipped: catalog did not answer (%s)", _short(exc))
                return
            live = {container.id for container in running}
            self.explained &= live
            for container_id in list(self.registered):
                if container_id not in live:
                    self._deregister_container(container_id, "container is gone")
            for container in running:
                self._apply(container, known=in_catalog)
            wanted = {service.id for services in self.registered.values() for service in services}
            if self.cleanup:
                for service_id, service in in_catalog.items():
                    if service_id not in wanted and owned_by(service.get("Meta"), self.options.engine_id):
                        self._call(f"cleanup of {service_id}", self.catalog.agent.service.deregister, service_id)
                        log.info("removed %s: its container %s is gone", service_id,
                                 (service.get("Meta") or {}).get("container_name", "?"))

    def handle_event(self, event: Mapping[str, Any]) -> None:
        """Dispatch one engine event; both spellings are read (Action/Actor, and the older status/id)."""
        if event.get("Type", "container") != "container":
            return
        action = event.get("Action") or event.get("status") or ""
        actor = event.get("Actor") or {}
        container_id = actor.get("ID") or event.get("id") or ""
        attributes = actor.get("Attributes") or {}
        if action == "start":
            self.container_started(container_id)
        elif action == "pause":
            self.container_paused(container_id)
        elif action == "unpause":
            self.container_unpaused(container_id)
        elif action == "kill" and attributes.get("signal", "") in STOP_SIGNALS:
            self.container_stopping(container_id, attributes.get("signal", ""))
        elif action in ("die", "destroy"):
            self.container_died(container_id, attributes.get("exitCode"))
        elif action.startswith("health_status:"):
            self.health_changed(container_id, action.split(":", 1)[1].strip())

    def watch_events(self) -> None:
        """Follow the event stream until stop(); re-open it (and resync) whenever it drops."""
        backoff = FIRST_BACKOFF_SECONDS
        first = True
        while not self._stop.is_set():
            try:
                self._stream = self.engine.events(decode=True, filters={"type": "container"})
                # Subscribed first, then resync: nothing can fall between the two.
                if first:
                    self.sync()
                    self.log_table()
                    log.info("watching engine events")
                    first = False
                else:
                    self.reconnects += 1
                    log.info("event stream reconnected (reconnect #%d): resyncing", self.reconnects)
                    self.sync()
                backoff = FIRST_BACKOFF_SECONDS
                for event in self._stream:
                    self.handle_event(event)
                if not self._stop.is_set():
                    log.warning("event stream ended (engine closed it); reconnecting")
            except ENGINE_ERRORS as exc:
                if self._stop.is_set():
                    break
                log.warning("event stream dropped (%s); reconnecting in %.1fs", _short(exc), backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, settings.DOCKER_MAX_BACKOFF_SECONDS)

    def run(self) -> None:
        """Watch events in the background and resync periodically, until stop()."""
        watcher = threading.Thread(target=self.watch_events, name="docker-events", daemon=True)
        watcher.start()
        while not self._stop.wait(self.resync_seconds):
            self.sync()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except ENGINE_ERRORS:
                pass
        watcher.join(timeout=2)

    def stop(self) -> None:
        self._stop.set()

    def log_table(self) -> None:
        with self._lock:
            rows = [(s.name, s.id, f"{s.address}:{s.port}", s.meta.get("container_name", ""))
                    for services in self.registered.values() for s in services]
        if not rows:
            log.info("no containers to register yet")
            return
        header = ("SERVICE", "ID", "ADDRESS", "CONTAINER")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *sorted(rows)]:
            log.info("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))

    # --- edges ----------------------------------------------------------------------------------

    def _inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            return ContainerInfo.from_inspect(self.engine.api.inspect_container(container_id))
        except NotFound:
            return None
        except ENGINE_ERRORS as exc:
            log.warning("cannot inspect container %s (%s); the next resync retries", container_id[:12], _short(exc))
            return None

    def _apply(self, container: ContainerInfo, known: Mapping[str, Any] | None = None, force: bool = False) -> None:
        """Register the container's planned services (all of them when `force`, else those the catalog
        lacks), deregister those it no longer has, and bring TTL checks in step with its health."""
        plan = plan_services(container, self.options)
        before = {service.id: service for service in self.registered.get(container.id, ())}
        now = {service.id: service for service in plan.services}
        if container.id not in self.explained:
            self.explained.add(container.id)
            for reason in plan.skipped:
                log.info("not registered: %s", reason)
        for service_id in before.keys() - now.keys():
            self._call(f"deregistration of {service_id}", self.catalog.agent.service.deregister, service_id)
        for service in plan.services:
            changed = before.get(service.id) != service
            missing = known is not None and service.id not in known
            if force or changed or missing:
                if self._call(f"registration of {service.id}", self.catalog.agent.service.register,
                              **service.register_kwargs(container.health)):
                    log.info("registered %s (%s) at %s:%d for container %s", service.name, service.id,
                             service.address, service.port, container.name)
                    if container.id in self.maintenance:  # the catalog had lost it meanwhile
                        self._call(f"maintenance for {service.id}", self.catalog.agent.service.maintenance,
                                   service.id, "true", self.maintenance[container.id])
            elif container.health is not None:
                self._set_health(service, container.health)
        if plan.services:
            self.registered[container.id] = plan.services
        else:
            self.registered.pop(container.id, None)
        if container.paused and container.id not in self.maintenance:  # paused while nobody watched
            self._maintenance_on(container.id, PAUSED)

    def _maintenance_on(self, container_id: str, reason: str) -> None:
        with self._lock:
            services = self.registered.get(container_id, ())
            if container_id in self.maintenance:
                if reason != PAUSED:
                    self.maintenance[container_id] = reason  # a stop outranks a pause: unpause must not lift it
                return
            if not services:
                return
            self.maintenance[container_id] = reason
            for service in services:
                self._call(f"maintenance for {service.id}", self.catalog.agent.service.maintenance, service.id, "true", reason)
            log.info("maintenance on for %s: %s", _ids(services), reason)

    def _deregister_container(self, container_id: str, why: str) -> None:
        services = self.registered.pop(container_id, ())
        self.maintenance.pop(container_id, None)
        self.explained.discard(container_id)
        for service in services:
            self._call(f"deregistration of {service.id}", self.catalog.agent.service.deregister, service.id)
        if services:
            log.info("deregistered %s: %s", _ids(services), why)

    def _set_health(self, service: ContainerService, health: str) -> None:
        if service.health_check_id is None:
            return
        status = docker_health_status(health)
        update = {PASSING: self.catalog.agent.check.ttl_pass, WARNING: self.catalog.agent.check.ttl_warn,
                  CRITICAL: self.catalog.agent.check.ttl_fail}[status]
        self._call(f"health of {service.id}", update, service.health_check_id, f"docker health: {health}")

    def _call(self, what: str, func, *args, **kwargs) -> bool:
        try:
            func(*args, **kwargs)
            return True
        except CATALOG_ERRORS as exc:
            log.warning("%s failed (%s); the next resync retries", what, _short(exc))
            return False


def _ids(services: Iterable[ContainerService]) -> str:
    return ", ".join(service.id for service in services)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shopgate registrar",
                                     description="Register Docker containers in the catalog (registrator-style SERVICE_* labels).")
    parser.add_argument("--consul", default=None, help="catalog address (default: CONSUL_HTTP_ADDR, else %s)" % settings.DEFAULT_CONSUL_ADDR)
    parser.add_argument("--docker", default=None, help="engine address, e.g. unix:///var/run/docker.sock (default: DOCKER_HOST)")
    parser.add_argument("--internal", action="store_true", help="register exposed ports at the container's own address")
    parser.add_argument("--explicit", action="store_true", help="only register containers that set SERVICE_NAME")
    parser.add_argument("--ip", default=settings.LOOPBACK, help="address for ports published on 0.0.0.0 (default %(default)s)")
    parser.add_argument("--network", default=None, help="network whose address --internal registers (exact, or a compose network's short name)")
    parser.add_argument("--tags", default="", help="comma-separated tags added to every service")
    parser.add_argument("--node", default=None, help="first part of default service ids (default: the engine's host name)")
    parser.add_argument("--resync", type=float, default=settings.DOCKER_RESYNC_SECONDS, help="seconds between full resyncs (default %(default)s)")
    parser.add_argument("--health-ttl", default=settings.DOCKER_HEALTH_TTL, help="TTL of the check mirroring a Docker HEALTHCHECK (default %(default)s)")
    parser.add_argument("--no-cleanup", dest="cleanup", action="store_false", help="keep registrations whose container is gone")
    parser.add_argument("--deregister", choices=("always", "on-success"), default="always",
                        help="on container exit: always deregister, or only when it exited 0 (default %(default)s)")
    args = parser.parse_args(argv)
    if args.resync <= 0:
        parser.error(f"--resync must be a positive number of seconds, got {args.resync}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    try:
        consul = ConsulAddress.parse(args.consul)
    except ValueError as exc:
        print(f"shopgate registrar: {exc}", file=sys.stderr)
        return 2
    try:
        engine = docker.DockerClient(base_url=args.docker) if args.docker else docker.from_env()
        info = engine.info()
    except ENGINE_ERRORS as exc:
        print(f"shopgate registrar: no Docker engine at {args.docker or 'DOCKER_HOST'}: {_short(exc)}", file=sys.stderr)
        return 1
    options = RegistrarOptions(
        internal=args.internal, explicit=args.explicit, host_ip=args.ip, network=args.network,
        forced_tags=parse_tags(args.tags), node=args.node or info.get("Name") or "docker",
        engine_id=info.get("ID") or "", health_ttl=args.health_ttl,
    )
    registrar = DockerRegistrar(engine, connect(consul), options, resync_seconds=args.resync,
                                cleanup=args.cleanup, deregister_on_failure=args.deregister == "always")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: registrar.stop())
    log.info("registering containers of engine %s (%s) in %s (%s mode%s)", options.node, options.engine_id[:14],
             consul.url, "internal" if args.internal else "published", ", explicit" if args.explicit else "")
    registrar.run()
    log.info("stopped")
    return 0
