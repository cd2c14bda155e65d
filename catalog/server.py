"""`shopgate catalog`: the embedded single-node Consul-HTTP-API-compatible server (like `consul agent -dev`).

Builds the aiohttp application (API routes, error and ACL middlewares, the
web UI under /ui/) around one `Agent`, and runs it on an event loop: every
held blocking query is a parked coroutine, every health check a task or a timer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import socket
import sqlite3
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from catalog import acl, api_agent, api_catalog, api_health, api_kv, api_session
from catalog.agent import Agent, AgentConfig
from catalog.checks import CheckRunner
from catalog.dns import DnsServer
from catalog.dns_answers import DnsConfig
from catalog.parsing import ClientError
from catalog.persist import Journal
from catalog.responses import AGENT_KEY, BODY_CACHE_KEY, FRAGMENTS_KEY, REQUESTS_KEY, BodyCache, RequestCount
from catalog.state import Conflict
from shopgate.settings import CATALOG_PORT, DNS_NODE_TTL, DNS_PORT, DNS_SERVICE_TTL, LOOPBACK

log = logging.getLogger("catalog")

UI_DIR = Path(__file__).resolve().parent / "ui"
RUNNER_KEY = web.AppKey("runner", CheckRunner)
DNS_KEY = web.AppKey("dns", DnsServer)


class ListenError(OSError):
    """A port the catalog was told to listen on is taken or not allowed."""


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad input is a 400 with Consul's kind of message; nothing escapes as a bare 500."""
    try:
        return await handler(request)
    except ClientError as exc:
        return web.Response(status=exc.status, text=str(exc))
    except Conflict as exc:
        return web.Response(status=400, text=str(exc))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path_qs)
        return web.Response(status=500, text="internal error; see the catalog's log")


@web.middleware
async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request received, for `/v1/agent/metrics` (a held blocking query counts once, when it arrives)."""
    request.app[REQUESTS_KEY].received += 1
    return await handler(request)


async def ui_file(request: web.Request) -> web.StreamResponse:
    """The static web UI (written by the UI's own files in catalog/ui/), index.html at /ui/."""
    relative = request.match_info["path"] or "index.html"
    root = UI_DIR.resolve()
    target = (root / relative).resolve()
    if root not in target.parents and target != root:
        raise web.HTTPNotFound(text="not found")
    if target.is_dir():
        target = target / "index.html"
    if not (root / "index.html").is_file():
        return web.Response(status=404, text=f"The web UI is not installed: {root / 'index.html'} is missing. "
                                              "The HTTP API under /v1/ works without it.")
    if not target.is_file():
        raise web.HTTPNotFound(text=f"no such UI file: {relative}")
    return web.FileResponse(target, headers={"Cache-Control": "no-cache"})


async def to_ui(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def build_app(agent: Agent, acl_token: str | None = None, dns: tuple[DnsConfig, str, int] | None = None
              ) -> web.Application:
    """The HTTP API and UI; with `dns` = (config, host, port) also the DNS interface, on the same loop."""
    app = web.Application(middlewares=[count, errors, acl.enforce], client_max_size=2 * 1024 * 1024)
    app[AGENT_KEY] = agent
    app[REQUESTS_KEY] = RequestCount()
    app[BODY_CACHE_KEY] = BodyCache()
    app[FRAGMENTS_KEY] = {}
    app[acl.ACCESS_KEY] = acl.AccessPolicy(acl_token or "")
    for module in (api_agent, api_catalog, api_health, api_kv, api_session):
        app.add_routes(module.routes)
    app.router.add_get("/", to_ui)
    app.router.add_get("/ui", to_ui)
    app.router.add_get("/ui/{path:.*}", ui_file)

    async def start_checks(app: web.Application) -> None:
        app[RUNNER_KEY] = CheckRunner(agent.record_result)
        agent.start_checks(app[RUNNER_KEY])
        settle_garbage_collector()

    async def stop_checks(app: web.Application) -> None:
        await app[RUNNER_KEY].close()
        if agent.journal is not None:
            agent.journal.close()

    async def start_dns(app: web.Application) -> None:
        config, host, port = dns
        server = DnsServer(agent.store, config)
        try:
            await server.start(host, port)
        except OSError as exc:
            raise ListenError(f"cannot serve DNS on {host}:{port} (UDP and TCP): {exc.strerror or exc}; "
                              "choose another --dns-port, or --dns-port -1 to turn DNS off") from None
        app[DNS_KEY] = server
        log.info("DNS on %s:%d (UDP and TCP): <service>.service.%s", host, server.port, config.domain)

    async def stop_dns(app: web.Application) -> None:
        if DNS_KEY in app:
            counters = app[DNS_KEY].counters
            log.info("DNS answered %d UDP and %d TCP queries; %d malformed packets dropped",
                     counters.udp, counters.tcp, counters.malformed)
            await app[DNS_KEY].close()

    app.on_startup.append(start_checks)
    app.on_cleanup.append(stop_checks)
    if dns is not None:
        app.on_startup.append(start_dns)
        app.on_cleanup.append(stop_dns)
    return app


def settle_garbage_collector() -> None:
    """Keep long full collections out of wake-up bursts.

    A full (generation 2) collection walks every tracked object — with
    thousands of records and a thousand held connections that is tens of
    milliseconds in which no watcher is answered. Freeze what exists at
    start (modules, the loaded catalog) out of collection, and collect less
    often: young cycles are still collected, at most every 10,000 allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def advertise_address(bind: str) -> str:
    """The node's address: the bind address, or for a wildcard bind the host's outbound IP (as Consul picks
    a private IP), so that instances registered without an Address are reachable from other hosts."""
    if bind not in ("0.0.0.0", "::", ""):
        return bind
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP connect only picks a route; nothing is sent
            return probe.getsockname()[0]
        except OSError:
            return LOOPBACK


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it exists (1.6x the request rate of asyncio's default loop), else the default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def raise_open_files_limit() -> None:
    """Every held blocking query is an open socket: allow as many as the hard limit does (Consul does the same)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shopgate catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK})")
    parser.add_argument("--port", type=int, default=CATALOG_PORT, help=f"HTTP port (default {CATALOG_PORT})")
    parser.add_argument("--advertise", default=None,
                        help="the node's address in the catalog (default: --bind, or this host's IP for 0.0.0.0)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep KV, services, checks and the index here (SQLite, write-ahead); "
                             "without it everything lives in memory, like `consul agent -dev`")
    parser.add_argument("--acl-token", default=None,
                        help="require this token (X-Consul-Token header or ?token=) on every /v1/ request")
    parser.add_argument("--node", default=None,
                        help="node name (default: the one kept in --data-dir, else the host name)")
    parser.add_argument("--enable-script-checks", action="store_true",
                        help="allow checks that run a command (Args), as Consul's enable_script_checks")
    parser.add_argument("--dns-port", type=int, default=DNS_PORT,
                        help=f"Consul DNS interface, UDP and TCP (default {DNS_PORT}; 0 picks a free port, -1 turns DNS off)")
    parser.add_argument("--dns-bind", default=None, help="address the DNS interface listens on (default: --bind)")
    parser.add_argument("--dns-service-ttl", type=int, default=DNS_SERVICE_TTL,
                        help=f"TTL of service answers in seconds (default {DNS_SERVICE_TTL}, as Consul)")
    parser.add_argument("--dns-node-ttl", type=int, default=DNS_NODE_TTL,
                        help=f"TTL of node answers and of the SOA minimum (default {DNS_NODE_TTL}, as Consul)")
    parser.add_argument("--dns-only-passing", action="store_true",
                        help="leave instances whose worst check is `warning` out of DNS answers (Consul's only_passing)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.dns_port < -1 or args.dns_port > 65535:
        parser.error(f"--dns-port must be a port number, 0 (a free one) or -1 (off), not {args.dns_port}")
    if args.dns_service_ttl < 0 or args.dns_node_ttl < 0:
        parser.error("--dns-service-ttl and --dns-node-ttl must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    advertise = args.advertise or advertise_address(args.bind)
    try:
        journal = Journal(args.data_dir) if args.data_dir else None
    except (OSError, sqlite3.Error) as exc:
        log.error("cannot use --data-dir %s: %s", args.data_dir, exc)
        return 1
    agent = Agent(AgentConfig(advertise, args.node, enable_script_checks=args.enable_script_checks), journal)
    dns = None
    if args.dns_port >= 0:
        config = DnsConfig(agent.store.datacenter, agent.node, args.dns_service_ttl, args.dns_node_ttl,
                           args.dns_only_passing)
        dns = (config, args.dns_bind or args.bind, args.dns_port)
    app = build_app(agent, args.acl_token, dns)
    where = f"data in {journal.path}" if journal else "in memory only (no --data-dir)"

    def announce(_: str) -> None:  # called by aiohttp once the socket listens
        log.info("shopgate catalog listening on http://%s:%d (API /v1/, UI /ui/); node %s, index %d, %s%s",
                 advertise, args.port, agent.node, agent.store.index, where,
                 ", ACL token required" if args.acl_token else "")

    raise_open_files_limit()
    try:
        web.run_app(app, loop=new_event_loop(), host=args.bind, port=args.port, access_log=None, print=announce,
                    handler_cancellation=True, shutdown_timeout=1.0, backlog=2048)
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.bind, args.port, exc)
        return 1
    return 0
