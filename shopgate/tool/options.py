"""What the foreground commands that run a stack (`up` and `demo`) share as commands.

The options that say where a stack lives and which ports it uses, parsed the same way for both,
and SIGTERM handled like Ctrl-C so that `shopgate down` stops a foreground stack through its
cleanup.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from gateway.haproxy_syntax import ENVIRONMENT_NAME
from shopgate import settings
from shopgate.tool.manifest import Ports


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def environment_port(text: str) -> tuple[str, int]:
    """`--env staging=8081`: an environment other than prod and the loopback port of its entry point."""
    name, equals, port = text.partition("=")
    if not equals or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PORT, e.g. staging=8081")
    if not ENVIRONMENT_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{text!r}: environment {name!r} is not 1-32 of a-z 0-9 _ - starting with a letter or digit")
    if name == settings.DEFAULT_ENVIRONMENT:
        raise argparse.ArgumentTypeError(f"{text!r}: {name} is served on the entry point (--gateway-port)")
    return name, int(port)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `up` and `demo` share: where the state lives and which ports to use."""
    parser.add_argument("--state-dir", type=Path, default=settings.STATE_DIR, help="pids, logs and data of the stack (default: %(default)s)")
    parser.add_argument("--instances", type=positive_int, default=2, help="instances per service (default: %(default)s)")
    parser.add_argument("--catalog-port", type=int, default=settings.CATALOG_PORT)
    parser.add_argument("--gateway-port", type=int, default=settings.GATEWAY_PORT)
    parser.add_argument("--stats-port", type=int, default=settings.STATS_PORT)
    parser.add_argument("--status-port", type=int, default=settings.STATUS_PORT)
    parser.add_argument("--https-port", type=int, default=settings.HTTPS_PORT, help="HTTPS entry point, certificate from a local CA (default: %(default)s)")
    parser.add_argument("--templates", type=Path, default=settings.TEMPLATES_DIR, help="haproxy.cfg templates, watched live (default: %(default)s)")


def ports_from_args(args: argparse.Namespace) -> Ports:
    return Ports(args.catalog_port, args.gateway_port, args.stats_port, args.status_port, args.https_port)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM stops a foreground command the way Ctrl-C does: through its cleanup."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
