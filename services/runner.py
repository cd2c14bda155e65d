"""`shopgate service NAME`: run one self-registering instance of a shop service.

    shopgate service products [--port 0] [--bind 127.0.0.1] [--data-dir DIR] [--workers N] [--threads N]

The instance binds (port 0 = a free port), registers itself in the catalog found through
CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN under the id `<name>-<port>` with the port actually
bound, and serves with gunicorn. SERVICE_TAGS (comma-separated) adds catalog tags; among them
`env=<name>` puts the instance in that environment (default prod): the gateway routes it only there
and it calls only peers of its own environment. SHOPGATE_DRAIN_SECONDS sets the drain period on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import sys
from pathlib import Path

from flask import Flask

from registrar.registration import Registration, instance_id, parse_tags
from registrar.self_registration import SelfRegistration
from services.app import ServiceContext, ServiceSpec, create_app
from services.discovery import Peers
from services.serving import serve
from services.store import Store
from shopgate import __version__, settings
from shopgate.consul_client import ConsulAddress
from shopgate.consul_client.health import claimed_environments

log = logging.getLogger("shopgate.service")

WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def load_spec(name: str) -> ServiceSpec:
    return importlib.import_module(f"services.{name}").SERVICE


def advertised_address(bind: str, consul: ConsulAddress) -> str:
    """The address others reach us at: the bind address, or for a wildcard bind the local
    address of the route towards the catalog (no packet is sent)."""
    if bind not in WILDCARD_ADDRESSES:
        return bind
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((consul.host, consul.port))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


class ServiceInstance:
    """One instance's life: bound -> registered -> draining -> deregistered (the serving Lifecycle)."""

    def __init__(self, spec: ServiceSpec, store: Store, consul: ConsulAddress, advertise: str | None, tags: tuple[str, ...],
                 environment: str = settings.DEFAULT_ENVIRONMENT):
        self.spec, self.store, self.consul, self.advertise = spec, store, consul, advertise
        self.tags, self.environment = tags, environment   # the environment: whose peers it calls
        self.instance_id = spec.name
        self.keeper: SelfRegistration | None = None

    # Lifecycle, in the gunicorn master
    def listening(self, host: str, port: int) -> None:
        address = self.advertise or advertised_address(host, self.consul)
        # Listening on every interface means reachable from other hosts, which may share the catalog.
        self.instance_id = instance_id(self.spec.name, port, address if host in WILDCARD_ADDRESSES else None)
        registration = Registration(name=self.spec.name, id=self.instance_id, address=address, port=port,
                                    tags=self.tags, meta={"version": __version__})
        log.info("%s listening on %s:%d, registering as %s:%d", self.instance_id, host, port, address, port)
        self.keeper = SelfRegistration(registration, self.consul)

    def tick(self) -> None:
        if self.keeper is not None:
            self.keeper.poll()

    def draining(self) -> None:
        if self.keeper is not None:
            self.keeper.enter_maintenance()

    def stopped(self) -> None:
        if self.keeper is not None:
            self.keeper.deregister()
        log.info("%s stopped", self.instance_id)

    # in each gunicorn worker, after fork
    def wsgi_app(self) -> Flask:
        context = ServiceContext(name=self.spec.name, instance_id=self.instance_id, store=self.store,
                                 peers=Peers(self.consul, environment=self.environment))
        return create_app(self.spec, context)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="shopgate service", description="Run one self-registering shop service instance.")
    parser.add_argument("name", choices=settings.SHOP_SERVICES, help="which service")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 = a free port (default)")
    parser.add_argument("--bind", default=settings.LOOPBACK, help="address to listen on (default %(default)s)")
    parser.add_argument("--advertise", default=None,
                        help="address registered in the catalog (default: the bind address; for 0.0.0.0 the "
                             "local address that reaches the catalog)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"directory of the service's SQLite store, shared by its instances "
                             f"(default {settings.SERVICE_DATA_DIR}/NAME)")
    parser.add_argument("--workers", type=int, default=settings.SERVICE_WORKERS, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=settings.SERVICE_THREADS, help="threads per worker")
    args = parser.parse_args(argv)
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be 0..65535, got {args.port}")
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    tags = parse_tags(os.environ.get("SERVICE_TAGS"))
    environments = claimed_environments(tags, {})
    try:
        consul = ConsulAddress.parse()
        drain_seconds = settings.drain_seconds_from_env()
        if len(environments) > 1:
            raise ValueError(f"SERVICE_TAGS names several environments ({', '.join(sorted(environments))}); give one env= tag")
    except ValueError as exc:
        print(f"shopgate service: {exc}", file=sys.stderr)
        return 2
    spec = load_spec(args.name)
    data_dir = args.data_dir or settings.SERVICE_DATA_DIR / args.name
    store = Store(data_dir / f"{args.name}.sqlite3", spec.schema, spec.seed)
    store.initialize()
    instance = ServiceInstance(spec, store, consul, args.advertise, tags, *environments)
    bind_host = f"[{args.bind}]" if ":" in args.bind else args.bind
    return serve(instance.wsgi_app, f"{bind_host}:{args.port}", instance,
                 workers=args.workers, threads=args.threads, drain_seconds=drain_seconds)
