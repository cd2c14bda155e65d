"""The records of a local stack: its ports, the processes it started, and the manifest that holds them.

A stack is one state directory: a manifest (`stack.json`) with the pid and argv of every process
`up` or `scale` started, plus their logs and data. `down`, `status` and `scale` work from that
manifest alone, and check a process's command line before they signal anything, so they touch
exactly the processes the stack started — never a process that merely reused a pid. Every other
module of the operator tool reads and writes stacks through these records.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from shopgate import settings
from shopgate.processes import file_tail, pid_alive, process_cmdline

MANIFEST = "stack.json"
#: How long a service instance may take to drain and deregister after SIGTERM before it is killed.
SERVICE_STOP_TIMEOUT = settings.drain_seconds_from_env() + 15


class StackError(Exception):
    """Something the user must hear about: printed as one clear message, exit code 1."""


@dataclass(frozen=True)
class Ports:
    catalog: int = settings.CATALOG_PORT
    gateway: int = settings.GATEWAY_PORT
    stats: int = settings.STATS_PORT
    status: int = settings.STATUS_PORT
    https: int = settings.HTTPS_PORT

    @property
    def catalog_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.catalog}"

    @property
    def entry_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.gateway}"

    @property
    def https_entry_url(self) -> str:
        """HTTPS by the name the local certificate is for (`localhost`), so that clients verify it."""
        return f"https://localhost:{self.https}"

    @property
    def stats_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.stats}/"

    @property
    def status_url(self) -> str:
        return f"http://{settings.LOOPBACK}:{self.status}/status"

    def urls(self) -> list[tuple[str, str]]:
        return [
            ("entry point", self.entry_url + "/api/v1/<service>"),
            ("entry point HTTPS", self.https_entry_url + "/api/v1/<service>"),
            ("HAProxy stats", self.stats_url),
            ("catalog UI", self.catalog_url + "/ui/"),
            ("controller status", self.status_url),
        ]


@dataclass
class ProcessRecord:
    """One process the stack started, with what it takes to recognise it later."""

    name: str                    # "catalog", "gateway", "products-3", "products@staging-1"
    pid: int
    argv: list[str]
    log: str
    service: str | None = None   # set for shop service instances
    port: int | None = None
    environment: str = settings.DEFAULT_ENVIRONMENT   # a shop service instance's environment

    def running(self) -> bool:
        """Alive and still running our argv (a reused pid runs something else)."""
        deadline = time.monotonic() + 1
        while pid_alive(self.pid):
            cmdline = process_cmdline(self.pid)
            if cmdline or time.monotonic() > deadline:
                return cmdline == self.argv
            time.sleep(0.01)   # just exec'ed: the kernel fills in the new command line a moment later
        return False


@dataclass
class Manifest:
    """Everything `down`, `status` and `scale` need to know about a stack."""

    state_dir: Path
    ports: Ports
    templates: str
    processes: list[ProcessRecord] = field(default_factory=list)
    next_index: dict[str, int] = field(default_factory=dict)
    supervisor: ProcessRecord | None = None   # the foreground `shopgate up`, None when detached
    started_at: float = field(default_factory=time.time)
    environments: dict[str, int] = field(default_factory=dict)   # `up --env NAME=PORT`: its entry port

    @property
    def path(self) -> Path:
        return self.state_dir / MANIFEST

    def environment_url(self, environment: str) -> str:
        """The entry point of an environment: prod's, or the port `up --env` gave it."""
        if environment == settings.DEFAULT_ENVIRONMENT:
            return self.ports.entry_url
        return f"http://{settings.LOOPBACK}:{self.environments[environment]}"

    def urls(self) -> list[tuple[str, str]]:
        """The stack's URLs, with each further environment's entry point after prod's."""
        first, *rest = self.ports.urls()
        return [first, *[(f"{name} entry point", f"{self.environment_url(name)}/api/v1/<service>") for name in self.environments], *rest]

    def component(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name and p.service is None), None)

    def instances(self, service: str, environment: str | None = settings.DEFAULT_ENVIRONMENT) -> list[ProcessRecord]:
        """The instances of `service` in `environment` (prod by default; None: in every environment)."""
        return [p for p in self.processes if p.service == service and environment in (None, p.environment)]

    def services(self) -> list[str]:
        seen = [p.service for p in self.processes if p.service]
        return list(dict.fromkeys([*settings.SHOP_SERVICES, *seen]))

    def running(self) -> list[ProcessRecord]:
        return [p for p in [self.supervisor, *self.processes] if p is not None and p.running()]

    def save(self) -> None:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, state_dir: Path) -> "Manifest | None":
        path = state_dir / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            supervisor = data.pop("supervisor")
            return cls(
                state_dir=state_dir,
                ports=Ports(**data.pop("ports")),
                processes=[ProcessRecord(**p) for p in data.pop("processes")],
                supervisor=ProcessRecord(**supervisor) if supervisor else None,
                **{k: v for k, v in data.items() if k != "state_dir"},
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"{path}: not a readable stack manifest ({exc}); remove it if no stack runs there")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def manifest_lock(state_dir: Path) -> Iterator[None]:
    """Serialise every read-modify-write of one state directory's manifest."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "stack.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_manifest(state_dir: Path) -> Manifest:
    """The manifest of a stack that runs in state_dir, or a StackError that says what to do."""
    manifest = Manifest.load(state_dir)
    if manifest is None or not manifest.running():
        raise StackError(f"no stack is running in {state_dir} (start one with `shopgate up --detach --state-dir {state_dir}`)")
    return manifest


def ensure_alive(records: list[ProcessRecord]) -> None:
    for record in records:
        if not record.running():
            raise StackError(f"{record.name} (pid {record.pid}) exited; last lines of {record.log}:\n{file_tail(Path(record.log), 25)}")
