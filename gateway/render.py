"""RouteTable -> haproxy.cfg text, through the Jinja2 templates in config_templates/.

Pure apart from reading the templates (re-read when they change on disk, so live edits apply).
Autoescaping is for HTML, so it is off; instead every string the templates write goes through
`token`, which refuses anything but a plain config word, and every number through `number`.
A value that slipped past validation therefore fails the render instead of injecting config.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import jinja2

from gateway.haproxy_syntax import (BIND_ADDRESS, UnsafeValue, check_dns_label, check_password_hash, check_token, display,
                                    network_problem)
from gateway.model import Backend, RouteTable, RuntimePaths, Server
from gateway.routing import default_cookie, frontends
from shopgate.settings import HEALTH_CHECK

ENTRY_TEMPLATE = "haproxy.cfg.j2"
#: Bytes an SRV answer needs per server slot: the SRV record and its target's A record in ADDITIONAL
#: (~90 bytes with name compression; rounded up), plus the header and question.
DNS_BYTES_PER_SLOT = 128
DNS_MIN_PAYLOAD = 8192      # HAProxy's default is 512: three or four SRV records
DNS_MAX_PAYLOAD = 65535


def dns_payload_size(table: RouteTable) -> int:
    """`accepted_payload_size` for the resolvers: room for every slot of the largest DNS backend."""
    slots = max((len(b.servers) for b in table.backends if b.settings.by_dns), default=0)
    return min(DNS_MAX_PAYLOAD, max(DNS_MIN_PAYLOAD, 512 + DNS_BYTES_PER_SLOT * slots))


def render_config(table: RouteTable, templates_dir: Path, runtime: RuntimePaths) -> str:
    """The full haproxy.cfg for `table`: every backend with every slot, so a reload loses nothing."""
    entry = frontends(table, runtime.listen)
    binds = [runtime.stats] + [frontend.bind for frontend in entry] + ([runtime.https] if runtime.https else [])
    for bind in [*binds, runtime.consul_dns]:   # the DNS server is asked, not bound: only its shape is checked
        if not BIND_ADDRESS.fullmatch(bind):
            raise UnsafeValue(f"bind address {display(bind)} is not host:port")
    if len(set(binds)) < len(binds):
        raise UnsafeValue(f"two frontends would listen on one address ({', '.join(binds)}): an environment's bind "
                          "must differ from the entry point, the stats page and every other environment")
    template = _environment(str(Path(templates_dir).resolve())).get_template(ENTRY_TEMPLATE)
    return template.render(
        table=table,
        settings=table.settings,
        runtime=runtime,
        frontends=entry,
        accept_proxy=table.settings.accept_proxy or runtime.accept_proxy,
        backends=table.backends,
        dns_backends=[b for b in table.backends if b.settings.by_dns],
        dns_payload_size=dns_payload_size(table),
        default_cookie=default_cookie,
        health_check=HEALTH_CHECK,
        backend_settings={b.name: b.settings for b in table.backends},
        https_port=int(runtime.https.rpartition(":")[2]) if runtime.https else None,
    )


def fleet_hash(table: RouteTable, templates_dir: Path, kept: Mapping[int, tuple[Backend, str]]) -> tuple[str, dict[int, tuple[Backend, str]]]:
    """sha256 of what decides the rendered config — the templates' text and the table's value — equal on
    gateways that route alike: their own ports and paths are part of neither.

    Built from the table HAProxy serves (config file plus runtime changes), so a gateway that got there
    by runtime changes and one that loaded it at start hash the same. `kept` holds each backend's digest
    from the previous call (by object: the route table keeps an unchanged service's Backend), so after a
    change to one service only that service is hashed again; rendering 10,000 servers for every read of
    /status cost a quarter of a second. Returns the hash and the digests to keep."""
    digests: dict[int, tuple[Backend, str]] = {}
    for backend in table.backends:
        old = kept.get(id(backend))
        digests[id(backend)] = (backend, old[1] if old is not None and old[0] is backend
                                else hashlib.sha256(repr(backend).encode()).hexdigest())
    whole = hashlib.sha256()
    for template in sorted(Path(templates_dir).glob("*.j2")):
        whole.update(template.name.encode() + b"\0" + template.read_bytes() + b"\0")
    whole.update(repr(replace(table, backends=())).encode())
    for _, digest in digests.values():
        whole.update(digest.encode())
    return whole.hexdigest(), digests


@lru_cache(maxsize=8)
def _environment(templates_dir: str) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    environment.filters.update(token=token, number=number, host_port=host_port, regex_literal=regex_literal, dns_label=check_dns_label,
                               password_hash=check_password_hash, network=network)
    return environment


def token(value: object) -> str:
    """A string (or path) as one plain config word; raises UnsafeValue otherwise."""
    return check_token(str(value) if isinstance(value, Path) else value)


def number(value: object) -> str:
    """An integer as config text; anything else is a bug upstream and fails the render."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsafeValue(f"refusing to write {display(value)} into haproxy.cfg: not an integer")
    return str(value)


def network(value: object) -> str:
    """An address or CIDR network (route guards allow/deny) as one config word."""
    if not isinstance(value, str) or network_problem(value):
        raise UnsafeValue(f"refusing to write {display(value)} into haproxy.cfg: not an address or CIDR network")
    return check_token(value)


def host_port(server: Server) -> str:
    """`addr:port` for a server line; IPv6 in brackets."""
    address = check_token(server.address)
    try:
        if ipaddress.ip_address(address).version == 6:
            address = f"[{address}]"
    except ValueError:
        pass  # a hostname, resolved by HAProxy (init-addr libc,none)
    return f"{address}:{number(server.port)}"


def regex_literal(value: str) -> str:
    """A validated path as a regex matching itself: characters other than word, '/', '-', '~' in [...]."""
    return re.sub(r"[^A-Za-z0-9_/~-]", lambda m: f"[{m.group(0)}]", check_token(value))
