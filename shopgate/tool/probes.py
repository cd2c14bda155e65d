"""What the catalog and the gateway say about a stack, asked over HTTP.

The operator tool stands on top of the components and reads them the way any client does: the
catalog through the one Consul client and its one health decoder, the gateway through its
controller's /status and its entry point. `up`, `scale`, `status`, the demo and the benches all
decide "passing" and "routed" here, so they agree with each other and with the gateway.
"""

from __future__ import annotations

import socket
import ssl

import requests

from shopgate import settings
from shopgate.consul_client import ConsulAddress, connect, read
from shopgate.consul_client.health import HealthEntry, decode_health_entries
from shopgate.tool.manifest import Ports


def catalog_instances(catalog_url: str, service: str) -> tuple[HealthEntry, ...]:
    """Every registered instance of `service`, decoded by the one health decoder: its `status` is
    passing, warning, critical or maintenance, and a check status it cannot read is critical.
    Raises CatalogUnavailable when the catalog does not answer."""
    with connect(ConsulAddress.parse(catalog_url), timeout=3) as client:
        result = read(f"health of {service}", client.health.service, service)
    return decode_health_entries(service, result.data)


def passing_ports(catalog_url: str, service: str) -> set[int]:
    """Ports of the instances of `service` that the catalog reports passing (maintenance, and a
    status nobody can read, are not passing)."""
    return {entry.port for entry in catalog_instances(catalog_url, service) if entry.passing}


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


def entry_routes(entry_url: str, service: str) -> bool:
    """An entry point (prod's, or an environment's) answers for `service`."""
    try:
        return requests.get(f"{entry_url}/api/v1/{service}", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def served_certificate(port: int, server_name: str) -> bytes | None:
    """The leaf certificate (DER) the HTTPS entry point presents for SNI `server_name`, or None when
    no handshake completes. Looked at, not verified: callers compare it with the one they expect."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((settings.LOOPBACK, port), timeout=3) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                return tls.getpeercert(binary_form=True)
    except OSError:
        return None
