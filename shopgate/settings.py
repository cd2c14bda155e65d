"""Every default of shopgate, written once.

Components read their defaults from here and their overrides from the
command line or the environment; nothing else hard-codes a port or a path.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The five shop services, in the order they are started.
SHOP_SERVICES: tuple[str, ...] = ("users", "products", "inventory", "orders", "payments")

LOOPBACK = "127.0.0.1"
CATALOG_PORT = 8500          # Consul HTTP API + UI
GATEWAY_PORT = 8080          # HAProxy entry point
HTTPS_PORT = 8443            # HAProxy entry point, HTTPS (the local stack's; `shopgate gateway` has it off unless --https)
STATS_PORT = 8404            # HAProxy stats page and /metrics
STATUS_PORT = 9180           # controller /status and /metrics
DNS_PORT = 8600              # Consul DNS interface (UDP + TCP) of the catalog

#: Consul KV prefix under which every gateway setting lives.
KV_PREFIX = "shopgate/"

#: The environment of an instance without an `env=<name>` tag or `env` meta; served on the gateway entry point.
DEFAULT_ENVIRONMENT = "prod"

#: Jinja2 templates for haproxy.cfg; edited live by users.
TEMPLATES_DIR = PROJECT_ROOT / "config_templates"

#: Where `shopgate up --detach` keeps pids, logs and data.
STATE_DIR = Path(os.environ.get("SHOPGATE_STATE_DIR", PROJECT_ROOT / ".state"))

DEFAULT_CONSUL_ADDR = f"http://{LOOPBACK}:{CATALOG_PORT}"

#: Consul's DNS: TTLs 0 by default (Consul's `service_ttl`, `node_ttl`), the domain `consul.`; HAProxy backends in DNS
#: mode ask the server named by --consul-dns, else CONSUL_DNS_ADDR (Consul's variable), else this default.
DNS_DOMAIN = "consul."
DNS_SERVICE_TTL = 0
DNS_NODE_TTL = 0
CONSUL_DNS_ENV = "CONSUL_DNS_ADDR"
DEFAULT_CONSUL_DNS_ADDR = f"{LOOPBACK}:{DNS_PORT}"


def consul_dns_from_env() -> str:
    """host:port of the Consul DNS server the gateway points HAProxy's resolvers at."""
    return os.environ.get(CONSUL_DNS_ENV) or DEFAULT_CONSUL_DNS_ADDR

#: Shop service instances (`shopgate service NAME`): SQLite stores shared by the instances of a
#: service live in SERVICE_DATA_DIR/<service>; the drain period is overridden by SHOPGATE_DRAIN_SECONDS.
SERVICE_DATA_DIR = STATE_DIR / "data"
SERVICE_DRAIN_SECONDS = 2.0
SERVICE_WORKERS = 1
SERVICE_THREADS = 4
SERVICE_CHECK_INTERVAL = "1s"
SERVICE_CHECK_TIMEOUT = "1s"
#: A self-registered instance turns critical after this many failed checks in a row (Consul's
#: FailuresBeforeCritical), not after one: on a busy machine one slow `/health` answer of a lone replica
#: would otherwise take it out of every `?passing` read (an order then finds no users) for a whole interval.
SERVICE_CHECK_FAILURES_BEFORE_CRITICAL = 2
SERVICE_DEREGISTER_CRITICAL_AFTER = "1m"


def drain_seconds_from_env() -> float:
    """The drain period: read by the instance that drains and by `shopgate down`, which waits for it."""
    raw = os.environ.get("SHOPGATE_DRAIN_SECONDS")
    if raw is None:
        return SERVICE_DRAIN_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SHOPGATE_DRAIN_SECONDS must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"SHOPGATE_DRAIN_SECONDS must not be negative, got {raw!r}")
    return value


#: How often a registered instance confirms that the catalog still knows it.
REGISTRATION_RECHECK_SECONDS = 2.0
#: Longest pause between registration attempts while the catalog is unreachable.
REGISTRATION_MAX_BACKOFF_SECONDS = 3.0

#: Docker registrar (`shopgate registrar`): a container's HEALTHCHECK becomes a TTL check refreshed
#: at every resync, so a registrar that dies leaves its containers critical after DOCKER_HEALTH_TTL.
DOCKER_HEALTH_TTL = "15s"
DOCKER_RESYNC_SECONDS = 5.0
#: Longest pause between reconnects to a Docker engine whose event stream dropped.
DOCKER_MAX_BACKOFF_SECONDS = 5.0

#: Gateway backends get at least MIN_SLOTS server slots (KV `slots` raises the floor). Those where HAProxy cannot
#: `add server` (static balance algorithms, sticky cookies) get SLOT_HEADROOM times their instances (to the next
#: power of two), so that scaling up fills a spare slot instead of reloading HAProxy; the others a slot per instance
#: (further instances become dynamic servers, no reload).
MIN_SLOTS = 4
SLOT_HEADROOM = 2
#: A backend in DNS discovery mode (KV `discovery = dns`) gets a fixed `server-template` of this many slots (KV `slots`
#: raises it): HAProxy's resolver fills them, and a fixed count means scaling never needs a reload.
DNS_SLOTS = 16

#: Gateway controller (`shopgate gateway`): a blocking catalog query waits up to GATEWAY_WATCH_WAIT_SECONDS; a
#: removed server drains at most GATEWAY_DRAIN_TIMEOUT_SECONDS before `state maint`; the empty-catalog guard holds
#: back a view at most GATEWAY_GUARD_HOLD_SECONDS.
GATEWAY_WATCH_WAIT_SECONDS = 30.0
GATEWAY_DRAIN_TIMEOUT_SECONDS = 30.0
GATEWAY_GUARD_HOLD_SECONDS = 30.0
#: A stopping gateway waits for HAProxy's soft stop up to its hard-stop-after plus this margin, then kills it.
GATEWAY_STOP_MARGIN_SECONDS = 5.0
#: On SIGTERM the gateway answers /ready 503 this long before HAProxy stops accepting, so an outer
#: balancer that checks /ready has moved new connections away (0: stop at once, nothing in front).
GATEWAY_UNREADY_DELAY_SECONDS = 0.0
#: HAProxy's request log (<state-dir>/haproxy.log, ~150 bytes a request) is rotated by copy-then-truncate once it
#: passes GATEWAY_LOG_MAX_BYTES (0: never), keeping GATEWAY_LOG_KEEP older files (haproxy.log.1 ..); its size is
#: looked at every GATEWAY_LOG_CHECK_SECONDS from the controller's loop.
GATEWAY_LOG_MAX_BYTES = 64 * 1024 * 1024
GATEWAY_LOG_KEEP = 2
GATEWAY_LOG_CHECK_SECONDS = 2.0

#: HAProxy's own health check of the config's servers (`default-server`): every `inter`, up or down. A server
#: that is down in HAProxy but passing in the catalog (HAProxy cannot reach it: a partition, a firewall) is
#: checked once a second, not more: at 10,000 such servers a 20 ms `downinter` kept both CPUs of this machine
#: busy with checks alone (`top` on bench/membership.py's idle rig: 188 %; with this setting the bench's
#: "HAProxy idle CPU %" column shows 24 %).
HEALTH_CHECK = "check inter 1s fall 2 rise 1"
#: The check of a server the controller creates for a new instance (`add server`, which does not inherit
#: `default-server`): its first check runs `downinter` after it is added (measured on 2.6: a config slot leaving
#: maint keeps its `inter` phase, 0-1 s), so a new instance takes traffic within ~20 ms of its first passing
#: check (50 ms: first routed request p99 171 ms for 20 instances at once; 20 ms: 138-144 ms,
#: `bench/first_request.py`). Such a server that stays down keeps the 20 ms pace until the catalog's verdict
#: puts it in maint or the next reload makes it a config server.
NEW_SERVER_CHECK = "check inter 1s downinter 20ms fall 2 rise 1"

#: `shopgate gateway --https`: certificates expiring within CERT_EXPIRING_DAYS are reported in /status.
CERT_EXPIRING_DAYS = 14.0

#: Catalog reads and HAProxy restarts that failed are retried after pauses that double from the first to the last.
RETRY_BACKOFF_SECONDS = (0.2, 5.0)


#: Flap hold-down (gateway.flap; per service KV `flap_limit`, `flap_window`, `flap_hold`): an instance that flips
#: between healthy and unhealthy more than flap_limit times within flap_window is held out for flap_hold after its
#: last flip; these are the defaults of flap_window and flap_hold (flap_limit has none: absent = off).
FLAP_WINDOW_MS = 60_000
FLAP_HOLD_MS = 60_000
