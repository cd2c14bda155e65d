"""pytest plugin: the fixtures py-consul's own test suite expects, backed by `shopgate catalog`.

Upstream's root conftest.py starts real Consul in Docker; this plugin replaces
it (run the inner suite with `-p shopgate_consul_fixtures --confcutdir=tests`).
Every test gets a fresh catalog, as upstream gets a fresh container.
The port comes from SHOPGATE_CONFORMANCE_PORT (8500 inside the private
network namespace the outer test creates), else a free port.
"""

from __future__ import annotations

import collections
import os
import uuid
from pathlib import Path

import pytest

from shopgate.processes import ManagedProcess, free_port, shopgate_argv, wait_for_http

#: The Consul API level the catalog reports in /v1/agent/self; the suite's version skips key on it.
CONSUL_VERSION = "1.22.0"

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


def _start(tmp_path: Path, *extra: str) -> tuple[ManagedProcess, int]:
    port = int(os.environ.get("SHOPGATE_CONFORMANCE_PORT") or free_port())
    argv = shopgate_argv("catalog", "--bind", "127.0.0.1", "--port", str(port), "--enable-script-checks",
                         "--log-level", "WARNING", "--dns-port", str(free_port(udp_too=True)), *extra)
    process = ManagedProcess("catalog", argv, log_path=tmp_path / "catalog.log").start()
    wait_for_http(f"http://127.0.0.1:{port}/v1/status/leader", timeout=20, process=process,
                  ok=lambda r: r.status_code in (200, 403))
    return process, port


@pytest.fixture
def consul_instance(tmp_path):
    process, port = _start(tmp_path)
    try:
        yield ConsulInstance(None, port, CONSUL_VERSION)
    finally:
        process.stop()


@pytest.fixture
def acl_consul_instance(tmp_path):
    token = uuid.uuid4().hex
    process, port = _start(tmp_path, "--acl-token", token)
    try:
        yield ConsulInstance(None, port, CONSUL_VERSION), token
    finally:
        process.stop()


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
