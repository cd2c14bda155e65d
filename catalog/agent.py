"""The single-node agent: owns the store, commits changes, and turns definitions into records.

Every change goes through `commit()`: rows are written ahead to the journal
(when there is one) and only then are watchers woken and the HTTP answer
sent, so an acknowledged write survives a crash. Service and check
definitions arrive as `Fields` (Consul's case-insensitive JSON) and leave as
records in the store; the `CheckRunner` is told which checks to run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from catalog.parsing import BadRequest, Fields, NotFound
from catalog.persist import Journal
from catalog.sessions import SessionKeeper
from catalog.records import (CRITICAL, NODE_MAINTENANCE_ID, PASSING, SERF_CHECK_ID, SERVICE_MAINTENANCE_PREFIX,
                             STATUSES, Check, CheckDefinition, Node, Service)
from catalog.state import Store
from catalog.watch import Watchers

if TYPE_CHECKING:
    from catalog.checks import CheckRunner

log = logging.getLogger("catalog.agent")

DATACENTER = "dc1"
CONSUL_SERVICE_ID = "consul"
SIDECAR_MIN_PORT, SIDECAR_MAX_PORT = 21000, 21255
SERVER_PORT = 8300          # where Consul's RPC would listen: part of the leader address clients see
DEFAULT_CHECK_TIMEOUT = 10.0
MIN_CHECK_INTERVAL = 0.1    # Consul's floor is 1s; ours is lower so tests need not wait, but never a busy loop
MAX_OUTPUT = 4096

#: Names end up in URL paths and HAProxy configs: no slashes, no whitespace, no control characters.
VALID_NAME = re.compile(r"^[^/\s\x00-\x1f\x7f]{1,256}$")


def require_name(value: str, what: str) -> str:
    if not value:
        raise BadRequest(f"Missing {what}")
    if not VALID_NAME.match(value):
        raise BadRequest(f"Invalid {what} {value!r}: use 1-256 characters without '/', whitespace or control characters")
    return value


@dataclass
class AgentConfig:
    node_name: str
    address: str
    datacenter: str = DATACENTER
    enable_script_checks: bool = False


class Agent:
    def __init__(self, config: AgentConfig, journal: Journal | None = None):
        self.config = config
        self.journal = journal
        self.store = Store(config.datacenter)
        self.watchers = Watchers()
        self.runner: CheckRunner | None = None
        self.sessions = SessionKeeper(self)
        self._reapers: dict[str, asyncio.TimerHandle] = {}
        node_id = str(uuid.uuid4())
        if journal is not None:
            index, records = journal.load()
            self.store.load(index, records)
            identity = journal.meta("node")
            if identity is not None:
                node_id = identity["id"]
            else:
                journal.write([("meta", "node", {"id": node_id})])
        self.node_id = node_id
        self._ensure_self()

    # ------------------------------------------------------------ plumbing

    @property
    def node(self) -> str:
        return self.config.node_name

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
        return [c for c in self.store.sorted_checks(lambda c: c.node == self.node) if c.check_id != SERF_CHECK_ID]

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
        definitions = [d for d in ([body.obj("Check")] if body.has("Check") else []) + body.objects("Checks")
                       if not d.empty]
        checks = []
        for number, definition in enumerate(definitions, start=1):
            default_id = f"service:{service.id}" + (f":{number}" if len(definitions) > 1 else "")
            check = self.parse_agent_check(definition, default_id, f"Service '{service.name}' check")
            check.service_id = service.id
            checks.append(check)
        sidecar = sidecar_for(service, body, {s.port for s in self.local_services()})
        self.store.put_service(service)
        if sidecar is not None:
            self.store.put_service(sidecar)
        new_ids = {c.check_id for c in checks}
        if replace_existing_checks:
            for old in self.local_checks():
                if old.service_id == service.id and old.check_id not in new_ids and not old.check_id.startswith(
                        SERVICE_MAINTENANCE_PREFIX):
                    self._remove_check(old.check_id)
        for check in checks:
            self._put_agent_check(check)
        self.commit()

    def deregister_service(self, service_id: str) -> bool:
        if self.local_service(service_id) is None:
            return False
        for sidecar in self.local_services():
            if sidecar.sidecar_of == service_id:
                self.deregister_service(sidecar.id)
        for check in self.local_checks():
            if check.service_id == service_id:
                self._forget_check(check.check_id)
        self.store.delete_service(self.node, service_id)
        self.commit()
        return True

    def service_maintenance(self, service_id: str, enable: bool, reason: str) -> bool:
        service = self.local_service(service_id)
        if service is None:
            return False
        check_id = SERVICE_MAINTENANCE_PREFIX + service_id
        if enable:
            notes = reason or "Maintenance mode is enabled for this service, but no reason was provided. This is a default message."
            self.store.put_check(Check(self.node, check_id, "Service Maintenance Mode", CRITICAL, notes,
                                       service_id=service_id))
        else:
            self.store.delete_check(self.node, check_id)
        self.commit()
        return True

    def node_maintenance(self, enable: bool, reason: str) -> None:
        if enable:
            notes = reason or "Maintenance mode is enabled for this node, but no reason was provided. This is a default message."
            self.store.put_check(Check(self.node, NODE_MAINTENANCE_ID, "Node Maintenance Mode", CRITICAL, notes))
        else:
            self.store.delete_check(self.node, NODE_MAINTENANCE_ID)
        self.commit()

    # ------------------------------------------------------------ checks

    def register_check(self, body: Fields) -> None:
        name = body.text("Name")
        if not name:
            raise BadRequest("Missing check name")
        check = self.parse_agent_check(body, name, name)
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
        self.record_result(check_id, status, output)
        if self.runner is not None:
            self.runner.ttl_reset(check)

    def record_result(self, check_id: str, status: str, output: str) -> None:
        """A check's outcome, from the runner or a TTL update."""
        check = self.store.set_check_status(self.node, check_id, status, output[:MAX_OUTPUT])
        if check is None:
            return
        self.commit()
        self._watch_reaper(check)
        self.sessions.check_changed(self.node, check_id, status)

    def _put_agent_check(self, check: Check) -> None:
        existing = self.local_check(check.check_id)
        if existing is not None and not check.status_given:
            # Re-registering (a registrar keeping itself registered) must not flap the check.
            check.status, check.output = existing.status, existing.output
        stored = self.store.put_check(check.to_record())
        if self.runner is not None:
            self.runner.sync(stored)
        self._watch_reaper(stored)

    def _remove_check(self, check_id: str) -> None:
        self._forget_check(check_id)
        self.store.delete_check(self.node, check_id)

    def _forget_check(self, check_id: str) -> None:
        if self.runner is not None:
            self.runner.stop(check_id)
        handle = self._reapers.pop(check_id, None)
        if handle is not None:
            handle.cancel()

    def parse_agent_check(self, body: Fields, default_id: str, default_name: str) -> "CheckRequest":
        definition = CheckDefinition(
            interval=body.duration("Interval"),
            timeout=body.duration("Timeout"),
            ttl=body.duration("TTL"),
            http=body.text("HTTP"),
            method=body.text("Method"),
            header=_header(body),
            body=body.text("Body"),
            tls_skip_verify=body.flag("TLSSkipVerify"),
            tcp=body.text("TCP"),
            args=body.strings("Args", "ScriptArgs") or ([body.text("Script")] if body.text("Script") else []),
            deregister_after=body.duration("DeregisterCriticalServiceAfter"),
        )
        kind = definition.kind
        if not kind:
            raise BadRequest(f"{body.where}: Must provide TTL or Args, HTTP or TCP with an Interval")
        if kind in ("http", "tcp", "script") and not definition.interval:
            raise BadRequest(f"{body.where}: Interval must be > 0 for Script, HTTP or TCP checks")
        if kind == "ttl" and definition.ttl <= 0:
            raise BadRequest(f"{body.where}: TTL must be > 0 for TTL checks")
        if kind == "script" and not self.config.enable_script_checks:
            raise BadRequest("Scripts are disabled on this agent; to enable, start it with --enable-script-checks")
        if kind == "http" and not definition.http.startswith(("http://", "https://")):
            raise BadRequest(f"{body.where}: HTTP must be an http:// or https:// URL, got {definition.http!r}")
        if kind == "tcp" and not _host_port(definition.tcp):
            raise BadRequest(f"{body.where}: TCP must be host:port, got {definition.tcp!r}")
        if definition.interval is not None:
            definition.interval = max(definition.interval, MIN_CHECK_INTERVAL)
        if kind in ("http", "tcp", "script") and definition.timeout is None:
            definition.timeout = DEFAULT_CHECK_TIMEOUT
        status = body.text("Status")
        if status and status not in STATUSES:
            raise BadRequest(f"{body.where}: Status must be one of passing, warning, critical, got {status!r}")
        check_id = body.text("CheckID", "ID") or default_id
        require_name(check_id, "check ID")
        return CheckRequest(self.node, check_id, body.text("Name") or default_name, status or CRITICAL,
                            body.text("Notes"), body.text("Output"), definition, bool(status))

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
        datacenter = body.text("Datacenter")
        if datacenter and datacenter != self.config.datacenter:
            raise BadRequest(f"No path to datacenter {datacenter!r}")
        name = require_name(body.text("Node"), "node name")
        if name == self.node:
            raise BadRequest("The agent's own node is managed by the agent; register services through /v1/agent")
        address = body.text("Address")
        if not address:
            raise BadRequest("Must provide address")
        existing = self.store.nodes.get(name)
        node = None
        if existing is None or not body.flag("SkipNodeUpdate"):
            node = Node(name, body.text("ID") or (existing.id if existing else ""), address, self.config.datacenter,
                        body.string_map("TaggedAddresses"), body.string_map("NodeMeta"))
        service = parse_service(body.obj("Service"), name) if body.has("Service") else None
        known_services = {sid for (node_name, sid) in self.store.services if node_name == name}
        if service is not None:
            known_services.add(service.id)
        checks = []
        for fields in ([body.obj("Check")] if body.has("Check") else []) + body.objects("Checks"):
            check_id = require_name(fields.text("CheckID", "ID") or fields.text("Name"), "check ID")
            status = fields.text("Status") or CRITICAL
            if status not in STATUSES:
                raise BadRequest(f"{fields.where}: Status must be one of passing, warning, critical, got {status!r}")
            service_id = fields.text("ServiceID")
            if service_id and service_id not in known_services:
                raise BadRequest(f"{fields.where}: ServiceID {service_id!r} is not registered on node {name!r}")
            checks.append(Check(name, check_id, fields.text("Name") or check_id, status, fields.text("Notes"),
                                fields.text("Output"), service_id))
        if node is not None:
            self.store.ensure_node(node)
        if service is not None:
            self.store.put_service(service)
        for check in checks:
            self.store.put_check(check)
        self.commit()

    def catalog_deregister(self, body: Fields) -> None:
        datacenter = body.text("Datacenter")
        if datacenter and datacenter != self.config.datacenter:
            raise BadRequest(f"No path to datacenter {datacenter!r}")
        name = require_name(body.text("Node"), "node name")
        if name == self.node:
            raise BadRequest("The agent's own node is managed by the agent; deregister through /v1/agent")
        service_id, check_id = body.text("ServiceID"), body.text("CheckID")
        if service_id:
            self.store.delete_service(name, service_id)
        if check_id:
            self.store.delete_check(name, check_id)
        if not service_id and not check_id:
            self.store.delete_node(name)
        self.commit()


@dataclass
class CheckRequest:
    """A parsed agent check before it is stored: remembers whether the client chose its Status."""

    node: str
    check_id: str
    name: str
    status: str
    notes: str
    output: str
    definition: CheckDefinition
    status_given: bool
    service_id: str = ""

    def to_record(self) -> Check:
        return Check(self.node, self.check_id, self.name, self.status, self.notes, self.output,
                     self.service_id, definition=self.definition)


def parse_service(body: Fields, node: str) -> Service:
    name = require_name(body.text("Name", "Service"), "service name")
    service_id = require_name(body.text("ID") or name, "service ID")
    port = body.integer("Port")
    if not 0 <= port <= 65535:
        raise BadRequest(f"{body.where}: Port must be between 0 and 65535, got {port}")
    weights = {"Passing": 1, "Warning": 1}
    if body.has("Weights"):
        given = body.obj("Weights")
        weights = {"Passing": given.integer("Passing", default=1), "Warning": given.integer("Warning", default=1)}
        if weights["Passing"] < 1:
            raise BadRequest(f"{body.where}: Weights.Passing must be greater than 0")
    tagged: dict[str, dict] = {}
    raw_tagged = body.raw("TaggedAddresses")
    if raw_tagged is not None:
        if not isinstance(raw_tagged, dict):
            raise body.wrong("TaggedAddresses", "an object", raw_tagged)
        for tag, value in raw_tagged.items():
            address = Fields(value, f"{body.where}.TaggedAddresses.{tag}")
            tagged[tag] = {"Address": address.text("Address"), "Port": address.integer("Port")}
    locality = body.obj("Locality")
    return Service(node, service_id, name, body.strings("Tags"), body.text("Address"), port,
                   body.string_map("Meta"), tagged, weights, body.flag("EnableTagOverride"), body.text("Kind"),
                   proxy=body.obj("Proxy").as_dict(),
                   locality={"Region": locality.text("Region"), "Zone": locality.text("Zone")}
                   if body.has("Locality") else None)


def sidecar_for(service: Service, body: Fields, taken_ports: set[int]) -> Service | None:
    """Connect.SidecarService: Consul registers `<id>-sidecar-proxy` next to the service, on a port from 21000."""
    connect = body.obj("Connect")
    if not connect.has("SidecarService"):
        return None
    sidecar = connect.obj("SidecarService")
    port = sidecar.integer("Port") or next(
        (p for p in range(SIDECAR_MIN_PORT, SIDECAR_MAX_PORT + 1) if p not in taken_ports), None)
    if port is None:
        raise BadRequest(f"No free sidecar port left in {SIDECAR_MIN_PORT}-{SIDECAR_MAX_PORT}")
    return Service(service.node, sidecar.text("ID") or f"{service.id}-sidecar-proxy",
                   sidecar.text("Name") or f"{service.name}-sidecar-proxy", sidecar.strings("Tags"),
                   sidecar.text("Address"), port, sidecar.string_map("Meta"), kind="connect-proxy",
                   proxy={"DestinationServiceName": service.name, "DestinationServiceID": service.id,
                          "LocalServiceAddress": "127.0.0.1", "LocalServicePort": service.port},
                   sidecar_of=service.id)


def _header(body: Fields) -> dict[str, list[str]]:
    raw = body.raw("Header")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in raw.values()):
        raise BadRequest(f"Request decode failed: {body.where}: Header must be an object of string lists, "
                         "e.g. {\"X-Token\": [\"abc\"]}")
    return {k: list(v) for k, v in raw.items()}


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def default_node_name() -> str:
    return socket.gethostname() or "shopgate"
