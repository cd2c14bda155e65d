"""The catalog's records: nodes, services, checks and KV entries, as plain dataclasses.

They carry Consul's Raft-style `create_index`/`modify_index`, and round-trip
through plain dicts (`to_doc`/`from_doc`) for the write-ahead store. Slotted:
a large catalog is many of them, and fewer objects mean shorter GC pauses.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from catalog.thresholds import Thresholds
from shopgate.consul_client.protocol import CRITICAL, SERF_CHECK_ID


class Doc:
    """Round-trip a record through a JSON-able dict (nested dataclasses included)."""

    __slots__ = ()

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        return cls(**cls.decode({k: v for k, v in doc.items() if k in known}))

    @classmethod
    def decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Turn stored field values back into Python ones (overridden where a field is not plain JSON)."""
        return values


@dataclass(slots=True)
class Node(Doc):
    name: str
    id: str
    address: str
    datacenter: str
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass(slots=True)
class Service(Doc):
    node: str
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=lambda: {"Passing": 1, "Warning": 1})
    enable_tag_override: bool = False
    kind: str = ""
    proxy: dict[str, Any] = field(default_factory=dict)
    locality: dict[str, Any] | None = None
    sidecar_of: str = ""        # the service ID this connect sidecar was registered with
    create_index: int = 0
    modify_index: int = 0


@dataclass(slots=True)
class CheckDefinition(Doc):
    """How the agent runs a check (empty for catalog-registered checks, which nobody runs)."""

    interval: float | None = None
    timeout: float | None = None
    ttl: float | None = None
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    args: list[str] = field(default_factory=list)
    deregister_after: float | None = None
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0

    @property
    def kind(self) -> str:
        if self.ttl is not None:
            return "ttl"
        if self.http:
            return "http"
        if self.tcp:
            return "tcp"
        if self.args:
            return "script"
        return ""

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.success_before_passing, self.failures_before_warning, self.failures_before_critical)


@dataclass(slots=True)
class Check(Doc):
    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    definition: CheckDefinition = field(default_factory=CheckDefinition)
    create_index: int = 0
    modify_index: int = 0

    @classmethod
    def decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        if isinstance(values.get("definition"), dict):
            values["definition"] = CheckDefinition.from_doc(values["definition"])
        return values


@dataclass(slots=True)
class KVEntry(Doc):
    key: str
    value: bytes = b""
    flags: int = 0
    lock_index: int = 0
    session: str = ""           # the session holding this key's lock, if any
    create_index: int = 0
    modify_index: int = 0

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["value"] = base64.b64encode(self.value).decode()
        return doc

    @classmethod
    def decode(cls, values: dict[str, Any]) -> dict[str, Any]:
        values["value"] = base64.b64decode(values.get("value", ""))
        return values


@dataclass(slots=True)
class Session(Doc):
    """A Consul session: a lock owner that dies with its checks, its TTL, or on destroy."""

    id: str
    name: str
    node: str
    lock_delay: float = 15.0
    behavior: str = "release"   # what happens to its locked keys when it ends: "release" or "delete"
    ttl: float | None = None
    node_checks: list[str] = field(default_factory=lambda: [SERF_CHECK_ID])
    service_checks: list[dict[str, str]] = field(default_factory=list)
    create_index: int = 0
    modify_index: int = 0
