"""RouteTable -> haproxy.cfg (gateway.render + config_templates/), checked by the real `haproxy -c`.

The property test feeds hostile catalog and KV content (names, tags, meta, addresses with
newlines, quotes, '#', blanks, backslashes, unicode) through the whole pure pipeline and proves
that the output is always a valid config made only of lines the template writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from gateway.haproxy_syntax import DNS_SERVICE_NAME, SERVICE_NAME, UnsafeValue
from gateway.model import Backend, BackendSettings, Instance, Route, RouteTable, RuntimePaths, Server, Snapshot
from gateway.render import fleet_hash, render_config
from gateway.routing import build_route_table
from gateway.tls_store import CertificateStore
from shopgate.settings import TEMPLATES_DIR

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_check(config: str, directory: Path) -> subprocess.CompletedProcess:
    path = directory / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)


def runtime(directory: Path, **kwargs) -> RuntimePaths:
    return RuntimePaths(admin_socket=directory / "admin.sock", listen="127.0.0.1:18080", stats="127.0.0.1:18404", **kwargs)


def render(snapshot: Snapshot, directory: Path, **kwargs) -> tuple[RouteTable, str]:
    table = build_route_table(snapshot)
    return table, render_config(table, TEMPLATES_DIR, runtime(directory, **kwargs))


def inst(service: str, n: int, **kwargs) -> Instance:
    return Instance(service=service, id=f"{service}-{n}", node="node1", address=f"127.0.0.{n}", port=9000 + n, **kwargs)


SHOP = Snapshot(services={
    "products": (inst("products", 1), inst("products", 2, status="critical"), inst("products", 3, tags=("canary",))),
    "users": (inst("users", 1, tags=("urlprefix-shop.example/shop/users strip=/shop",)),),
})


# ---------------------------------------------------------------- examples


def test_the_shop_config_is_valid_and_carries_the_zero_failure_defaults(tmp_path):
    table, config = render(SHOP, tmp_path)
    check = haproxy_check(config, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    for line in (
        "    master-worker",
        f"    stats socket {tmp_path}/admin.sock mode 600 level admin expose-fd listeners",
        "    hard-stop-after 30000ms",
        "    option idle-close-on-response",
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    http-request disable-l7-retry unless replay_safe",
        "    option httpchk GET /health",
        "    default-server check inter 1s fall 2 rise 1 init-addr libc,none",
        "    bind 127.0.0.1:18080",
        "    bind 127.0.0.1:18404",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats uri /",
    ):
        assert line in config.splitlines(), line
    assert "stats auth" not in config
    assert "server-state-file" not in config


def test_accept_proxy_puts_the_proxy_protocol_on_the_entry_bind_only(tmp_path):
    _, plain = render(SHOP, tmp_path)
    _, config = render(SHOP, tmp_path, accept_proxy=True)
    assert "accept-proxy" not in plain
    assert [line.strip() for line in config.splitlines() if "accept-proxy" in line] == ["bind 127.0.0.1:18080 accept-proxy"]
    check = haproxy_check(config, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_slot_is_written_with_its_instance_or_as_a_disabled_spare(tmp_path):
    _, config = render(SHOP, tmp_path)
    products = config.split("backend be_products\n")[1].split("\n\n")[0].splitlines()
    assert [line for line in products if "server " in line] == [
        "    server s1 127.0.0.1:9001 weight 100",
        "    server s2 127.0.0.2:9002 weight 100 disabled",          # critical: kept in its slot, disabled
        "    server s3 127.0.0.3:9003 weight 100",
        "    server s4 127.0.0.1:1 weight 100 disabled",             # a slot each, at least 4
    ]


def test_routes_become_acls_in_match_order_with_strip(tmp_path):
    _, config = render(SHOP, tmp_path)
    frontend = config.split("frontend shopgate\n")[1].split("\n\n")[0].splitlines()
    assert frontend[1:3] == ["    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
                             "    http-request set-header X-Forwarded-Proto http unless { ssl_fc }"]
    assert frontend[6:] == [
        "    acl r1_host req.hdr(host),field(1,:),lower -m str shop.example",
        "    acl r1_path path /shop/users",
        "    acl r1_path path_beg /shop/users/",
        "    http-request set-var(txn.route) int(1) if !{ var(txn.route) -m found } { var(txn.env) -m str prod } r1_host r1_path",
        "    acl r2_path path /api/v1/products",
        "    acl r2_path path_beg /api/v1/products/",
        "    http-request set-var(txn.route) int(2) if !{ var(txn.route) -m found } { var(txn.env) -m str prod } r2_path",
        '    http-request return status 503 content-type application/json string "{\\"error\\": \\"no route\\"}" unless { var(txn.route) -m found }',
        "    http-request replace-path ^/shop/?(.*)$ /\\1 if { var(txn.route) -m int 1 }",
        "    use_backend be_users if { var(txn.route) -m int 1 }",
        "    use_backend be_products if { var(txn.route) -m int 2 }",
    ]


def test_kv_settings_are_rendered(tmp_path):
    kv = {
        "shopgate/gateway/stats_auth": b"admin:s3cret",
        "shopgate/gateway/maxconn": b"10000",
        "shopgate/gateway/timeout_client": b"1m",
        "shopgate/gateway/retries": b"2",
        "shopgate/gateway/hard_stop_after": b"10s",
        "shopgate/services/products/balance": b"leastconn",
        "shopgate/services/products/maxconn": b"25",
        "shopgate/services/products/timeout_server": b"90s",
        "shopgate/services/products/timeout_connect": b"500ms",
        "shopgate/services/products/weights": b'{"canary": 10}',
    }
    table, config = render(Snapshot(services=SHOP.services, kv=kv), tmp_path)
    assert table.rejected == ()
    check = haproxy_check(config, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = config.splitlines()
    for line in ("    stats auth admin:s3cret", "    maxconn 10000", "    timeout client 60000ms", "    retries 2",
                 "    hard-stop-after 10000ms", "    balance leastconn", "    default-server maxconn 25",
                 "    timeout server 90000ms", "    timeout connect 500ms", "    server s3 127.0.0.3:9003 weight 10"):
        assert line in lines, line
    assert lines.count("    balance roundrobin") == 1       # users keeps the default


def test_https_listener_redirect_and_hsts_render_only_with_https(tmp_path):
    kv = {"shopgate/services/products/https_redirect": b"true", "shopgate/services/products/hsts": b"600"}
    table = build_route_table(Snapshot(services=SHOP.services, kv=kv))
    plain = render_config(table, TEMPLATES_DIR, runtime(tmp_path))
    assert " ssl " not in plain and "redirect location" not in plain and "Strict-Transport-Security" not in plain
    config = render_config(table, TEMPLATES_DIR, https_runtime(tmp_path))
    product_route = next(i for i, r in enumerate(table.routes, 1) if r.backend == "be_products")
    assert f"    bind 127.0.0.1:18443 ssl crt-list {tmp_path}/tls/crt-list alpn h2,http/1.1" in config
    assert ("    http-request redirect location https://%[req.hdr(host),field(1,:)]:18443%[capture.req.uri] code 308"
            f" if !{{ ssl_fc }} {{ var(txn.route) -m int {product_route} }}") in config
    assert f"    http-response set-header Strict-Transport-Security max-age=600 if {{ ssl_fc }} {{ var(txn.route) -m int {product_route} }}" in config
    assert config.count("redirect location") == 1   # users has no redirect
    check = haproxy_check(config, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_invalid_kv_values_are_reported_and_not_rendered(tmp_path):
    kv = {
        "shopgate/services/products/balance": b"fastest",
        "shopgate/services/products/timeout_server": b"30 # comment",
        "shopgate/gateway/stats_auth": b"admin:pass\nlisten evil",
    }
    table, config = render(Snapshot(services=SHOP.services, kv=kv), tmp_path)
    assert [r.split(":")[0] for r in table.rejected] == [
        "shopgate/gateway/stats_auth", "shopgate/services/products/balance", "shopgate/services/products/timeout_server"]
    assert "fastest" not in config and "comment" not in config and "evil" not in config and "stats auth" not in config
    assert config.splitlines().count("    balance roundrobin") == 2
    assert haproxy_check(config, tmp_path).returncode == 0


def test_ipv6_and_hostname_servers_and_the_optional_state_file(tmp_path):
    snapshot = Snapshot(services={"p": (Instance("p", "a", "n", "::1", 8080), Instance("p", "b", "n", "localhost", 8081))})
    _, config = render(snapshot, tmp_path, server_state_file=tmp_path / "state", pidfile=tmp_path / "pid")
    assert "    server s1 [::1]:8080 weight 100" in config.splitlines()
    assert "    server s2 localhost:8081 weight 100" in config.splitlines()
    assert f"    server-state-file {tmp_path}/state" in config.splitlines()
    assert "    load-server-state-from-file global" in config.splitlines()
    check = haproxy_check(config, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_dns_mode_renders_resolvers_on_the_consul_dns_and_a_server_template_on_the_srv_name(tmp_path):
    snapshot = Snapshot(services=SHOP.services, kv={"shopgate/services/products/discovery": b"dns",
                                                      "shopgate/services/products/slots": b"200"})
    table, config = render(snapshot, tmp_path, consul_dns="127.0.0.1:18600")
    lines = config.splitlines()
    assert "resolvers consul" in lines and "    nameserver catalog 127.0.0.1:18600" in lines
    assert ("    server-template s 1-200 _products._tcp.service.consul resolvers consul resolve-prefer ipv4 "
            "init-addr none resolve-opts allow-dup-ip check") in lines
    assert "    accepted_payload_size 26112" in lines  # 200 slots: HAProxy's default 512 would hold 3 or 4
    assert not any(line.startswith("    server s") for line in lines[lines.index("backend be_products"):
                                                                     lines.index("backend be_users")])
    assert "    server s1 127.0.0.1:9001 weight 100" in lines  # users stays with the runtime API
    check = haproxy_check(config, tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    _, runtime_only = render(SHOP, tmp_path)
    assert "resolvers consul" not in runtime_only
    with pytest.raises(UnsafeValue, match="bind address"):
        render(snapshot, tmp_path, consul_dns="127.0.0.1:53\n    nameserver evil 6.6.6.6:53")


def test_dns_mode_on_a_name_dns_cannot_carry_is_reported_and_the_runtime_api_keeps_serving_it(tmp_path):
    snapshot = Snapshot(services={"cart_v2": (inst("cart_v2", 1),)}, kv={"shopgate/services/cart_v2/discovery": b"dns"})
    table, config = render(snapshot, tmp_path)
    assert [r for r in table.rejected if r.startswith("shopgate/services/cart_v2/discovery: ")]
    assert "server-template" not in config and "resolvers consul" not in config
    assert "    server s1 127.0.0.1:9001 weight 100" in config
    forged = RouteTable(backends=(Backend("be_a.b", "a.b", BackendSettings(discovery="dns"), (Server("s1", None),)),))
    with pytest.raises(UnsafeValue, match="SRV name"):   # the template's own check, should a table bypass the KV check
        render_config(forged, TEMPLATES_DIR, runtime(tmp_path))


def test_dns_mode_with_instances_in_another_environment_is_reported_and_keeps_environments_apart(tmp_path):
    snapshot = Snapshot(services={"products": (inst("products", 1), inst("products", 2, tags=("env=staging",)))},
                        kv={"shopgate/services/products/discovery": b"dns"})
    table, config = render(snapshot, tmp_path)
    assert [r for r in table.rejected if r.startswith("shopgate/services/products/discovery: instances in environment(s) staging")]
    assert "server-template" not in config   # an SRV name would hand staging's instance to prod and back
    assert {b.settings.discovery for b in table.backends} == {"runtime"} and len(table.backends) == 2


def test_a_value_that_bypassed_validation_fails_the_render_instead_of_injecting(tmp_path):
    forged = RouteTable(backends=(Backend("be_x", "x", BackendSettings(), (Server("s1", "k", "10.0.0.1\n    server evil 6.6.6.6:80", 80, 100, "ready"),)),))
    with pytest.raises(UnsafeValue, match="refusing to write"):
        render_config(forged, TEMPLATES_DIR, runtime(tmp_path))
    forged_route = RouteTable(routes=(Route("be_x", "/x if TRUE"),))
    with pytest.raises(UnsafeValue):
        render_config(forged_route, TEMPLATES_DIR, runtime(tmp_path))
    with pytest.raises(UnsafeValue, match="bind address"):
        render_config(RouteTable(), TEMPLATES_DIR, RuntimePaths(admin_socket=tmp_path / "a.sock", listen="0.0.0.0:80 ssl crt /x"))


# ---------------------------------------------------------------- properties: nothing from the catalog injects config

_HOSTILE_CHARS = list(" \t\n\r#'\"\\${}%;:=,/._-~") + ["é", "€", "\u2028", "\x00", "\x7f"]
hostile = st.text(alphabet=st.sampled_from(_HOSTILE_CHARS + list("abcAB01")), max_size=10)
#: Always contains a character no address may have, so HAProxy never tries to resolve it.
hostile_address = st.builds(lambda a, c, b: a + c + b, hostile, st.sampled_from(list(" #'\"\\\n$%,")), hostile)
service_names = st.one_of(st.sampled_from(["products", "users", "a.b", "x_y-1", "Products"]), hostile)
route_tags = st.builds(
    lambda host, path, option: f"urlprefix-{host}{path}{option}",
    st.sampled_from(["", "", "shop.example", "Shop.EXAMPLE", "bad_host", "a b", "x\n#", "h'"]),
    st.sampled_from(["/", "/shop", "/shop/products/", "/api/v1/products", "/a.b/~c", "/x'y", "/p\nlisten x", "/q#r", "/é"]),
    st.sampled_from(["", "", " strip=/shop", " strip=/shop/", " strip=/x", " proto=https", " strip=/\\"]),
)
env_tags = st.one_of(st.sampled_from(["env=staging", "env=qa", "env=prod", "env=", "env=Staging", "env=a b", "env=x:y"]), hostile.map(lambda t: "env=" + t))
tags = st.one_of(route_tags, st.sampled_from(["canary", "stable", "v2"]), env_tags, hostile, hostile.map(lambda t: "urlprefix-" + t))
addresses = st.one_of(st.ip_addresses().map(str), st.just("localhost"), hostile_address)


kv_keys = st.one_of(
    st.sampled_from(["maxconn", "timeout_client", "timeout_server", "timeout_connect", "retries", "hard_stop_after", "stats_auth", "accept_proxy", "bogus"]).map(lambda k: f"shopgate/gateway/{k}"),
    st.tuples(st.one_of(st.sampled_from(["staging", "qa", "prod", "Staging"]), hostile), st.sampled_from(["bind", "hosts", "x"])).map(lambda t: f"shopgate/gateway/environments/{t[0]}/{t[1]}"),
    st.tuples(service_names, st.sampled_from(["balance", "maxconn", "timeout_connect", "timeout_server", "weights", "maintenance", "slots", "sticky", "sticky_cookie", "discovery", "x",
                                              "rate_limit", "rate_burst", "allow", "deny", "auth", "route_warning",
                                              "flap_limit", "flap_window", "flap_hold", "https_redirect", "hsts"])).map(lambda t: f"shopgate/services/{t[0]}/{t[1]}"),
    hostile.map(lambda t: "shopgate/" + t),
    hostile.map(lambda t: "shopgate/tls/certs/" + t),
    hostile.map(lambda t: "shopgate/tls/sni/" + t),
)
_SHA512 = b"$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"
_BCRYPT = b"$2y$05$" + b"a" * 53
plausible_values = st.sampled_from([b"leastconn", b"random", b"5s", b"250ms", b"100", b"2", b"true", b'{"canary": 10}', b"admin:pw", b"16",
                                    b"cookie", b"sid", b"127.0.0.1:18081", b"127.0.0.1:18082", b"127.0.0.1:18404", b"127.0.0.1:18080",
                                    b"staging.example", b'["qa.example", "staging.example"]', b"a.example\nbind :80", b"dns", b"runtime",
                                    b"10.0.0.0/8, 127.0.0.1", b"::1, 192.168.0.0/16", b"10.0.0.1/8", b"127.0.0.1 #x", b"alice:" + _SHA512,
                                    b"alice:" + _SHA512 + b"\nbob:" + _BCRYPT, b"alice:plain", b"alice:" + _SHA512 + b" x",
                                    b"alice:$6$a$b\nlisten x", b"1000000", b"0", b"-1", b"30s\nlisten x", b"3 #x", b"10001"])
kv_values = st.one_of(plausible_values, hostile.map(str.encode), st.binary(max_size=8))


def instances(service: str, address, port) -> st.SearchStrategy[Instance]:
    return st.builds(
        Instance,
        service=st.just(service),
        id=hostile,
        node=st.sampled_from(["node1", "node 2\n#"]),
        address=address,
        port=port,
        tags=st.lists(tags, max_size=3).map(tuple),
        meta=st.lists(st.tuples(hostile, hostile), max_size=2).map(lambda pairs: tuple(sorted(pairs))),
        status=st.sampled_from(["passing", "passing", "warning", "critical", "maintenance"]),
    )


@st.composite
def catalogs(draw) -> Snapshot:
    services = {}
    for name in draw(st.lists(service_names, min_size=1, max_size=4, unique=True)):
        usable = instances(name, st.one_of(st.ip_addresses().map(str), st.just("localhost")), st.integers(1, 65535))
        anything = instances(name, addresses, st.integers(-1, 70_000))
        services[name] = tuple(draw(st.lists(st.one_of(usable, usable, anything), max_size=4)))
    return Snapshot(services=services, kv=draw(st.dictionaries(kv_keys, kv_values, max_size=6)))


_NAME = r"[A-Za-z0-9_.-]+"
_PATH = r"/[A-Za-z0-9._~/-]*"
_WORD = r"[A-Za-z0-9_.:/@%+=,!?*~^\[\]-]+"
_ENV = r"[a-z0-9][a-z0-9_-]*"
#: Every line shape that carries catalog or KV data; all other lines must be fixed template text.
DATA_LINE_SHAPES = [re.compile(shape) for shape in (
    r"    maxconn \d+",
    r"    hard-stop-after \d+ms",
    r"    retries \d+",
    r"    timeout (connect|client|server|queue) \d+ms",
    rf"    stats auth {_WORD}:{_WORD}",
    rf"backend be_{_NAME}(:{_ENV})?",
    rf"frontend fe_{_ENV}",
    r"    bind 127\.0\.0\.1:\d+( accept-proxy)?",
    r"    bind 127\.0\.0\.1:18443 accept-proxy ssl crt-list /[A-Za-z0-9_/.-]+/tls/crt-list alpn h2,http/1\.1",   # KV accept_proxy
    rf"    http-request set-var\(txn\.env\) str\({_ENV}\) if !\{{ var\(txn\.env\) -m found \}} \{{ req\.hdr\(host\),field\(1,:\),lower -m str( [a-z0-9.-]+)+ \}}",
    rf"    http-request set-var\(txn\.env\) str\({_ENV}\) unless \{{ var\(txn\.env\) -m found \}}",
    r"    cookie [A-Za-z0-9_.-]+ insert indirect nocache httponly",
    r"    balance (roundrobin|leastconn|source|first|random)",
    r"    default-server maxconn \d+",
    r"    server s\d+ (\[[0-9a-f:.]+\]|[0-9.]+|localhost):\d+ weight \d+( cookie [0-9a-f]{12})?( disabled)?",
    r"    server-template s 1-\d+ _[A-Za-z0-9-]+\._tcp\.service\.consul resolvers consul resolve-prefer ipv4 init-addr none "
    r"resolve-opts allow-dup-ip check",
    r"    accepted_payload_size \d+",
    r"    acl r\d+_host req\.hdr\(host\),field\(1,:\),lower -m str [a-z0-9.-]+",
    rf"    acl r\d+_path path(_beg)? {_PATH}",
    r"    http-request set-var\(txn\.route\) int\(\d+\) if !\{ var\(txn\.route\) -m found \} \{ var\(txn\.env\) -m str [a-z0-9_-]+ \}( r\d+_host)? r\d+_path",
    r"    http-request replace-path \^[A-Za-z0-9_/~\[\].-]+/\?\(\.\*\)\$ /\\1 if \{ var\(txn\.route\) -m int \d+ \}",
    rf"    use_backend be_{_NAME}(:{_ENV})? if \{{ var\(txn\.route\) -m int \d+ \}}",
    # route guards (backend.cfg.j2)
    rf"userlist ul_be_{_NAME}(:{_ENV})?",
    r"    user [A-Za-z0-9_.-]+ password \$(5|6|2[aby])\$[./0-9A-Za-z$=]+",
    r'    http-request return status 403 content-type application/json string "\{\\"error\\": \\"forbidden\\"\}" '
    r"(if|unless) \{ src( [0-9a-f.:]+/\d+)+ \}",
    r"    stick-table type ipv6 size 100k expire \d+ms store http_req_rate\(\d+ms\)",
    r'    http-request return status 429 content-type application/json string "\{\\"error\\": \\"too many requests\\"\}" '
    r"hdr Retry-After \d+ if \{ sc_http_req_rate\(0\) gt \d+ \}",
    rf"    http-request auth realm {_NAME} unless \{{ http_auth\(ul_be_{_NAME}(:{_ENV})?\) \}}",
    r"    http-request redirect location https://%\[req\.hdr\(host\),field\(1,:\)\]:18443%\[capture\.req\.uri\] code 308 if !\{ ssl_fc \} \{ var\(txn\.route\) -m int \d+ \}",
    r"    http-response set-header Strict-Transport-Security max-age=\d+ if \{ ssl_fc \} \{ var\(txn\.route\) -m int \d+ \}",
)]


def https_runtime(directory: Path) -> RuntimePaths:
    """The HTTPS listener on, with a crt-list holding the default certificate (what the controller prepares)."""
    CertificateStore(directory / "tls").prepare()
    return runtime(directory, https="127.0.0.1:18443", tls_dir=directory / "tls")


def fixed_template_lines(directory: Path) -> set[str]:
    """Lines of a config rendered from nothing (and one empty DNS-mode backend, for the resolvers section):
    text the template writes whatever the catalog says."""
    dns_only = RouteTable(backends=(Backend("be_x", "x", BackendSettings(discovery="dns"), ()),))
    return set(render_config(RouteTable(), TEMPLATES_DIR, https_runtime(directory)).splitlines()) | \
        set(render_config(dns_only, TEMPLATES_DIR, https_runtime(directory)).splitlines())


def assert_safe_valid_and_complete(snapshot: Snapshot, held: frozenset[str] = frozenset()) -> None:
    """Only template lines, one-line error messages, every usable instance written, and `haproxy -c` passes.

    `held`: instances the flap hold-down keeps out (gateway.flap): written like the others, never ready."""
    with tempfile.TemporaryDirectory(prefix="shopgate-render-") as tmp:
        directory = Path(tmp)
        paths = https_runtime(directory)
        table = build_route_table(snapshot, taken_binds={paths.listen: "the entry point", paths.stats: "the stats page"}, held=held)
        assert not any(s.state == "ready" and s.instance_key in held for b in table.backends for s in b.servers)
        config = render_config(table, TEMPLATES_DIR, paths)
        event(f"ready servers: {min(3, sum(s.state == 'ready' for b in table.backends for s in b.servers))}+")
        event(f"routes with host/strip: {any(r.host for r in table.routes)}/{any(r.strip for r in table.routes)}")
        event(f"rejected inputs: {bool(table.rejected)}")
        event(f"environments (backends, frontends): {len({b.environment for b in table.backends})}, {len(table.settings.environments)}")
        event(f"sticky backends: {any(b.settings.sticky for b in table.backends)}")
        fixed = fixed_template_lines(directory)
        for line in config.splitlines():
            assert line in fixed or any(shape.fullmatch(line) for shape in DATA_LINE_SHAPES), f"unexpected line {line!r}"
        assert all("\n" not in message and "\r" not in message for message in table.rejected + table.tls_rejected)
        for key, value in snapshot.kv.items():   # DNS mode asked for a name DNS cannot carry: reported by its key
            parts = key.split("/")
            service = parts[2] if len(parts) == 4 and parts[:2] == ["shopgate", "services"] and parts[3] == "discovery" else None
            if value == b"dns" and service and SERVICE_NAME.fullmatch(service) and not DNS_SERVICE_NAME.fullmatch(service):
                assert any(r.startswith(f"{key}: ") for r in table.rejected), table.rejected
        for backend in table.backends:
            for server in backend.servers:
                if server.occupied:
                    address = f"[{server.address}]" if ":" in server.address else server.address
                    assert f"    server {server.slot} {address}:{server.port} weight {server.weight}" in config
        check = haproxy_check(config, directory)
        assert check.returncode == 0, check.stdout + check.stderr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(snapshot=catalogs(), held_picks=st.sets(st.integers(0, 15), max_size=4))
def test_any_catalog_renders_a_valid_config_made_only_of_template_lines(snapshot, held_picks):
    keys = sorted({i.key for instances in snapshot.services.values() for i in instances})
    assert_safe_valid_and_complete(snapshot, frozenset(keys[n] for n in held_picks if n < len(keys)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    route_tags_by_service=st.dictionaries(st.sampled_from(["products", "users", "a.b"]), st.lists(st.lists(route_tags, min_size=1, max_size=3), min_size=1, max_size=3), min_size=1),
    kv=st.dictionaries(kv_keys, plausible_values, max_size=8),
)
def test_any_mix_of_route_tags_and_settings_renders_a_valid_config(route_tags_by_service, kv):
    services = {
        name: tuple(Instance(name, f"{name}-{n}", "node1", f"127.0.0.{n + 1}", 9000 + n, tags=tuple(tags)) for n, tags in enumerate(tag_lists))
        for name, tag_lists in route_tags_by_service.items()
    }
    assert_safe_valid_and_complete(Snapshot(services=services, kv=kv))


environment_kv_keys = st.one_of(
    st.tuples(st.sampled_from(["staging", "qa", "prod", "Staging", "a b"]), st.sampled_from(["bind", "hosts"])).map(lambda t: f"shopgate/gateway/environments/{t[0]}/{t[1]}"),
    st.tuples(st.sampled_from(["products", "users"]), st.sampled_from(["sticky", "sticky_cookie", "weights"])).map(lambda t: f"shopgate/services/{t[0]}/{t[1]}"),
    st.just("shopgate/gateway/accept_proxy"),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    tags_by_service=st.dictionaries(st.sampled_from(["products", "users"]), st.lists(st.lists(st.one_of(env_tags, route_tags, st.just("canary")), max_size=3), min_size=1, max_size=4), min_size=1),
    meta_env=st.sampled_from([None, "qa", "staging", "Bad env"]),
    kv=st.dictionaries(environment_kv_keys, st.one_of(plausible_values, plausible_values, hostile.map(str.encode)), min_size=2, max_size=8),
)
def test_any_mix_of_environments_and_sticky_settings_renders_a_valid_config(tags_by_service, meta_env, kv):
    meta = (("env", meta_env),) if meta_env else ()
    services = {
        name: tuple(Instance(name, f"{name}-{n}", "node1", f"127.0.0.{n + 1}", 9000 + n, tags=tuple(tags), meta=meta if n % 2 else ())
                    for n, tags in enumerate(tag_lists))
        for name, tag_lists in tags_by_service.items()
    }
    assert_safe_valid_and_complete(Snapshot(services=services, kv=kv))


def test_template_edits_apply_on_the_next_render_and_a_broken_edit_raises(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    table = build_route_table(SHOP)
    assert "timeout http-request 10s" in render_config(table, templates, runtime(tmp_path))
    partial = templates / "defaults.cfg.j2"
    partial.write_text(partial.read_text().replace("timeout http-request 10s", "timeout http-request 7s"))
    assert "timeout http-request 7s" in render_config(table, templates, runtime(tmp_path))
    partial.write_text(partial.read_text() + "{% if %}\n")
    with pytest.raises(jinja2.TemplateSyntaxError):
        render_config(table, templates, runtime(tmp_path))
    partial.write_text(partial.read_text().replace("{% if %}\n", "    timeout tarpit {{ no_such_value }}\n"))
    with pytest.raises(jinja2.UndefinedError):
        render_config(table, templates, runtime(tmp_path))


def test_the_fleet_hash_is_equal_for_gateways_that_route_alike_and_rehashes_only_what_changed(tmp_path):
    """Two gateways that built the same table each their own way hash alike; a server or a template
    edit changes the hash; after one service changed, every other backend's digest is reused."""
    first = build_route_table(SHOP)
    second = build_route_table(Snapshot(services=dict(SHOP.services)))
    digest, kept = fleet_hash(first, TEMPLATES_DIR, {})
    assert fleet_hash(second, TEMPLATES_DIR, {})[0] == digest

    products = SHOP.services["products"]
    moved = build_route_table(Snapshot(services={**SHOP.services, "products": (replace(products[0], status="critical"), *products[1:])}), first)
    moved_digest, moved_kept = fleet_hash(moved, TEMPLATES_DIR, kept)
    assert moved_digest != digest
    reused = [b for b in moved.backends if moved_kept[id(b)][1] is kept.get(id(b), (None, None))[1]]
    assert {b.service for b in moved.backends} - {b.service for b in reused} == {"products"}

    edited = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, edited)
    (edited / "frontend.cfg.j2").write_text((edited / "frontend.cfg.j2").read_text() + "\n")
    assert fleet_hash(first, edited, kept)[0] != digest
