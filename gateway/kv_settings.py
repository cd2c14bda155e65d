"""Gateway settings from Consul KV: check every key under `shopgate/`, keep what is valid, report the rest.

    shopgate/gateway/<key>                          gateway-wide settings  -> GatewaySettings
    shopgate/gateway/environments/<env>/<key>       an environment's frontend -> GatewaySettings.environments
    shopgate/services/<name>/<key>                  per-service settings   -> BackendSettings
    shopgate/tls/...                                certificates: validated by gateway.tls, skipped here

An invalid value is skipped (the default stays in force) and reported as "<full key>: <reason>";
it never reaches haproxy.cfg. Unknown keys are reported too, so a typo does not fail silently.
A route guard (`GUARD_KEYS`: rate limit, allow/deny lists, auth) is different: dropping one opens the
route, so a bad guard value keeps the service's last good guard (`last_good`, the running table's
settings). After a controller restart there is no last good value: the bad key is reported and the
guard is off until it is fixed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import replace
from typing import Any, Callable, Mapping

from gateway.haproxy_syntax import (BIND_ADDRESS, COOKIE_NAME, DNS_SERVICE_NAME, ENVIRONMENT_NAME, HOSTNAME, MAX_WEIGHT, PASSWORD_HASH,
                                    SERVICE_NAME, TOKEN, USER_NAME, display, network_problem)
from gateway.model import BackendSettings, EnvironmentSettings, GatewaySettings
from shopgate.settings import DEFAULT_ENVIRONMENT, KV_PREFIX

BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "source", "first", "random")
DISCOVERY_MODES = ("runtime", "dns")

_DURATION = re.compile(r"([0-9]{1,9})(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_MAX_DURATION_MS = 24 * 3_600_000


class InvalidSetting(ValueError):
    """A KV value that does not parse; the message is the reason shown to the user."""


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidSetting("value is not UTF-8 text") from None


def duration_ms(text: str) -> int:
    """'500ms', '5s', '1m', '2h' -> milliseconds. A unit is required: a bare '30' is ambiguous."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise InvalidSetting(f"{display(text)} is not a duration such as 500ms, 5s, 1m or 1h")
    value = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if not 1 <= value <= _MAX_DURATION_MS:
        raise InvalidSetting(f"{display(text)} is outside 1ms..24h")
    return value


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
            raise InvalidSetting(f"{display(text)} is not a whole number in {low}..{high}")
        return int(text)

    return parse


def balance(text: str) -> str:
    if text not in BALANCE_ALGORITHMS:
        raise InvalidSetting(f"{display(text)} is not one of {', '.join(BALANCE_ALGORITHMS)}")
    return text


def discovery(text: str) -> str:
    """Who fills a backend's servers: the controller through the runtime API, or HAProxy's DNS resolver."""
    if text not in DISCOVERY_MODES:
        raise InvalidSetting(f"{display(text)} is not one of {', '.join(DISCOVERY_MODES)}")
    return text


def boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidSetting(f"{display(text)} is not true or false")


def tag_weights(text: str) -> tuple[tuple[str, int], ...]:
    """JSON object tag -> weight 0..256, e.g. {"canary": 10, "stable": 100}."""
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidSetting(f"{display(text)} is not JSON (expected an object such as {{\"canary\": 10}})") from None
    if not isinstance(value, dict):
        raise InvalidSetting(f"{display(text)} is not a JSON object of tag -> weight")
    for tag, weight in value.items():
        if not tag:
            raise InvalidSetting("an empty tag has no meaning")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise InvalidSetting(f"weight of tag {display(tag)} is {display(weight)}, not a whole number in 0..{MAX_WEIGHT}")
    return tuple(sorted(value.items()))


def sticky(text: str) -> bool:
    """`cookie` (HAProxy inserts a cookie naming the instance) or `off`."""
    if text not in ("cookie", "off"):
        raise InvalidSetting(f"{display(text)} is not cookie or off")
    return text == "cookie"


def cookie_name(text: str) -> str:
    if not COOKIE_NAME.fullmatch(text):
        raise InvalidSetting(f"{display(text)} is not a cookie name of 1-80 of A-Z a-z 0-9 _ . -")
    return text


def bind_address(text: str) -> str:
    """`host:port` an environment's frontend listens on, e.g. 127.0.0.1:8081."""
    if not BIND_ADDRESS.fullmatch(text) or not 1 <= int(text.rpartition(":")[2]) <= 65535:
        raise InvalidSetting(f"{display(text)} is not host:port (e.g. 127.0.0.1:8081)")
    return text


def host_names(text: str) -> tuple[str, ...]:
    """Host names separated by commas or blanks, or a JSON list of them; matched case-insensitively."""
    try:
        value = json.loads(text) if text.startswith("[") else re.split(r"[\s,]+", text)
    except ValueError:
        raise InvalidSetting(f"{display(text)} is not a JSON list of host names") from None
    hosts = [h.lower() if isinstance(h, str) else h for h in value if h != ""] if isinstance(value, list) else [value]
    for host in hosts:
        if not isinstance(host, str) or not HOSTNAME.fullmatch(host):
            raise InvalidSetting(f"{display(host)} is not a host name")
    if not hosts:
        raise InvalidSetting("no host names")
    return tuple(sorted(set(hosts)))


def stats_auth(text: str) -> tuple[str, str]:
    """'user:password' for the stats page. Both parts are plain words (no blanks, quotes, '#', '$', '\\')."""
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise InvalidSetting("expected user:password")
    if ":" in user or not TOKEN.fullmatch(user) or not TOKEN.fullmatch(password):
        raise InvalidSetting("user and password may use only A-Z a-z 0-9 and _ . : / @ % + = , ! ? * ~ ^ [ ] -")
    return user, password


def networks(text: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks, e.g. `10.0.0.0/8, 192.168.1.7, ::1` (written canonical)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InvalidSetting("expected one or more addresses or CIDR networks, comma-separated")
    for item in items:
        problem = network_problem(item)
        if problem:
            raise InvalidSetting(problem)
    return tuple(sorted({str(ipaddress.ip_network(item)) for item in items}))


def users(text: str) -> tuple[tuple[str, str], ...]:
    """htpasswd lines `user:crypt-hash` (one per line or comma-separated); $5$, $6$ or $2y$ hashes only."""
    entries = [line.strip() for line in re.split(r"[,\n]", text) if line.strip()]
    if not entries:
        raise InvalidSetting("expected user:hash entries such as alice:$6$salt$hash (htpasswd -B or openssl passwd -6)")
    found: dict[str, str] = {}
    for entry in entries:
        user, colon, hashed = entry.partition(":")
        if not colon or not USER_NAME.fullmatch(user):
            raise InvalidSetting(f"{display(entry[:20] + '...' if len(entry) > 20 else entry)}: expected user:hash, "
                                 "user made of A-Z a-z 0-9 _ . -")
        if not PASSWORD_HASH.fullmatch(hashed):
            raise InvalidSetting(f"user {user}: the password is not a $5$, $6$ or $2y$ crypt(3) hash "
                                 "(plain passwords are refused: make one with openssl passwd -6 or htpasswd -nB)")
        if user in found:
            raise InvalidSetting(f"user {user} is listed twice")
        found[user] = hashed
    return tuple(sorted(found.items()))


#: The settings field a parsed value sets, or the fields a tuple-valued parser sets in order (stats_auth).
Fields = str | tuple[str, ...]

#: KV key -> (parser, fields), under shopgate/gateway/ and shopgate/services/<name>/.
GATEWAY_KEYS: dict[str, tuple[Callable[[str], Any], Fields]] = {
    "maxconn": (integer(1, 1_000_000), "maxconn"),
    "timeout_client": (duration_ms, "timeout_client_ms"),
    "timeout_server": (duration_ms, "timeout_server_ms"),
    "timeout_connect": (duration_ms, "timeout_connect_ms"),
    "retries": (integer(0, 10), "retries"),
    "hard_stop_after": (duration_ms, "hard_stop_after_ms"),
    "stats_auth": (stats_auth, ("stats_user", "stats_password")),
    "accept_proxy": (boolean, "accept_proxy"),
}

ENVIRONMENT_KEYS: dict[str, tuple[Callable[[str], Any], Fields]] = {
    "bind": (bind_address, "bind"),
    "hosts": (host_names, "hosts"),
}

SERVICE_KEYS: dict[str, tuple[Callable[[str], Any], Fields]] = {
    "balance": (balance, "balance"),
    "maxconn": (integer(1, 100_000), "maxconn"),
    "timeout_connect": (duration_ms, "timeout_connect_ms"),
    "timeout_server": (duration_ms, "timeout_server_ms"),
    "weights": (tag_weights, "tag_weights"),
    "maintenance": (boolean, "maintenance"),
    "slots": (integer(1, 1024), "min_slots"),
    "sticky": (sticky, "sticky"),
    "sticky_cookie": (cookie_name, "sticky_cookie"),
    "discovery": (discovery, "discovery"),
    "route_warning": (boolean, "route_warning"),
    # route guards (GUARD_KEYS)
    "rate_limit": (integer(1, 1_000_000), "rate_limit"),
    "rate_burst": (integer(1, 10_000_000), "rate_burst"),
    "allow": (networks, "allow"),
    "deny": (networks, "deny"),
    "auth": (users, "auth"),
    # flap hold-down (gateway.flap)
    "flap_limit": (integer(1, 10_000), "flap_limit"),
    "flap_window": (duration_ms, "flap_window_ms"),
    "flap_hold": (duration_ms, "flap_hold_ms"),
    "https_redirect": (boolean, "https_redirect"),
    "hsts": (integer(0, 2 * 365 * 86400), "hsts_seconds"),
}

#: Per-service keys whose last good value stays when a new value is bad (dropping them would open the route).
GUARD_KEYS = ("rate_limit", "rate_burst", "allow", "deny", "auth")


#: `SHOPGATE_GATEWAY_<KEY>` gives a gateway-wide setting where KV has none (e.g. SHOPGATE_GATEWAY_STATS_AUTH).
ENV_PREFIX = "SHOPGATE_GATEWAY_"


def settings_from_env(environ: Mapping[str, str]) -> dict[str, bytes]:
    """Gateway settings from the environment, as the KV entries they stand in for.

    Deployments set secrets such as the stats login at start, without a KV write; a KV value
    still wins, and a bad value is reported under its KV key like any other.
    """
    return {f"{KV_PREFIX}gateway/{key}": environ[ENV_PREFIX + key.upper()].encode()
            for key in GATEWAY_KEYS if ENV_PREFIX + key.upper() in environ}


def parse_settings(kv: dict[str, bytes], last_good: Mapping[str, BackendSettings] | None = None,
                   taken_binds: Mapping[str, str] = {}) -> tuple[GatewaySettings, dict[str, BackendSettings], list[str]]:
    """Validate raw KV (full key -> value) into gateway settings, per-service settings and errors.

    `last_good`: the settings each service runs with now; a bad guard value keeps its field from there.
    `taken_binds` (host:port -> what listens there) are binds no environment may have.
    """
    gateway: dict[str, Any] = {}
    environments: dict[str, dict[str, Any]] = {}
    services: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for key in sorted(kv):
        if not key.startswith(KV_PREFIX) or key.endswith("/"):
            continue  # outside our prefix, or a Consul "folder"
        parts = key[len(KV_PREFIX):].split("/")
        if parts[0] == "tls":
            continue  # certificates: gateway.tls
        try:
            if parts[0] == "gateway" and len(parts) == 2:
                _apply(GATEWAY_KEYS, parts[1], kv[key], gateway)
            elif parts[:2] == ["gateway", "environments"] and len(parts) == 4:
                _apply(ENVIRONMENT_KEYS, parts[3], kv[key], environments.setdefault(_environment_name(parts[2]), {}))
            elif parts[0] == "services" and len(parts) == 3:
                if not SERVICE_NAME.fullmatch(parts[1]):
                    raise InvalidSetting(f"service name {display(parts[1])} is not a valid service name")
                into = services.setdefault(parts[1], {})
                try:
                    _apply(SERVICE_KEYS, parts[2], kv[key], into)
                except InvalidSetting as error:
                    kept = (last_good or {}).get(parts[1])
                    if parts[2] in GUARD_KEYS and kept is not None:
                        field = SERVICE_KEYS[parts[2]][1]
                        into[field] = getattr(kept, field)
                        raise InvalidSetting(f"{error}; the last good value stays") from None
                    raise
            else:
                raise InvalidSetting(f"unknown key (expected {KV_PREFIX}gateway/<key>, {KV_PREFIX}gateway/environments/<env>/<key>, "
                                     f"{KV_PREFIX}services/<name>/<key> or {KV_PREFIX}tls/...)")
        except InvalidSetting as error:
            errors.append(_error(key, error))
    gateway["environments"] = _distinct_frontends(environments, taken_binds, errors)
    for name, fields in services.items():
        if fields.get("discovery") == "dns" and not DNS_SERVICE_NAME.fullmatch(name):
            del fields["discovery"]   # the runtime API keeps serving it
            errors.append(f"{KV_PREFIX}services/{name}/discovery: service {display(name)} cannot be found over DNS "
                          f"(_{name}._tcp.service.consul: a dot or underscore is not a DNS label character); "
                          "its servers stay with the runtime API")
    backend_settings = {name: replace(BackendSettings(), **fields) for name, fields in services.items()}
    return replace(GatewaySettings(), **gateway), backend_settings, errors


def _error(key: str, error: Exception) -> str:
    return f"{display(key, 120)[1:-1]}: {error}"


def _environment_name(name: str) -> str:
    if not ENVIRONMENT_NAME.fullmatch(name):
        raise InvalidSetting(f"environment name {display(name)} is not 1-32 of a-z 0-9 _ - starting with a letter or digit")
    if name == DEFAULT_ENVIRONMENT:
        raise InvalidSetting(f"{DEFAULT_ENVIRONMENT} is served on the gateway entry point (--listen); it takes no environment keys")
    return name


def _distinct_frontends(environments: dict[str, dict[str, Any]], taken_binds: Mapping[str, str], errors: list[str]) -> tuple[EnvironmentSettings, ...]:
    """Environments in name order. One whose bind, or (sharing the entry point) whose host name, the
    gateway or an earlier one already has is dropped whole and reported: no request may reach two environments."""
    kept: list[EnvironmentSettings] = []
    binds: dict[str, str] = {bind: what for bind, what in taken_binds.items()}
    entry_hosts: dict[str, str] = {}
    for name in sorted(environments):
        env = EnvironmentSettings(name=name, **environments[name])
        if env.bind is None and not env.hosts:
            continue   # its keys were all invalid (reported)
        if env.bind in binds:
            problem = ("bind", f"{env.bind} is already {binds[env.bind]}'s bind; {name} is not served")
        elif env.bind is None and any(h in entry_hosts for h in env.hosts):
            shared = ", ".join(f"{h} (environment {entry_hosts[h]})" for h in env.hosts if h in entry_hosts)
            problem = ("hosts", f"{shared} already served on the entry point; {name} is not served")
        else:
            kept.append(env)
            if env.bind:
                binds[env.bind] = f"environment {name}"
            else:
                entry_hosts.update((h, name) for h in env.hosts)
            continue
        errors.append(_error(f"{KV_PREFIX}gateway/environments/{name}/{problem[0]}", InvalidSetting(problem[1])))
    return tuple(kept)


def _apply(known: dict[str, tuple[Callable[[str], Any], Fields]], name: str, raw: bytes, into: dict[str, Any]) -> None:
    if name not in known:
        raise InvalidSetting(f"unknown key {display(name)} (known: {', '.join(sorted(known))})")
    parse, fields = known[name]
    value = parse(_text(raw))
    if isinstance(fields, tuple):
        into.update(zip(fields, value))
    else:
        into[fields] = value
