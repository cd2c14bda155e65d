"""Catalog + KV -> Snapshot, with three blocking queries whatever the number of services.

    /v1/health/state/any       every check, read by its difference from the last answer
                               (shopgate.consul_client.checks): the checks that changed, came or
                               went tell WHICH services changed (a node check touches every
                               service on its node)
    /v1/catalog/services       names and tags: services without checks, added or removed services
                               (shopgate.consul_client.services: decoded only when its bytes changed)
    /v1/kv/shopgate/?recurse   the gateway's settings

Only the services that changed are then fetched, without blocking, from
`/v1/health/service/<name>`; a fetch that changes nothing (say, only a check's output moved)
leaves the Snapshot equal and HAProxy untouched. Health flips and deregistrations of known
instances are read straight from the checks and emitted before that fetch (which then confirms
them), so the common membership change costs no extra round trip.

Each query is the ground floor's generic blocking-query loop (`shopgate.consul_client.blocking`:
Consul's index rules, backoff) and each answer is read by the ground floor's decoders (checks,
health entries, KV); this module decides only what an answer means for the Snapshot. While the catalog is
away the last Snapshot stays; nothing is emitted until a full first sync, so HAProxy never sees a
half-read catalog.

py-consul quotes a service name in the fetch's path except for `/` and `:`; a name containing
them reads as no instances (such a name is refused by routing anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from gateway.model import Instance, Snapshot
from shopgate.consul_client import CatalogUnavailable, ConsulAddress, QueryResult, connect, read
from shopgate.consul_client.blocking import BlockingQuery
from shopgate.consul_client.checks import PATH as CHECKS_PATH
from shopgate.consul_client.checks import CheckDelta, CheckList, CheckRow, read_checks
from shopgate.consul_client.health import aggregate_status, decode_health_entries
from shopgate.consul_client.kv import kv_from_entries
from shopgate.consul_client.services import PATH as SERVICES_PATH
from shopgate.consul_client.services import ServiceTags, read_services
from shopgate.settings import GATEWAY_WATCH_WAIT_SECONDS, KV_PREFIX

log = logging.getLogger("shopgate.gateway.watch")

#: Services the gateway never routes to.
IGNORED_SERVICES = frozenset({"consul"})
#: After a view read straight from the checks went out, the fetch that only confirms it waits this long, so that
#: on a small machine it does not compete with the controller applying that view (at 10,000 servers the two
#: running together made each take twice as long).
CONFIRM_DELAY_SECONDS = 0.02
#: A plain (non-blocking) read that takes longer than this counts as the catalog being unavailable.
READ_TIMEOUT_SECONDS = 10.0


# ---------------------------------------------------------------- every check, kept by deltas (pure)


@dataclass
class CheckIndex:
    """Every check of the catalog by whose it is, kept current by `/v1/health/state/any` deltas."""

    services: dict[str, dict[tuple[str, str], CheckRow]] = field(default_factory=dict)   # service -> (node, check id) -> check
    nodes: dict[str, dict[str, CheckRow]] = field(default_factory=dict)                  # node -> check id -> node-level check

    def apply(self, delta: CheckDelta) -> tuple[set[str], set[str]]:
        """Take in a delta (gone rows first, so a changed check is replaced); returns the services and
        the nodes whose checks changed."""
        services: set[str] = set()
        nodes: set[str] = set()
        for rows, keep in ((delta.removed, False), (delta.added, True)):
            for row in rows:
                if row.service_name:
                    table, group, key = self.services, row.service_name, (row.node, row.check_id)
                    services.add(group)
                else:
                    table, group, key = self.nodes, row.node, row.check_id
                    nodes.add(group)
                checks = table.setdefault(group, {})
                if keep:
                    checks[key] = row
                else:
                    checks.pop(key, None)
                if not checks:
                    del table[group]
        return services, nodes

    def instance_checks(self, service: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """(node, service id) -> the (check id, status) pairs of each instance of `service` that has checks."""
        found: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in self.services.get(service, {}).values():
            found.setdefault((row.node, row.service_id), []).append((row.check_id, row.status))
        return found

    def node_checks(self, node: str) -> list[tuple[str, str]]:
        return [(row.check_id, row.status) for row in self.nodes.get(node, {}).values()]


# ---------------------------------------------------------------- the watcher


class CatalogWatcher:
    """Keeps a Snapshot of the catalog and KV current, calling `on_snapshot(snapshot, seen_at)` on change.

    `seen_at` is the monotonic time the change was first seen (the start of propagation)."""

    def __init__(self, address: ConsulAddress, on_snapshot: Callable[[Snapshot, float], None],
                 wait_seconds: float = GATEWAY_WATCH_WAIT_SECONDS, kv_prefix: str = KV_PREFIX, fetch_workers: int = 8):
        self.consul = connect(address, timeout=READ_TIMEOUT_SECONDS, pool_size=fetch_workers + 4)
        self.on_snapshot = on_snapshot
        self.fetch_workers = fetch_workers
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        # what we know
        self._instances: dict[str, tuple[Instance, ...]] = {}
        self._catalog_tags: dict[str, frozenset] = {}
        self._service_tags = ServiceTags()   # the last answer of the services query, to skip an unchanged one
        self._unexplained: set[str] = set()   # dirty services whose change only a fetch can tell
        self._check_list = CheckList()   # the last answer of the checks query, to read the next by difference
        self._checks = CheckIndex()
        self._kv: dict[str, bytes] = {}
        self._synced: set[str] = set()
        self._dirty: dict[str, float] = {}      # service -> first seen_at
        self._kv_seen_at: float | None = None
        self._local_seen_at: float | None = None  # statuses updated from the checks, not emitted yet
        self._check_keys: dict[str, set[tuple[str, str]]] = {}   # service -> (node, service id) that have checks
        self._fetched_index: dict[str, int] = {}   # service -> the index of the fetch its instances were last read from
        self._emitted_once = False
        self._failing: set[str] = set()
        self._fetches = 0
        wait = f"{int(wait_seconds * 1000)}ms"
        kv = self.consul.kv
        self._queries = (
            self._query("health", lambda index: read_checks(self.consul, index, wait), self._health_changed),
            self._query("catalog", lambda index: read_services(self.consul, index, wait), self._catalog_changed),
            self._query("kv", lambda index: read(f"/v1/kv/{kv_prefix}?recurse", kv.get, kv_prefix, recurse=True,
                                                 index=index or None, wait=wait),
                        self._kv_changed),
        )
        # what the controller and /status read
        self.reachable = False
        self.last_error: str | None = None
        self.recovered_at: float | None = None   # monotonic time of the last recovery or index reset

    @property
    def long_polls_in_flight(self) -> int:
        return sum(query.waiting for query in self._queries)

    @property
    def requests_made(self) -> int:
        return sum(query.reads for query in self._queries) + self._fetches

    # ---- lifecycle

    def start(self) -> "CatalogWatcher":
        for query in self._queries:
            query.start()
        threading.Thread(target=self._fetch_loop, name="watch-fetch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self.consul.http.session.close()

    # ---- the three blocking queries

    def _query(self, name: str, fetch: Callable[[int], QueryResult], handle: Callable[[Any, float, int], None]) -> BlockingQuery:
        def changed(data: Any, seen_at: float, index: int) -> None:
            handle(data, seen_at, index)
            with self._wake:
                self._synced.add(name)
                self._wake.notify_all()

        def reset(seen_at: float) -> None:
            log.warning("catalog index of the %s query went backwards: resetting", name)
            self.recovered_at = seen_at

        return BlockingQuery(name, fetch, changed, self._stop, on_error=lambda message: self._failed(name, message),
                             on_success=lambda: self._succeeded(name), on_reset=reset)

    def _failed(self, name: str, error: str) -> None:
        if name not in self._failing:
            log.warning("catalog unavailable (%s): %s; keeping the last snapshot, retrying", name, error[:300])
            self._failing.add(name)
        self.reachable = False
        self.last_error = error

    def _succeeded(self, name: str) -> None:
        self._failing.discard(name)
        if not self.reachable and self.last_error is not None:
            log.info("catalog reachable again (%s)", name)
            self.recovered_at = time.monotonic()
        self.reachable = True
        self.last_error = None

    # ---- what changed

    def _health_changed(self, body: bytes, seen_at: float, index: int) -> None:
        try:
            delta = self._check_list.update(body)
        except ValueError as error:
            raise CatalogUnavailable(f"{CHECKS_PATH}: {error}") from error
        with self._wake:
            changed, changed_nodes = self._checks.apply(delta)
            if changed_nodes:
                changed |= {s for s, instances in self._instances.items() if any(i.node in changed_nodes for i in instances)}
            moved, unexplained = self._update_statuses(changed, index)
            self._unexplained |= unexplained
            if moved and self._emitted_once:
                self._local_seen_at = self._local_seen_at or seen_at
            self._mark_dirty(changed, seen_at)

    def _update_statuses(self, changed: set[str], checks_index: int) -> tuple[bool, set[str]]:
        """Health flips and deregistrations of known instances, straight from the checks (the answer at
        `checks_index`): no round trip before HAProxy hears. An instance whose every check vanished is
        taken as deregistered. Returns whether an instance moved, and the services only a fetch can tell.

        A service last fetched at a later index than this answer is left to the fetch: the fetch
        already showed newer statuses (a check answer can arrive after a fetch that read past it), and
        writing the older ones over them would flap the instance in the views. The changed services are
        still fetched afterwards, which confirms (or corrects) the rest."""
        moved = False
        unexplained = set()
        for service in changed:
            known = self._instances.get(service, ())
            by_instance = self._checks.instance_checks(service)
            had_checks = self._check_keys.get(service, set())
            has_checks = set(by_instance)
            self._check_keys[service] = has_checks
            known_keys = {(i.node, i.id) for i in known}
            gone = had_checks - has_checks
            if self._fetched_index.get(service, 0) > checks_index or not known or not has_checks <= known_keys or not gone <= known_keys or (known_keys - has_checks) - gone:
                unexplained.add(service)   # instances came, or some have no checks: only the fetch knows
                continue
            updated = tuple(replace(i, status=aggregate_status(by_instance[(i.node, i.id)] + self._checks.node_checks(i.node)))
                            for i in known if (i.node, i.id) not in gone)
            if updated != known:
                self._set_instances(service, updated)
                moved = True
        return moved, unexplained

    def _set_instances(self, service: str, instances: tuple[Instance, ...]) -> None:
        """A service without instances is no key at all: the Snapshot then equals one that never had it."""
        if instances:
            self._instances[service] = instances
        else:
            self._instances.pop(service, None)

    def _catalog_changed(self, body: bytes, seen_at: float, index: int) -> None:
        try:
            tags = self._service_tags.update(body)
        except ValueError as error:
            raise CatalogUnavailable(f"{SERVICES_PATH}: {error}") from error
        if tags is None:
            return   # another instance of a known service came or went: the checks tell
        names = {name: service_tags for name, service_tags in tags.items() if name not in IGNORED_SERVICES}
        with self._wake:
            changed = {s for s in names.keys() | self._catalog_tags.keys() if names.get(s) != self._catalog_tags.get(s)}
            self._catalog_tags = names
            self._mark_dirty(changed, seen_at)

    def _kv_changed(self, data: object, seen_at: float, index: int) -> None:
        values = kv_from_entries(data)
        with self._wake:
            if values != self._kv:
                self._kv = values
                self._kv_seen_at = seen_at
                self._wake.notify_all()

    def _mark_dirty(self, services: set[str], seen_at: float) -> None:
        for service in services - IGNORED_SERVICES:
            self._dirty.setdefault(service, seen_at)
        if services:
            self._wake.notify_all()

    # ---- fetching the changed services, emitting snapshots

    def _fetch_loop(self) -> None:
        carried: list[float] = []   # seen_at of changes fetched but not yet emitted
        pending = False
        with ThreadPoolExecutor(self.fetch_workers, thread_name_prefix="watch-fetch") as pool:
            while not self._stop.is_set():
                with self._wake:
                    while not self._stop.is_set() and not self._ready_to_work():
                        self._wake.wait(1.0)
                    if self._stop.is_set():
                        return
                    dirty, self._dirty = self._dirty, {}
                    before_fetch = {service: self._instances.get(service) for service in dirty}
                    confirm_only = not (dirty.keys() & self._unexplained) and self._kv_seen_at is None
                    self._unexplained -= dirty.keys()
                    kv_seen_at, self._kv_seen_at = self._kv_seen_at, None
                    local_seen_at, self._local_seen_at = self._local_seen_at, None
                    early = self._snapshot() if local_seen_at is not None else None
                if early is not None:
                    self.on_snapshot(early, local_seen_at)
                    if confirm_only:   # nothing waits on the fetch: let the controller apply the early view first
                        self._stop.wait(CONFIRM_DELAY_SECONDS)
                try:
                    fetched = dict(zip(dirty, pool.map(self._fetch_service, dirty)))
                except CatalogUnavailable as error:
                    with self._wake:
                        for service, seen in dirty.items():
                            self._dirty.setdefault(service, seen)
                        if kv_seen_at is not None and self._kv_seen_at is None:
                            self._kv_seen_at = kv_seen_at
                    self._failed("fetch", str(error))
                    self._stop.wait(0.5)
                    continue
                with self._wake:
                    moved = kv_seen_at is not None or not self._emitted_once
                    for service, (index, instances) in fetched.items():
                        if self._instances.get(service) is not before_fetch[service]:
                            continue   # the checks moved it while it was fetched: this answer may be the older; it is fetched again
                        self._fetched_index[service] = index
                        if instances != self._instances.get(service, ()):   # else (say, only a check's output
                            self._set_instances(service, instances)          # changed) keep the very same tuple
                            moved = True
                    if moved:
                        pending = True
                        carried += [*dirty.values(), *([kv_seen_at] if kv_seen_at is not None else [])]
                    if self._dirty or not pending:
                        continue  # more changes arrived meanwhile (fold them in first), or nothing moved
                    snapshot = self._snapshot()
                seen_at = min(carried) if carried else time.monotonic()
                carried, pending = [], False
                self._emitted_once = True
                self.on_snapshot(snapshot, seen_at)

    def _ready_to_work(self) -> bool:
        if len(self._synced) < 3:
            return False  # nothing is emitted before the first full read of all three queries
        return bool(self._dirty) or self._kv_seen_at is not None or self._local_seen_at is not None or not self._emitted_once

    def _fetch_service(self, service: str) -> tuple[int, tuple[Instance, ...]]:
        """(the answer's index, the instances of `service`)."""
        self._fetches += 1
        result = read(f"/v1/health/service/{service}", self.consul.health.service, service)
        return result.index, decode_health_entries(service, result.data, make=Instance)

    def _snapshot(self) -> Snapshot:
        return Snapshot(services=dict(self._instances), kv=dict(self._kv), index=max(query.index for query in self._queries))

    def current(self) -> Snapshot:
        with self._lock:
            return self._snapshot()
