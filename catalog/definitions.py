"""Consul service and check definitions and catalog registrations, as clients send them, turned into validated records.

Pure functions over `Fields` (Consul's case-insensitive JSON): what a
definition may say, its defaults (check IDs `service:<id>[:n]`, 10s
timeouts, critical until proven otherwise), and the 400s for what it may not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from catalog.parsing import BadRequest, Fields, is_decimal
from catalog.records import Check, CheckDefinition, Node, Service
from shopgate.consul_client.protocol import CRITICAL, STATUSES

SIDECAR_MIN_PORT, SIDECAR_MAX_PORT = 21000, 21255
DEFAULT_CHECK_TIMEOUT = 10.0
MIN_CHECK_INTERVAL = 0.1    # Consul's floor is 1s; ours is lower so tests need not wait, but never a busy loop

#: Names end up in URL paths and HAProxy configs: no slashes, no whitespace, no control characters.
VALID_NAME = re.compile(r"^[^/\s\x00-\x1f\x7f]{1,256}$")


def require_name(value: str, what: str) -> str:
    if not value:
        raise BadRequest(f"Missing {what}")
    if not VALID_NAME.match(value):
        raise BadRequest(f"Invalid {what} {value!r}: "
                         "use 1-256 characters without '/', whitespace or control characters")
    return value


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


def check_bodies(body: Fields) -> list[Fields]:
    """The checks a registration carries: its `Check`, then its `Checks` (Consul takes both)."""
    return ([body.obj("Check")] if body.has("Check") else []) + body.objects("Checks")


def parse_service(body: Fields, node: str) -> Service:
    """A service definition (agent or catalog register); ID defaults to Name, Weights to 1/1."""
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


@dataclass
class CatalogRegistration:
    """A parsed `PUT /v1/catalog/register`, validated whole so that bad input writes nothing."""

    node: Node | None           # None: SkipNodeUpdate on a node already in the catalog
    service: Service | None
    checks: list[Check]


def parse_catalog_registration(body: Fields, node: str, datacenter: str, existing: Node | None,
                               service_ids: set[str]) -> CatalogRegistration:
    """A node with an optional service and checks; `existing` is the node as stored, `service_ids` its services."""
    address = body.text("Address")
    if not address:
        raise BadRequest("Must provide address")
    record = None
    if existing is None or not body.flag("SkipNodeUpdate"):
        record = Node(node, body.text("ID") or (existing.id if existing else ""), address, datacenter,
                      body.string_map("TaggedAddresses"), body.string_map("NodeMeta"))
    service = parse_service(body.obj("Service"), node) if body.has("Service") else None
    known_services = service_ids | ({service.id} if service is not None else set())
    checks = []
    for fields in check_bodies(body):
        check_id = require_name(fields.text("CheckID", "ID") or fields.text("Name"), "check ID")
        status = fields.text("Status") or CRITICAL
        if status not in STATUSES:
            raise BadRequest(f"{fields.where}: Status must be one of passing, warning, critical, got {status!r}")
        service_id = fields.text("ServiceID")
        if service_id and service_id not in known_services:
            raise BadRequest(f"{fields.where}: ServiceID {service_id!r} is not registered on node {node!r}")
        checks.append(Check(node, check_id, fields.text("Name") or check_id, status, fields.text("Notes"),
                            fields.text("Output"), service_id))
    return CatalogRegistration(record, service, checks)


def sidecar_for(service: Service, body: Fields, taken_ports: Callable[[], set[int]]) -> Service | None:
    """Connect.SidecarService: Consul registers `<id>-sidecar-proxy` next to the service, on a port from 21000."""
    connect = body.obj("Connect")
    if not connect.has("SidecarService"):
        return None
    sidecar = connect.obj("SidecarService")
    taken = set() if sidecar.integer("Port") else taken_ports()
    port = sidecar.integer("Port") or next(
        (p for p in range(SIDECAR_MIN_PORT, SIDECAR_MAX_PORT + 1) if p not in taken), None)
    if port is None:
        raise BadRequest(f"No free sidecar port left in {SIDECAR_MIN_PORT}-{SIDECAR_MAX_PORT}")
    return Service(service.node, sidecar.text("ID") or f"{service.id}-sidecar-proxy",
                   sidecar.text("Name") or f"{service.name}-sidecar-proxy", sidecar.strings("Tags"),
                   sidecar.text("Address"), port, sidecar.string_map("Meta"), kind="connect-proxy",
                   proxy={"DestinationServiceName": service.name, "DestinationServiceID": service.id,
                          "LocalServiceAddress": "127.0.0.1", "LocalServicePort": service.port},
                   sidecar_of=service.id)


def parse_agent_check(body: Fields, node: str, default_id: str, default_name: str,
                      allow_scripts: bool) -> CheckRequest:
    """An agent check definition (HTTP, TCP, TTL or script) as Consul reads it, validated."""
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
        success_before_passing=_count(body, "SuccessBeforePassing"),
        failures_before_warning=_count(body, "FailuresBeforeWarning"),
        failures_before_critical=_count(body, "FailuresBeforeCritical"),
    )
    kind = definition.kind
    if not kind:
        raise BadRequest(f"{body.where}: Must provide TTL or Args, HTTP or TCP with an Interval")
    if kind in ("http", "tcp", "script") and not definition.interval:
        raise BadRequest(f"{body.where}: Interval must be > 0 for Script, HTTP or TCP checks")
    if kind == "ttl" and definition.ttl <= 0:
        raise BadRequest(f"{body.where}: TTL must be > 0 for TTL checks")
    if kind == "script" and not allow_scripts:
        raise BadRequest("Scripts are disabled on this agent; to enable, start it with --enable-script-checks")
    if kind == "http" and not definition.http.startswith(("http://", "https://")):
        raise BadRequest(f"{body.where}: HTTP must be an http:// or https:// URL, got {definition.http!r}")
    if kind == "tcp" and not _host_port(definition.tcp):
        raise BadRequest(f"{body.where}: TCP must be host:port, got {definition.tcp!r}")
    if definition.failures_before_warning > definition.failures_before_critical:
        raise BadRequest(f"{body.where}: FailuresBeforeWarning can't be higher than FailuresBeforeCritical")
    if definition.interval is not None:
        definition.interval = max(definition.interval, MIN_CHECK_INTERVAL)
    if kind in ("http", "tcp", "script") and definition.timeout is None:
        definition.timeout = DEFAULT_CHECK_TIMEOUT
    status = body.text("Status")
    if status and status not in STATUSES:
        raise BadRequest(f"{body.where}: Status must be one of passing, warning, critical, got {status!r}")
    check_id = body.text("CheckID", "ID") or default_id
    require_name(check_id, "check ID")
    return CheckRequest(node, check_id, body.text("Name") or default_name, status or CRITICAL,
                        body.text("Notes"), body.text("Output"), definition, bool(status))


def _count(body: Fields, name: str) -> int:
    """A flap-damping threshold: a whole number of consecutive results, 0 (the default) for none."""
    value = body.integer(name)
    if value < 0:
        raise BadRequest(f"{body.where}: {name} must be 0 or more, got {value}")
    return value


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
    return bool(host) and is_decimal(port) and 0 < int(port) < 65536
