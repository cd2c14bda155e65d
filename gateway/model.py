"""The gateway's plain data: what the catalog says (Snapshot) and what HAProxy should do (RouteTable).

These classes are the contract between the pipeline's stages:

    gateway.watch    -> Snapshot
    gateway.routing  -> RouteTable   build_route_table(snapshot, previous)   (pure)
    gateway.diff     -> ApplyPlan    plan_changes(old_table, new_table)       (pure)
    gateway.render   -> haproxy.cfg  render_config(table, templates_dir)      (pure)
    gateway.apply    -> runtime API commands, or validate -> swap -> reload -> verify -> roll back

Everything here is frozen and comparable, so "did anything change?" is `==`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from pathlib import Path

from gateway.tls import CertEntry
from shopgate.consul_client.health import HealthEntry
from shopgate.settings import DEFAULT_CONSUL_DNS_ADDR, FLAP_HOLD_MS, FLAP_WINDOW_MS

# ---------------------------------------------------------------- input: the catalog's view


@dataclass(frozen=True, slots=True)
class Instance(HealthEntry):
    """One registered instance of a service, as the one health decoder reads it (fields: HealthEntry's)."""

    @property
    def key(self) -> str:
        """Identity across snapshots: node + service id."""
        return f"{self.node}/{self.id}"

    @property
    def healthy(self) -> bool:
        return self.passing


@dataclass(frozen=True)
class Snapshot:
    """Everything the gateway knows at one moment: instances by service, and raw KV under the prefix."""

    services: dict[str, tuple[Instance, ...]] = field(default_factory=dict)
    kv: dict[str, bytes] = field(default_factory=dict)   # full key ("shopgate/services/x/balance") -> raw value
    index: int = 0                                        # highest catalog/KV index folded in
    cert_files: dict[str, bytes] = field(default_factory=dict)   # `--certs DIR`: path -> PEM bundle

    def instance_count(self) -> int:
        return sum(len(v) for v in self.services.values())


# ---------------------------------------------------------------- output: what HAProxy should run


@dataclass(frozen=True)
class Server:
    """One server slot of a backend (empty slots are rendered `disabled` at 127.0.0.1:1), or one of its
    dynamic servers (`Backend.extra`), created with `add server` once the slots are used up."""

    slot: str                    # HAProxy server name inside its backend: "s1", "s2", ... (a dynamic server: from its instance id)
    instance_key: str | None     # Instance.key occupying the slot, None for a spare slot
    address: str = "127.0.0.1"
    port: int = 1
    weight: int = 100
    state: str = "maint"         # "ready" | "drain" | "maint"
    cookie: str | None = None    # sticky backends: the occupying instance's cookie value (routing.cookie_value)

    @property
    def occupied(self) -> bool:
        return self.instance_key is not None

    @property
    def enabled(self) -> bool:
        """Rendered without `disabled`. A fresh worker gives draining servers no new requests either."""
        return self.state == "ready"


#: Balance algorithms under which HAProxy 2.6 refuses `add server` ("must use a dynamic load balancing").
STATIC_BALANCE = frozenset({"source", "static-rr", "uri", "url_param", "hdr", "rdp-cookie"})


@dataclass(frozen=True)
class BackendSettings:
    """Per-service settings, validated from KV `shopgate/services/<name>/...` by gateway.kv_settings."""

    balance: str = "roundrobin"
    maxconn: int | None = None
    timeout_connect_ms: int | None = None
    timeout_server_ms: int | None = None
    tag_weights: tuple[tuple[str, int], ...] = ()   # canary releases: tag -> weight
    maintenance: bool = False
    min_slots: int | None = None                    # KV `slots`: pre-render at least this many server slots
    route_warning: bool = False                     # route instances whose worst check is `warning`
    # route guards, rendered in the backend (config_templates/backend.cfg.j2)
    rate_limit: int | None = None                   # requests/s per client address, then 429
    rate_burst: int | None = None                   # requests a client may send at once (default rate_limit)
    allow: tuple[str, ...] = ()                     # CIDR networks; others get 403
    deny: tuple[str, ...] = ()                      # CIDR networks that get 403
    auth: tuple[tuple[str, str], ...] = ()          # (user, crypt hash): others get 401
    # flap hold-down (gateway.flap): more than flap_limit flips within the window -> held out for flap_hold
    flap_limit: int | None = None                   # None: off
    flap_window_ms: int = FLAP_WINDOW_MS
    flap_hold_ms: int = FLAP_HOLD_MS
    sticky: bool = False                            # KV `sticky = cookie`: a client keeps its instance
    sticky_cookie: str | None = None                # KV `sticky_cookie`: the cookie's name (default routing.default_cookie)
    discovery: str = "runtime"                      # KV `discovery`: "runtime" (controller, runtime API) | "dns"

    @property
    def by_dns(self) -> bool:
        """HAProxy's resolver finds this backend's servers (SRV on the catalog's DNS), not the controller."""
        return self.discovery == "dns"

    @property
    def runtime_servers(self) -> bool:
        """HAProxy 2.6 can `add server` here: a dynamic balance algorithm, no cookie (`add server` takes
        none), servers placed by the controller (not the resolver)."""
        return self.balance not in STATIC_BALANCE and not self.sticky and not self.by_dns

    @property
    def rate_window_ms(self) -> int:
        """Requests are counted over burst/rate seconds: on average `rate_limit`/s, at once up to the burst."""
        return max(1000, -(-1000 * (self.rate_burst or self.rate_limit or 1) // (self.rate_limit or 1)))

    @property
    def rate_window_seconds(self) -> int:
        """Retry-After: whole seconds until the window has passed."""
        return -(-self.rate_window_ms // 1000)
    https_redirect: bool = False                    # plain-HTTP requests get a 308 to HTTPS
    hsts_seconds: int | None = None                 # Strict-Transport-Security max-age on HTTPS answers


@dataclass(frozen=True)
class Backend:
    """An HAProxy backend for one service, with a fixed number of server slots, and dynamic servers
    beyond them once they are used up (only where `settings.runtime_servers`).

    Dynamic servers live in HAProxy's runtime state only: render does not write them; the next
    structural change folds them into slots (gateway.routing.fold_extra) before rendering."""

    name: str                    # safe HAProxy identifier, e.g. "be_products"
    service: str
    settings: BackendSettings
    servers: tuple[Server, ...]  # len(servers) == slot count (occupied + spare)
    environment: str = "prod"    # the environment whose instances (and only those) fill the slots
    extra: tuple[Server, ...] = ()   # dynamic servers (`add server`), named after their instance ids, sorted by name

    def server(self, slot: str) -> Server:
        return next(s for s in self.all_servers if s.slot == slot)

    @property
    def all_servers(self) -> tuple[Server, ...]:
        """The slots, then the dynamic servers."""
        return self.servers + self.extra if self.extra else self.servers


@dataclass(frozen=True)
class Route:
    """A frontend rule: requests to host + path prefix go to a backend, optionally stripping a prefix."""

    backend: str
    path_prefix: str
    host: str | None = None
    strip: str | None = None
    environment: str = "prod"    # matched only on the frontend(s) serving this environment

    @property
    def url_prefix(self) -> str:
        """`host/path` (`/path` for any host), as the route's urlprefix- tag writes it: how reports name a route."""
        return f"{self.host or ''}{self.path_prefix}"

    @property
    def strip_option(self) -> str:
        """` strip=/prefix` as the tag writes it, or '' when nothing is stripped."""
        return f" strip={self.strip}" if self.strip else ""


@dataclass(frozen=True)
class EnvironmentSettings:
    """KV `shopgate/gateway/environments/<name>/{bind,hosts}`: where an environment (other than prod) is served."""

    name: str
    bind: str | None = None          # its own frontend on this host:port
    hosts: tuple[str, ...] = ()      # only requests for these host names (on its bind, or else on the entry point)


@dataclass(frozen=True)
class Frontend:
    """One HAProxy frontend: a bind and the routes of the environment(s) it serves (gateway.routing.frontends)."""

    name: str
    bind: str
    selectors: tuple[tuple[str, tuple[str, ...]], ...]   # (environment, hosts): requests for these hosts belong to it
    default_environment: str | None                      # the environment of every other request (None: no route)
    routes: tuple[tuple[int, Route], ...]                # (route id, route) in match order


@dataclass(frozen=True)
class GatewaySettings:
    """Gateway-wide settings, validated from KV `shopgate/gateway/...`."""

    stats_user: str | None = None
    stats_password: str | None = None
    maxconn: int = 4096
    timeout_client_ms: int = 30_000
    timeout_server_ms: int = 30_000
    timeout_connect_ms: int = 2_000
    retries: int = 3
    hard_stop_after_ms: int = 30_000
    accept_proxy: bool = False                           # entry binds take the PROXY protocol (v1/v2)
    environments: tuple[EnvironmentSettings, ...] = ()   # sorted by name; never "prod"


@dataclass(frozen=True)
class RouteTable:
    """The whole desired HAProxy state. `render_config` turns it into haproxy.cfg text."""

    routes: tuple[Route, ...] = ()
    backends: tuple[Backend, ...] = ()
    settings: GatewaySettings = GatewaySettings()
    rejected: tuple[str, ...] = ()   # inputs that were skipped, each "where: what is wrong"
    certificates: tuple[CertEntry, ...] = ()   # SNI certificates for the HTTPS listener (gateway.tls)
    tls_rejected: tuple[str, ...] = ()         # certificates that were skipped, each "KV key or file: why"
    # gateway.routing's memo of per-service results, so a change to one service costs one service's work.
    # Not part of the table's value: ignored by ==, never rendered.
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def backend(self, name: str) -> Backend:
        """The backend named `name` (KeyError when there is none)."""
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Backend]:
        return dict(zip(map(attrgetter("name"), self.backends), self.backends))


@dataclass(frozen=True)
class RuntimePaths:
    """Where the running HAProxy listens and keeps its files: chosen by the controller, not the catalog."""

    admin_socket: Path                       # `stats socket ... level admin` (runtime API)
    listen: str = "127.0.0.1:8080"           # the gateway entry point, "host:port"
    stats: str = "127.0.0.1:8404"            # stats page + /metrics, "host:port"
    accept_proxy: bool = False               # `--accept-proxy`: entry binds take the PROXY protocol (as KV accept_proxy)
    pidfile: Path | None = None
    https: str | None = None                 # the HTTPS entry point "host:port", off when None
    tls_dir: Path | None = None              # crt-list and PEM files (state dir /tls)

    @property
    def crt_list(self) -> Path | None:
        """The crt-list of the HTTPS listener: the default certificate first, then one line per SNI certificate."""
        return self.tls_dir / "crt-list" if self.tls_dir is not None else None
    # When set: `server-state-file` + `load-server-state-from-file global`. Off by default: measured on
    # 2.6, a state file's address/port and up-state override the rendered server lines on reload, so
    # a file not dumped right before the reload brings back stale servers.
    server_state_file: Path | None = None
    consul_dns: str = DEFAULT_CONSUL_DNS_ADDR  # "host:port" of the Consul DNS that backends in DNS mode ask


# ---------------------------------------------------------------- the difference between two tables


@dataclass(frozen=True)
class MembershipChange:
    """One server to change through the runtime API (no reload): a slot, or a dynamic server."""

    backend: str
    slot: str                    # the server's name
    action: str                  # "add" (set addr+port, ready, health down) | "remove" (drain -> maint) | "weight" | "drain"
                                 # | dynamic servers: "create" (add server [+ ready, health down]) | "delete" (drain -> maint -> del server)
    address: str = "127.0.0.1"
    port: int = 1
    weight: int = 100
    sticky: bool = False         # drain/remove on a sticky backend: straight to maint, so its clients move now
    ready: bool = True           # create: take traffic once HAProxy's check rises (False: stays in maint)


@dataclass(frozen=True)
class CertChange:
    """One certificate to add, replace or remove through the runtime API (no reload, ever)."""

    action: str                  # "add" | "update" | "remove"
    entry: CertEntry             # the new entry ("remove": the running one)
    sni_changed: bool = False    # "update": the crt-list line changes too


@dataclass(frozen=True)
class ApplyPlan:
    """What it takes to go from the running table to the wanted one."""

    structural_reasons: tuple[str, ...] = ()        # non-empty -> render, validate, swap, reload
    membership: tuple[MembershipChange, ...] = ()   # applied through the runtime API
    certificates: tuple[CertChange, ...] = ()       # applied through the runtime API, reload or not

    @property
    def needs_reload(self) -> bool:
        return bool(self.structural_reasons)

    @property
    def empty(self) -> bool:
        return not self.structural_reasons and not self.membership and not self.certificates
