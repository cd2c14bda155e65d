"""The single-node agent: owns the store, commits changes, and turns definitions into records.

Every change goes through `commit()`: rows are written ahead to the journal
(when there is one) and only then are watchers woken and the HTTP answer
sent, so an acknowledged write survives a crash. Definitions are parsed by
`catalog.definitions`; the agent applies them to the store, tells the
`CheckRunner` which checks to run, and reaps services left critical.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.definitions import (check_bodies, parse_agent_check, parse_catalog_registration, parse_service,
                                 require_name, sidecar_for)
from catalog.parsing import BadRequest, Fields, NotFound
from catalog.persist import Journal
from catalog.records import Check, Node, Service
from catalog.sessions import SessionKeeper
from catalog.state import Store
from catalog.thresholds import Streak, expired_streak, first_streak, judge
from catalog.watch import Watchers
from shopgate.consul_client.protocol import (CRITICAL, NODE_MAINTENANCE_ID, PASSING, SERF_CHECK_ID,
                                             SERVICE_MAINTENANCE_PREFIX, STATUSES, service_maintenance_id)

if TYPE_CHECKING:
    from catalog.checks import CheckRunner

log = logging.getLogger("catalog.agent")

DATACENTER = "dc1"
CONSUL_SERVICE_ID = "consul"
SERVER_PORT = 8300          # where Consul's RPC would listen: part of the leader address clients see
MAX_OUTPUT = 4096

@dataclass
class AgentConfig:
    address: str
    node_name: str | None = None     # None: the name kept in the data dir, else the host name
    datacenter: str = DATACENTER
    enable_script_checks: bool = False


class Agent:
    def __init__(self, config: AgentConfig, journal: Journal | None = None):
        self.config = config
        self.journal = journal
        self.store = Store(config.datacenter)
        self.watchers = Watchers()
        self.runner: CheckRunner | None = None
        self._reapers: dict[str, asyncio.TimerHandle] = {}
        self._streaks: dict[str, Streak] = {}     # flap damping per agent check, in memory as in Consul
        identity = {"id": str(uuid.uuid4()), "name": config.node_name or default_node_name()}
        if journal is not None:
            index, records = journal.load()
            self.store.load(index, records)
            # The node keeps its ID and name across restarts (a container's host name changes with each run),
            # so that the services registered on it stay the agent's own.
            kept = journal.meta("node") or {}
            identity = {"id": kept.get("id", identity["id"]),
                        "name": config.node_name or kept.get("name", identity["name"])}
            journal.write([("meta", "node", identity)])
        self.node_id = identity["id"]
        self.node = identity["name"]
        self.sessions = SessionKeeper(self.store, self.node, self.commit)
        self._ensure_self()

    # ------------------------------------------------------------ plumbing

    @property
    def leader_address(self) -> str:
        return f"{self.config.address}:{SERVER_PORT}"

    def commit(self) -> None:
        """Write ahead what changed, then wake its watchers."""
        pending = self.store.take_pending()
        if self.journal is not None:
            self.journal.write(pending.rows)
        self.watchers.notify(pending.topics)

    def _ensure_self(self) -> None:
        """The node, its `consul` service and its `serfHealth` check, as a Consul dev agent has them."""
        addresses = {"lan": self.config.address, "lan_ipv4": self.config.address,
                     "wan": self.config.address, "wan_ipv4": self.config.address}
        self.store.ensure_node(Node(self.node, self.node_id, self.config.address, self.config.datacenter,
                                    addresses, {"consul-network-segment": ""}))
        self.store.put_service(Service(self.node, CONSUL_SERVICE_ID, "consul", port=SERVER_PORT))
        self.store.put_check(Check(self.node, SERF_CHECK_ID, "Serf Health Status", PASSING,
                                   output="Agent alive and reachable"))
        self.commit()

    def start_checks(self, runner: "CheckRunner") -> None:
        """Resume running every stored agent check and session timer (after a restart too)."""
        self.runner = runner
        self.sessions.resume()
        for check in list(self.store.checks.values()):
            if check.node == self.node:
                runner.sync(check)
                self._watch_reaper(check)

    # ------------------------------------------------------------ agent views

    def local_services(self) -> list[Service]:
        return [s for s in self.store.node_services(self.node) if s.id != CONSUL_SERVICE_ID]

    def local_checks(self) -> list[Check]:
        return [c for c in self.store.node_checks(self.node) if c.check_id != SERF_CHECK_ID]

    def local_service(self, service_id: str) -> Service | None:
        if service_id == CONSUL_SERVICE_ID:
            return None
        return self.store.services.get((self.node, service_id))

    def local_check(self, check_id: str) -> Check | None:
        if check_id == SERF_CHECK_ID:
            return None
        return self.store.checks.get((self.node, check_id))

    # ------------------------------------------------------------ services

    def register_service(self, body: Fields, replace_existing_checks: bool = False) -> None:
        service = parse_service(body, self.node)
        if service.id == CONSUL_SERVICE_ID:
            raise BadRequest(f"Service ID {CONSUL_SERVICE_ID!r} is reserved for the agent itself")
        # An empty "Check": {} means no check, as in Consul.
        definitions = [d for d in check_bodies(body) if not d.empty]
        checks = []
        for number, definition in enumerate(definitions, start=1):
            default_id = f"service:{service.id}" + (f":{number}" if len(definitions) > 1 else "")
            check = parse_agent_check(definition, self.node, default_id, f"Service '{service.name}' check",
                                      self.config.enable_script_checks)
            check.service_id = service.id
            checks.append(check)
        sidecar = sidecar_for(service, body, lambda: {s.port for s in self.local_services()})
        self.store.put_service(service)
        if sidecar is not None:
            self.store.put_service(sidecar)
        new_ids = {c.check_id for c in checks}
        if replace_existing_checks:
            for old in self.store.service_checks(self.node, service.id):
                if old.check_id not in new_ids and not old.check_id.startswith(SERVICE_MAINTENANCE_PREFIX):
                    self._remove_check(old.check_id)
        for check in checks:
            self._put_agent_check(check)
        self.commit()

    def deregister_service(self, service_id: str) -> bool:
        if self.local_service(service_id) is None:
            return False
        for sidecar_id in self.store.sidecars_of(self.node, service_id):
            self.deregister_service(sidecar_id)
        for check in self.store.service_checks(self.node, service_id):
            self._forget_check(check.check_id)
        self.store.delete_service(self.node, service_id)
        self.commit()
        return True

    def service_maintenance(self, service_id: str, enable: bool, reason: str) -> bool:
        if self.local_service(service_id) is None:
            return False
        self._maintenance(Check(self.node, service_maintenance_id(service_id), "Service Maintenance Mode",
                                CRITICAL, service_id=service_id), "service", enable, reason)
        return True

    def node_maintenance(self, enable: bool, reason: str) -> None:
        self._maintenance(Check(self.node, NODE_MAINTENANCE_ID, "Node Maintenance Mode", CRITICAL), "node",
                          enable, reason)

    def _maintenance(self, check: Check, subject: str, enable: bool, reason: str) -> None:
        """Maintenance is a critical check of its own, so health reads drop the instance (or node) like any failure."""
        if enable:
            check.notes = reason or (f"Maintenance mode is enabled for this {subject}, but no reason was provided. "
                                     "This is a default message.")
            self.store.put_check(check)
        else:
            self.store.delete_check(self.node, check.check_id)
        self.commit()

    # ------------------------------------------------------------ checks

    def register_check(self, body: Fields) -> None:
        name = body.text("Name")
        if not name:
            raise BadRequest("Missing check name")
        check = parse_agent_check(body, self.node, name, name, self.config.enable_script_checks)
        check.service_id = body.text("ServiceID", "service_id")
        if check.service_id and self.local_service(check.service_id) is None:
            raise NotFound(f"ServiceID {check.service_id!r} does not exist")
        self._put_agent_check(check)
        self.commit()

    def deregister_check(self, check_id: str) -> bool:
        if self.local_check(check_id) is None:
            return False
        self._remove_check(check_id)
        self.commit()
        return True

    def update_ttl(self, check_id: str, status: str, output: str) -> None:
        """pass/warn/fail/update on a TTL check: record the status and restart its timer."""
        check = self.local_check(check_id)
        if check is None:
            raise NotFound(f"Unknown check ID {check_id!r}")
        if check.definition.kind != "ttl":
            raise BadRequest(f"CheckID {check_id!r} does not have associated TTL")
        if status not in STATUSES:
            raise BadRequest(f"Invalid check status {status!r}: must be one of passing, warning, critical")
        self._store_result(check_id, *self._damped(check, status, output))
        if self.runner is not None:
            self.runner.ttl_reset(check)

    def record_result(self, check_id: str, status: str, output: str) -> None:
        """A check's outcome from the runner: a probe result (damped), or a TTL expiry (critical at once, as in Consul)."""
        check = self.local_check(check_id)
        if check is None:
            return
        if check.definition.kind == "ttl":
            self._streaks[check_id] = expired_streak()
        else:
            status, output = self._damped(check, status, output)
        self._store_result(check_id, status, output)

    def _damped(self, check: Check, status: str, output: str) -> tuple[str, str]:
        """The status and output to record after SuccessBeforePassing/FailuresBefore* (catalog.thresholds)."""
        thresholds = check.definition.thresholds
        streak = self._streaks.get(check.check_id) or first_streak(thresholds)
        self._streaks[check.check_id], status, output = judge(thresholds, streak, check.status, status, output)
        return status, output

    def _store_result(self, check_id: str, status: str, output: str) -> None:
        before = self.local_check(check_id)
        was = before.status if before is not None else None
        check = self.store.set_check_status(self.node, check_id, status, output[:MAX_OUTPUT])
        if check is None:
            return
        if status != was:   # as Consul's agent logs it (a warning when critical): why an instance left the rotation
            log.log(logging.WARNING if status == CRITICAL else logging.DEBUG, "check %s is now %s: %s", check_id, status, output[:200])
        self.commit()
        self._watch_reaper(check)
        self.sessions.check_changed(self.node, check_id, status)

    def _put_agent_check(self, check: Check) -> None:
        existing = self.local_check(check.check_id)
        if existing is not None and not check.status_given:
            # Re-registering (a registrar keeping itself registered) must not flap the check.
            check.status, check.output = existing.status, existing.output
        if existing is None or existing.definition != check.definition:
            self._streaks.pop(check.check_id, None)     # a new definition counts afresh, as in Consul
        stored = self.store.put_check(check.to_record())
        if self.runner is not None:
            self.runner.sync(stored)
        self._watch_reaper(stored)

    def _remove_check(self, check_id: str) -> None:
        self._forget_check(check_id)
        self.store.delete_check(self.node, check_id)
        self.sessions.check_removed(self.node, check_id)

    def _forget_check(self, check_id: str) -> None:
        self._streaks.pop(check_id, None)
        if self.runner is not None:
            self.runner.stop(check_id)
        handle = self._reapers.pop(check_id, None)
        if handle is not None:
            handle.cancel()

    # ------------------------------------------------------------ reaper

    def _watch_reaper(self, check: Check) -> None:
        """Deregister a service whose check stays critical for DeregisterCriticalServiceAfter."""
        after = check.definition.deregister_after
        if not after or not check.service_id:
            return
        handle = self._reapers.get(check.check_id)
        if check.status != CRITICAL:
            if handle is not None:
                handle.cancel()
                del self._reapers[check.check_id]
            return
        if handle is None:
            loop = asyncio.get_running_loop()
            self._reapers[check.check_id] = loop.call_later(after, self._reap, check.check_id, check.service_id)

    def _reap(self, check_id: str, service_id: str) -> None:
        self._reapers.pop(check_id, None)
        check = self.local_check(check_id)
        if check is not None and check.status == CRITICAL and self.deregister_service(service_id):
            log.info("reaped service %s: check %s critical longer than %ss", service_id, check_id,
                     check.definition.deregister_after)

    # ------------------------------------------------------------ catalog register/deregister

    def catalog_register(self, body: Fields) -> None:
        """Register a node with an optional service and checks — all of it or, on bad input, nothing."""
        name = self._foreign_node(body, "register services")
        registration = parse_catalog_registration(
            body, name, self.config.datacenter, self.store.nodes.get(name),
            {sid for (node_name, sid) in self.store.services if node_name == name})
        if registration.node is not None:
            self.store.ensure_node(registration.node)
        if registration.service is not None:
            self.store.put_service(registration.service)
        for check in registration.checks:
            self.store.put_check(check)
        self.commit()

    def catalog_deregister(self, body: Fields) -> None:
        name = self._foreign_node(body, "deregister")
        service_id, check_id = body.text("ServiceID"), body.text("CheckID")
        if service_id:
            self.store.delete_service(name, service_id)
        if check_id and self.store.delete_check(name, check_id):
            self.sessions.check_removed(name, check_id)
        if not service_id and not check_id:
            for session_id in [s.id for s in self.store.sessions.values() if s.node == name]:
                self.sessions.destroy(session_id)  # a session dies with its node
            self.store.delete_node(name)
        self.commit()

    def _foreign_node(self, body: Fields, verb: str) -> str:
        """The node a catalog (de)registration names: in this datacenter, and not the agent's own, whose
        services and checks run through the agent (its check runner and reaper would not see catalog writes)."""
        datacenter = body.text("Datacenter")
        if datacenter and datacenter != self.config.datacenter:
            raise BadRequest(f"No path to datacenter {datacenter!r}")
        name = require_name(body.text("Node"), "node name")
        if name == self.node:
            raise BadRequest(f"The agent's own node is managed by the agent; {verb} through /v1/agent")
        return name


def default_node_name() -> str:
    return socket.gethostname() or "shopgate"
