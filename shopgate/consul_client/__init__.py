"""The client side of the Consul protocol, written once (the ground floor every component stands on).

    protocol   Consul's statuses and check IDs (the embedded server imports them from here)
    address    where the API is and which token to send: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN
    client     the py-consul client for an address, the "catalog unreachable" error, one read and
               its result (data + index)
    blocking   the one generic blocking-query loop (index rules, backoff)
    health     the one decoder of /v1/health/service entries (address fallback, maintenance, status)
    checks     /v1/health/state/any, every check, decoded into only what a watcher reads
    services   /v1/catalog/services, names and tags, decoded only when the answer changed
    kv         the decoder of /v1/kv/<prefix>?recurse entries

Modelled on consul-template: each Consul read owns its decoding, and one loop holds any read open
on its index. Built on py-consul, the project's named Consul client, which speaks blocking queries.
"""

import importlib
from typing import Any

#: What `from shopgate.consul_client import X` offers, and the module that defines it. Loaded on first use, so that
#: the embedded server, which imports only `protocol`, does not load py-consul and requests at start-up.
_EXPORTS = {"ConsulAddress": "address", "CATALOG_ERRORS": "client", "CatalogUnavailable": "client",
            "QueryResult": "client", "connect": "client", "read": "client", "read_raw": "client"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
