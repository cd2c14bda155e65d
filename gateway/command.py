"""`shopgate gateway`: the command line -> ControllerConfig, and the process around one Controller.

    shopgate gateway [--consul URL] [--haproxy-bin haproxy] [--listen 127.0.0.1:8080]
                     [--stats 127.0.0.1:8404] [--status 127.0.0.1:9180] [--state-dir DIR]
                     [--templates DIR] [--keep-haproxy] [--accept-proxy] [--unready-delay S]
                     [--https 127.0.0.1:8443 [--certs DIR] [--default-cert PEM]]
                     [--log-max-bytes N] [--log-keep K]

Every flag is checked here, before anything starts: a bad one exits with argparse's message naming it.
SIGTERM and SIGINT stop the controller's loop (gateway.controller says what happens to HAProxy then).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from gateway.controller import Controller, ControllerConfig
from gateway.haproxy_syntax import BIND_ADDRESS
from gateway.kv_settings import settings_from_env
from gateway.tls import BadCertificate, certificate_entry
from shopgate import settings
from shopgate.consul_client import ConsulAddress

log = logging.getLogger("shopgate.gateway")

#: How long a thread may hold the GIL while another waits. A change crosses three threads (watch -> fetch
#: loop -> controller loop); each woken for it would wait up to Python's default 5 ms while another runs.
GIL_SWITCH_SECONDS = 0.001


def parse_args(argv: list[str]) -> ControllerConfig:
    parser = argparse.ArgumentParser(prog="shopgate gateway", description="Run the gateway controller: catalog + KV -> haproxy.cfg -> a live HAProxy.")
    parser.add_argument("--consul", default=None, help="Consul HTTP API address (default: CONSUL_HTTP_ADDR or %s)" % settings.DEFAULT_CONSUL_ADDR)
    parser.add_argument("--haproxy-bin", default=ControllerConfig.haproxy_bin, help="HAProxy executable (default %(default)s)")
    parser.add_argument("--listen", default=ControllerConfig.listen, help="entry point host:port (default %(default)s)")
    parser.add_argument("--stats", default=ControllerConfig.stats, help="HAProxy stats page and /metrics host:port (default %(default)s)")
    parser.add_argument("--status", default=ControllerConfig.status, help="controller /status and /metrics host:port (default %(default)s)")
    parser.add_argument("--state-dir", type=Path, default=ControllerConfig.state_dir, help="haproxy.cfg, sockets and logs (default %(default)s)")
    parser.add_argument("--templates", type=Path, default=ControllerConfig.templates_dir, help="haproxy.cfg templates, watched for edits (default %(default)s)")
    parser.add_argument("--drain-timeout", type=float, default=ControllerConfig.drain_timeout, help="seconds a removed server may drain before maint (default %(default)s)")
    parser.add_argument("--guard-hold", type=float, default=ControllerConfig.guard_hold, help="seconds the empty-catalog guard may hold a view (default %(default)s)")
    parser.add_argument("--keep-haproxy", action="store_true",
                        help="on SIGTERM leave HAProxy serving; the next controller with this --state-dir adopts it")
    parser.add_argument("--unready-delay", type=float, default=ControllerConfig.unready_delay,
                        help="on SIGTERM answer /ready 503 this many seconds before HAProxy stops accepting (default %(default)s)")
    parser.add_argument("--slot-headroom", type=int, default=ControllerConfig.slot_headroom,
                        help="server slots per instance, rounded up to a power of two, in backends that cannot take dynamic servers "
                             "(static balance algorithms, sticky cookies; default %(default)s); HAProxy reserves a file descriptor per slot")
    parser.add_argument("--consul-dns", default=None,
                        help="Consul DNS host:port that backends in DNS mode (KV discovery = dns) resolve through "
                             f"(default: {settings.CONSUL_DNS_ENV} or {settings.DEFAULT_CONSUL_DNS_ADDR})")
    parser.add_argument("--always-reload", action="store_true",
                        help="apply membership changes by a full render + reload too, as consul-template does, instead of the runtime API "
                             "(for comparison: bench/discovery.py)")
    parser.add_argument("--accept-proxy", action="store_true",
                        help="entry binds take the PROXY protocol v1/v2 from an outer load balancer (as KV shopgate/gateway/accept_proxy)")
    parser.add_argument("--https", default=None, help="HTTPS entry point host:port, e.g. 127.0.0.1:8443 (default: off)")
    parser.add_argument("--certs", type=Path, default=None, help="directory of PEM bundles (<name>.pem: chain + key), watched live; KV shopgate/tls/certs/<name> too")
    parser.add_argument("--default-cert", type=Path, default=None, help="PEM bundle for clients without a known SNI name (default: self-signed, kept in the state dir)")
    parser.add_argument("--expiring-days", type=float, default=ControllerConfig.expiring_days, help="report certificates expiring within this many days (default %(default)s)")
    parser.add_argument("--log-max-bytes", type=int, default=ControllerConfig.log_max_bytes,
                        help="rotate <state-dir>/haproxy.log (copy, then truncate) once it is larger than this many bytes; 0: never (default %(default)s)")
    parser.add_argument("--log-keep", type=int, default=ControllerConfig.log_keep,
                        help="rotated request logs kept, haproxy.log.1 (newest) .. haproxy.log.K (default %(default)s)")
    args = parser.parse_args(argv)
    for flag, value in (("--log-max-bytes", args.log_max_bytes), ("--log-keep", args.log_keep)):
        if value < 0:
            parser.error(f"{flag}: expected a number of 0 or more, got {value}")
    consul_dns = args.consul_dns or settings.consul_dns_from_env()
    if not BIND_ADDRESS.fullmatch(consul_dns):
        parser.error(f"--consul-dns / {settings.CONSUL_DNS_ENV}: expected host:port, got {consul_dns!r}")
    try:
        consul = ConsulAddress.parse(args.consul)
    except ValueError as error:
        parser.error(str(error))
    for flag, value in (("--listen", args.listen), ("--stats", args.stats), ("--status", args.status), ("--https", args.https or "x:1")):
        if not BIND_ADDRESS.fullmatch(value):
            parser.error(f"{flag}: expected host:port, got {value!r}")
    if not args.templates.is_dir():
        parser.error(f"--templates: {args.templates} is not a directory")
    if (args.certs or args.default_cert) and not args.https:
        parser.error("--certs and --default-cert need --https")
    if args.certs is not None and not args.certs.is_dir():
        parser.error(f"--certs: {args.certs} is not a directory")
    if args.default_cert is not None:
        problem = default_cert_problem(args.default_cert)
        if problem:
            parser.error(f"--default-cert: {problem}")
    return ControllerConfig(consul=consul, haproxy_bin=args.haproxy_bin, listen=args.listen, stats=args.stats, status=args.status,
                            state_dir=args.state_dir.resolve(), templates_dir=args.templates.resolve(),
                            drain_timeout=args.drain_timeout, guard_hold=args.guard_hold, slot_headroom=max(1, args.slot_headroom), accept_proxy=args.accept_proxy,
                            keep_haproxy=args.keep_haproxy, unready_delay=max(0.0, args.unready_delay),
                            kv_defaults=settings_from_env(os.environ), consul_dns=consul_dns, always_reload=args.always_reload,
                            https=args.https, certs_dir=args.certs.resolve() if args.certs else None,
                            default_cert=args.default_cert.resolve() if args.default_cert else None, expiring_days=args.expiring_days,
                            log_max_bytes=args.log_max_bytes, log_keep=args.log_keep)


def default_cert_problem(path: Path) -> str | None:
    """Why the --default-cert bundle cannot serve (gateway.tls's checks), or None."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"{path}: {error}"
    try:
        certificate_entry("default", str(path), data, None, time.time())
    except BadCertificate as error:
        return f"{path}: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    config = parse_args(list(argv or []))
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        controller = Controller(config)
    except (OSError, ValueError) as error:
        log.error("gateway cannot start: %s", error)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: controller.stop())
    controller.run()
    return 0
