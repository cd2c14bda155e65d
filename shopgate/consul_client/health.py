"""The one decoder of Consul health: `/v1/health/service/<name>` entries and their checks.

One rule for every reader (the gateway, service discovery, the registrar, `shopgate status`):
- an instance's address is its ServiceAddress, else its node's Address;
- it is in maintenance while a `_service_maintenance:<id>` or `_node_maintenance` check is present;
- otherwise its status is its worst check, and a status this decoder cannot read counts as
  critical: what cannot be read is never routed nor counted as passing;
- its environment is its `env=<name>` tag, else its `env` meta, else prod (`claimed_environments`;
  the gateway rejects an instance that claims several or a bad name, discovery calls only its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, TypeVar

from shopgate.consul_client.protocol import CRITICAL, MAINTENANCE, PASSING, STATUSES, is_maintenance_check
from shopgate.settings import DEFAULT_ENVIRONMENT

_RANK = {status: rank for rank, status in enumerate(STATUSES)}
#: The tag prefix that names an instance's environment: `env=staging`.
ENV_TAG = "env="


def claimed_environments(tags: Iterable[str], meta: dict[str, str]) -> frozenset[str]:
    """The environments an instance claims: its `env=` tags, else its `env` meta, else prod.
    More than one, or a name that is no environment name, is the reader's to reject."""
    tagged = frozenset(t[len(ENV_TAG):] for t in tags if t.startswith(ENV_TAG))
    return tagged or frozenset({meta.get("env", DEFAULT_ENVIRONMENT)})


@dataclass(frozen=True, slots=True)
class HealthEntry:
    """One instance of a service as Consul's health endpoint reports it."""

    service: str
    id: str                                   # ServiceID, unique per node
    node: str
    address: str                              # ServiceAddress, or the node's Address when empty
    port: int                                 # 0 when the registration has none
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()    # sorted (key, value) pairs of ServiceMeta
    status: str = PASSING                     # passing | warning | critical | maintenance
    create_index: int = 0                     # the registration's CreateIndex: orders instances by arrival

    @property
    def passing(self) -> bool:
        return self.status == PASSING

    @property
    def environments(self) -> frozenset[str]:
        return claimed_environments(self.tags, dict(self.meta))


E = TypeVar("E", bound=HealthEntry)


def aggregate_status(checks: Iterable[tuple[Any, Any]]) -> str:
    """An instance's status from its checks' (CheckID, Status) pairs: maintenance if a maintenance
    check is present, else the worst check status (passing without checks); an unreadable or unknown
    status is critical."""
    worst = PASSING
    for check_id, status in checks:
        if is_maintenance_check(str(check_id or "")):
            return MAINTENANCE
        if _RANK.get(status, _RANK[CRITICAL]) > _RANK[worst]:
            worst = status if status in _RANK else CRITICAL
    return worst


def decode_health_entries(service: str, entries: Any, make: type[E] = HealthEntry) -> tuple[E, ...]:
    """`/v1/health/service/<service>` entries -> HealthEntries sorted by (node, id); rows without a
    Service object are skipped (a malformed answer must not take the others with it). `make` may be
    a subclass that adds behaviour (the gateway's Instance), so nothing is decoded twice."""
    decoded = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("Service"), dict):
            continue
        node, svc = entry.get("Node") or {}, entry["Service"]
        meta = svc.get("Meta") or {}
        port = svc.get("Port")
        decoded.append(make(
            service=service,
            id=str(svc.get("ID", "")),
            node=str(node.get("Node", "")),
            address=str(svc.get("Address") or node.get("Address") or ""),
            port=port if isinstance(port, int) and not isinstance(port, bool) else 0,
            tags=tuple(str(t) for t in svc.get("Tags") or ()),
            meta=tuple(sorted((str(k), str(v)) for k, v in meta.items())) if isinstance(meta, dict) else (),
            status=aggregate_status((c.get("CheckID"), c.get("Status")) for c in entry.get("Checks") or () if isinstance(c, dict)),
            create_index=_index(svc.get("CreateIndex")),
        ))
    return tuple(sorted(decoded, key=lambda e: (e.node, e.id)))


def _index(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
