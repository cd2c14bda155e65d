"""KV under shopgate/ -> GatewaySettings and BackendSettings (gateway.kv_settings): valid kept, invalid reported."""

from __future__ import annotations

import pytest

from gateway.kv_settings import parse_settings, settings_from_env
from gateway.model import BackendSettings, GatewaySettings


def test_no_keys_means_defaults_and_no_errors():
    assert parse_settings({}) == (GatewaySettings(), {}, [])


def test_every_gateway_key():
    gateway, services, errors = parse_settings({
        "shopgate/gateway/stats_auth": b"admin:s3cr:et",
        "shopgate/gateway/maxconn": b"20000",
        "shopgate/gateway/timeout_client": b"1m",
        "shopgate/gateway/timeout_server": b"45s",
        "shopgate/gateway/timeout_connect": b"500ms",
        "shopgate/gateway/retries": b"0",
        "shopgate/gateway/hard_stop_after": b"2h",
    })
    assert errors == [] and services == {}
    assert gateway == GatewaySettings(
        stats_user="admin", stats_password="s3cr:et", maxconn=20000, timeout_client_ms=60_000,
        timeout_server_ms=45_000, timeout_connect_ms=500, retries=0, hard_stop_after_ms=7_200_000,
    )


def test_every_service_key():
    _, services, errors = parse_settings({
        "shopgate/services/products/balance": b"leastconn",
        "shopgate/services/products/maxconn": b" 50\n",
        "shopgate/services/products/timeout_connect": b"1s",
        "shopgate/services/products/timeout_server": b"90s",
        "shopgate/services/products/weights": b'{"stable": 100, "canary": 0}',
        "shopgate/services/products/maintenance": b"TRUE",
        "shopgate/services/products/slots": b"64",
        "shopgate/services/users/balance": b"source",
        "shopgate/services/users/https_redirect": b"yes",
        "shopgate/services/users/hsts": b"31536000",
    })
    assert errors == []
    assert services == {
        "products": BackendSettings(balance="leastconn", maxconn=50, timeout_connect_ms=1000, timeout_server_ms=90_000,
                                    tag_weights=(("canary", 0), ("stable", 100)), maintenance=True, min_slots=64),
        "users": BackendSettings(balance="source", https_redirect=True, hsts_seconds=31_536_000),
    }


@pytest.mark.parametrize("key, value, reason", [
    ("shopgate/services/products/balance", b"fastest", "'fastest' is not one of roundrobin, leastconn, source, first, random"),
    ("shopgate/services/products/balance", b"roundrobin\nbackend x", "is not one of"),
    ("shopgate/services/products/maxconn", b"-1", "'-1' is not a whole number in 1..100000"),
    ("shopgate/services/products/maxconn", b"10 # x", "is not a whole number"),
    ("shopgate/services/products/timeout_server", b"30", "'30' is not a duration such as 500ms, 5s, 1m or 1h"),
    ("shopgate/services/products/timeout_server", b"0s", "outside 1ms..24h"),
    ("shopgate/services/products/timeout_server", b"25h", "outside 1ms..24h"),
    ("shopgate/services/products/weights", b"canary=10", "is not JSON"),
    ("shopgate/services/products/weights", b"[1, 2]", "not a JSON object"),
    ("shopgate/services/products/weights", b'{"canary": 300}', "weight of tag 'canary' is 300, not a whole number in 0..256"),
    ("shopgate/services/products/weights", b'{"canary": true}', "not a whole number"),
    ("shopgate/services/products/maintenance", b"maybe", "'maybe' is not true or false"),
    ("shopgate/services/products/slots", b"100000", "not a whole number in 1..1024"),
    ("shopgate/services/products/https_redirect", b"always", "'always' is not true or false"),
    ("shopgate/services/products/hsts", b"1y", "not a whole number in 0..63072000"),
    ("shopgate/services/products/colour", b"blue", "unknown key 'colour' (known: balance, hsts, https_redirect, maintenance, maxconn, slots, timeout_connect, timeout_server, weights)"),
    ("shopgate/services/bad name/balance", b"leastconn", "service name 'bad name' is not a valid service name"),
    ("shopgate/gateway/stats_auth", b"admin", "expected user:password"),
    ("shopgate/gateway/stats_auth", b"admin:pass word", "user and password may use only"),
    ("shopgate/gateway/stats_auth", b'admin:"x"', "user and password may use only"),
    ("shopgate/gateway/retries", b"11", "not a whole number in 0..10"),
    ("shopgate/gateway/timeout_client", b"\xff\xfe", "value is not UTF-8 text"),
    ("shopgate/gateway/colour", b"blue", "unknown key 'colour'"),
    ("shopgate/other/thing", b"x", "unknown key (expected shopgate/gateway/<key>, shopgate/services/<name>/<key> or shopgate/tls/...)"),
])
def test_an_invalid_value_is_reported_with_key_and_reason_and_the_default_stays(key, value, reason):
    gateway, services, errors = parse_settings({key: value})
    assert len(errors) == 1
    assert errors[0].startswith(f"{key}: ") and reason in errors[0]
    assert "\n" not in errors[0]
    assert gateway == GatewaySettings()
    assert all(settings == BackendSettings() for settings in services.values())


def test_an_error_in_one_key_keeps_the_valid_keys_of_the_same_service():
    _, services, errors = parse_settings({
        "shopgate/services/products/balance": b"fastest",
        "shopgate/services/products/maxconn": b"30",
    })
    assert services["products"] == BackendSettings(maxconn=30)
    assert len(errors) == 1


def test_consul_folders_and_other_prefixes_are_ignored():
    assert parse_settings({"shopgate/": b"", "shopgate/services/": b"", "other/app/x": b"1"}) == (GatewaySettings(), {}, [])


def test_a_hostile_key_is_shown_escaped_on_one_line():
    _, _, errors = parse_settings({"shopgate/gateway/x\nbackend evil": b"1"})
    assert errors == ["shopgate/gateway/x\\nbackend evil: unknown key 'x\\nbackend evil' (known: hard_stop_after, maxconn, retries, stats_auth, timeout_client, timeout_connect, timeout_server)"]


def test_environment_gives_gateway_settings_that_kv_overrides():
    env = settings_from_env({"SHOPGATE_GATEWAY_STATS_AUTH": "ops:pw", "SHOPGATE_GATEWAY_RETRIES": "1", "UNRELATED": "x"})
    assert env == {"shopgate/gateway/stats_auth": b"ops:pw", "shopgate/gateway/retries": b"1"}
    gateway, _, errors = parse_settings({**env, "shopgate/gateway/retries": b"2"})
    assert (gateway.stats_user, gateway.stats_password, gateway.retries, errors) == ("ops", "pw", 2, [])
