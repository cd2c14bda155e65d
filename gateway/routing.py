"""Snapshot -> RouteTable: which paths go to which backend, and which instance sits in which server slot.

Pure: the same snapshot and previous table always give the same table. Two properties matter
for running HAProxy without reloads:

* Stable slots. An instance keeps its server slot (`s1`, `s2`, ...) across calls; new instances
  take free slots in registration order (CreateIndex), preferring slots that were already free,
  so a slot still draining its old instance is reused last; a vanished instance frees its slot.
  So membership changes are per-slot runtime-API commands, and gateways that watch one catalog
  place instances alike however their watchers batched the arrivals.
* Slot counts with hysteresis (`slot_count`). A backend that can take dynamic servers (below) gets
  max(min_slots, KV `slots`, instances) slots: it grows without a reload, so spare slots would only
  cost HAProxy a file descriptor each. The others grow by reload and get headroom: max(min_slots,
  KV `slots`, next power of two >= headroom x instances), growing only when the instances no longer
  fit. Both shrink only when eight times the size they need would still fit, so flapping does not
  reload (spare slots are disabled servers: a config line and a descriptor, not a check).

Dynamic servers beyond the slots. Where HAProxy 2.6 can `add server` (BackendSettings.runtime_servers:
a dynamic balance algorithm, not sticky, not DNS mode), a backend that runs out of slots does not
grow: further instances become dynamic servers (`Backend.extra`), named after their instance ids
(`dynamic_server_name`), created and deleted through the runtime API. They keep their names while
registered; a new instance still takes a free slot first. The next structural change renders
`fold_extra(table)`: enough slots for everyone, the dynamic servers moved into them. Elsewhere
(`balance source` and other static algorithms, sticky cookies, DNS mode) the slots grow by reload.

Instances the flap hold-down holds out (gateway.flap, computed by the controller) come in as a
set of instance keys and are routed like unhealthy ones: they keep their slot, in `maint`.

Environments: an instance belongs to the environment of its `env=<name>` tag, else its `env` meta,
else prod. Each (service, environment) gets its own backend (`be_<service>` for prod,
`be_<service>:<env>` otherwise: ':' cannot occur in a service name, so names never collide) and its
routes carry the environment, so only the frontend serving that environment matches them
(`frontends`). An instance whose environment cannot be read is rejected, never routed to prod.

Sticky backends: every occupied slot carries its instance's cookie value, a hash of the instance
key, so every gateway and every reload names an instance the same way.

Every catalog string is validated (gateway.haproxy_syntax) before it can become a name, path,
host or address; what fails is skipped and reported in `RouteTable.rejected` as "where: what".
"""

from __future__ import annotations

import hashlib
import operator
import re
import time
from dataclasses import replace
from functools import lru_cache
from itertools import chain, compress
from typing import Iterable, Mapping, NamedTuple

from gateway.haproxy_syntax import (ENVIRONMENT_NAME, HOSTNAME, NOT_SERVER_NAME_CHAR, SERVICE_NAME, address_problem, display, path_problem,
                                    port_problem)
from gateway.kv_settings import parse_settings
from gateway.model import Backend, BackendSettings, Frontend, Instance, Route, RouteTable, Server, Snapshot
from gateway.tls import certificates
from shopgate.consul_client.protocol import WARNING
from shopgate.settings import DEFAULT_ENVIRONMENT, DNS_SLOTS, KV_PREFIX, MIN_SLOTS, SLOT_HEADROOM

#: A backend shrinks only when its slot count is at least this many times what it needs.
SHRINK_FACTOR = 8

DEFAULT_ROUTE_PREFIX = "/api/v1/"
ROUTE_TAG = "urlprefix-"
DEFAULT_WEIGHT = 100
KV_ENVIRONMENTS = f"{KV_PREFIX}gateway/environments/"
#: The frontend of the gateway entry point (prod, and environments selected by host name only).
ENTRY_FRONTEND = "shopgate"


def backend_name(service: str, environment: str = DEFAULT_ENVIRONMENT) -> str:
    """The HAProxy backend of a (valid) service name in an environment."""
    return f"be_{service}" if environment == DEFAULT_ENVIRONMENT else f"be_{service}:{environment}"


def instance_environment(instance: Instance) -> tuple[str | None, str | None]:
    """(environment, None) from the `env=` tag, else the `env` meta, else prod; (None, problem) when unreadable."""
    claimed = instance.environments
    if len(claimed) > 1:
        return None, f"tags name several environments ({', '.join(sorted(map(display, claimed)))})"
    (name,) = claimed
    if not ENVIRONMENT_NAME.fullmatch(name):
        return None, f"environment {display(name)} is not 1-32 of a-z 0-9 _ - starting with a letter or digit"
    return name, None


def cookie_value(instance_key: str) -> str:
    """A sticky-session cookie value for an instance: the same on every gateway, across reloads and slot moves."""
    return hashlib.blake2s(instance_key.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def default_cookie(service: str) -> str:
    """The sticky cookie's name when KV `sticky_cookie` gives none."""
    return f"sg_{service}"


def slot_name(index: int) -> str:
    """Server name of slot `index` (0-based): s1, s2, ..."""
    return f"s{index + 1}"


_SLOT_NAME = re.compile(r"s[0-9]+")


def dynamic_server_name(instance_id: str, instance_key: str, taken: set[str]) -> str:
    """A dynamic server's HAProxy name: the instance id in server-name characters (gateway.haproxy_syntax.NOT_SERVER_NAME_CHAR),
    so the stats page says whom it holds; a hash of the instance key is appended where that name is taken
    or reads like a slot's (s1, s2, ...)."""
    base = NOT_SERVER_NAME_CHAR.sub("_", instance_id)[:48] or "_"
    if base in taken or _SLOT_NAME.fullmatch(base):
        return f"{base}-{cookie_value(instance_key)}"
    return base


def fold_extra(table: RouteTable) -> RouteTable:
    """`table` with each backend's dynamic servers moved into slots, for a render (what a reload runs): as many
    slots as a backend of that size gets from scratch, occupied slots kept where they are."""
    if not any(b.extra for b in table.backends):
        return table
    services = dict(table.memo.get("services", {}))
    folded: dict[str, Backend] = {}
    for backend in table.backends:
        if not backend.extra:
            continue
        result = services.get(backend.service)
        min_slots, headroom = result.sizing if result is not None else (MIN_SLOTS, SLOT_HEADROOM)
        members = sum(s.occupied for s in backend.servers) + len(backend.extra)
        floor = max(min_slots, backend.settings.min_slots or 0)
        count = max(len(backend.servers), slot_count(members, None, floor, headroom, backend.settings.runtime_servers))
        servers = list(backend.servers) + [_spare(slot_name(i)) for i in range(len(backend.servers), count)]
        free = [i for i, server in enumerate(servers) if not server.occupied]
        for index, server in zip(free, backend.extra):
            servers[index] = replace(server, slot=slot_name(index))
        folded[backend.name] = replace(backend, servers=tuple(servers), extra=())
    for service, result in services.items():
        if any(b.name in folded for b in result.backends):
            services[service] = result._replace(backends=tuple(folded.get(b.name, b) for b in result.backends))
    return replace(table, backends=tuple(folded.get(b.name, b) for b in table.backends), memo={**table.memo, "services": services})


def build_route_table(
    snapshot: Snapshot,
    previous: RouteTable | None = None,
    min_slots: int = MIN_SLOTS,
    headroom: int = SLOT_HEADROOM,
    taken_binds: Mapping[str, str] = {},
    held: frozenset[str] = frozenset(),
    now: float | None = None,
) -> RouteTable:
    """The RouteTable for `snapshot`, keeping slots and contested routes as they were in `previous`.

    `taken_binds` (host:port -> what): the controller's own listeners, which no environment may bind.
    `held`: instance keys the flap hold-down (gateway.flap) keeps out, routed as if unhealthy.
    `now` (unix time, default: the clock): when certificates are judged valid.
    """
    gateway_settings, service_settings, rejected = parse_settings(snapshot.kv, running_settings(previous), taken_binds)
    previous_services = previous.memo.get("services", {}) if previous else {}
    previous_backends = {b.name: b for b in previous.backends} if previous and not previous_services else {}
    order = _service_order(snapshot, previous)
    sizing = (min_slots, headroom)
    inputs = tuple(map(snapshot.services.__getitem__, order.names))
    with_settings = frozenset(service_settings.keys() & order.known)
    to_check = _services_to_check(previous, order, inputs, with_settings, held, sizing)
    services: dict[str, _ServiceResult] = dict(previous_services) if to_check is not None else {}
    rebuilt: list[str] = []
    for service in order.names if to_check is None else sorted(to_check):
        instances = snapshot.services[service]
        settings = service_settings.get(service, _DEFAULT_SETTINGS)
        result = previous_services.get(service)
        service_held = frozenset(i.key for i in instances if i.key in held) if held else frozenset()
        if result is None or not result.built_from(instances, settings, service_held, min_slots, headroom):
            if not isinstance(service, str) or not SERVICE_NAME.fullmatch(service):
                rejected.append(f"service {display(service)}: name must be 1-63 of A-Z a-z 0-9 _ . - starting with a letter or digit")
                continue
            previous_named = {b.name: b for b in result.backends} if result else previous_backends
            built = _build_service(service, instances, settings, service_held, previous_named, min_slots, headroom)
            if result is not None and built.routes == result.routes:
                built = built._replace(routes=result.routes)   # so the route resolution below is reused
            result = built
            rebuilt.append(service)
        services[service] = result
        if to_check is None and result.rejected:
            rejected.extend(result.rejected)
    changed = rebuilt if to_check is not None else None   # None: every service was looked at
    reports = _service_reports(services, previous, changed)
    if changed is not None:   # every service is valid here (else the full pass runs): their reports in name order
        rejected.extend(reports)
    route_inputs, routes, conflicts = _routes(services, previous, changed)
    backends, places = _backends(services, previous, changed)
    served = {e.name for e in gateway_settings.environments} | {DEFAULT_ENVIRONMENT}
    environments = _route_environments(routes, previous)
    unserved = sorted(environments - served)
    rejected.extend(f"environment {env}: no {KV_ENVIRONMENTS}{env}/bind or /hosts, its instances get no traffic" for env in unserved)
    certs, tls_rejected = certificates(snapshot.kv, snapshot.cert_files, time.time() if now is None else now,
                                       previous.certificates if previous else ())
    return RouteTable(
        routes=routes,
        backends=backends,
        settings=gateway_settings,
        rejected=tuple(rejected + conflicts),
        certificates=certs,
        tls_rejected=tls_rejected,
        memo={"services": services, "routes": (route_inputs, routes, conflicts), "order": order, "rebuilt": tuple(rebuilt),
              "inputs": (inputs, with_settings, bool(held), sizing), "places": places, "reports": reports,
              "environments": environments},
    )


def _services_to_check(previous: RouteTable | None, order: "_Order", inputs: tuple, with_settings: frozenset[str],
                       held: frozenset[str], sizing: tuple[int, int]) -> set[str] | None:
    """The services that may differ from `previous`, or None when every service must be looked at.

    The watcher hands an unchanged service on as the very same tuple, so comparing the instance
    tuples by identity (in C, no Python per service) finds the changed ones; services with KV settings
    (now or before) are always looked at. The full pass runs when the set of services changed, an
    instance is held (flap hold-down), the sizing changed, or a name is invalid."""
    if previous is None or held or "inputs" not in previous.memo or previous.memo.get("order") is not order:
        return None
    previous_inputs, previous_settings, previous_held, previous_sizing = previous.memo["inputs"]
    if previous_held or previous_sizing != sizing or len(previous.memo["services"]) != len(order.names):
        return None
    return set(compress(order.names, map(operator.is_not, inputs, previous_inputs))) | with_settings | previous_settings


def _route_environments(routes: tuple[Route, ...], previous: RouteTable | None) -> frozenset[str]:
    """The environments the routes serve; the previous table's answer when the routes are the same tuple."""
    if previous is not None and previous.routes is routes and "environments" in previous.memo:
        return previous.memo["environments"]
    return frozenset(r.environment for r in routes)


def rebuilt_services(table: RouteTable) -> tuple[str, ...]:
    """The services whose part of `table` was built afresh rather than reused from the previous table."""
    rebuilt = table.memo.get("rebuilt")
    return rebuilt if rebuilt is not None else tuple(b.service for b in table.backends)


def running_settings(table: RouteTable | None) -> Mapping[str, BackendSettings] | None:
    """service -> the settings its backend runs with in `table` (kv_settings' `last_good`), looked up
    per service on demand rather than copied whole for every change."""
    if table is None:
        return None
    if "services" not in table.memo:
        return {b.service: b.settings for b in table.backends}
    return _RunningSettings(table.memo["services"])


class _RunningSettings(Mapping):
    def __init__(self, services: Mapping[str, "_ServiceResult"]):
        self._services = services

    def __getitem__(self, service: str) -> BackendSettings:
        return self._services[service].backends[-1].settings

    def __iter__(self):
        return iter(self._services)

    def __len__(self) -> int:
        return len(self._services)


class _Order(NamedTuple):
    names: tuple[str, ...]      # the snapshot's services, sorted
    known: frozenset[str]


def _service_order(snapshot: Snapshot, previous: RouteTable | None) -> _Order:
    """The services in name order, re-sorted only when the set of services changed."""
    order = previous.memo.get("order") if previous is not None else None
    if order is not None and len(order.names) == len(snapshot.services) and snapshot.services.keys() == order.known:
        return order
    return _Order(tuple(sorted(snapshot.services)), frozenset(snapshot.services))


def _service_reports(services: Mapping[str, "_ServiceResult"], previous: RouteTable | None, rebuilt: list[str] | None) -> tuple[str, ...]:
    """Every service's rejected inputs in name order; the previous table's when no rebuilt service reports any, then or now."""
    if rebuilt is not None and previous is not None and "reports" in previous.memo:
        before = previous.memo["services"]
        if not any(services[s].rejected or before[s].rejected for s in rebuilt):
            return previous.memo["reports"]
    return tuple(chain.from_iterable(map(operator.attrgetter("rejected"), services.values())))


def _routes(services: Mapping[str, "_ServiceResult"], previous: RouteTable | None,
            rebuilt: list[str] | None) -> tuple[tuple, tuple[Route, ...], list[str]]:
    """(every service's route candidates, the resolved routes in order, conflicts): the previous table's when no
    service's routes changed, which a membership change never does (routing keeps a service's routes when equal)."""
    if rebuilt is not None and previous is not None and "routes" in previous.memo:
        before = previous.memo["services"]
        if all(services[s].routes is before[s].routes for s in rebuilt):
            return previous.memo["routes"]
    route_inputs = tuple(map(operator.attrgetter("routes"), services.values()))
    if previous is not None and "routes" in previous.memo:
        previous_inputs, routes, conflicts = previous.memo["routes"]
        if len(previous_inputs) == len(route_inputs) and all(map(operator.is_, previous_inputs, route_inputs)):
            return route_inputs, routes, conflicts
    conflicts: list[str] = []
    candidates = [c for service_candidates in route_inputs for c in service_candidates]
    return route_inputs, _resolve_conflicts(candidates, previous.routes if previous else (), conflicts), conflicts


def _backends(services: Mapping[str, "_ServiceResult"], previous: RouteTable | None,
              rebuilt: list[str] | None) -> tuple[tuple[Backend, ...], dict[str, int]]:
    """Every service's backends in name order, and where each service's first one is: when the rebuilt services
    kept their number of backends, the previous tuple with just their places written over."""
    places = previous.memo.get("places") if previous is not None else None
    if (places is not None and rebuilt is not None
            and all(len(services[s].backends) == len(previous.memo["services"][s].backends) for s in rebuilt)):
        backends = list(previous.backends)
        for service in rebuilt:
            result = services[service]
            backends[places[service]:places[service] + len(result.backends)] = result.backends
        return tuple(backends), places
    places, at = {}, 0
    for service, result in services.items():
        places[service] = at
        at += len(result.backends)
    return tuple(chain.from_iterable(map(operator.attrgetter("backends"), services.values()))), places


_DEFAULT_SETTINGS = BackendSettings()


class _ServiceResult(NamedTuple):
    """One service's part of the table, with the inputs it was built from (RouteTable.memo)."""

    instances: tuple[Instance, ...]
    settings: BackendSettings
    held: frozenset[str]
    sizing: tuple[int, int]
    backends: tuple[Backend, ...]    # one per environment with instances (prod when there are none)
    routes: list["_Candidate"]
    rejected: list[str]

    def built_from(self, instances: tuple[Instance, ...], settings: BackendSettings, held: frozenset[str], min_slots: int, headroom: int) -> bool:
        return ((self.instances is instances or self.instances == instances) and (self.settings is settings or self.settings == settings)
                and self.held == held and self.sizing == (min_slots, headroom))


def _build_service(service: str, instances: tuple[Instance, ...], settings: BackendSettings, held: frozenset[str],
                   previous: Mapping[str, Backend], min_slots: int, headroom: int) -> _ServiceResult:
    rejected: list[str] = []
    by_environment: dict[str, list[Instance]] = {}
    for environment, instance in _valid_instances(service, instances, rejected):
        by_environment.setdefault(environment, []).append(instance)
    backends, routes = [], []
    others = sorted(set(by_environment) - {DEFAULT_ENVIRONMENT})
    effective = settings
    if settings.by_dns and others:   # one SRV name answers every environment's instances: it would mix them
        effective = replace(settings, discovery="runtime")
        rejected.append(f"{KV_PREFIX}services/{service}/discovery: instances in environment(s) {', '.join(others)}; Consul's DNS "
                        "answers every environment's instances under one name, so the runtime API keeps serving this service")
    for environment in sorted(by_environment or {DEFAULT_ENVIRONMENT: []}):
        members = by_environment.get(environment, [])
        name = backend_name(service, environment)
        backends.append(_backend(service, environment, members, effective, held, previous.get(name), min_slots, headroom))
        routes += _service_routes(service, environment, members, rejected)
    return _ServiceResult(tuple(instances), settings, held, (min_slots, headroom), tuple(backends), routes, rejected)


# ---------------------------------------------------------------- instances and slots


def _valid_instances(service: str, instances: Iterable[Instance], rejected: list[str]) -> list[tuple[str, Instance]]:
    """(environment, instance) of each usable instance; the others are reported."""
    valid: list[tuple[str, Instance]] = []
    seen: set[str] = set()
    for instance in instances:
        environment, problem = instance_environment(instance)
        problem = problem or address_problem(instance.address) or port_problem(instance.port)
        if problem is None and instance.key in seen:
            problem = "duplicate instance id"
        if problem:
            rejected.append(f"service {service}, instance {display(instance.key)}: {problem}")
            continue
        seen.add(instance.key)
        valid.append((environment, instance))
    return valid


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def slot_count(instances: int, current: int | None, floor: int, headroom: int, runtime_servers: bool) -> int:
    """How many slots a backend with `instances` instances should have, given its `current` count.

    Where instances beyond the slots become dynamic servers (`runtime_servers`), a slot per instance: growing
    costs no reload there, so spare slots would only cost file descriptors (and rounding up to a power of two
    up to twice as many). Elsewhere the slots grow by reload: the next power of two >= headroom x instances."""
    wanted = max(floor, instances if runtime_servers else _next_power_of_two(headroom * instances))
    if current is None or instances > current or floor > current or wanted * SHRINK_FACTOR <= current:
        return wanted
    return current


@lru_cache(maxsize=None)
def _spare(slot: str) -> Server:
    return Server(slot=slot, instance_key=None)


def routable(instance: Instance, settings: BackendSettings) -> bool:
    """Passing; or warning too where the service's KV `route_warning` says so."""
    return instance.healthy or (settings.route_warning and instance.status == WARNING)


def _state(instance: Instance, settings: BackendSettings, held: frozenset[str]) -> str:
    """ready: routable. drain: leaving gracefully (in-flight requests finish). maint: failing its checks, or held."""
    healthy = routable(instance, settings) and instance.key not in held
    if instance.status == "maintenance" or (settings.maintenance and healthy):
        return "drain"
    return "ready" if healthy else "maint"


def _weight(instance: Instance, settings: BackendSettings) -> int:
    """The lowest weight among the instance's weighted tags (canary releases), else the default."""
    weights = [weight for tag, weight in settings.tag_weights if tag in instance.tags]
    return min(weights) if weights else DEFAULT_WEIGHT


def _backend(service: str, environment: str, instances: list[Instance], settings: BackendSettings, held: frozenset[str],
             previous: Backend | None, min_slots: int, headroom: int) -> Backend:
    floor = max(min_slots, settings.min_slots or 0)
    if settings.by_dns:  # HAProxy's resolver fills a fixed server-template: the controller places no instance
        servers = tuple(_spare(slot_name(i)) for i in range(max(floor, DNS_SLOTS)))
        if previous is not None and previous.settings == settings and previous.servers == servers:
            return previous
        return Backend(name=backend_name(service), service=service, settings=settings, servers=servers)
    current = len(previous.servers) if previous else None
    count = slot_count(len(instances), current, floor, headroom, settings.runtime_servers)
    # Out of slots where `add server` works: dynamic servers instead of more slots (no reload).
    overflow = settings.runtime_servers and current is not None and floor <= current
    if overflow and count > current:
        count = current
    old_servers = previous.servers if previous else ()
    old_slot = {s.instance_key: i for i, s in enumerate(old_servers) if s.occupied}
    old_extra = {s.instance_key: s for s in previous.extra} if overflow and previous.extra else {}
    by_slot: dict[int, Instance] = {}
    kept_extra: list[Instance] = []
    newcomers: list[Instance] = []
    left_over: list[Instance] = []   # no free slot: dynamic servers
    for instance in instances:
        index = old_slot.get(instance.key)
        if index is not None and index < count:
            by_slot[index] = instance
        elif instance.key in old_extra:
            kept_extra.append(instance)
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
        left_over = newcomers[len(free):]
    servers = [_server(slot_name(index), by_slot.get(index), old_servers[index] if index < len(old_servers) else None, settings, held)
               for index in range(count)]
    extra = _extra(kept_extra, left_over, old_extra, settings, held)
    if (previous is not None and previous.settings == settings and len(servers) == len(old_servers) and all(a is b for a, b in zip(servers, old_servers))
            and len(extra) == len(previous.extra) and all(a is b for a, b in zip(extra, previous.extra))):
        return previous
    return Backend(name=backend_name(service, environment), service=service, settings=settings, servers=tuple(servers), environment=environment,
                   extra=extra)


def _server(name: str, instance: Instance | None, old: Server | None, settings: BackendSettings, held: frozenset[str]) -> Server:
    """Server `name` holding `instance` (a spare when None); `old` itself when nothing changed, so comparisons stay cheap."""
    if instance is None:
        return _spare(name)
    weight, state = _weight(instance, settings), _state(instance, settings, held)
    cookie = cookie_value(instance.key) if settings.sticky else None
    if (old is not None and old.instance_key == instance.key and old.address == instance.address and old.port == instance.port
            and old.weight == weight and old.state == state and old.cookie == cookie):
        return old
    return Server(name, instance.key, instance.address, instance.port, weight, state, cookie)


def _extra(kept: list[Instance], new: list[Instance], old: Mapping[str, Server], settings: BackendSettings,
           held: frozenset[str]) -> tuple[Server, ...]:
    """The dynamic servers: `kept` instances under their old names, `new` ones named after their ids; sorted by name."""
    servers = [_server(old[i.key].slot, i, old[i.key], settings, held) for i in kept]
    taken = {s.slot for s in servers}
    for instance in sorted(new, key=lambda i: i.key):
        name = dynamic_server_name(instance.id, instance.key, taken)
        taken.add(name)
        servers.append(_server(name, instance, None, settings, held))
    return tuple(sorted(servers, key=lambda s: s.slot))


# ---------------------------------------------------------------- routes


class _Candidate(NamedTuple):
    route: Route
    explicit: bool      # from a urlprefix- tag (True) or the default route (False)


def parse_route_tag(tag: str, backend: str, environment: str = DEFAULT_ENVIRONMENT) -> Route:
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
    return Route(backend=backend, path_prefix=path, host=host, strip=strip, environment=environment)


def _service_routes(service: str, environment: str, instances: list[Instance], rejected: list[str]) -> list[_Candidate]:
    """Routes from the urlprefix- tags of any present instance; the default route when there is none."""
    backend = backend_name(service, environment)
    routes: dict[Route, None] = {}
    problems: dict[str, str] = {}
    for instance in instances:
        for tag in instance.tags:
            if not isinstance(tag, str) or not tag.startswith(ROUTE_TAG) or tag in problems:
                continue
            try:
                routes[parse_route_tag(tag, backend, environment)] = None
            except ValueError as error:
                problems[tag] = f"service {service}, instance {display(instance.key)}, tag {display(tag)}: {error}"
    rejected.extend(problems.values())
    if not routes:
        return [_Candidate(Route(backend=backend, path_prefix=DEFAULT_ROUTE_PREFIX + service, environment=environment), explicit=False)]
    return [_Candidate(route, explicit=True) for route in routes]


def route_order(route: Route) -> tuple:
    """Host-specific routes first, then the longest prefix: the first matching route wins."""
    return (route.host is None, -len(route.path_prefix), route.host or "", route.path_prefix, route.environment, route.backend, route.strip or "")


def _resolve_conflicts(candidates: list[_Candidate], previous: tuple[Route, ...], rejected: list[str]) -> tuple[Route, ...]:
    """One route per (environment, host, prefix): the previous holder keeps it, then tags beat defaults, then name order."""
    held = {(r.environment, r.host, r.path_prefix): r for r in previous}
    claims: dict[tuple[str, str | None, str], list[_Candidate]] = {}
    for candidate in candidates:
        claims.setdefault((candidate.route.environment, candidate.route.host, candidate.route.path_prefix), []).append(candidate)
    routes = []
    for claim, contenders in claims.items():
        distinct = {c.route for c in contenders}
        if len(distinct) == 1:
            routes.append(contenders[0].route)
            continue
        ranked = sorted(contenders, key=lambda c: (c.route != held.get(claim), not c.explicit, c.route.backend, c.route.strip or ""))
        winner = ranked[0].route
        losers = sorted({f"{c.route.backend}{c.route.strip_option}" for c in ranked if c.route != winner})
        kept = f"{winner.backend}{winner.strip_option}"
        rejected.append(f"route {winner.url_prefix}: claimed by {', '.join(losers)} and {kept}; kept {kept}")
        routes.append(winner)
    return tuple(sorted(routes, key=route_order))


# ---------------------------------------------------------------- frontends


def frontends(table: RouteTable, entry_bind: str) -> tuple[Frontend, ...]:
    """The entry point's frontend (prod, plus environments selected by host name only) and one per
    environment with its own bind; each gets only its environments' routes, numbered as in the table."""
    numbered = list(enumerate(table.routes, start=1))
    shared = [e for e in table.settings.environments if e.bind is None]
    entry_envs = {DEFAULT_ENVIRONMENT} | {e.name for e in shared}
    result = [Frontend(ENTRY_FRONTEND, entry_bind, tuple((e.name, e.hosts) for e in shared), DEFAULT_ENVIRONMENT,
                       tuple(pair for pair in numbered if pair[1].environment in entry_envs))]
    for env in table.settings.environments:
        if env.bind is not None:
            result.append(Frontend(f"fe_{env.name}", env.bind, ((env.name, env.hosts),) if env.hosts else (),
                                   None if env.hosts else env.name, tuple(pair for pair in numbered if pair[1].environment == env.name)))
    return tuple(result)
