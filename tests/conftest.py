"""Shared fixtures: real processes on loopback, stopped by pid, also on failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shopgate.processes import ManagedProcess, free_port, shopgate_argv, wait_for_http
from shopgate.settings import ConsulAddress


class CatalogProcess:
    """A `shopgate catalog` server on a free loopback port, restartable on the same data dir."""

    def __init__(self, data_dir: Path, log_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
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
        return self.address.client(**kwargs)

    def start(self) -> "CatalogProcess":
        argv = shopgate_argv("catalog", "--bind", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args)
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
