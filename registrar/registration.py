"""What a service instance tells the catalog about itself (pure data, no I/O).

One `Registration` is the payload of Consul's `PUT /v1/agent/service/register`:
name, a per-node unique id, address, port, tags, meta and one HTTP health check, which turns
critical after `failures_before_critical` failures in a row (a dead instance is out within two
intervals; one slow answer of a busy one is not an outage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from consul import Check

from shopgate import settings


def parse_tags(text: str | None) -> tuple[str, ...]:
    """Tags from `SERVICE_TAGS`-style text: comma-separated, blanks dropped, order and duplicates kept once."""
    tags: list[str] = []
    for part in (text or "").split(","):
        tag = part.strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)


def instance_id(name: str, port: int, host: str | None = None) -> str:
    """The id of an instance: `<name>-<port>` is unique on one host (two instances cannot bind one
    port); `<name>-<host>-<port>` when instances on several hosts share one catalog."""
    return f"{name}-{host}-{port}" if host else f"{name}-{port}"


@dataclass(frozen=True)
class Registration:
    name: str
    address: str
    port: int
    id: str = ""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    health_path: str = "/health"
    check_interval: str = settings.SERVICE_CHECK_INTERVAL
    check_timeout: str = settings.SERVICE_CHECK_TIMEOUT
    failures_before_critical: int = settings.SERVICE_CHECK_FAILURES_BEFORE_CRITICAL
    deregister_critical_after: str = settings.SERVICE_DEREGISTER_CRITICAL_AFTER

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("registration: service name must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"registration: port {self.port} is not a bound TCP port")
        if not self.id:
            object.__setattr__(self, "id", instance_id(self.name, self.port))

    @property
    def check_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}{self.health_path}"

    def register_kwargs(self) -> dict[str, Any]:
        """Arguments of py-consul's `agent.service.register` (sent as Consul's register payload)."""
        check = Check.http(self.check_url, self.check_interval, timeout=self.check_timeout,
                           deregister=self.deregister_critical_after)
        check["FailuresBeforeCritical"] = self.failures_before_critical
        return service_register_kwargs(self.name, self.id, self.address, self.port, self.tags, self.meta, [check])


def service_register_kwargs(name: str, service_id: str, address: str, port: int, tags: tuple[str, ...],
                            meta: Mapping[str, str], checks: list[Mapping[str, Any]]) -> dict[str, Any]:
    """py-consul's `agent.service.register` arguments, built one way for self-registered instances and
    for containers, so both land in the catalog with the same shape (first check, then the others)."""
    return {
        "name": name,
        "service_id": service_id,
        "address": address,
        "port": port,
        "tags": list(tags),
        "meta": dict(meta),
        "check": checks[0] if checks else None,
        "extra_checks": list(checks[1:]),
    }
