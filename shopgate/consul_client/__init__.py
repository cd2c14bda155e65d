"""The client side of the Consul protocol, written once (the ground floor every component stands on).

    protocol   Consul's statuses and check IDs (the embedded server imports them from here)
    address    where the API is and which token to send: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN
    client     the py-consul client for an address, the "catalog unreachable" error, one read and
               its result (data + index)
    blocking   the one generic blocking-query loop (index rules, backoff)
    health     the one decoder of /v1/health/service entries (address fallback, maintenance, status)
    kv         the decoder of /v1/kv/<prefix>?recurse entries

Modelled on consul-template: each Consul read owns its decoding, and one loop holds any read open
on its index. Built on py-consul, the project's named Consul client, which speaks blocking queries.
"""

from shopgate.consul_client.address import ConsulAddress
from shopgate.consul_client.client import CATALOG_ERRORS, CatalogUnavailable, QueryResult, connect, read

__all__ = ["ConsulAddress", "CATALOG_ERRORS", "CatalogUnavailable", "QueryResult", "connect", "read"]
