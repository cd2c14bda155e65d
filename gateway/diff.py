"""Running RouteTable vs wanted RouteTable -> ApplyPlan: reload, or per-slot runtime-API changes.

A change is structural (render, validate, swap, reload) when anything HAProxy only reads from its
config differs: routes, the set of backends, their settings, their slot counts, gateway settings.
Everything else is membership: which instance sits in a slot, its address, weight and state,
which the runtime API changes without a reload (except giving a slot a hostname: HAProxy resolves
those only when it loads its config). Service maintenance and canary tag weights are
expressed through server states and weights, so toggling them needs no reload either.

Dynamic servers (Backend.extra, beyond the slots) are membership too: one appearing is created
(`add server`), one vanishing is deleted after draining; their other changes are a slot's.
The slot count alone is structure.

Sticky backends: HAProxy 2.6's runtime API cannot set a server's cookie (`set server` takes addr,
agent*, check-*, fqdn, health, ssl, state, weight; `add server` rejects `cookie`), so a slot that
gets an instance with another cookie than the one HAProxy has is structural: the reload writes it.
Slots that lose their instance stay runtime changes, straight to maint (a draining server would
keep its sticky clients, HAProxy's `drain` honours cookies).
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields, replace
from itertools import compress
from operator import is_not

from gateway.model import ApplyPlan, Backend, BackendSettings, CertChange, GatewaySettings, MembershipChange, Route, RouteTable, Server
from gateway.tls import CertEntry

#: BackendSettings fields that only change server states/weights, never the rendered backend section.
_MEMBERSHIP_ONLY_SETTINGS = {"maintenance": False, "tag_weights": (), "flap_limit": None,
                             "flap_window_ms": BackendSettings.flap_window_ms, "flap_hold_ms": BackendSettings.flap_hold_ms}


def plan_changes(running: RouteTable | None, wanted: RouteTable) -> ApplyPlan:
    """What it takes to bring HAProxy from `running` to `wanted` (None: nothing runs yet)."""
    if running is None:
        return ApplyPlan(structural_reasons=("no running configuration",), certificates=certificate_changes((), wanted.certificates))
    certificates = certificate_changes(running.certificates, wanted.certificates)
    reasons = _settings_reasons(running.settings, wanted.settings)
    reasons += _route_reasons(running.routes, wanted.routes)
    membership: list[MembershipChange] = []
    for old, new in _changed_backends(running.backends, wanted.backends, reasons):
        backend_reasons = _backend_reasons(old, new)
        if backend_reasons:
            reasons += backend_reasons
        elif not reasons:
            membership += _slot_changes(old, new)
            if old.extra or new.extra:
                membership += _extra_changes(old, new)
    reasons += [
        f"backend {c.backend}: {c.slot} gets hostname address {c.address} (the runtime API sets IP addresses only)"
        for c in membership if c.action in ("add", "create") and not _is_ip(c.address)
    ]
    if reasons:
        return ApplyPlan(structural_reasons=tuple(reasons), certificates=certificates)
    return ApplyPlan(membership=tuple(membership), certificates=certificates)


def certificate_changes(running: tuple[CertEntry, ...], wanted: tuple[CertEntry, ...]) -> tuple[CertChange, ...]:
    """Certificates to add, replace (new content or SNI names) or remove: removals first, so a name
    moving from one certificate to another is never claimed twice."""
    if running == wanted:
        return ()
    old = {e.id: e for e in running}
    new = {e.id: e for e in wanted}
    changes = [CertChange("remove", e) for e in running if e.id not in new]
    for entry in wanted:
        before = old.get(entry.id)
        if before is None:
            changes.append(CertChange("add", entry))
        elif before != entry:
            changes.append(CertChange("update", entry, sni_changed=before.sni != entry.sni))
    return tuple(changes)


def _changed_backends(old: tuple[Backend, ...], new: tuple[Backend, ...], reasons: list[str]) -> list[tuple[Backend, Backend]]:
    """(old, new) of each backend in both tables that is not the very same object; added and removed
    backends go to `reasons`. Routing reuses unchanged backends as they were, so when both tables
    list the same names in the same order one identity test per backend finds the few that changed."""
    if len(old) == len(new):
        pairs = list(compress(zip(old, new), map(is_not, old, new)))   # in C: no Python per backend
        if all(a.name == b.name for a, b in pairs):
            return pairs
    old_backends = {b.name: b for b in old}
    new_backends = {b.name: b for b in new}
    reasons += [f"backend {name} added" for name in new_backends if name not in old_backends]
    reasons += [f"backend {name} removed" for name in old_backends if name not in new_backends]
    return [(old_backends[name], b) for name, b in new_backends.items() if name in old_backends and old_backends[name] is not b]


def as_reload(plan: ApplyPlan, why: str) -> ApplyPlan:
    """`plan` carried out by render + reload even where the runtime API could do it (consul-template's way)."""
    if plan.needs_reload or plan.empty:
        return plan
    return ApplyPlan(structural_reasons=(f"{why}: {len(plan.membership)} slot change(s)",))


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


def _settings_reasons(old: GatewaySettings, new: GatewaySettings) -> list[str]:
    reasons = []
    for field in fields(GatewaySettings):
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before != after:
            shown = "changed" if field.name == "stats_password" else f"{before} -> {after}"
            reasons.append(f"gateway setting {field.name}: {shown}")
    return reasons


def _describe(route: Route) -> str:
    return f"{route.url_prefix} -> {route.backend}{route.strip_option}"


def _route_reasons(old: tuple[Route, ...], new: tuple[Route, ...]) -> list[str]:
    if old is new or old == new:
        return []
    before, after = set(old), set(new)
    reasons = [f"route added: {_describe(r)}" for r in new if r not in before]
    reasons += [f"route removed: {_describe(r)}" for r in old if r not in after]
    return reasons or ["route order changed"]


def _rendered_settings(settings: BackendSettings) -> BackendSettings:
    return replace(settings, **_MEMBERSHIP_ONLY_SETTINGS)


def _backend_reasons(old: Backend, new: Backend) -> list[str]:
    reasons = []
    if _rendered_settings(old.settings) != _rendered_settings(new.settings):
        changed = [f.name for f in fields(BackendSettings) if f.name not in _MEMBERSHIP_ONLY_SETTINGS and getattr(old.settings, f.name) != getattr(new.settings, f.name)]
        reasons.append(f"backend {new.name}: settings changed ({', '.join(changed)})")
    if len(old.servers) != len(new.servers):
        reasons.append(f"backend {new.name}: slots {len(old.servers)} -> {len(new.servers)}")
    elif new.settings.sticky:
        moved = [after.slot for before, after in zip(old.servers, new.servers) if after.cookie is not None and after.cookie != before.cookie]
        if moved:
            reasons.append(f"backend {new.name}: sticky slot(s) {', '.join(moved[:5])} get another instance (cookies change only by reload)")
    return reasons


def _slot_changes(old: Backend, new: Backend) -> list[MembershipChange]:
    changes = []
    for before, after in zip(old.servers, new.servers):
        if before is not after and before != after:
            change = slot_change(new.name, before, after, new.settings.sticky)
            if change is not None:
                changes.append(change)
    return changes


def _extra_changes(old: Backend, new: Backend) -> list[MembershipChange]:
    """Dynamic servers: create the new ones, delete the vanished ones, change the others as slots."""
    before = {s.slot: s for s in old.extra}
    after = {s.slot: s for s in new.extra}
    changes = []
    for name, server in after.items():
        prior = before.get(name)
        if prior is None:
            changes.append(MembershipChange(new.name, name, "create", server.address, server.port, server.weight, ready=server.state == "ready"))
        elif prior is not server and prior != server:
            change = slot_change(new.name, prior, server)
            if change is not None:
                changes.append(change)
    changes += [MembershipChange(new.name, name, "delete", s.address, s.port, s.weight) for name, s in before.items() if name not in after]
    return changes


def slot_change(backend: str, before: Server, after: Server, sticky: bool = False) -> MembershipChange | None:
    """The runtime action that turns slot `before` into `after`, or None when nothing serves differently.

    add:    set address, port, weight, `state ready` + `health down` (rise checks before traffic)
    weight: change the weight of a serving server
    drain:  no new requests, in-flight ones finish (instance leaving gracefully, service maintenance)
    remove: drain, wait for sessions to reach 0 (bounded), then maint
    """
    same_target = before.instance_key == after.instance_key and before.address == after.address and before.port == after.port
    if after.state == "ready":
        if before.state != "ready" or not same_target:
            return MembershipChange(backend, after.slot, "add", after.address, after.port, after.weight)
        if before.weight != after.weight:
            return MembershipChange(backend, after.slot, "weight", after.address, after.port, after.weight)
        return None
    if before.state == "ready" and after.state == "drain" and same_target:
        return MembershipChange(backend, after.slot, "drain", after.address, after.port, after.weight, sticky)
    if before.state != "maint" and not (before.state == "drain" and after.state == "drain" and same_target):
        return MembershipChange(backend, after.slot, "remove", before.address, before.port, before.weight, sticky)
    return None
