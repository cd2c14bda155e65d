"""KV under shopgate/ -> GatewaySettings and BackendSettings (gateway.kv_settings): valid kept, invalid reported."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway.kv_settings import parse_settings, settings_from_env
from gateway.model import BackendSettings, EnvironmentSettings, GatewaySettings


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
        "shopgate/gateway/accept_proxy": b"true",
        "shopgate/gateway/environments/staging/bind": b"127.0.0.1:8081",
        "shopgate/gateway/environments/staging/hosts": b"Staging.example, staging.local",
        "shopgate/gateway/environments/qa/hosts": b'["qa.example"]',
    })
    assert errors == [] and services == {}
    assert gateway == GatewaySettings(
        stats_user="admin", stats_password="s3cr:et", maxconn=20000, timeout_client_ms=60_000,
        timeout_server_ms=45_000, timeout_connect_ms=500, retries=0, hard_stop_after_ms=7_200_000, accept_proxy=True,
        environments=(EnvironmentSettings("qa", hosts=("qa.example",)),
                      EnvironmentSettings("staging", bind="127.0.0.1:8081", hosts=("staging.example", "staging.local"))),
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
        "shopgate/services/products/discovery": b"dns",
        "shopgate/services/products/sticky": b"cookie",
        "shopgate/services/products/sticky_cookie": b"shop.session",
        "shopgate/services/users/balance": b"source",
        "shopgate/services/users/https_redirect": b"yes",
        "shopgate/services/users/hsts": b"31536000",
    })
    assert errors == []
    assert services == {
        "products": BackendSettings(balance="leastconn", maxconn=50, timeout_connect_ms=1000, timeout_server_ms=90_000,
                                    tag_weights=(("canary", 0), ("stable", 100)), maintenance=True, min_slots=64,
                                    sticky=True, sticky_cookie="shop.session", discovery="dns"),
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
    ("shopgate/services/products/colour", b"blue", "unknown key 'colour' (known: allow, auth, balance, deny, discovery, flap_hold, flap_limit, flap_window, "
     "hsts, https_redirect, maintenance, maxconn, rate_burst, rate_limit, route_warning, slots, sticky, sticky_cookie, timeout_connect, timeout_server, weights)"),
    ("shopgate/services/products/discovery", b"srv", "'srv' is not one of runtime, dns"),
    ("shopgate/services/cart.v2/discovery", b"dns", "service 'cart.v2' cannot be found over DNS (_cart.v2._tcp.service.consul"),
    ("shopgate/services/cart_v2/discovery", b"dns", "a dot or underscore is not a DNS label character); its servers stay with the runtime API"),
    ("shopgate/services/products/rate_limit", b"0", "not a whole number in 1..1000000"),
    ("shopgate/services/products/rate_limit", b"10/s", "not a whole number"),
    ("shopgate/services/products/rate_burst", b"-5", "not a whole number"),
    ("shopgate/services/products/allow", b"10.0.0.1/8", "'10.0.0.1/8' is not an address or CIDR network (10.0.0.1/8 has host bits set)"),
    ("shopgate/services/products/deny", b"10.0.0.0/8 #x", "is not an address or CIDR network"),
    ("shopgate/services/products/deny", b" , ", "expected one or more addresses"),
    ("shopgate/services/products/auth", b"alice:secret", "user alice: the password is not a $5$, $6$ or $2y$ crypt(3) hash"),
    ("shopgate/services/products/auth", b"alice:$6$a$b\nlisten x", "not a $5$, $6$ or $2y$"),
    ("shopgate/services/products/auth", b"al ice:$2y$05$" + b"a" * 53, "expected user:hash"),
    ("shopgate/services/products/auth", b"a:$2y$05$" + b"a" * 53 + b",a:$2y$05$" + b"b" * 53, "user a is listed twice"),
    ("shopgate/services/products/route_warning", b"sometimes", "is not true or false"),
    ("shopgate/services/products/flap_limit", b"0", "'0' is not a whole number in 1..10000"),
    ("shopgate/services/products/flap_limit", b"3 flips", "is not a whole number"),
    ("shopgate/services/products/flap_window", b"60", "'60' is not a duration such as 500ms, 5s, 1m or 1h"),
    ("shopgate/services/products/flap_hold", b"0s", "outside 1ms..24h"),
    ("shopgate/services/products/flap_hold", b"30s\nbackend x", "is not a duration"),
    ("shopgate/services/products/sticky", b"source", "'source' is not cookie or off"),
    ("shopgate/services/products/sticky_cookie", b"a b", "is not a cookie name"),
    ("shopgate/services/products/sticky_cookie", b"sid;Domain=evil", "is not a cookie name"),
    ("shopgate/gateway/accept_proxy", b"v2", "'v2' is not true or false"),
    ("shopgate/gateway/environments/staging/bind", b"8081", "is not host:port"),
    ("shopgate/gateway/environments/staging/bind", b"127.0.0.1:99999", "is not host:port"),
    ("shopgate/gateway/environments/staging/bind", b"127.0.0.1:8081 ssl crt /x", "is not host:port"),
    ("shopgate/gateway/environments/staging/hosts", b"a.example, b_c", "'b_c' is not a host name"),
    ("shopgate/gateway/environments/staging/hosts", b'["a.example", 7]', "7 is not a host name"),
    ("shopgate/gateway/environments/staging/hosts", b",", "no host names"),
    ("shopgate/gateway/environments/staging/port", b"1", "unknown key 'port' (known: bind, hosts)"),
    ("shopgate/gateway/environments/Staging/bind", b"127.0.0.1:8081", "environment name 'Staging' is not"),
    ("shopgate/gateway/environments/prod/bind", b"127.0.0.1:8081", "prod is served on the gateway entry point"),
    ("shopgate/services/bad name/balance", b"leastconn", "service name 'bad name' is not a valid service name"),
    ("shopgate/gateway/stats_auth", b"admin", "expected user:password"),
    ("shopgate/gateway/stats_auth", b"admin:pass word", "user and password may use only"),
    ("shopgate/gateway/stats_auth", b'admin:"x"', "user and password may use only"),
    ("shopgate/gateway/retries", b"11", "not a whole number in 0..10"),
    ("shopgate/gateway/timeout_client", b"\xff\xfe", "value is not UTF-8 text"),
    ("shopgate/gateway/colour", b"blue", "unknown key 'colour'"),
    ("shopgate/other/thing", b"x", "unknown key (expected shopgate/gateway/<key>, shopgate/gateway/environments/<env>/<key>, shopgate/services/<name>/<key> or shopgate/tls/...)"),
])
def test_an_invalid_value_is_reported_with_key_and_reason_and_the_default_stays(key, value, reason):
    gateway, services, errors = parse_settings({key: value})
    assert len(errors) == 1
    assert errors[0].startswith(f"{key}: ") and reason in errors[0]
    assert "\n" not in errors[0]
    assert gateway == GatewaySettings()
    assert all(settings == BackendSettings() for settings in services.values())


def test_dns_mode_takes_any_name_that_is_one_dns_label():
    _, services, errors = parse_settings({"shopgate/services/Cart-V2/discovery": b"dns", "shopgate/services/cart_v2/discovery": b"runtime"})
    assert errors == []
    assert services == {"Cart-V2": BackendSettings(discovery="dns"), "cart_v2": BackendSettings()}


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
    assert errors == ["shopgate/gateway/x\\nbackend evil: unknown key 'x\\nbackend evil' (known: accept_proxy, hard_stop_after, maxconn, retries, stats_auth, timeout_client, timeout_connect, timeout_server)"]


def test_environments_sharing_a_bind_or_an_entry_point_host_are_dropped_whole_and_reported():
    gateway, _, errors = parse_settings({
        "shopgate/gateway/environments/a/bind": b"127.0.0.1:8081",
        "shopgate/gateway/environments/b/bind": b"127.0.0.1:8081",
        "shopgate/gateway/environments/b/hosts": b"b.example",
        "shopgate/gateway/environments/c/hosts": b"shared.example",
        "shopgate/gateway/environments/d/hosts": b"shared.example, d.example",
        "shopgate/gateway/environments/e/bind": b"127.0.0.1:8082",
        "shopgate/gateway/environments/e/hosts": b"shared.example",   # on its own bind: no clash
    })
    assert [e.name for e in gateway.environments] == ["a", "c", "e"]
    assert errors == [
        "shopgate/gateway/environments/b/bind: 127.0.0.1:8081 is already environment a's bind; b is not served",
        "shopgate/gateway/environments/d/hosts: shared.example (environment c) already served on the entry point; d is not served",
    ]


def test_environment_gives_gateway_settings_that_kv_overrides():
    env = settings_from_env({"SHOPGATE_GATEWAY_STATS_AUTH": "ops:pw", "SHOPGATE_GATEWAY_RETRIES": "1", "UNRELATED": "x"})
    assert env == {"shopgate/gateway/stats_auth": b"ops:pw", "shopgate/gateway/retries": b"1"}
    gateway, _, errors = parse_settings({**env, "shopgate/gateway/retries": b"2"})
    assert (gateway.stats_user, gateway.stats_password, gateway.retries, errors) == ("ops", "pw", 2, [])


SHA512 = "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"
BCRYPT = "$2y$05$" + "a" * 53


def test_guards_parse_into_canonical_values():
    _, services, errors = parse_settings({
        "shopgate/services/web/rate_limit": b"10", "shopgate/services/web/rate_burst": b"50",
        "shopgate/services/web/allow": b" 10.0.0.0/8 ,192.168.1.7, ::1", "shopgate/services/web/deny": b"10.9.0.0/16",
        "shopgate/services/web/auth": f"bob:{BCRYPT}\nalice:{SHA512}\n".encode(),
        "shopgate/services/web/route_warning": b"true"})
    assert errors == []
    web = services["web"]
    assert (web.rate_limit, web.rate_burst, web.rate_window_ms, web.rate_window_seconds) == (10, 50, 5000, 5)
    assert web.allow == ("10.0.0.0/8", "192.168.1.7/32", "::1/128")
    assert web.deny == ("10.9.0.0/16",)
    assert web.auth == (("alice", SHA512), ("bob", BCRYPT))
    assert web.route_warning is True


def test_a_bad_guard_keeps_the_last_good_guard_but_a_bad_ordinary_setting_falls_back_to_the_default():
    last_good = {"web": BackendSettings(deny=("10.0.0.0/8",), auth=(("alice", SHA512),), rate_limit=5, maxconn=50)}
    _, services, errors = parse_settings({
        "shopgate/services/web/deny": b"10.0.0.300/8", "shopgate/services/web/auth": b"alice:plain",
        "shopgate/services/web/rate_limit": b"lots", "shopgate/services/web/maxconn": b"many"}, last_good)
    web = services["web"]
    assert (web.deny, web.auth, web.rate_limit) == (("10.0.0.0/8",), (("alice", SHA512),), 5)
    assert web.maxconn is None
    assert len(errors) == 4 and sum("the last good value stays" in e for e in errors) == 3


def test_a_deleted_guard_key_removes_the_guard():
    last_good = {"web": BackendSettings(deny=("10.0.0.0/8",))}
    _, services, errors = parse_settings({"shopgate/services/web/balance": b"leastconn"}, last_good)
    assert services["web"].deny == () and errors == []


def test_flap_keys_parse_and_default_to_a_minute_window_and_hold():
    _, services, errors = parse_settings({"shopgate/services/web/flap_limit": b"3", "shopgate/services/web/flap_hold": b"30s",
                                          "shopgate/services/api/flap_limit": b"1", "shopgate/services/api/flap_window": b"2m"})
    assert errors == []
    assert (services["web"].flap_limit, services["web"].flap_window_ms, services["web"].flap_hold_ms) == (3, 60_000, 30_000)
    assert (services["api"].flap_limit, services["api"].flap_window_ms, services["api"].flap_hold_ms) == (1, 120_000, 60_000)


@given(key=st.sampled_from(["flap_limit", "flap_window", "flap_hold"]),
       value=st.one_of(st.binary(max_size=12), st.text(max_size=12).map(str.encode),
                       st.sampled_from([b"0", b"-1", b"1", b"10000", b"10001", b"1e3", b"5s", b"0ms", b"24h", b"25h", b"1s #", b"1s\nx"])))
def test_any_flap_value_is_either_a_sane_setting_or_one_error_line_naming_the_key(key, value):
    _, services, errors = parse_settings({f"shopgate/services/web/{key}": value})
    web = services["web"]
    if errors:
        assert len(errors) == 1 and errors[0].startswith(f"shopgate/services/web/{key}: ") and "\n" not in errors[0]
        assert web == BackendSettings()
    else:
        assert web.flap_limit is None or 1 <= web.flap_limit <= 10_000
        assert 1 <= web.flap_window_ms <= 24 * 3_600_000 and 1 <= web.flap_hold_ms <= 24 * 3_600_000
