"""The catalog's state: records in memory, one monotonic index, Consul's per-table indexes.

Pure: no I/O and no clock. Every mutation takes the next index, changes the
records, and notes two things for whoever drives the store: the rows to
write ahead (`Pending.rows`) and the topics whose watchers must wake
(`Pending.topics`). `take_pending()` hands both over once per request.

Index rules follow Consul's state store, so blocking clients wake only for
changes that concern them:
- catalog/services, catalog/nodes: the `services` / `nodes` table index;
- catalog/service/:s and health/service/:s: the per-service index, bumped by
  the service's instances and checks and by its nodes' node-level checks
  (the `services`+`nodes` table index once the service is gone);
- health/state, health/node, health/checks: the `checks` table index;
- kv: an entry's ModifyIndex (the `kvs` table index while it is missing, woken
  only by that key); a prefix's highest ModifyIndex or tombstone.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from catalog.records import Check, KVEntry, Node, Service, Session

TABLES = ("nodes", "services", "checks", "kvs", "sessions")


class Conflict(Exception):
    """A mutation that contradicts the current state (unknown service, wrong datacenter ...)."""


@dataclass
class Pending:
    """What the last mutations changed: rows to persist (table, key, doc or None) and topics to wake."""

    rows: list[tuple[str, str, dict | None]] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)


def service_topic(name: str) -> str:
    return f"service:{name}"


def key_topic(key: str) -> str:
    """Watchers of one KV key wake only when that key changes (prefix watchers use the `kvs` topic)."""
    return f"kv:{key}"


def row_key(*parts: str) -> str:
    return "\x00".join(parts)


class Store:
    def __init__(self, datacenter: str = "dc1"):
        self.datacenter = datacenter
        self.index = 0
        self.table_index: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.service_index: dict[str, int] = {}
        self.nodes: dict[str, Node] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.checks: dict[tuple[str, str], Check] = {}
        self._check_keys = SortedKeys()   # the keys of `checks` in order: 10,000 checks are not sorted again per read
        self.kv: dict[str, KVEntry] = {}
        self.tombstones: dict[str, int] = {}
        self.sessions: dict[str, Session] = {}
        self.pending = Pending()
        # Secondary indexes, so that a read or write costs the size of its answer, not of the catalog.
        self._instances: dict[str, set[tuple[str, str]]] = defaultdict(set)        # service name -> keys
        self._node_service_ids: dict[str, set[str]] = defaultdict(set)              # node -> service IDs
        self._owned_checks: dict[tuple[str, str], set[str]] = defaultdict(set)      # (node, service ID|"") -> IDs
        self._sidecars: dict[tuple[str, str], set[str]] = defaultdict(set)          # (node, service ID) -> IDs
        self._kv_keys = SortedKeys()
        self._tombstone_keys = SortedKeys()

    # ------------------------------------------------------------ bookkeeping

    def take_pending(self) -> Pending:
        pending, self.pending = self.pending, Pending()
        return pending

    def _next_index(self) -> int:
        self.index += 1
        self.pending.rows.append(("meta", "index", {"index": self.index}))
        return self.index

    def _bump(self, table: str, index: int) -> None:
        self.table_index[table] = index
        self.pending.topics.add(table)

    def _bump_service(self, name: str, index: int) -> None:
        self.service_index[name] = index
        self.pending.topics.add(service_topic(name))

    def _forget_service_if_gone(self, name: str) -> None:
        if not self._instances.get(name):
            self._instances.pop(name, None)
            self.service_index.pop(name, None)
            self.pending.topics.add(service_topic(name))

    def _bump_node_services(self, node: str, index: int) -> None:
        for service_id in self._node_service_ids.get(node, ()):
            self._bump_service(self.services[(node, service_id)].name, index)

    def _add_service(self, service: Service) -> None:
        key = (service.node, service.id)
        previous = self.services.get(key)
        if previous is not None:
            self._remove_service(previous)
        self.services[key] = service
        self._instances[service.name].add(key)
        self._node_service_ids[service.node].add(service.id)
        if service.sidecar_of:
            self._sidecars[(service.node, service.sidecar_of)].add(service.id)

    def _remove_service(self, service: Service) -> None:
        key = (service.node, service.id)
        del self.services[key]
        self._instances[service.name].discard(key)
        _discard(self._node_service_ids, service.node, service.id)
        if service.sidecar_of:
            _discard(self._sidecars, (service.node, service.sidecar_of), service.id)

    def _add_check(self, check: Check) -> None:
        key = (check.node, check.check_id)
        previous = self.checks.get(key)
        if previous is not None:
            self._remove_check(previous)
        self.checks[key] = check
        self._check_keys.add(key)
        self._owned_checks[(check.node, check.service_id)].add(check.check_id)

    def _remove_check(self, check: Check) -> None:
        key = (check.node, check.check_id)
        del self.checks[key]
        self._check_keys.discard(key)
        _discard(self._owned_checks, (check.node, check.service_id), check.check_id)

    def _write(self, table: str, key: str, doc: dict | None) -> None:
        self.pending.rows.append((table, key, doc))

    def _stamp(self, record: Service | Check, existing: Service | Check | None) -> int | None:
        """Give `record` its indexes: None when it equals `existing` (a re-registration changes nothing and
        must not wake anyone), else the new index, keeping the CreateIndex of the record it replaces."""
        if existing is not None:
            record.create_index, record.modify_index = existing.create_index, existing.modify_index
            if existing == record:
                return None
        index = self._next_index()
        record.create_index = existing.create_index if existing else index
        record.modify_index = index
        return index

    # ------------------------------------------------------------ loading

    def load(self, index: int, records: Iterable[tuple[str, dict]]) -> None:
        """Rebuild from persisted rows; every table index restarts at the stored global index."""
        for table, doc in records:
            if table == "nodes":
                node = Node.from_doc(doc)
                self.nodes[node.name] = node
            elif table == "services":
                self._add_service(Service.from_doc(doc))
            elif table == "checks":
                self._add_check(Check.from_doc(doc))
            elif table == "kvs":
                entry = KVEntry.from_doc(doc)
                self.kv[entry.key] = entry
                self._kv_keys.add(entry.key)
            elif table == "sessions":
                session = Session.from_doc(doc)
                self.sessions[session.id] = session
            elif table == "tombstones":
                self.tombstones[doc["key"]] = doc["index"]
                self._tombstone_keys.add(doc["key"])
        self.index = index
        # Not knowing which table changed last, start all at the global index: never backwards.
        self.table_index = dict.fromkeys(TABLES, index)
        self.service_index = {s.name: index for s in self.services.values()}

    # ------------------------------------------------------------ nodes

    def ensure_node(self, node: Node) -> Node:
        existing = self.nodes.get(node.name)
        if existing is not None and (existing.id, existing.address, existing.tagged_addresses, existing.meta) == (
                node.id, node.address, node.tagged_addresses, node.meta):
            return existing
        index = self._next_index()
        node.create_index = existing.create_index if existing else index
        node.modify_index = index
        self.nodes[node.name] = node
        self._bump("nodes", index)
        self._bump_node_services(node.name, index)
        self._write("nodes", node.name, node.to_doc())
        return node

    def delete_node(self, name: str) -> bool:
        if name not in self.nodes:
            return False
        index = self._next_index()
        for owner in [o for o in self._owned_checks if o[0] == name]:
            for check_id in list(self._owned_checks.get(owner, ())):
                self._drop_check((name, check_id), index)
        for service_id in list(self._node_service_ids.get(name, ())):
            self._drop_service((name, service_id), index)
        del self.nodes[name]
        self._bump("nodes", index)
        self._write("nodes", name, None)
        return True

    # ------------------------------------------------------------ services

    def put_service(self, service: Service) -> Service:
        if service.node not in self.nodes:
            raise Conflict(f"Node {service.node!r} is not registered")
        key = (service.node, service.id)
        existing = self.services.get(key)
        index = self._stamp(service, existing)
        if index is None:
            return existing
        self._add_service(service)
        self._bump("services", index)
        self._bump_service(service.name, index)
        if existing is not None and existing.name != service.name:
            self._bump_service(existing.name, index)
            self._forget_service_if_gone(existing.name)
        # Service checks carry the service's name and tags.
        for check in self.service_checks(service.node, service.id):
            if (check.service_name, check.service_tags) != (service.name, service.tags):
                check.service_name, check.service_tags = service.name, list(service.tags)
                check.modify_index = index
                self._bump("checks", index)
                self._write("checks", row_key(check.node, check.check_id), check.to_doc())
        self._write("services", row_key(*key), service.to_doc())
        return service

    def delete_service(self, node: str, service_id: str) -> bool:
        key = (node, service_id)
        if key not in self.services:
            return False
        index = self._next_index()
        for check in self.service_checks(node, service_id):
            self._drop_check((node, check.check_id), index)
        self._drop_service(key, index)
        return True

    def _drop_service(self, key: tuple[str, str], index: int) -> None:
        service = self.services[key]
        self._remove_service(service)
        self._bump("services", index)
        self._bump_service(service.name, index)
        self._forget_service_if_gone(service.name)
        self._write("services", row_key(*key), None)

    # ------------------------------------------------------------ checks

    def put_check(self, check: Check) -> Check:
        if check.node not in self.nodes:
            raise Conflict(f"Node {check.node!r} is not registered")
        if check.service_id:
            service = self.services.get((check.node, check.service_id))
            if service is None:
                raise Conflict(f"ServiceID {check.service_id!r} does not exist")
            check.service_name, check.service_tags = service.name, list(service.tags)
        else:
            check.service_name, check.service_tags = "", []
        key = (check.node, check.check_id)
        existing = self.checks.get(key)
        index = self._stamp(check, existing)
        if index is None:
            return existing
        self._add_check(check)
        self._touch_check(check, index)
        if existing is not None and existing.service_id != check.service_id:
            self._touch_check(existing, index)
        self._write("checks", row_key(*key), check.to_doc())
        return check

    def set_check_status(self, node: str, check_id: str, status: str, output: str) -> Check | None:
        """Record a check result; a no-op (no index) when nothing changed, as in Consul."""
        check = self.checks.get((node, check_id))
        if check is None:
            return None
        if (check.status, check.output) == (status, output):
            return check
        index = self._next_index()
        check.status, check.output, check.modify_index = status, output, index
        self._touch_check(check, index)
        self._write("checks", row_key(node, check_id), check.to_doc())
        return check

    def delete_check(self, node: str, check_id: str) -> bool:
        key = (node, check_id)
        if key not in self.checks:
            return False
        self._drop_check(key, self._next_index())
        return True

    def _drop_check(self, key: tuple[str, str], index: int) -> None:
        check = self.checks[key]
        self._remove_check(check)
        self._touch_check(check, index)
        self._write("checks", row_key(*key), None)

    def _touch_check(self, check: Check, index: int) -> None:
        self._bump("checks", index)
        if check.service_id:
            service = self.services.get((check.node, check.service_id))
            if service is not None:
                self._bump_service(service.name, index)
        else:
            self._bump_node_services(check.node, index)

    # ------------------------------------------------------------ catalog reads

    def index_for_service(self, name: str) -> int:
        if name in self.service_index:
            return self.service_index[name]
        return max(self.table_index["services"], self.table_index["nodes"])

    def service_instances(self, name: str, tags: list[str] = (), node_meta: dict[str, str] | None = None
                          ) -> list[Service]:
        """Instances of `name` carrying every tag, on nodes carrying every node-meta pair, by node then ID."""
        found = [self.services[key] for key in sorted(self._instances.get(name, ()))]
        return [s for s in found if all(t in s.tags for t in tags)
                and (not node_meta or self.node_has_meta(s.node, node_meta))]

    def service_name_folded(self, name: str) -> str:
        """The registered spelling of a service name matched case-insensitively (DNS names are), else `name`."""
        if name in self._instances:
            return name
        folded = name.lower()
        return next((known for known in self._instances if known.lower() == folded), name)

    def node_folded(self, name: str) -> Node | None:
        """The node of that name, matched case-insensitively (DNS names are)."""
        if name in self.nodes:
            return self.nodes[name]
        folded = name.lower()
        return next((node for known, node in self.nodes.items() if known.lower() == folded), None)

    def node_has_meta(self, node: str, meta: dict[str, str]) -> bool:
        node_meta = self.nodes[node].meta
        return all(node_meta.get(k) == v for k, v in meta.items())

    def checks_of(self, node: str, service_id: str) -> list[Check]:
        """The checks that decide an instance's health: its own plus its node's."""
        ids = self._owned_checks.get((node, ""), set()) | self._owned_checks.get((node, service_id), set())
        return [self.checks[(node, check_id)] for check_id in sorted(ids)]

    def service_checks(self, node: str, service_id: str) -> list[Check]:
        """The checks registered for one instance (not its node's)."""
        return [self.checks[(node, check_id)] for check_id in sorted(self._owned_checks.get((node, service_id), ()))]

    def checks_of_service_name(self, name: str) -> list[Check]:
        found = [check for node, service_id in self._instances.get(name, ())
                 for check in self.service_checks(node, service_id)]
        return sorted(found, key=lambda c: (c.node, c.check_id))

    def service_tags(self) -> dict[str, list[str]]:
        return {name: sorted({tag for key in keys for tag in self.services[key].tags})
                for name, keys in sorted(self._instances.items()) if keys}

    def sorted_checks(self, keep: Callable[[Check], bool] | None = None) -> list[Check]:
        """Every check by (node, check ID), as Consul lists them; those `keep` accepts when given."""
        checks = list(map(self.checks.__getitem__, self._check_keys))
        return checks if keep is None else [check for check in checks if keep(check)]

    def node_checks(self, node: str) -> list[Check]:
        ids = [check_id for owner in self._owned_checks if owner[0] == node for check_id in self._owned_checks[owner]]
        return [self.checks[(node, check_id)] for check_id in sorted(ids)]

    def node_services(self, node: str) -> list[Service]:
        return [self.services[(node, service_id)] for service_id in sorted(self._node_service_ids.get(node, ()))]

    def sidecars_of(self, node: str, service_id: str) -> list[str]:
        return sorted(self._sidecars.get((node, service_id), ()))

    # ------------------------------------------------------------ KV

    def kv_put(self, key: str, value: bytes, flags: int, cas: int | None) -> bool:
        existing = self.kv.get(key)
        if cas is not None:
            if cas == 0 and existing is not None:
                return False
            if cas != 0 and (existing is None or existing.modify_index != cas):
                return False
        self._set_kv(key, value, flags, existing.lock_index if existing else 0, existing.session if existing else "")
        return True

    def _set_kv(self, key: str, value: bytes, flags: int, lock_index: int, session: str) -> None:
        existing = self.kv.get(key)
        index = self._next_index()
        entry = KVEntry(key, value, flags, lock_index, session, existing.create_index if existing else index, index)
        self.pending.topics.add(key_topic(key))
        self.kv[key] = entry
        self._kv_keys.add(key)
        if self.tombstones.pop(key, None) is not None:
            self._tombstone_keys.discard(key)
            self._write("tombstones", key, None)
        self._bump("kvs", index)
        self._write("kvs", key, entry.to_doc())

    def kv_acquire(self, key: str, value: bytes, flags: int, session: str) -> bool:
        """Take (or, for the holder, update) the key's lock for `session`; false if another session holds it."""
        existing = self.kv.get(key)
        if existing is not None and existing.session and existing.session != session:
            return False
        held = existing is not None and existing.session == session
        lock_index = (existing.lock_index if existing else 0) + (0 if held else 1)
        self._set_kv(key, value, flags, lock_index, session)
        return True

    def kv_release(self, key: str, value: bytes, flags: int, session: str) -> bool:
        existing = self.kv.get(key)
        if existing is None or existing.session != session:
            return False
        self._set_kv(key, value, flags, existing.lock_index, "")
        return True

    # ------------------------------------------------------------ sessions

    def put_session(self, session: Session) -> Session:
        index = self._next_index()
        session.create_index = session.modify_index = index
        self.sessions[session.id] = session
        self._bump("sessions", index)
        self._write("sessions", session.id, session.to_doc())
        return session

    def end_session(self, session_id: str) -> list[str]:
        """Destroy a session; its locks are released or their keys deleted (its Behavior). Returns those keys."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return []
        index = self._next_index()
        self._bump("sessions", index)
        self._write("sessions", session_id, None)
        locked = sorted(k for k, e in self.kv.items() if e.session == session_id)
        for key in locked:
            entry = self.kv[key]
            if session.behavior == "delete":
                self._bury(key, index)
                self._bump("kvs", index)
            else:
                self._set_kv(key, entry.value, entry.flags, entry.lock_index, "")
        return locked

    def sessions_of_check(self, node: str, check_id: str) -> list[str]:
        return [s.id for s in self.sessions.values() if s.node == node and (
            check_id in s.node_checks or any(c.get("ID") == check_id for c in s.service_checks))]

    def kv_delete(self, key: str, cas: int | None = None) -> bool:
        existing = self.kv.get(key)
        if existing is None:
            return True  # nothing to delete (Consul answers true here, also with ?cas)
        if cas is not None and existing.modify_index != cas:
            return False
        index = self._next_index()
        self._bury(key, index)
        self._bump("kvs", index)
        return True

    def kv_delete_tree(self, prefix: str) -> None:
        doomed = self._kv_keys.with_prefix(prefix)
        if not doomed:
            return
        index = self._next_index()
        for key in doomed:
            self._bury(key, index)
        self._bump("kvs", index)

    def _bury(self, key: str, index: int) -> None:
        self.pending.topics.add(key_topic(key))
        del self.kv[key]
        self._kv_keys.discard(key)
        self.tombstones[key] = index
        self._tombstone_keys.add(key)
        self._write("kvs", key, None)
        self._write("tombstones", key, {"key": key, "index": index})

    def kv_index(self) -> int:
        return self.table_index["kvs"]

    def kv_list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        """Entries under prefix, sorted, and the prefix's index (Consul's kvsListTxn rule)."""
        entries = [self.kv[key] for key in self._kv_keys.with_prefix(prefix)]
        if prefix == "":
            return self.kv_index(), entries
        index = max((e.modify_index for e in entries), default=0)
        index = max([index] + [self.tombstones[k] for k in self._tombstone_keys.with_prefix(prefix)])
        return (index or self.kv_index()), entries


class SortedKeys:
    """Keys kept in order, so that a prefix is one bisection away (KV recurse, keys, delete-tree) and
    a list in key order is never sorted again (every check, by node and check ID)."""

    def __init__(self) -> None:
        self._keys: list = []

    def __iter__(self):
        return iter(self._keys)

    def add(self, key) -> None:
        at = bisect.bisect_left(self._keys, key)
        if at == len(self._keys) or self._keys[at] != key:
            self._keys.insert(at, key)

    def discard(self, key) -> None:
        at = bisect.bisect_left(self._keys, key)
        if at < len(self._keys) and self._keys[at] == key:
            del self._keys[at]

    def with_prefix(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self._keys, prefix)
        end = start
        while end < len(self._keys) and self._keys[end].startswith(prefix):
            end += 1
        return self._keys[start:end]


def _discard(index: dict, key, member) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]
