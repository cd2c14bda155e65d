"""`/v1/catalog/services`: every service's name and tags, decoded only when the answer's bytes changed.

Consul's blocking index for this list moves with every registration and deregistration, but an
instance more or less of a known service leaves the answer as it was (names and tags only): at
2,000 services it is ~100 KB of JSON that a watcher would otherwise decode and compare for every
instance that comes or goes, while that change is being applied.
"""

from __future__ import annotations

import msgspec

from shopgate.consul_client.client import QueryResult, read_raw

PATH = "/v1/catalog/services"

_SERVICES = msgspec.json.Decoder(dict[str, list[str] | None])


class ServiceTags:
    """The last answer; `update(body)` -> each service's tags, or None when the answer is the last one byte for byte."""

    def __init__(self) -> None:
        self._body: bytes | None = None

    def update(self, body: bytes) -> dict[str, frozenset[str]] | None:
        """Raises ValueError naming what is wrong when the answer is not an object of tag lists (the last one is kept)."""
        if body == self._body:
            return None
        try:
            services = _SERVICES.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise ValueError(f"not an object of service names and tags: {error}") from error
        self._body = body
        return {name: frozenset(tags or ()) for name, tags in services.items()}


def read_services(consul, index: int = 0, wait: str | None = None) -> QueryResult:
    """The answer's bytes, for a ServiceTags."""
    return read_raw(consul, PATH, index, wait)
