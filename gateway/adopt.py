"""What an adopted HAProxy runs, as the gateway's plain data (pure).

A controller that starts next to an HAProxy left by its predecessor (same state dir) reads what
that HAProxy serves — its `show stat` rows and the haproxy.cfg it was last loaded with — and turns
them into:

    seed_table       a RouteTable whose slots hold the instances found at the slots' addresses, so
                     routing keeps every instance in the slot it already has (no reshuffle);
    running_table    the wanted table with each slot as HAProxy serves it now, so the ordinary
                     diff gives the runtime-API changes that bring it up to date;
    served_snapshot  the instances it serves (every `ready` slot), as the view the empty-catalog guard
                     compares the first catalog view with: a wiped catalog must not empty an adopted
                     HAProxy any more than a running one;
    same_structure   whether the running file differs from the wanted render only in server
                     addresses, weights and `disabled` (what runtime changes move); if not, one
                     validated reload.

Instances are recognised by address and port within their service: HAProxy knows no instance ids.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Mapping

from gateway.model import Backend, BackendSettings, Instance, RouteTable, Server, Snapshot
from gateway.routing import backend_name

Rows = Mapping[tuple[str, str], Mapping[str, str]]

#: A server line as config_templates/backend.cfg.j2 writes it, up to the parts the runtime API changes.
_SERVER_LINE = re.compile(r"^(\s*server\s+\S+)\s+\S+\s+weight\s+\d+(\s+disabled)?(?=\s|$)", re.M)


def _state(status: str) -> str:
    """`show stat` status -> the slot state the runtime API set (DOWN/UP are health, not admin state)."""
    if status.startswith("MAINT"):
        return "maint"
    if status.startswith("DRAIN"):
        return "drain"
    return "ready"


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _live_servers(backend: str, service: str, rows: Rows, snapshot: Snapshot) -> list[Server]:
    by_target = {(i.address, i.port): i for i in snapshot.services.get(service, ())}
    slots = sorted((slot for b, slot in rows if b == backend), key=lambda s: int(s[1:]) if s[1:].isdigit() else 0)
    servers = []
    for slot in slots:
        row = rows[(backend, slot)]
        address, port = _split_addr(row.get("addr", ""))
        instance: Instance | None = by_target.get((address, port))
        state = _state(row.get("status", ""))
        weight = int(row["weight"]) if row.get("weight", "").isdigit() else 0
        if instance is None and state == "maint":
            servers.append(Server(slot=slot, instance_key=None))
        else:
            key = instance.key if instance is not None else f"adopted:{address}:{port}"
            servers.append(Server(slot, key, address, port, weight, state))
    return servers


def served_snapshot(rows: Rows) -> Snapshot:
    """What HAProxy serves, as a Snapshot: one passing instance per `ready` slot of each service backend."""
    prefix = backend_name("")
    services: dict[str, list[Instance]] = {}
    for (backend, slot), row in sorted(rows.items()):
        if backend.startswith(prefix) and _state(row.get("status", "")) == "ready":
            service = backend[len(prefix):]
            address, port = _split_addr(row.get("addr", ""))
            services.setdefault(service, []).append(Instance(service, slot, "adopted", address, port))
    return Snapshot(services={name: tuple(instances) for name, instances in services.items()})


def seed_table(rows: Rows, snapshot: Snapshot) -> RouteTable:
    """The `previous` table for routing: each slot holds the catalog instance found at its address."""
    backends = []
    for service in sorted(snapshot.services):
        name = backend_name(service)
        servers = _live_servers(name, service, rows, snapshot)
        if servers:
            backends.append(Backend(name, service, BackendSettings(), tuple(servers)))
    return RouteTable(backends=tuple(backends))


def running_table(wanted: RouteTable, rows: Rows, snapshot: Snapshot) -> RouteTable | None:
    """`wanted` with every slot as HAProxy serves it now; None when HAProxy's backends or slots differ."""
    live_backends = {b for b, _ in rows}
    if live_backends != {b.name for b in wanted.backends}:
        return None
    backends = []
    for backend in wanted.backends:
        servers = _live_servers(backend.name, backend.service, rows, snapshot)
        if [s.slot for s in servers] != [s.slot for s in backend.servers]:
            return None
        backends.append(replace(backend, servers=tuple(servers)))
    return replace(wanted, backends=tuple(backends), memo={})


def same_structure(running_text: str, wanted_text: str) -> bool:
    """True when two configs differ at most in server addresses, weights and `disabled`."""
    return _SERVER_LINE.sub(r"\1", running_text) == _SERVER_LINE.sub(r"\1", wanted_text)
