"""Catalog + KV -> Snapshot, with three blocking queries whatever the number of services.

    /v1/health/state/any       every check: tells WHICH services changed (a check modified
                               since the last answer, or a service's check count changed; node
                               checks touch every service on their node)
    /v1/catalog/services       names and tags: services without checks, added or removed services
    /v1/kv/shopgate/?recurse   the gateway's settings

Only the services that changed are then fetched, without blocking, from
`/v1/health/service/<name>`; a fetch that changes nothing (say, only a check's output moved)
leaves the Snapshot equal and HAProxy untouched. Health flips and deregistrations of known
instances are read straight from the checks and emitted before that fetch (which then confirms
them), so the common membership change costs no extra round trip.

Consul's rules for clients are followed: an index that goes backwards resets to 0, and after any
failure the next query starts at index 0 so the watcher catches up at once (a restarted catalog
with low indexes would otherwise hold every query for its full wait). While the catalog is away
the last Snapshot stays; nothing is emitted until a full first sync, so HAProxy never sees a
half-read catalog.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

import requests

from catalog.records import NODE_MAINTENANCE_ID, SERVICE_MAINTENANCE_PREFIX  # Consul's own check IDs
from gateway.model import Instance, Snapshot
from shopgate.settings import GATEWAY_RETRY_BACKOFF_SECONDS, GATEWAY_WATCH_WAIT_SECONDS, KV_PREFIX, ConsulAddress

log = logging.getLogger("shopgate.gateway.watch")

#: Services the gateway never routes to.
IGNORED_SERVICES = frozenset({"consul"})

_STATUS_RANK = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}


class CatalogUnavailable(RuntimeError):
    """The catalog did not answer, or answered with an error."""


@dataclass(frozen=True)
class QueryResult:
    """A decoded answer and its X-Consul-Index, the index the next blocking query waits on."""

    data: object
    index: int


class ConsulHTTP:
    """The few Consul HTTP reads the watcher needs, with the token and blocking-query parameters."""

    def __init__(self, address: ConsulAddress, wait_seconds: float = GATEWAY_WATCH_WAIT_SECONDS):
        self.address = address
        self.wait_seconds = wait_seconds
        self.session = requests.Session()
        if address.token:
            self.session.headers["X-Consul-Token"] = address.token
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def get(self, path: str, params: dict | None = None, index: int | None = None, missing_ok: bool = False) -> QueryResult:
        """GET `path`; with `index` a blocking query. 404 is an empty result when `missing_ok` (KV)."""
        params = dict(params or {})
        timeout = 10.0
        if index:
            params.update(index=str(index), wait=f"{int(self.wait_seconds * 1000)}ms")
            timeout = self.wait_seconds * (1 + 1 / 16) + 10
        try:
            response = self.session.get(self.address.url + path, params=params, timeout=timeout)
        except requests.RequestException as error:
            raise CatalogUnavailable(f"{path}: {error.__class__.__name__}: {error}") from error
        new_index = _index_header(response)
        if response.status_code == 404 and missing_ok:
            return QueryResult(None, new_index)
        if response.status_code != 200:
            raise CatalogUnavailable(f"{path}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            return QueryResult(response.json(), new_index)
        except ValueError as error:
            raise CatalogUnavailable(f"{path}: answer is not JSON: {error}") from error

    def close(self) -> None:
        self.session.close()


def _index_header(response: requests.Response) -> int:
    try:
        return max(0, int(response.headers.get("X-Consul-Index", "0")))
    except ValueError:
        return 0


# ---------------------------------------------------------------- parsing (pure)


def aggregate_status(checks: list[dict]) -> str:
    """Maintenance if a maintenance check is present, else the worst check status ("passing" without checks)."""
    worst = "passing"
    for check in checks:
        check_id = str(check.get("CheckID", ""))
        if check_id == NODE_MAINTENANCE_ID or check_id.startswith(SERVICE_MAINTENANCE_PREFIX):
            return "maintenance"
        status = check.get("Status", "critical")
        if _STATUS_RANK.get(status, 2) > _STATUS_RANK[worst]:
            worst = status if status in _STATUS_RANK else "critical"
    return worst


def instances_from_health(service: str, entries: list[dict]) -> tuple[Instance, ...]:
    """`/v1/health/service/<name>` entries -> Instances (address: ServiceAddress, else the node's)."""
    instances = []
    for entry in entries or ():
        node, svc = entry.get("Node") or {}, entry.get("Service") or {}
        meta = svc.get("Meta") or {}
        instances.append(Instance(
            service=service,
            id=str(svc.get("ID", "")),
            node=str(node.get("Node", "")),
            address=str(svc.get("Address") or node.get("Address") or ""),
            port=svc.get("Port") if isinstance(svc.get("Port"), int) else 0,
            tags=tuple(str(t) for t in svc.get("Tags") or ()),
            meta=tuple(sorted((str(k), str(v)) for k, v in meta.items())),
            status=aggregate_status(entry.get("Checks") or []),
        ))
    return tuple(sorted(instances, key=lambda i: i.key))


@dataclass
class CheckCensus:
    """One `/v1/health/state/any` answer, reduced to what tells which services changed."""

    counts: dict[str, int]          # service -> how many checks it has
    node_counts: dict[str, int]     # node -> how many node-level checks it has
    touched: set[str]               # services with a check modified after the previous answer
    touched_nodes: set[str]         # nodes with a node check modified after it


def check_census(checks: list[dict], since: int) -> CheckCensus:
    """One cheap pass over every check (10,000 checks: ~10 ms): counts, and what changed after index `since`."""
    counts: dict[str, int] = {}
    node_counts: dict[str, int] = {}
    touched: set[str] = set()
    touched_nodes: set[str] = set()
    for check in checks or ():
        modified = not isinstance(check.get("ModifyIndex"), int) or check["ModifyIndex"] > since
        name = check.get("ServiceName")
        if name:
            counts[name] = counts.get(name, 0) + 1
            if modified:
                touched.add(name)
        else:
            node = check.get("Node", "")
            node_counts[node] = node_counts.get(node, 0) + 1
            if modified:
                touched_nodes.add(node)
    return CheckCensus(counts, node_counts, touched, touched_nodes)


def _count_changes(old: dict[str, int], new: dict[str, int]) -> set[str]:
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


def kv_from_entries(entries: list[dict] | None) -> dict[str, bytes]:
    """`/v1/kv/<prefix>?recurse` entries -> key: raw value (Consul sends values base64-encoded, null when empty)."""
    values = {}
    for entry in entries or ():
        raw = entry.get("Value")
        values[str(entry.get("Key"))] = base64.b64decode(raw) if raw else b""
    return values


# ---------------------------------------------------------------- the watcher


class CatalogWatcher:
    """Keeps a Snapshot of the catalog and KV current, calling `on_snapshot(snapshot, seen_at)` on change.

    `seen_at` is the monotonic time the change was first seen (the start of propagation)."""

    def __init__(self, address: ConsulAddress, on_snapshot: Callable[[Snapshot, float], None],
                 wait_seconds: float = GATEWAY_WATCH_WAIT_SECONDS, kv_prefix: str = KV_PREFIX, fetch_workers: int = 8):
        self.http = ConsulHTTP(address, wait_seconds)
        self.on_snapshot = on_snapshot
        self.kv_prefix = kv_prefix
        self.fetch_workers = fetch_workers
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        # what we know
        self._instances: dict[str, tuple[Instance, ...]] = {}
        self._catalog_tags: dict[str, frozenset] = {}
        self._checks = CheckCensus({}, {}, set(), set())
        self._kv: dict[str, bytes] = {}
        self._indexes = {"health": 0, "catalog": 0, "kv": 0}
        self._synced: set[str] = set()
        self._dirty: dict[str, float] = {}      # service -> first seen_at
        self._kv_seen_at: float | None = None
        self._local_seen_at: float | None = None  # statuses updated from the checks, not emitted yet
        self._check_keys: dict[str, set[tuple[str, str]]] = {}   # service -> (node, service id) that have checks
        self._emitted_once = False
        self._failing: set[str] = set()
        # what the controller and /status read
        self.reachable = False
        self.last_error: str | None = None
        self.recovered_at: float | None = None   # monotonic time of the last recovery or index reset
        self.long_polls_in_flight = 0
        self.requests_made = 0

    # ---- lifecycle

    def start(self) -> "CatalogWatcher":
        for name, target in (("health", self._poll_health), ("catalog", self._poll_catalog), ("kv", self._poll_kv), ("fetch", self._fetch_loop)):
            threading.Thread(target=target, name=f"watch-{name}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self.http.close()

    # ---- the three blocking queries

    def _poll_health(self) -> None:
        self._poll("health", "/v1/health/state/any", {}, self._health_changed)

    def _poll_catalog(self) -> None:
        self._poll("catalog", "/v1/catalog/services", {}, self._catalog_changed)

    def _poll_kv(self) -> None:
        self._poll("kv", f"/v1/kv/{self.kv_prefix}", {"recurse": ""}, self._kv_changed, missing_ok=True)

    def _poll(self, name: str, path: str, params: dict, handle: Callable[[object, float, int], None], missing_ok: bool = False) -> None:
        first_backoff, last_backoff = GATEWAY_RETRY_BACKOFF_SECONDS
        backoff = first_backoff
        while not self._stop.is_set():
            index = self._indexes[name]
            try:
                with self._lock:
                    self.long_polls_in_flight += 1 if index else 0
                    self.requests_made += 1
                try:
                    result = self.http.get(path, params, index=index, missing_ok=missing_ok)
                finally:
                    with self._lock:
                        self.long_polls_in_flight -= 1 if index else 0
            except CatalogUnavailable as error:
                if self._stop.is_set():
                    return
                self._failed(name, str(error))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, last_backoff)
                continue
            backoff = first_backoff
            seen_at = time.monotonic()
            self._succeeded(name)
            if result.index < index:
                log.warning("catalog index of %s went backwards (%d -> %d): resetting", path, index, result.index)
                self._indexes[name] = 0
                self.recovered_at = seen_at
                continue
            if result.index == index and index:
                continue  # the wait ended without a change
            self._indexes[name] = max(result.index, 1)
            handle(result.data, seen_at, index)
            with self._wake:
                self._synced.add(name)
                self._wake.notify_all()

    def _failed(self, name: str, error: str) -> None:
        if name not in self._failing:
            log.warning("catalog unavailable (%s): %s; keeping the last snapshot, retrying", name, error[:300])
            self._failing.add(name)
        self.reachable = False
        self.last_error = error
        if name in self._indexes:
            self._indexes[name] = 0  # catch up at once when it returns, whatever its indexes are now

    def _succeeded(self, name: str) -> None:
        self._failing.discard(name)
        if not self.reachable and self.last_error is not None:
            log.info("catalog reachable again (%s)", name)
            self.recovered_at = time.monotonic()
        self.reachable = True
        self.last_error = None

    # ---- what changed

    def _health_changed(self, data: object, seen_at: float, since: int) -> None:
        checks = data if isinstance(data, list) else []
        census = check_census(checks, since)
        with self._wake:
            changed = census.touched | _count_changes(self._checks.counts, census.counts)
            changed_nodes = census.touched_nodes | _count_changes(self._checks.node_counts, census.node_counts)
            if changed_nodes:
                changed |= {s for s, instances in self._instances.items() if any(i.node in changed_nodes for i in instances)}
            self._checks = census
            if self._update_statuses(checks, changed) and self._emitted_once:
                self._local_seen_at = self._local_seen_at or seen_at
            self._mark_dirty(changed, seen_at)

    def _update_statuses(self, checks: list[dict], changed: set[str]) -> bool:
        """Health flips and deregistrations of known instances, straight from the checks: no round trip
        before HAProxy hears. An instance whose every check vanished is taken as deregistered.

        The changed services are still fetched afterwards, which confirms (or corrects) this."""
        by_instance: dict[tuple, list[dict]] = {}
        node_checks: dict[str, list[dict]] = {}
        for check in checks:
            name = check.get("ServiceName")
            if name in changed:
                by_instance.setdefault((name, check.get("Node"), check.get("ServiceID")), []).append(check)
            elif not name:
                node_checks.setdefault(check.get("Node", ""), []).append(check)
        moved = False
        for service in changed:
            known = self._instances.get(service, ())
            had_checks = self._check_keys.get(service, set())
            has_checks = {(node, sid) for name, node, sid in by_instance if name == service}
            self._check_keys[service] = has_checks
            known_keys = {(i.node, i.id) for i in known}
            gone = had_checks - has_checks
            if not known or not has_checks <= known_keys or not gone <= known_keys or (known_keys - has_checks) - gone:
                continue   # instances came, or some have no checks: only the fetch knows
            updated = tuple(replace(i, status=aggregate_status(by_instance[(service, i.node, i.id)] + node_checks.get(i.node, [])))
                            for i in known if (i.node, i.id) not in gone)
            if updated != known:
                self._set_instances(service, updated)
                moved = True
        return moved

    def _set_instances(self, service: str, instances: tuple[Instance, ...]) -> None:
        """A service without instances is no key at all: the Snapshot then equals one that never had it."""
        if instances:
            self._instances[service] = instances
        else:
            self._instances.pop(service, None)

    def _catalog_changed(self, data: object, seen_at: float, since: int) -> None:
        names = {str(k): frozenset(v or ()) for k, v in (data.items() if isinstance(data, dict) else ()) if k not in IGNORED_SERVICES}
        with self._wake:
            changed = {s for s in names.keys() | self._catalog_tags.keys() if names.get(s) != self._catalog_tags.get(s)}
            self._catalog_tags = names
            self._mark_dirty(changed, seen_at)

    def _kv_changed(self, data: object, seen_at: float, since: int) -> None:
        values = kv_from_entries(data if isinstance(data, list) else None)
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
                    kv_seen_at, self._kv_seen_at = self._kv_seen_at, None
                    local_seen_at, self._local_seen_at = self._local_seen_at, None
                    early = self._snapshot() if local_seen_at is not None else None
                if early is not None:
                    self.on_snapshot(early, local_seen_at)
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
                    for service, instances in fetched.items():
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

    def _fetch_service(self, service: str) -> tuple[Instance, ...]:
        self.requests_made += 1
        result = self.http.get(f"/v1/health/service/{requests.utils.quote(service, safe='')}")
        return instances_from_health(service, result.data if isinstance(result.data, list) else [])

    def _snapshot(self) -> Snapshot:
        return Snapshot(services=dict(self._instances), kv=dict(self._kv), index=max(self._indexes.values()))

    def current(self) -> Snapshot:
        with self._lock:
            return self._snapshot()
