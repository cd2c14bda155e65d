"""Gateway settings from Consul KV: check every key under `shopgate/`, keep what is valid, report the rest.

    shopgate/gateway/<key>            gateway-wide settings  -> GatewaySettings
    shopgate/services/<name>/<key>    per-service settings   -> BackendSettings
    shopgate/tls/...                  certificates: validated by gateway.tls, skipped here

An invalid value is skipped (the default stays in force) and reported as "<full key>: <reason>";
it never reaches haproxy.cfg. Unknown keys are reported too, so a typo does not fail silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Callable, Mapping

from gateway.haproxy_syntax import MAX_WEIGHT, SERVICE_NAME, TOKEN, display
from gateway.model import BackendSettings, GatewaySettings
from shopgate.settings import KV_PREFIX

BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "source", "first", "random")

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


def stats_auth(text: str) -> tuple[str, str]:
    """'user:password' for the stats page. Both parts are plain words (no blanks, quotes, '#', '$', '\\')."""
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise InvalidSetting("expected user:password")
    if ":" in user or not TOKEN.fullmatch(user) or not TOKEN.fullmatch(password):
        raise InvalidSetting("user and password may use only A-Z a-z 0-9 and _ . : / @ % + = , ! ? * ~ ^ [ ] -")
    return user, password


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
}

SERVICE_KEYS: dict[str, tuple[Callable[[str], Any], Fields]] = {
    "balance": (balance, "balance"),
    "maxconn": (integer(1, 100_000), "maxconn"),
    "timeout_connect": (duration_ms, "timeout_connect_ms"),
    "timeout_server": (duration_ms, "timeout_server_ms"),
    "weights": (tag_weights, "tag_weights"),
    "maintenance": (boolean, "maintenance"),
    "slots": (integer(1, 1024), "min_slots"),
    "https_redirect": (boolean, "https_redirect"),
    "hsts": (integer(0, 2 * 365 * 86400), "hsts_seconds"),
}


#: `SHOPGATE_GATEWAY_<KEY>` gives a gateway-wide setting where KV has none (e.g. SHOPGATE_GATEWAY_STATS_AUTH).
ENV_PREFIX = "SHOPGATE_GATEWAY_"


def settings_from_env(environ: Mapping[str, str]) -> dict[str, bytes]:
    """Gateway settings from the environment, as the KV entries they stand in for.

    Deployments set secrets such as the stats login at start, without a KV write; a KV value
    still wins, and a bad value is reported under its KV key like any other.
    """
    return {f"{KV_PREFIX}gateway/{key}": environ[ENV_PREFIX + key.upper()].encode()
            for key in GATEWAY_KEYS if ENV_PREFIX + key.upper() in environ}


def parse_settings(kv: dict[str, bytes]) -> tuple[GatewaySettings, dict[str, BackendSettings], list[str]]:
    """Validate raw KV (full key -> value) into gateway settings, per-service settings and errors."""
    gateway: dict[str, Any] = {}
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
            elif parts[0] == "services" and len(parts) == 3:
                if not SERVICE_NAME.fullmatch(parts[1]):
                    raise InvalidSetting(f"service name {display(parts[1])} is not a valid service name")
                _apply(SERVICE_KEYS, parts[2], kv[key], services.setdefault(parts[1], {}))
            else:
                raise InvalidSetting(f"unknown key (expected {KV_PREFIX}gateway/<key>, {KV_PREFIX}services/<name>/<key> or {KV_PREFIX}tls/...)")
        except InvalidSetting as error:
            errors.append(f"{display(key, 120)[1:-1]}: {error}")
    backend_settings = {name: replace(BackendSettings(), **fields) for name, fields in services.items()}
    return replace(GatewaySettings(), **gateway), backend_settings, errors


def _apply(known: dict[str, tuple[Callable[[str], Any], Fields]], name: str, raw: bytes, into: dict[str, Any]) -> None:
    if name not in known:
        raise InvalidSetting(f"unknown key {display(name)} (known: {', '.join(sorted(known))})")
    parse, fields = known[name]
    value = parse(_text(raw))
    if isinstance(fields, tuple):
        into.update(zip(fields, value))
    else:
        into[fields] = value
