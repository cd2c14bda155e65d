"""ApplyPlan -> the running HAProxy: runtime API for membership, validated reloads for structure.

Membership (a slot gets, changes or loses an instance) goes through the runtime API, no reload:

    add     into an idle slot (maint, not draining, dynamic balance): `del server` + `add server` with
            the health check written out (settings.NEW_SERVER_CHECK) + `enable health`, then state ready +
            health down. The recreated server's first check runs after `downinter` (~20 ms), where a
            slot merely leaving maint waits for its old `inter` phase (0-1 s, measured on 2.6).
            Otherwise (a slot in use or draining, `balance source`, a sticky or DNS backend: `add
            server` takes no `cookie`): set server be/s addr A port P;
            weight W; state ready; health down. Either way HAProxy's own check must `rise` before
            the server takes traffic.
    create  a dynamic server beyond the slots (gateway.routing): `add server` named after the instance,
            the health check written out + `enable health`, then state ready + health down
    delete  as remove, then `del server` (retried while HAProxy still counts connections on it)
    remove  state drain now; `state maint` once the server's sessions reach 0 (or after a bound);
            on a sticky backend `state maint` at once (in-flight requests still finish), since a
            draining server keeps taking the requests that carry its cookie

Certificates (HTTPS on) always go through the runtime API, reload or not (gateway.tls_store), first:
a refused one is reported in `tls_refused` and the certificate HAProxy had keeps serving. The
certificates held start as the state dir's files hold them (an adopted HAProxy serves them), so a
restarted controller changes only the difference.

Structure (routes, backends, slot counts, settings, templates) goes through:

    fold dynamic servers into slots (routing.fold_extra) -> render -> haproxy -c -> atomic swap (tmp + rename, last good kept) -> master `reload`
    -> verify (new worker in `show proc`, failed count unchanged, every slot present)
    -> on any failure: restore the last good file, reload it, keep serving, report HAProxy's error.

The config file always holds every server of the table it was rendered from, so a reload or a
restart after a crash never resurrects or loses servers; the controller then re-plans from that
table to the wanted one. Dynamic servers exist only in the running worker: a restarted HAProxy has
none, and that re-plan creates them again (a reload writes them into slots first).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2

from gateway.haproxy import HAProxyError, HAProxyProcess, check_config
from gateway.haproxy_syntax import UnsafeValue, check_token
from gateway.metrics import GatewayMetrics
from gateway.adopt import same_structure
from gateway.diff import certificate_changes
from gateway.model import ApplyPlan, CertChange, MembershipChange, RouteTable, RuntimePaths
from gateway.render import fleet_hash, render_config
from gateway.routing import fold_extra
from gateway.tls import CertEntry
from gateway.tls_store import CertificateStore
from shopgate import settings

log = logging.getLogger("shopgate.gateway.apply")

#: How often draining servers are looked at (their sessions) to be put in maint; a drain lasts one round at least.
DRAIN_CHECK_SECONDS = 0.1


class _StateFile:
    """A file of the state dir by name: `GatewayFiles(d).config` is `d / "haproxy.cfg"`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, files: "GatewayFiles | None", owner: type | None = None) -> "Path | _StateFile":
        return self if files is None else files.state_dir / self.name   # on the class itself (help(), inspect): the descriptor


@dataclass(frozen=True)
class GatewayFiles:
    """The files of one controller under its state dir."""

    state_dir: Path

    config = _StateFile("haproxy.cfg")
    candidate = _StateFile("haproxy.cfg.new")
    last_good = _StateFile("haproxy.cfg.last-good")
    master_socket = _StateFile("master.sock")
    admin_socket = _StateFile("admin.sock")
    haproxy_log = _StateFile("haproxy.log")
    #: HAProxy's master pid (`-p`): how the next controller of this state dir finds it.
    pidfile = _StateFile("haproxy.pid")


class ConfigRejected(RuntimeError):
    """A config that was not applied; the message is the render error or HAProxy's own."""


def membership_commands(change: MembershipChange, add_server_maxconn: int | None | bool = False) -> list[str]:
    """Runtime-API commands for one server change (remove, delete: only the drain; maint and del follow later).

    `add_server_maxconn` other than False: the server is made with `add server` (with the backend's
    maxconn, None for none) — an idle slot recreated (`del server` first) or a dynamic server created —
    so its first health check runs at once."""
    server = f"{check_token(change.backend)}/{check_token(change.slot)}"
    if change.action in ("add", "create") and add_server_maxconn is not False:
        maxconn = f" maxconn {int(add_server_maxconn)}" if add_server_maxconn else ""
        commands = [f"del server {server}"] if change.action == "add" else []
        return commands + [f"add server {server} {check_token(change.address)}:{int(change.port)} weight {int(change.weight)}{maxconn} {settings.NEW_SERVER_CHECK}",
                           f"enable health {server}"] + _admit(server, change.ready, [])   # `add server` starts in maint
    if change.action in ("add", "create"):
        return [f"set server {server} addr {check_token(change.address)} port {int(change.port)}",
                f"set server {server} weight {int(change.weight)}"] + _admit(server, change.ready, [f"set server {server} state maint"])
    if change.action == "weight":
        return [f"set server {server} weight {int(change.weight)}"]
    if change.action in ("drain", "remove", "delete"):
        return [f"set server {server} state {'maint' if change.sticky else 'drain'}"]
    raise ValueError(f"unknown membership action {change.action!r}")


def _admit(server: str, ready: bool, otherwise: list[str]) -> list[str]:
    """Ready, but out until HAProxy's own check rises (`state ready` alone would mark it UP at once)."""
    return [f"set server {server} state ready", f"set server {server} health down"] if ready else otherwise


class Applier:
    """Keeps HAProxy running `running`, the last RouteTable it accepted."""

    def __init__(self, haproxy: HAProxyProcess, files: GatewayFiles, templates_dir: Path, runtime: RuntimePaths,
                 metrics: GatewayMetrics, drain_timeout: float = settings.GATEWAY_DRAIN_TIMEOUT_SECONDS):
        self.haproxy = haproxy
        self.files = files
        self.templates_dir = templates_dir
        self.runtime = runtime
        self.metrics = metrics
        self.drain_timeout = drain_timeout
        self.running: RouteTable | None = None      # what HAProxy serves now (config + runtime changes)
        self.file_table: RouteTable | None = None   # what the config file on disk was rendered from
        self.last_apply: float | None = None        # unix time of the last change HAProxy accepted
        self.last_error: str | None = None
        self.reloads = 0
        self.runtime_updates = 0
        self.rejected_configs: deque[str] = deque(maxlen=20)
        self._refused: tuple[RouteTable, str, str | None] | None = None   # the last refused table, why, its text
        self._draining: dict[tuple[str, str], float] = {}     # (backend, server) -> give-up time
        self._deleting: set[tuple[str, str]] = set()           # draining dynamic servers to `del server` once in maint
        self._delete_give_up: dict[tuple[str, str], float] = {}  # refused `del server`: retried until then
        self.certificates = CertificateStore(runtime.tls_dir) if runtime.tls_dir is not None else None
        self.certs_held: tuple[CertEntry, ...] = ()   # what HAProxy serves and the files hold
        self.tls_refused: dict[str, tuple[str, str]] = {}   # id -> (fingerprint, "source: HAProxy refused it: ...")
        self._next_drain_check = 0.0
        self._hash: tuple[RouteTable | None, str | None] = (None, None)
        self._backend_digests: dict = {}   # fleet_hash: backend digests kept between calls

    # ---- entry points

    def apply(self, wanted: RouteTable, plan: ApplyPlan, force_reason: str | None = None) -> ApplyPlan:
        """Bring HAProxy to `wanted` by `plan` (the caller's `plan_changes(running, wanted)`); returns what
        was done. ConfigRejected/HAProxyError when it was not."""
        if force_reason and not plan.needs_reload:
            if self.haproxy.alive() and self._render(wanted, force_reason) == self._running_text():
                log.info("%s: the rendered config is what HAProxy runs, no reload", force_reason)
                self.last_error = None   # e.g. a refused edit was reverted
            else:
                plan = ApplyPlan(structural_reasons=(force_reason,))
        if plan.empty:
            return plan
        if self.certificates is not None and self.running is None:   # what HAProxy has (or will load) is the files
            plan = replace(plan, certificates=certificate_changes(self.certs_held, wanted.certificates))
        if plan.certificates:
            self._certificates(plan.certificates, wanted.certificates)
        wanted = replace(wanted, certificates=self.certs_held)
        if plan.needs_reload:
            if force_reason is None and self._refused is not None and self._refused[0] == wanted:
                raise ConfigRejected(self._refused[1])  # same input, same answer: do not re-run haproxy -c
            wanted = self._structural(wanted, plan.structural_reasons)
        else:
            try:
                self._membership(plan.membership)
            except HAProxyError as error:
                log.warning("runtime API refused a change, reloading instead: %s", error)
                self.metrics.errors.labels("runtime").inc()
                plan = ApplyPlan(structural_reasons=(f"runtime API: {error}",))
                wanted = self._structural(wanted, plan.structural_reasons)
        self.running = wanted
        self.last_apply = time.time()
        self.last_error = None
        return plan

    def prepare_certificates(self, default_cert: Path | None) -> None:
        """Before anything runs: the tls/ files, and the certificates they hold (gateway.tls_store.prepare)."""
        if self.certificates is not None:
            self.certs_held = self.certificates.prepare(default_cert)

    def runs_structure_of(self, wanted: RouteTable) -> bool:
        """True when the config HAProxy was loaded with differs from `wanted`'s render only in what the
        runtime API changes (an adopted HAProxy is then brought up to date without a reload)."""
        running_text = self._running_text()
        return running_text is not None and same_structure(running_text, self._render(wanted, "adopting HAProxy"))

    def config_hash(self) -> str | None:
        """A hash of the configuration HAProxy serves now, comparable across gateways (gateway.render.fleet_hash)."""
        running = self.running
        if running is None:
            return None
        if self._hash[0] is not running:
            try:
                digest, self._backend_digests = fleet_hash(fold_extra(running), self.templates_dir, self._backend_digests)
            except OSError:
                return None
            self._hash = (running, digest)   # dynamic servers count too (folded into slots)
        return self._hash[1]

    def restart_haproxy(self) -> None:
        """HAProxy died: start it again on the last good config file, then the caller re-plans."""
        self._draining.clear()
        self._deleting.clear()
        self.haproxy.start()
        self.running = replace(self.file_table, certificates=self.certs_held) if self.file_table else None
        self.metrics.haproxy_restarts.inc()

    def finish_drains(self) -> None:
        """Put drained servers into maint once their sessions reached 0, or their bound passed; then
        `del server` the dynamic ones (HAProxy deletes only a server in maint without connections)."""
        now = time.monotonic()
        if not self._draining or not self.haproxy.alive() or now < self._next_drain_check:
            return
        self._next_drain_check = now + DRAIN_CHECK_SECONDS
        try:
            stats = self.haproxy.cli.server_stats(sorted({backend for backend, _ in self._draining}))
            done = [key for key, give_up in self._draining.items()
                    if now >= give_up or key not in stats or int(stats[key].get("scur") or 0) == 0]
            if done:
                self.haproxy.cli.run([f"set server {b}/{s} state maint" for b, s in done if (b, s) in stats])
        except HAProxyError as error:
            log.warning("finishing drains: %s", error)
            return
        deleting = [key for key in done if key in self._deleting and key in stats]
        for key in done:
            self._draining.pop(key, None)
        for backend, name in deleting:
            try:
                self.haproxy.cli.run([f"del server {backend}/{name}"])
                self._deleting.discard((backend, name))
            except HAProxyError as error:   # connections still attached (e.g. idle ones): try again shortly, bounded
                if now < self._delete_give_up.setdefault((backend, name), now + self.drain_timeout):
                    self._draining[(backend, name)] = now
                else:
                    log.warning("dynamic server %s/%s stays in maint: %s", backend, name, error)
                    self._deleting.discard((backend, name))
        for key in set(self._delete_give_up) - self._deleting:
            del self._delete_give_up[key]

    # ---- membership: runtime API

    def _membership(self, changes: tuple[MembershipChange, ...]) -> None:
        commands = [command for change in changes for command in membership_commands(change, self._add_server_maxconn(change))]
        self.haproxy.cli.run(commands)
        now = time.monotonic()
        give_up = now + self.drain_timeout
        for change in changes:
            key = (change.backend, change.slot)
            if change.action in ("remove", "delete") and not change.sticky:
                self._draining[key] = give_up
                self._next_drain_check = max(self._next_drain_check, now + DRAIN_CHECK_SECONDS)   # a drain lasts a round at least
            else:
                self._draining.pop(key, None)
            if change.action == "delete":
                self._deleting.add(key)
            else:
                self._deleting.discard(key)
        self.runtime_updates += len(changes)
        self.metrics.runtime_updates.inc(len(changes))

    def _add_server_maxconn(self, change: MembershipChange) -> int | None | bool:
        """The maxconn to make the server with by `add server` (None: no limit), or False to `set server`
        the one HAProxy has: a slot in use or still draining, a dynamic server not yet deleted, or a
        backend whose balance, cookies or DNS mode rule out `add server`."""
        key = (change.backend, change.slot)
        if change.action not in ("add", "create") or self.running is None or key in self._draining or key in self._deleting:
            return False
        try:
            backend = self.running.backend(change.backend)
        except KeyError:
            return False
        if not backend.settings.runtime_servers:
            return False
        if change.action == "create":
            return backend.settings.maxconn
        slot = next((s for s in backend.servers if s.slot == change.slot), None)
        return backend.settings.maxconn if slot is not None and slot.state == "maint" else False

    # ---- certificates: runtime API, then the files

    def _certificates(self, changes: tuple[CertChange, ...], wanted: tuple[CertEntry, ...]) -> None:
        """Apply certificate changes one by one; what HAProxy accepted is written to the files."""
        if self.certificates is None:
            return
        held = {entry.id: entry for entry in self.certs_held}
        live = self.haproxy.alive() and self.running is not None
        for change in changes:
            entry = change.entry
            if not live:
                pass   # HAProxy loads the files when it starts
            elif change.action != "remove" and self.tls_refused.get(entry.id, ("",))[0] == entry.fingerprint:
                continue   # refused before, unchanged since: the old one keeps serving
            else:
                try:
                    self.certificates.runtime(self.haproxy.cli, change)
                except HAProxyError as error:
                    self.tls_refused[entry.id] = (entry.fingerprint, f"{entry.source}: HAProxy refused it: {error}")
                    log.error("certificate %s not applied, the one serving stays: %s", entry.source, error)
                    self.metrics.certificate_updates.labels("rejected").inc()
                    continue
                self.metrics.certificate_updates.labels("applied").inc()
            self.tls_refused.pop(entry.id, None)
            if change.action == "remove":
                held.pop(entry.id, None)
            else:
                held[entry.id] = entry
        order = {entry.id: index for index, entry in enumerate(wanted)}
        self.certs_held = tuple(sorted(held.values(), key=lambda e: (order.get(e.id, len(order)), e.id)))
        self.certificates.write(self.certs_held)

    # ---- structure: render, validate, swap, reload, verify

    def _structural(self, wanted: RouteTable, reasons: tuple[str, ...]) -> RouteTable:
        """Render, validate, swap, reload (or start) `wanted` with its dynamic servers folded into slots;
        returns the table HAProxy now runs."""
        why = "; ".join(reasons)
        rendered = fold_extra(wanted)
        text = self._render(rendered, why)
        if self._refused is not None and self._refused[2] == text:
            raise ConfigRejected(self._refused[1])   # the same text again (e.g. a repeated editor event)
        self.files.candidate.write_text(text)
        problem = check_config(self.haproxy.haproxy_bin, self.files.candidate)
        if problem:
            raise self._reject(wanted, why, f"haproxy -c: {problem}", text)
        if not self.haproxy.alive():
            os.replace(self.files.candidate, self.files.config)
            self.file_table = rendered   # valid: what a restart will run, even if this start fails
            self.haproxy.start()
            self._accepted(rendered, why, "started")
            return rendered
        shutil.copyfile(self.files.config, self.files.last_good)
        os.replace(self.files.candidate, self.files.config)
        try:
            self.haproxy.reload()
            self._verify(rendered)
        except HAProxyError as error:
            self._restore()
            raise self._reject(wanted, why, f"reload: {error}", deterministic=False) from error
        self._draining.clear()   # the new worker runs the rendered states (and has no dynamic servers)
        self._deleting.clear()
        self.reloads += 1
        self.metrics.reloads.inc()
        self._accepted(rendered, why, "reloaded")
        return rendered

    def _render(self, wanted: RouteTable, why: str) -> str:
        try:
            return render_config(wanted, self.templates_dir, self.runtime)
        except (jinja2.TemplateError, UnsafeValue, OSError) as error:
            where = f"{error.filename}:{error.lineno}: " if isinstance(error, jinja2.TemplateSyntaxError) else ""
            raise self._reject(wanted, why, f"render: {where}{error.__class__.__name__}: {error}") from error

    def _running_text(self) -> str | None:
        try:
            return self.files.config.read_text()
        except OSError:
            return None

    def _accepted(self, wanted: RouteTable, why: str, what: str) -> None:
        log.info("HAProxy %s (%s)", what, why)
        self.file_table = wanted
        self._refused = None
        self.metrics.last_good_at = time.time()

    def _reject(self, wanted: RouteTable, why: str, error: str, text: str | None = None, deterministic: bool = True) -> ConfigRejected:
        """Record a refused config (status, metrics, log); returns the exception to raise.

        Render and `haproxy -c` verdicts are remembered so the same input is not re-checked; a
        failed reload is not (its cause, say a port in use, may go away)."""
        message = f"config not applied ({why[:200]}): {error}"
        log.error("%s; HAProxy keeps the last good config", message)
        self.rejected_configs.append(message)
        self.metrics.rejected_configs.inc()
        self.last_error = message
        self._refused = (wanted, message, text) if deterministic else None
        self.files.candidate.unlink(missing_ok=True)
        return ConfigRejected(message)

    def _verify(self, wanted: RouteTable) -> None:
        """The new worker has every slot of `wanted` and accepts connections on the entry point."""
        stats = self.haproxy.cli.server_stats()
        missing = [f"{b.name}/{s.slot}" for b in wanted.backends for s in b.servers if (b.name, s.slot) not in stats]
        if missing:
            raise HAProxyError(f"new worker lacks servers {', '.join(missing[:5])}")
        host, _, port = self.runtime.listen.rpartition(":")
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2).close()
        except OSError as error:
            raise HAProxyError(f"new worker does not accept connections on {self.runtime.listen}: {error}") from error

    def _restore(self) -> None:
        """Put the last good file back and make HAProxy run it again."""
        os.replace(self.files.last_good, self.files.config)
        try:
            self.haproxy.reload()
        except HAProxyError as error:
            log.error("reloading the restored last good config failed too: %s", error)
            self.metrics.errors.labels("restore").inc()
