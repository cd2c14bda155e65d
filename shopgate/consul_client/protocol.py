"""Consul's own words that clients and servers must agree on: check statuses and reserved check IDs.

Pure constants and one predicate, no I/O: the embedded catalog (a server) imports them from here,
and every client reads health through them, so an ID such as `_service_maintenance:<id>` is
spelled once for both sides (consul-template keys maintenance on exactly these IDs).
"""

from __future__ import annotations

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
#: The statuses a check can have, best first.
STATUSES = (PASSING, WARNING, CRITICAL)
#: Not a check status: what an instance is while a maintenance check is present.
MAINTENANCE = "maintenance"

#: The node-level check every health entry of real Consul carries.
SERF_CHECK_ID = "serfHealth"
#: `PUT /v1/agent/maintenance` adds this node check; every service on the node is then in maintenance.
NODE_MAINTENANCE_ID = "_node_maintenance"
#: `PUT /v1/agent/service/maintenance/<id>` adds the check `_service_maintenance:<id>`.
SERVICE_MAINTENANCE_PREFIX = "_service_maintenance:"


def service_maintenance_id(service_id: str) -> str:
    """The check ID Consul gives a service's maintenance check."""
    return SERVICE_MAINTENANCE_PREFIX + service_id


def is_maintenance_check(check_id: str) -> bool:
    """A node or service maintenance check (Consul's reserved IDs, matched exactly)."""
    return check_id == NODE_MAINTENANCE_ID or check_id.startswith(SERVICE_MAINTENANCE_PREFIX)
