"""Shared fixtures: real processes on loopback, stopped by pid, also on failure."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from shopgate.processes import ManagedProcess, free_port, shopgate_argv, wait_for_http
from shopgate.consul_client import ConsulAddress, connect


class CatalogProcess:
    """A `shopgate catalog` server on a free loopback port (its DNS on another), restartable on the same data dir."""

    def __init__(self, data_dir: Path, log_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.dns_port = free_port(udp_too=True)   # never the default 8600: tests run many catalogs at once
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.extra_args = extra_args
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> ConsulAddress:
        return ConsulAddress.parse(self.url, token="")

    def client(self, **kwargs):
        return connect(self.address, **kwargs)

    def start(self) -> "CatalogProcess":
        argv = shopgate_argv("catalog", "--bind", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
                            "--dns-port", str(self.dns_port), *self.extra_args)
        self.process = ManagedProcess("catalog", argv, log_path=self.log_dir / "catalog.log").start()
        wait_for_http(f"{self.url}/v1/status/leader", timeout=20, process=self.process, ok=lambda r: r.status_code in (200, 403))
        return self

    def stop(self, signum=None) -> None:
        if self.process is not None:
            if signum is None:
                self.process.stop()
            else:
                self.process.stop(timeout=5, signum=signum)
            self.process = None

    def wipe(self) -> None:
        """Forget everything (the catalog must be stopped)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)


@pytest.fixture
def catalog_factory(tmp_path):
    """Make catalog servers; every one is stopped at teardown, also when the test failed."""
    made: list[CatalogProcess] = []

    def make(name: str = "catalog", **kwargs) -> CatalogProcess:
        data_dir = tmp_path / f"{name}-data"
        data_dir.mkdir(exist_ok=True)
        server = CatalogProcess(data_dir, tmp_path, **kwargs)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def catalog(catalog_factory) -> CatalogProcess:
    """A fresh catalog server for one test."""
    return catalog_factory()


@pytest.fixture
def processes(tmp_path):
    """Start `ManagedProcess`es that are stopped at teardown whatever happens."""
    started: list[ManagedProcess] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_path=tmp_path / f"{name}.log", env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


class ShopInstance:
    """One `shopgate service NAME` on a free loopback port, registering in the catalog at `consul_url`."""

    def __init__(self, name: str, consul_url: str, data_dir: Path, log_dir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.port = free_port()
        self.id = f"{name}-{self.port}"
        self.consul_url = consul_url
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.env = env or {}
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ShopInstance":
        argv = shopgate_argv("service", self.name, "--port", str(self.port), "--data-dir", str(self.data_dir))
        env = {"CONSUL_HTTP_ADDR": self.consul_url, "CONSUL_HTTP_TOKEN": "", **self.env}
        self.process = ManagedProcess(self.id, argv, log_path=self.log_dir / f"{self.id}.log", env=env).start()
        wait_for_http(f"{self.url}/health", timeout=20, process=self.process, ok=lambda r: r.status_code == 200)
        return self

    def stop(self, **kwargs) -> int | None:
        """Stop the instance (SIGTERM to its process group, as the stack runner does); its exit code."""
        return self.process.stop(**kwargs) if self.process is not None else None


@pytest.fixture
def shop_service(catalog, tmp_path):
    """Start shop service instances registered in `catalog`; all stopped at teardown."""
    started: list[ShopInstance] = []

    def start(name: str, env: dict[str, str] | None = None) -> ShopInstance:
        instance = ShopInstance(name, catalog.url, tmp_path / f"{name}-data", tmp_path, env)
        started.append(instance)
        return instance.start()

    yield start
    stop_shop_instances(started)


def stop_shop_instances(instances) -> None:
    """SIGTERM every instance at once so that their drain periods overlap, then wait for each."""
    for instance in instances:
        if instance.process is not None:
            instance.process.signal(signal.SIGTERM)
    for instance in instances:
        if instance.process is not None and instance.process.popen is not None:
            try:
                instance.process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                instance.stop(timeout=1)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A catalog and one instance of each of the five shop services, shared by one test module."""
    from shopgate.settings import SHOP_SERVICES

    root = tmp_path_factory.mktemp("shop")
    (root / "catalog-data").mkdir()
    catalog = CatalogProcess(root / "catalog-data", root)
    instances: dict[str, ShopInstance] = {}
    try:
        catalog.start()
        for name in SHOP_SERVICES:
            instances[name] = ShopInstance(name, catalog.url, root / f"{name}-data", root).start()
        for name in SHOP_SERVICES:
            # Serving /health is not yet passing in the catalog (a check starts critical), where peers are found.
            wait_for_http(f"{catalog.url}/v1/health/service/{name}?passing", timeout=20,
                          ok=lambda r: r.status_code == 200 and bool(r.json()))
        yield ShopStack(catalog, instances)
    finally:
        stop_shop_instances(list(instances.values()))
        catalog.stop()


class ShopStack:
    """What the `shop` fixture yields: the catalog and the instance of each service by name."""

    def __init__(self, catalog: CatalogProcess, instances: dict[str, ShopInstance]):
        self.catalog = catalog
        self.instances = instances

    def url(self, name: str) -> str:
        return self.instances[name].url
