"""The gateway controller: watch the catalog, keep HAProxy in step, supervise it, report
(started by `shopgate gateway`, gateway.command).

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

import gc
import logging
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
from gateway.kv_settings import parse_settings
from gateway.log_rotation import LogRotator
from gateway.metrics import GatewayMetrics
from gateway.model import ApplyPlan, RouteTable, RuntimePaths, Snapshot
from gateway.routing import build_route_table, rebuilt_services, running_settings
from gateway.status import StatusServer, status_view, tls_view
from gateway.template_watch import TemplateWatcher
from gateway.watch import CatalogWatcher
from shopgate import settings
from shopgate.consul_client import ConsulAddress

log = logging.getLogger("shopgate.gateway")

MIN_QUIET = 0.02          # s without news before a burst is applied
MAX_WAIT = 0.5            # s a burst may delay its first change
RELOAD_INTERVAL = 1.0     # s between two reloads (a storm of structural changes folds into few)


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
        held = self._flap.held(now)
        for service, instances in (self._flap.report(now) if held - self._held else {}).items():   # a new hold: say so once
            for entry in instances:
                if entry["instance"] not in self._held:
                    log.warning("%s: instance %s flipped %d times: held out of rotation for %.1fs", service, entry["instance"],
                                entry["flips"], entry["held_for_seconds"])
        for key in sorted(self._held - held):
            log.info("instance %s: flap hold over", key)
        return held

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


def read_cert_files(directory: Path) -> dict[str, bytes]:
    """Every `*.pem` directly in `directory` (path -> bytes); unreadable ones are left out until they are readable."""
    files = {}
    for path in sorted(directory.glob("*.pem")):
        try:
            files[str(path)] = path.read_bytes()
        except OSError as error:
            log.warning("certificate file %s unreadable: %s", path, error)
    return files
