"""`shopgate gateway`: watch the catalog, keep HAProxy in step, supervise it, report.

    shopgate gateway [--consul URL] [--haproxy-bin haproxy] [--listen 127.0.0.1:8080]
                     [--stats 127.0.0.1:8404] [--status 127.0.0.1:9180] [--state-dir DIR]
                     [--templates DIR] [--keep-haproxy] [--accept-proxy] [--unready-delay S]
                     [--https 127.0.0.1:8443 [--certs DIR] [--default-cert PEM]]
                     [--log-max-bytes N] [--log-keep K]

One loop owns HAProxy; everything else only wakes it:

    watcher (catalog + KV) ──snapshot──┐
    template watcher ──────"edited"────┤
    certificate dir watcher ─"files"──┤
    HAProxy exited ────────"restart"───┼──▶ debounce ─▶ guard ─▶ flap.observe ─▶ build_route_table ─▶ plan_changes ─▶ Applier
    a flap hold runs out ──"expired"───┘

The plan is made once, here: it decides whether a reload must wait for RELOAD_INTERVAL, and the
Applier carries out that same plan. Between two steps the loop also bounds HAProxy's request log
(gateway.log_rotation), so no truncation falls inside a reload that reads HAProxy's alerts from it.

Debounce: a change that needs only the runtime API is applied at once (planning one change costs
one service's work, gateway.routing/gateway.diff); a change that needs a reload waits until its burst
has been quiet for MIN_QUIET or has lasted MAX_WAIT, and reloads are further spaced by RELOAD_INTERVAL.

HAProxy's life, one per state dir (it runs in a session of its own, so it outlives the controller):

    start    an HAProxy left by a previous controller of this state dir (pid file, command line,
             master socket all agree) is adopted; none is started until the first full catalog
             view, which it then serves from its first connection (no empty-config window).
             For the empty-catalog guard an adoption is a recovery, and what the adopted HAProxy
             serves is the applied view: a first view after a catalog wipe is held like any other.
    adopt    on the first view: slots keep the instances HAProxy has in them (gateway.adopt); the
             runtime API brings it up to date, or one validated reload when its config differs.
    SIGTERM  /ready turns 503 (for --unready-delay seconds first, so an outer balancer drains it), then HAProxy's soft stop (in-flight requests finish, bounded by
             hard_stop_after); with --keep-haproxy it keeps serving for the next controller.
    SIGKILL  HAProxy keeps serving the last view; the next controller adopts it.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from gateway.adopt import running_table, seed_table, served_snapshot
from gateway.apply import Applier, ConfigRejected, GatewayFiles
from gateway.diff import as_reload, plan_changes
from gateway.flap import FlapState, observe
from gateway.guard import EmptyCatalogGuard
from gateway.haproxy import HAProxyError, HAProxyProcess
from gateway.haproxy_syntax import BIND_ADDRESS
from gateway.kv_settings import parse_settings, settings_from_env
from gateway.log_rotation import LogRotator
from gateway.metrics import GatewayMetrics
from gateway.model import ApplyPlan, RouteTable, RuntimePaths, Snapshot
from gateway.routing import build_route_table, rebuilt_services, running_settings
from gateway.status import StatusServer, status_view, tls_view
from gateway.template_watch import TemplateWatcher
from gateway.tls import BadCertificate, certificate_entry
from gateway.watch import CatalogWatcher
from shopgate import settings
from shopgate.consul_client import ConsulAddress

log = logging.getLogger("shopgate.gateway")

MIN_QUIET = 0.02          # s without news before a burst is applied
MAX_WAIT = 0.5            # s a burst may delay its first change
RELOAD_INTERVAL = 1.0     # s between two reloads (a storm of structural changes folds into few)
GIL_SWITCH_SECONDS = 0.001   # how long a thread may hold the GIL while another waits (main() sets it)


@dataclass(frozen=True)
class ControllerConfig:
    """What `shopgate gateway` was started with; the defaults are the flags' defaults."""

    consul: ConsulAddress
    haproxy_bin: str = "haproxy"
    listen: str = f"{settings.LOOPBACK}:{settings.GATEWAY_PORT}"
    stats: str = f"{settings.LOOPBACK}:{settings.STATS_PORT}"
    status: str = f"{settings.LOOPBACK}:{settings.STATUS_PORT}"
    state_dir: Path = settings.STATE_DIR / "gateway"
    templates_dir: Path = settings.TEMPLATES_DIR
    wait_seconds: float = settings.GATEWAY_WATCH_WAIT_SECONDS
    drain_timeout: float = settings.GATEWAY_DRAIN_TIMEOUT_SECONDS
    guard_hold: float = settings.GATEWAY_GUARD_HOLD_SECONDS
    slot_headroom: int = settings.SLOT_HEADROOM
    accept_proxy: bool = False                                       # entry binds take the PROXY protocol
    kv_defaults: Mapping[str, bytes] = field(default_factory=dict)   # from SHOPGATE_GATEWAY_* (KV wins)
    keep_haproxy: bool = False    # on SIGTERM leave HAProxy serving for the next controller
    unready_delay: float = settings.GATEWAY_UNREADY_DELAY_SECONDS   # /ready 503 this long before the soft stop
    consul_dns: str = settings.DEFAULT_CONSUL_DNS_ADDR                # asked by backends in DNS mode
    always_reload: bool = False    # membership too by render + reload (consul-template's way; bench/discovery.py compares)
    https: str | None = None              # HTTPS entry point host:port; off when None
    certs_dir: Path | None = None         # PEM bundles watched live, beside KV shopgate/tls/certs/
    default_cert: Path | None = None      # the certificate for clients without a known SNI name
    expiring_days: float = settings.CERT_EXPIRING_DAYS
    log_max_bytes: int = settings.GATEWAY_LOG_MAX_BYTES   # haproxy.log is rotated past this size (0: never)
    log_keep: int = settings.GATEWAY_LOG_KEEP             # older files kept: haproxy.log.1 .. .K


class Controller:
    """Owns one HAProxy: the watchers only record news and wake `run()`, whose loop alone applies it."""

    def __init__(self, config: ControllerConfig):
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.files = GatewayFiles(config.state_dir)
        self.metrics = GatewayMetrics()
        self.haproxy = HAProxyProcess(config.haproxy_bin, self.files.config, self.files.master_socket,
                                      self.files.haproxy_log, self.files.pidfile)
        runtime = RuntimePaths(admin_socket=self.files.admin_socket, listen=config.listen, stats=config.stats,
                               consul_dns=config.consul_dns, accept_proxy=config.accept_proxy,
                               https=config.https, tls_dir=config.state_dir / "tls" if config.https else None)
        self.applier = Applier(self.haproxy, self.files, config.templates_dir, runtime, self.metrics, config.drain_timeout)
        self.applier.prepare_certificates(config.default_cert)
        self.log_rotator = LogRotator(self.files.haproxy_log, config.log_max_bytes, config.log_keep,
                                      settings.GATEWAY_LOG_CHECK_SECONDS, self.haproxy.log_writer)
        self.guard = EmptyCatalogGuard(hold=config.guard_hold)
        self.watcher = CatalogWatcher(config.consul, self._on_snapshot, wait_seconds=config.wait_seconds)
        self.templates = TemplateWatcher(config.templates_dir, self._on_template)
        self.cert_watcher = TemplateWatcher(config.certs_dir, self._on_cert_files, suffix=".pem") if config.certs_dir and config.https else None
        self._cert_files: dict[str, bytes] = {}
        self.status_server = StatusServer(config.status, self.status, self.metrics.registry, self.ready)
        self.metrics.watch_config_hash(self.applier.config_hash)
        self.metrics.long_polls.set_function(lambda: self.watcher.long_polls_in_flight)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # pending work, guarded by _lock
        self._snapshot: Snapshot | None = None
        self._seen_at: float | None = None
        self._first_event: float | None = None
        self._last_event = 0.0
        self._templates_edited: str | None = None
        # owned by the loop
        self._applied_snapshot: Snapshot | None = None
        self._flap = FlapState()
        self._held: frozenset[str] = frozenset()   # the instances the last planned table holds out
        self._wanted: RouteTable | None = None
        self._last_reload = 0.0
        self._not_before = 0.0
        self._restart_at = 0.0
        self._restart_delay = settings.RETRY_BACKOFF_SECONDS[0]
        self._adopting = False   # an adopted HAProxy not yet brought up to date
        self._adopted_view: Snapshot | None = None   # what it served when adopted: the guard's baseline until the first apply
        self._adopted_at: float | None = None        # an adoption is a recovery for the guard
        self.last_error: str | None = None

    # ---- events (any thread)

    def _on_snapshot(self, snapshot: Snapshot, seen_at: float) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._seen_at = seen_at if self._seen_at is None else min(self._seen_at, seen_at)
            self._note_event()

    def _on_template(self, name: str) -> None:
        with self._lock:
            self._templates_edited = name
            self._seen_at = self._seen_at or time.monotonic()
            self._note_event()

    def _on_cert_files(self, _name: str = "") -> None:
        files = read_cert_files(self.config.certs_dir)
        with self._lock:
            if files != self._cert_files:
                self._cert_files = files
                self._seen_at = self._seen_at or time.monotonic()
                self._note_event()

    def _note_event(self) -> None:
        now = time.monotonic()
        self._last_event = now
        self._first_event = self._first_event or now
        self._wake.set()

    # ---- the loop

    def run(self) -> None:
        self.status_server.start()
        self._adopting = self.haproxy.adopt() is not None
        if self._adopting:
            self._adopted_at = time.monotonic()
            try:
                self._adopted_view = served_snapshot(self.haproxy.cli.server_stats())
            except HAProxyError as error:
                self._error("adopt", f"reading what the adopted HAProxy serves: {error}")
        self.watcher.start()
        self.templates.start()
        if self.cert_watcher is not None:
            self._on_cert_files()
            self.cert_watcher.start()
        log.info("gateway: entry point %s, stats %s, status http://%s/status, catalog %s",
                 self.config.listen, self.config.stats, self.config.status, self.config.consul.url)
        try:
            while not self._stopping.is_set():
                self._wake.wait(self._next_timeout())
                self._wake.clear()
                if self._stopping.is_set():
                    break
                self._supervise()
                self._flap_expired()
                self._step()
                self.applier.finish_drains()   # after the news: a change never waits for this round of stats
                if self.log_rotator.check():   # between steps: no reload is reading HAProxy's alerts by offset
                    self.metrics.log_rotations.inc()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _next_timeout(self) -> float:
        with self._lock:
            now = time.monotonic()
            expiry = self._flap.next_expiry(now)
            timeout = 0.25 if expiry is None else min(0.25, expiry - now)
            if self._first_event is None:
                return timeout
            due = max(min(self._last_event + MIN_QUIET, self._first_event + MAX_WAIT), self._not_before)
            return min(timeout, max(0.0, due - now))

    def _flap_expired(self) -> None:
        """A flap hold ran out: re-plan the last view, so the instance comes back without a catalog change."""
        now = time.monotonic()
        if self._applied_snapshot is None or not self._flap.held(now) < self._held:
            return
        with self._lock:
            self._snapshot = self._snapshot or self._applied_snapshot
            self._seen_at = self._seen_at or now
            self._note_event()

    def _route_table(self, snapshot: Snapshot, previous: RouteTable | None, held: frozenset[str] = frozenset()) -> RouteTable:
        if self.config.kv_defaults:
            snapshot = replace(snapshot, kv={**self.config.kv_defaults, **snapshot.kv})
        if self._cert_files:
            snapshot = replace(snapshot, cert_files=self._cert_files)
        taken = {self.config.listen: "the entry point", self.config.stats: "the stats page", self.config.status: "the controller's /status"}
        if self.config.https:
            taken[self.config.https] = "the HTTPS entry point"
        table = build_route_table(snapshot, previous, headroom=self.config.slot_headroom, held=held, taken_binds=taken, now=time.time())
        return table if self.config.https else replace(table, certificates=())

    def _observe_flaps(self, snapshot: Snapshot, now: float) -> frozenset[str]:
        """Count the health flips in `snapshot` (gateway.flap) and return the instance keys held out now."""
        _, service_settings, _ = parse_settings(snapshot.kv, running_settings(self.applier.running))   # routing reports the errors (kv_defaults: gateway-wide only)
        self._flap = observe(self._flap, snapshot.services, service_settings, now)
        return self._flap.held(now)

    def _supervise(self) -> None:
        """HAProxy died: start it again on the config file it ran, with backoff, then re-plan.

        Before its first start (the first full catalog view starts it) there is nothing to supervise."""
        if self.haproxy.pid is None or self.haproxy.alive() or time.monotonic() < self._restart_at:
            return
        self._adopting = False
        self._error("haproxy", f"HAProxy (pid {self.haproxy.pid}) exited with {self.haproxy.returncode}; restarting it on its last config")
        try:
            self.applier.restart_haproxy()
            started = True
        except HAProxyError as error:
            self._error("haproxy", f"restarting HAProxy failed: {error}")
            started = False
        if not started:
            self._restart_at = time.monotonic() + self._restart_delay
            self._restart_delay = min(self._restart_delay * 2, settings.RETRY_BACKOFF_SECONDS[1])
            return
        self._restart_delay = settings.RETRY_BACKOFF_SECONDS[0]
        with self._lock:   # re-plan from the config it runs now to the wanted view
            self._snapshot = self._snapshot or self._applied_snapshot
            self._seen_at = self._seen_at or time.monotonic()
            self._note_event()

    def _step(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._first_event is None or now < self._not_before:
                return
            quiet = now - self._last_event >= MIN_QUIET or now - self._first_event >= MAX_WAIT
            snapshot = self._snapshot or self._applied_snapshot or Snapshot()
            edited, seen_at = self._templates_edited, self._seen_at or now
        recovered = [t for t in (self.watcher.recovered_at, self._adopted_at) if t is not None]
        hold = self.guard.check(self._applied_snapshot or self._adopted_view, snapshot, max(recovered, default=None), now)
        if hold:
            self.metrics.guard_holds.inc()
            self._not_before = now + 1.0   # look again in a second (or on news)
            return
        held = self._observe_flaps(snapshot, now)
        self._held = held
        if self._adopting:
            try:
                wanted, plan = self._adoption_plan(snapshot, held)
            except HAProxyError as error:
                self._error("adopt", f"reading the adopted HAProxy: {error}")
                self._not_before = now + 1.0
                return
        else:
            wanted = self._route_table(snapshot, self.applier.running, held)
            plan = plan_changes(self.applier.running, wanted)
        self._wanted = wanted
        self.metrics.services_rebuilt.inc(len(rebuilt_services(wanted)))
        if self.config.always_reload:
            plan = as_reload(plan, "--always-reload")
        if (edited or plan.needs_reload) and not quiet:
            return   # a reload waits for its burst to settle; runtime changes went out at once
        if not edited and plan.needs_reload and now - self._last_reload < RELOAD_INTERVAL:
            self._not_before = self._last_reload + RELOAD_INTERVAL
            return
        with self._lock:   # from here on, news is a new burst
            if self._snapshot is snapshot:
                self._snapshot = None
            if self._snapshot is None:   # else a newer view arrived meanwhile: its burst stays open
                self._seen_at = self._first_event = None
            self._templates_edited = None
        self._apply(wanted, plan, snapshot, seen_at, f"template {edited} edited" if edited else None)

    def _adoption_plan(self, snapshot: Snapshot, held: frozenset[str]) -> tuple[RouteTable, ApplyPlan]:
        """The first view on an adopted HAProxy: keep its slots, then runtime changes or one reload."""
        rows = self.haproxy.cli.server_stats()
        wanted = self._route_table(snapshot, seed_table(rows, snapshot), held)
        running = running_table(wanted, rows, snapshot)
        try:
            if running is not None and not self.applier.runs_structure_of(wanted):
                running = None
        except ConfigRejected:
            running = None   # the apply reports the render error
        if running is not None:
            running = replace(running, certificates=self.applier.certs_held)   # the files: what the adopted HAProxy serves
        self.applier.running = running
        if running is None:
            return wanted, ApplyPlan(structural_reasons=("the adopted HAProxy runs another configuration",))
        plan = plan_changes(running, wanted)
        log.info("adopted HAProxy has the wanted structure: %d slot change(s) through the runtime API", len(plan.membership))
        return wanted, plan

    def _apply(self, wanted: RouteTable, plan: ApplyPlan, snapshot: Snapshot, seen_at: float, force_reason: str | None) -> None:
        try:
            done = self.applier.apply(wanted, plan, force_reason)
        except ConfigRejected as error:
            self._error("config", str(error))
            if force_reason is not None:   # the edit is refused; catalog news in the same burst still applies
                self._apply(wanted, plan, snapshot, seen_at, None)
            return
        except HAProxyError as error:
            self._error("haproxy", str(error))
            with self._lock:   # try again shortly
                self._snapshot = self._snapshot or snapshot
                self._seen_at = min(self._seen_at or seen_at, seen_at)
                self._note_event()
            self._not_before = time.monotonic() + 1.0
            return
        elapsed = time.monotonic() - seen_at
        self._adopting = False
        self._applied_snapshot = snapshot
        self._certificate_metrics(wanted)
        self.last_error = None
        if not done.empty:
            kind = "reload" if done.needs_reload else "runtime"
            self.metrics.propagation.labels(kind).observe(elapsed)
            log.info("applied (%s) %.0f ms after the change was seen: %s", kind, elapsed * 1000,
                     "; ".join(done.structural_reasons)[:500] or f"{len(done.membership)} slot change(s)")
        if done.needs_reload:
            self._last_reload = time.monotonic()
            # Move the live set (the route table: 10,000 servers is ~1M objects) out of the cyclic
            # collector's sight, or every full collection pauses the loop for 50-90 ms.
            gc.collect()
            gc.freeze()
        elif not done.empty:
            # Each watch round leaves ~10,000 new long-lived objects at 10,000 servers; frozen now, they
            # never add up to a full collection in the middle of a change (p99 150 -> 63 ms measured).
            # Frozen objects are still freed by reference counting; the structures here hold no cycles.
            gc.freeze()

    def _certificate_metrics(self, wanted: RouteTable) -> None:
        self.metrics.certificates_rejected.set(len(wanted.tls_rejected) + len(self.applier.tls_refused))
        self.metrics.certificate_expiry.clear()
        now = time.time()
        for entry in self.applier.certs_held:
            self.metrics.certificate_expiry.labels(entry.id).set(round(entry.not_after - now))

    def _error(self, stage: str, message: str) -> None:
        log.error("%s", message)
        self.metrics.errors.labels(stage).inc()
        self.last_error = message

    def _shutdown(self) -> None:
        """Stop watching, then soft-stop HAProxy (or leave it serving with --keep-haproxy); /ready says 503 throughout."""
        self.templates.stop()
        if self.cert_watcher is not None:
            self.cert_watcher.stop()
        self.watcher.stop()
        if self.config.keep_haproxy:
            log.info("leaving HAProxy (pid %s) serving for the next controller of %s", self.haproxy.pid, self.config.state_dir)
        else:
            if self.config.unready_delay > 0:
                log.info("unready; HAProxy stops accepting in %.1fs (an outer balancer moves new connections away meanwhile)", self.config.unready_delay)
                time.sleep(self.config.unready_delay)
            hard_stop_after = (self.applier.running or RouteTable()).settings.hard_stop_after_ms / 1000
            self.haproxy.soft_stop(timeout=hard_stop_after + settings.GATEWAY_STOP_MARGIN_SECONDS)
        self.status_server.stop()

    # ---- /ready

    def ready(self) -> str | None:
        """None when HAProxy serves the latest applied view; else why not (/ready answers 503 with it)."""
        if self._stopping.is_set():
            return "stopping"
        if self._adopting and self.guard.reason:
            return f"the adopted HAProxy serves its last view; the catalog's first is held: {self.guard.reason}"
        if self.applier.running is None or self._adopting:
            return "no catalog view applied yet"
        if not self.haproxy.alive():
            return "HAProxy is not running"
        return None

    # ---- /status

    def status(self) -> dict:
        """The /status document (gateway.status.status_view) from what each part knows now."""
        running = self.applier.running or RouteTable()
        alive = self.haproxy.alive()
        try:
            live = self.haproxy.cli.server_stats() if alive else {}
        except HAProxyError:
            live = {}
        return status_view(
            running, self._wanted or running, live,
            last_apply=self.applier.last_apply, last_error=self.last_error or self.applier.last_error,
            reloads=self.applier.reloads, runtime_updates=self.applier.runtime_updates,
            rejected_configs=self.applier.rejected_configs, last_good_at=self.metrics.last_good_at,
            haproxy_pid=self.haproxy.pid if alive else None, config_hash=self.applier.config_hash(), ready=self.ready(),
            catalog={"reachable": self.watcher.reachable, "last_error": self.watcher.last_error,
                     "long_polls": self.watcher.long_polls_in_flight, "requests": self.watcher.requests_made},
            guard_reason=self.guard.reason, flap_held=self._flap.report(time.monotonic()), now=time.time(),
            tls=tls_view(self.config.https, self.applier.certs_held, (self._wanted or running).tls_rejected,
                         [reason for _, reason in self.applier.tls_refused.values()], time.time(), self.config.expiring_days),
            request_log=self.log_rotator.view(),
        )


def parse_args(argv: list[str]) -> ControllerConfig:
    parser = argparse.ArgumentParser(prog="shopgate gateway", description="Run the gateway controller: catalog + KV -> haproxy.cfg -> a live HAProxy.")
    parser.add_argument("--consul", default=None, help="Consul HTTP API address (default: CONSUL_HTTP_ADDR or %s)" % settings.DEFAULT_CONSUL_ADDR)
    parser.add_argument("--haproxy-bin", default=ControllerConfig.haproxy_bin, help="HAProxy executable (default %(default)s)")
    parser.add_argument("--listen", default=ControllerConfig.listen, help="entry point host:port (default %(default)s)")
    parser.add_argument("--stats", default=ControllerConfig.stats, help="HAProxy stats page and /metrics host:port (default %(default)s)")
    parser.add_argument("--status", default=ControllerConfig.status, help="controller /status and /metrics host:port (default %(default)s)")
    parser.add_argument("--state-dir", type=Path, default=ControllerConfig.state_dir, help="haproxy.cfg, sockets and logs (default %(default)s)")
    parser.add_argument("--templates", type=Path, default=ControllerConfig.templates_dir, help="haproxy.cfg templates, watched for edits (default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=ControllerConfig.drain_timeout, help="seconds a removed server may drain before maint (default %(default)s)")
    parser.add_argument("--guard-hold", type=float, default=ControllerConfig.guard_hold, help="seconds the empty-catalog guard may hold a view (default %(default)s)")
    parser.add_argument("--keep-haproxy", action="store_true",
                        help="on SIGTERM leave HAProxy serving; the next controller with this --state-dir adopts it")
    parser.add_argument("--unready-delay", type=float, default=ControllerConfig.unready_delay,
                        help="on SIGTERM answer /ready 503 this many seconds before HAProxy stops accepting (default %(default)s)")
    parser.add_argument("--slot-headroom", type=int, default=ControllerConfig.slot_headroom,
                        help="server slots per instance, rounded up to a power of two, in backends that cannot take dynamic servers "
                             "(static balance algorithms, sticky cookies; default %(default)s); HAProxy reserves a file descriptor per slot")
    parser.add_argument("--consul-dns", default=None,
                        help="Consul DNS host:port that backends in DNS mode (KV discovery = dns) resolve through "
                             f"(default: {settings.CONSUL_DNS_ENV} or {settings.DEFAULT_CONSUL_DNS_ADDR})")
    parser.add_argument("--always-reload", action="store_true",
                        help="apply membership changes by a full render + reload too, as consul-template does, instead of the runtime API "
                             "(for comparison: bench/discovery.py)")
    parser.add_argument("--accept-proxy", action="store_true",
                        help="entry binds take the PROXY protocol v1/v2 from an outer load balancer (as KV shopgate/gateway/accept_proxy)")
    parser.add_argument("--https", default=None, help="HTTPS entry point host:port, e.g. 127.0.0.1:8443 (default: off)")
    parser.add_argument("--certs", type=Path, default=None, help="directory of PEM bundles (<name>.pem: chain + key), watched live; KV shopgate/tls/certs/<name> too")
    parser.add_argument("--default-cert", type=Path, default=None, help="PEM bundle for clients without a known SNI name (default: self-signed, kept in the state dir)")
    parser.add_argument("--expiring-days", type=float, default=ControllerConfig.expiring_days, help="report certificates expiring within this many days (default %(default)s)")
    parser.add_argument("--log-max-bytes", type=int, default=ControllerConfig.log_max_bytes,
                        help="rotate <state-dir>/haproxy.log (copy, then truncate) once it is larger than this many bytes; 0: never (default %(default)s)")
    parser.add_argument("--log-keep", type=int, default=ControllerConfig.log_keep,
                        help="rotated request logs kept, haproxy.log.1 (newest) .. haproxy.log.K (default %(default)s)")
    args = parser.parse_args(argv)
    for flag, value in (("--log-max-bytes", args.log_max_bytes), ("--log-keep", args.log_keep)):
        if value < 0:
            parser.error(f"{flag}: expected a number of 0 or more, got {value}")
    consul_dns = args.consul_dns or settings.consul_dns_from_env()
    if not BIND_ADDRESS.fullmatch(consul_dns):
        parser.error(f"--consul-dns / {settings.CONSUL_DNS_ENV}: expected host:port, got {consul_dns!r}")
    try:
        consul = ConsulAddress.parse(args.consul)
    except ValueError as error:
        parser.error(str(error))
    for flag, value in (("--listen", args.listen), ("--stats", args.stats), ("--status", args.status), ("--https", args.https or "x:1")):
        if not BIND_ADDRESS.fullmatch(value):
            parser.error(f"{flag}: expected host:port, got {value!r}")
    if not args.templates.is_dir():
        parser.error(f"--templates: {args.templates} is not a directory")
    if (args.certs or args.default_cert) and not args.https:
        parser.error("--certs and --default-cert need --https")
    if args.certs is not None and not args.certs.is_dir():
        parser.error(f"--certs: {args.certs} is not a directory")
    if args.default_cert is not None:
        problem = default_cert_problem(args.default_cert)
        if problem:
            parser.error(f"--default-cert: {problem}")
    return ControllerConfig(consul=consul, haproxy_bin=args.haproxy_bin, listen=args.listen, stats=args.stats, status=args.status,
                            state_dir=args.state_dir.resolve(), templates_dir=args.templates.resolve(),
                            drain_timeout=args.drain_timeout, guard_hold=args.guard_hold, slot_headroom=max(1, args.slot_headroom), accept_proxy=args.accept_proxy,
                            keep_haproxy=args.keep_haproxy, unready_delay=max(0.0, args.unready_delay),
                            kv_defaults=settings_from_env(os.environ), consul_dns=consul_dns, always_reload=args.always_reload,
                            https=args.https, certs_dir=args.certs.resolve() if args.certs else None,
                            default_cert=args.default_cert.resolve() if args.default_cert else None, expiring_days=args.expiring_days,
                            log_max_bytes=args.log_max_bytes, log_keep=args.log_keep)


def read_cert_files(directory: Path) -> dict[str, bytes]:
    """Every `*.pem` directly in `directory` (path -> bytes); unreadable ones are left out until they are readable."""
    files = {}
    for path in sorted(directory.glob("*.pem")):
        try:
            files[str(path)] = path.read_bytes()
        except OSError as error:
            log.warning("certificate file %s unreadable: %s", path, error)
    return files


def default_cert_problem(path: Path) -> str | None:
    """Why the --default-cert bundle cannot serve (gateway.tls's checks), or None."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"{path}: {error}"
    try:
        certificate_entry("default", str(path), data, None, time.time())
    except BadCertificate as error:
        return f"{path}: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    config = parse_args(list(argv or []))
    # A change crosses three threads (watch -> fetch loop -> controller loop); a thread woken for it waits for the
    # GIL up to the switch interval while another runs Python (default 5 ms, most of the budget of a change).
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        controller = Controller(config)
    except (OSError, ValueError) as error:
        log.error("gateway cannot start: %s", error)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: controller.stop())
    controller.run()
    return 0
