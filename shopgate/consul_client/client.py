"""A py-consul client for an address, the one "catalog unreachable" error, and one read that raises it.

Every component talks to Consul through `connect()`; a failed read of any kind (no connection, a
timeout, an HTTP error, an answer that is not JSON) becomes `CatalogUnavailable`, which callers
treat as "keep what you had and retry", never as a bug of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import consul
import requests
from consul import ConsulException

from shopgate.consul_client.address import ConsulAddress

#: Errors that mean "the catalog did not answer or did not take it", never "our bug".
CATALOG_ERRORS = (requests.RequestException, ConsulException)


class CatalogUnavailable(RuntimeError):
    """The catalog did not answer, or answered with an error."""


@dataclass(frozen=True)
class QueryResult:
    """A decoded answer and its X-Consul-Index, the index the next blocking query waits on."""

    data: Any
    index: int

    @staticmethod
    def parse_index(raw: Any) -> int:
        """X-Consul-Index as a number (0 when absent or unreadable: the next query then does not block)."""
        try:
            return max(0, int(raw))
        except (TypeError, ValueError):
            return 0


def connect(address: ConsulAddress, timeout: float = 30.0, pool_size: int = 10) -> consul.Consul:
    """A py-consul client for `address`, its token sent with every request.

    `timeout` bounds a plain request; py-consul adds a blocking query's wait (and its jitter) on
    top. `pool_size` is how many requests may be in flight at once without opening and closing
    connections (a watcher holds three long-polls and fetches in parallel)."""
    client = consul.Consul(host=address.host, port=address.port, scheme=address.scheme, token=address.token,
                           connections_timeout=timeout)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    client.http.session.mount("http://", adapter)
    client.http.session.mount("https://", adapter)
    return client


def read(what: str, call: Callable[..., tuple[Any, Any]], *args: Any, **kwargs: Any) -> QueryResult:
    """Run a py-consul read that returns `(index, data)`: a QueryResult, or CatalogUnavailable naming `what`."""
    try:
        index, data = call(*args, **kwargs)
    except CATALOG_ERRORS as error:
        raise CatalogUnavailable(f"{what}: {error.__class__.__name__}: {error}") from error
    return QueryResult(data, QueryResult.parse_index(index))


def read_raw(consul_client: consul.Consul, path: str, index: int = 0, wait: str | None = None) -> QueryResult:
    """An answer's bytes, undecoded, for a reader that compares answers before it decodes them; blocking on
    `index` for up to `wait` when both are given (py-consul's session, token and timeouts; the one `read`'s errors)."""
    params = [("index", index), ("wait", wait)] if index and wait else [("index", index)] if index else []

    def answer(response) -> tuple[str | None, bytes]:
        if response.code != 200:
            raise CatalogUnavailable(f"{path}: HTTP {response.code}: {response.body[:200]!r}")
        return response.headers.get("X-Consul-Index"), response.body

    return read(path, consul_client.http.get, answer, path, params=params, headers=consul_client.health.agent.prepare_headers(None), raw=True)
