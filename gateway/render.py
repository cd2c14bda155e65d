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
from functools import lru_cache
from pathlib import Path

import jinja2

from gateway.haproxy_syntax import BIND_ADDRESS, UnsafeValue, check_token, display
from gateway.model import RouteTable, RuntimePaths, Server

ENTRY_TEMPLATE = "haproxy.cfg.j2"


def render_config(table: RouteTable, templates_dir: Path, runtime: RuntimePaths) -> str:
    """The full haproxy.cfg for `table`: every backend with every slot, so a reload loses nothing."""
    for bind in (runtime.listen, runtime.stats):
        if not BIND_ADDRESS.fullmatch(bind):
            raise UnsafeValue(f"bind address {display(bind)} is not host:port")
    template = _environment(str(Path(templates_dir).resolve())).get_template(ENTRY_TEMPLATE)
    return template.render(
        table=table,
        settings=table.settings,
        runtime=runtime,
        routes=list(enumerate(table.routes, start=1)),
        accept_proxy=runtime.accept_proxy,
        backends=table.backends,
    )


#: The per-gateway parts of a config (its own ports and state dir), the same for every gateway in
#: `fleet_hash`, so that two gateways on one catalog hash alike wherever they listen.
_FLEET_RUNTIME = RuntimePaths(admin_socket=Path("admin.sock"), listen="0.0.0.0:80", stats="0.0.0.0:8404")


def fleet_hash(table: RouteTable, templates_dir: Path) -> str:
    """sha256 of `table` rendered with `_FLEET_RUNTIME`: equal on gateways that route alike.

    Rendered from the table HAProxy serves (config file plus runtime changes), so a gateway that
    got there by runtime changes and one that loaded it at start hash the same."""
    return hashlib.sha256(render_config(table, templates_dir, _FLEET_RUNTIME).encode()).hexdigest()


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
    environment.filters.update(token=token, number=number, host_port=host_port, regex_literal=regex_literal)
    return environment


def token(value: object) -> str:
    """A string (or path) as one plain config word; raises UnsafeValue otherwise."""
    return check_token(str(value) if isinstance(value, Path) else value)


def number(value: object) -> str:
    """An integer as config text; anything else is a bug upstream and fails the render."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsafeValue(f"refusing to write {display(value)} into haproxy.cfg: not an integer")
    return str(value)


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
