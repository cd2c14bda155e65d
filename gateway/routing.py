"""Snapshot -> RouteTable: which paths go to which backend, and which instance sits in which server slot.

Pure: the same snapshot and previous table always give the same table. Two properties matter
for running HAProxy without reloads:

* Stable slots. An instance keeps its server slot (`s1`, `s2`, ...) across calls; new instances
  take free slots in registration order (CreateIndex), preferring slots that were already free,
  so a slot still draining its old instance is reused last; a vanished instance frees its slot.
  So membership changes are per-slot runtime-API commands, and gateways that watch one catalog
  place instances alike however their watchers batched the arrivals.
* Slot counts with headroom and hysteresis. A backend gets max(min_slots, KV `slots`,
  next power of two >= headroom x instances) slots, grows only when the instances no longer fit
  and shrinks only when eight times that size would still fit, so flapping does not reload
  (spare slots are disabled servers: they cost a config line, not a check or a connection).

Every catalog string is validated (gateway.haproxy_syntax) before it can become a name, path,
host or address; what fails is skipped and reported in `RouteTable.rejected` as "where: what".
"""

from __future__ import annotations

import operator
from functools import lru_cache
from typing import Iterable, NamedTuple

from gateway.haproxy_syntax import HOSTNAME, SERVICE_NAME, address_problem, display, path_problem, port_problem
from gateway.kv_settings import parse_settings
from gateway.model import Backend, BackendSettings, Instance, Route, RouteTable, Server, Snapshot
from shopgate.settings import MIN_SLOTS, SLOT_HEADROOM

#: A backend shrinks only when its slot count is at least this many times what it needs.
SHRINK_FACTOR = 8

DEFAULT_ROUTE_PREFIX = "/api/v1/"
ROUTE_TAG = "urlprefix-"
DEFAULT_WEIGHT = 100


def backend_name(service: str) -> str:
    """The HAProxy backend of a (valid) service name."""
    return f"be_{service}"


def slot_name(index: int) -> str:
    """Server name of slot `index` (0-based): s1, s2, ..."""
    return f"s{index + 1}"


def build_route_table(
    snapshot: Snapshot,
    previous: RouteTable | None = None,
    min_slots: int = MIN_SLOTS,
    headroom: int = SLOT_HEADROOM,
) -> RouteTable:
    """The RouteTable for `snapshot`, keeping slots and contested routes as they were in `previous`."""
    gateway_settings, service_settings, rejected = parse_settings(snapshot.kv)
    previous_services = previous.memo.get("services", {}) if previous else {}
    previous_backends = {b.service: b for b in previous.backends} if previous and not previous_services else {}
    services: dict[str, _ServiceResult] = {}
    for service in sorted(snapshot.services):
        instances = snapshot.services[service]
        settings = service_settings.get(service, _DEFAULT_SETTINGS)
        result = previous_services.get(service)
        if result is None or not result.built_from(instances, settings, min_slots, headroom):
            if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
                rejected.append(f"service {display(service)}: name must be 1-63 of A-Z a-z 0-9 _ . - starting with a letter or digit")
                continue
            previous_backend = result.backend if result else previous_backends.get(service)
            result = _build_service(service, instances, settings, previous_backend, min_slots, headroom)
        services[service] = result
        rejected.extend(result.rejected)
    route_inputs = tuple(result.routes for result in services.values())
    routes, conflicts = _routes(route_inputs, previous)
    return RouteTable(
        routes=routes,
        backends=tuple(result.backend for result in services.values()),
        settings=gateway_settings,
        rejected=tuple(rejected + conflicts),
        memo={"services": services, "routes": (route_inputs, routes, conflicts)},
    )


def _routes(route_inputs: tuple[list["_Candidate"], ...], previous: RouteTable | None) -> tuple[tuple[Route, ...], list[str]]:
    """Resolve conflicts and order the routes, or reuse the previous result when no service's routes changed."""
    if previous is not None and "routes" in previous.memo:
        previous_inputs, routes, conflicts = previous.memo["routes"]
        if len(previous_inputs) == len(route_inputs) and all(map(operator.is_, previous_inputs, route_inputs)):
            return routes, conflicts
    conflicts: list[str] = []
    routes = _resolve_conflicts([c for candidates in route_inputs for c in candidates], previous.routes if previous else (), conflicts)
    return routes, conflicts


_DEFAULT_SETTINGS = BackendSettings()


class _ServiceResult(NamedTuple):
    """One service's part of the table, with the inputs it was built from (RouteTable.memo)."""

    instances: tuple[Instance, ...]
    settings: BackendSettings
    sizing: tuple[int, int]
    backend: Backend
    routes: list["_Candidate"]
    rejected: list[str]

    def built_from(self, instances: tuple[Instance, ...], settings: BackendSettings, min_slots: int, headroom: int) -> bool:
        return (self.instances is instances or self.instances == instances) and self.settings == settings and self.sizing == (min_slots, headroom)


def _build_service(service: str, instances: tuple[Instance, ...], settings: BackendSettings, previous: Backend | None, min_slots: int, headroom: int) -> _ServiceResult:
    rejected: list[str] = []
    valid = _valid_instances(service, instances, rejected)
    backend = _backend(service, valid, settings, previous, min_slots, headroom)
    routes = _service_routes(service, valid, rejected)
    return _ServiceResult(tuple(instances), settings, (min_slots, headroom), backend, routes, rejected)


# ---------------------------------------------------------------- instances and slots


def _valid_instances(service: str, instances: Iterable[Instance], rejected: list[str]) -> list[Instance]:
    valid: list[Instance] = []
    seen: set[str] = set()
    for instance in instances:
        problem = address_problem(instance.address) or port_problem(instance.port)
        if problem is None and instance.key in seen:
            problem = "duplicate instance id"
        if problem:
            rejected.append(f"service {service}, instance {display(instance.key)}: {problem}")
            continue
        seen.add(instance.key)
        valid.append(instance)
    return valid


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def slot_count(instances: int, current: int | None, floor: int, headroom: int) -> int:
    """How many slots a backend with `instances` instances should have, given its `current` count."""
    wanted = max(floor, _next_power_of_two(headroom * instances))
    if current is None or instances > current or floor > current or wanted * SHRINK_FACTOR <= current:
        return wanted
    return current


@lru_cache(maxsize=None)
def _spare(slot: str) -> Server:
    return Server(slot=slot, instance_key=None)


def _state(instance: Instance, settings: BackendSettings) -> str:
    """ready: passing. drain: leaving gracefully (in-flight requests finish). maint: failing its checks."""
    if instance.status == "maintenance" or (settings.maintenance and instance.healthy):
        return "drain"
    return "ready" if instance.healthy else "maint"


def _weight(instance: Instance, settings: BackendSettings) -> int:
    """The lowest weight among the instance's weighted tags (canary releases), else the default."""
    weights = [weight for tag, weight in settings.tag_weights if tag in instance.tags]
    return min(weights) if weights else DEFAULT_WEIGHT


def _backend(service: str, instances: list[Instance], settings: BackendSettings, previous: Backend | None, min_slots: int, headroom: int) -> Backend:
    floor = max(min_slots, settings.min_slots or 0)
    count = slot_count(len(instances), len(previous.servers) if previous else None, floor, headroom)
    old_servers = previous.servers if previous else ()
    old_slot = {s.instance_key: i for i, s in enumerate(old_servers) if s.occupied}
    by_slot: dict[int, Instance] = {}
    newcomers: list[Instance] = []
    for instance in instances:
        index = old_slot.get(instance.key)
        if index is not None and index < count:
            by_slot[index] = instance
        else:
            newcomers.append(instance)
    if newcomers:
        # In registration order, so a gateway that saw two arrivals in one view places them as one
        # that saw them one by one (several gateways on one catalog agree on slots).
        newcomers.sort(key=lambda i: i.create_index)   # stable: ties keep the catalog's order
        # Slots free before this call first (lowest first), then slots just vacated.
        vacated = {i for i, s in enumerate(old_servers[:count]) if s.occupied and i not in by_slot}
        free = [i for i in range(count) if i not in by_slot and i not in vacated] + sorted(vacated)
        for index, instance in zip(free, newcomers):
            by_slot[index] = instance
    servers = []
    for index in range(count):
        name = slot_name(index)
        old = old_servers[index] if index < len(old_servers) else None
        instance = by_slot.get(index)
        if instance is None:
            servers.append(_spare(name))
            continue
        weight, state = _weight(instance, settings), _state(instance, settings)
        if old is not None and old.instance_key == instance.key and old.address == instance.address and old.port == instance.port and old.weight == weight and old.state == state:
            servers.append(old)  # unchanged: reuse, so comparisons stay cheap
        else:
            servers.append(Server(name, instance.key, instance.address, instance.port, weight, state))
    if previous is not None and previous.settings == settings and len(servers) == len(old_servers) and all(a is b for a, b in zip(servers, old_servers)):
        return previous
    return Backend(name=backend_name(service), service=service, settings=settings, servers=tuple(servers))


# ---------------------------------------------------------------- routes


class _Candidate(NamedTuple):
    route: Route
    explicit: bool      # from a urlprefix- tag (True) or the default route (False)


def parse_route_tag(tag: str, backend: str) -> Route:
    """`urlprefix-[host]/path [strip=/prefix]` -> Route, or ValueError saying what is wrong."""
    words = tag[len(ROUTE_TAG):].split()
    if not words:
        raise ValueError("no path after urlprefix-")
    target, options = words[0], words[1:]
    slash = target.find("/")
    if slash < 0:
        raise ValueError(f"{display(target)} has no path (expected [host]/path)")
    host, path = target[:slash].lower() or None, target[slash:]
    if host is not None and not HOSTNAME.fullmatch(host):
        raise ValueError(f"host {display(host)} is not a hostname")
    problem = path_problem(path)
    if problem:
        raise ValueError(problem)
    path = path.rstrip("/") or "/"
    strip = None
    for option in options:
        name, equals, value = option.partition("=")
        if name != "strip" or not equals:
            raise ValueError(f"unknown option {display(option)} (supported: strip=/prefix)")
        problem = path_problem(value)
        if problem:
            raise ValueError(f"strip: {problem}")
        strip = value.rstrip("/")
        if not strip or not (path == strip or path.startswith(strip + "/")):
            raise ValueError(f"strip={value} is not a leading part of the path {path}")
    return Route(backend=backend, path_prefix=path, host=host, strip=strip)


def _service_routes(service: str, instances: list[Instance], rejected: list[str]) -> list[_Candidate]:
    """Routes from the urlprefix- tags of any present instance; the default route when there is none."""
    backend = backend_name(service)
    routes: dict[Route, None] = {}
    problems: dict[str, str] = {}
    for instance in instances:
        for tag in instance.tags:
            if not isinstance(tag, str) or not tag.startswith(ROUTE_TAG) or tag in problems:
                continue
            try:
                routes[parse_route_tag(tag, backend)] = None
            except ValueError as error:
                problems[tag] = f"service {service}, instance {display(instance.key)}, tag {display(tag)}: {error}"
    rejected.extend(problems.values())
    if not routes:
        return [_Candidate(Route(backend=backend, path_prefix=DEFAULT_ROUTE_PREFIX + service), explicit=False)]
    return [_Candidate(route, explicit=True) for route in routes]


def route_order(route: Route) -> tuple:
    """Host-specific routes first, then the longest prefix: the first matching route wins."""
    return (route.host is None, -len(route.path_prefix), route.host or "", route.path_prefix, route.backend, route.strip or "")


def _resolve_conflicts(candidates: list[_Candidate], previous: tuple[Route, ...], rejected: list[str]) -> tuple[Route, ...]:
    """One route per (host, prefix): the previous holder keeps it, then tags beat defaults, then name order."""
    held = {(r.host, r.path_prefix): r for r in previous}
    claims: dict[tuple[str | None, str], list[_Candidate]] = {}
    for candidate in candidates:
        claims.setdefault((candidate.route.host, candidate.route.path_prefix), []).append(candidate)
    routes = []
    for (host, prefix), contenders in claims.items():
        distinct = {c.route for c in contenders}
        if len(distinct) == 1:
            routes.append(contenders[0].route)
            continue
        ranked = sorted(contenders, key=lambda c: (c.route != held.get((host, prefix)), not c.explicit, c.route.backend, c.route.strip or ""))
        winner = ranked[0].route
        losers = sorted({f"{c.route.backend}{c.route.strip_option}" for c in ranked if c.route != winner})
        kept = f"{winner.backend}{winner.strip_option}"
        rejected.append(f"route {winner.url_prefix}: claimed by {', '.join(losers)} and {kept}; kept {kept}")
        routes.append(winner)
    return tuple(sorted(routes, key=route_order))
