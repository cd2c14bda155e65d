"""What the catalog and the gateway say about a stack, asked over HTTP.

The operator tool stands on top of the components and reads them the way any client does: the
catalog through the one Consul client and its one health decoder, the gateway through its
controller's /status and its entry point. `up`, `scale`, `status`, the demo and the benches all
decide "passing" and "routed" here, so they agree with each other and with the gateway.
"""

from __future__ import annotations

import requests

from shopgate.consul_client.protocol import NODE_MAINTENANCE_ID, SERVICE_MAINTENANCE_PREFIX
from shopgate.tool.manifest import Ports

def catalog_instances(catalog_url: str, service: str) -> list[dict]:
    """Every registered instance of `service` with its aggregated health (passing/warning/critical)."""
    response = requests.get(f"{catalog_url}/v1/health/service/{service}", timeout=3)
    response.raise_for_status()
    result = []
    for entry in response.json():
        svc = entry["Service"]
        statuses = {check.get("Status", "critical") for check in entry.get("Checks", [])}
        health = next((s for s in ("critical", "warning") if s in statuses), "passing")
        maintenance = any(c.get("CheckID", "").startswith((SERVICE_MAINTENANCE_PREFIX, NODE_MAINTENANCE_ID))
                          for c in entry.get("Checks", []))
        result.append({
            "id": svc["ID"],
            "address": svc.get("Address") or entry["Node"].get("Address", ""),
            "port": svc["Port"],
            "health": "maintenance" if maintenance else health,
        })
    return result


def passing_ports(catalog_url: str, service: str) -> set[int]:
    """Ports of the instances of `service` that the catalog reports passing (maintenance is not passing)."""
    return {i["port"] for i in catalog_instances(catalog_url, service) if i["health"] == "passing"}


def gateway_status(ports: Ports) -> dict:
    response = requests.get(ports.status_url, timeout=3)
    response.raise_for_status()
    return response.json()


def is_routed(server: dict) -> bool:
    """A gateway server slot that takes new requests: wanted ready, and HAProxy sees it UP."""
    haproxy_status = str(server.get("haproxy_status") or "").upper()
    return server.get("state") == "ready" and (haproxy_status.startswith("UP") or haproxy_status == "NO CHECK")


def routed_ports(status: dict, service: str) -> set[int]:
    servers = status.get("services", {}).get(service, {}).get("servers", [])
    return {int(s["port"]) for s in servers if is_routed(s) and s.get("port")}


def entry_routes(ports: Ports, service: str) -> bool:
    try:
        return requests.get(f"{ports.entry_url}/api/v1/{service}", timeout=3).status_code == 200
    except requests.RequestException:
        return False
