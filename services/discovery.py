"""Call another shop service through the catalog, never through a hard-coded address.

`Peers.request("payments", "POST", "/api/v1/payments", ...)` asks the catalog for the
healthy instances of `payments` (`/v1/health/service/payments?passing`) in the caller's own
environment (a staging order never reaches prod's payments, nor the reverse), picks one at
random (client-side choice), and on a connection failure tries another one. A timeout is
not retried here (the request may have been carried out): it raises PeerUnavailable. The instance
list is cached for a second so that a busy service does not hammer the catalog.

Before another instance is tried, the same one is asked once more where that cannot repeat work:
a connection that was never made (any method), or a kept-alive connection the instance closed just
as the request went out (GET, HEAD, OPTIONS only). With one instance of a service, that race with
the server's keep-alive timeout would otherwise fail the caller's request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from shopgate.consul_client import CATALOG_ERRORS, ConsulAddress, connect
from shopgate.consul_client.health import decode_health_entries
from shopgate.settings import DEFAULT_ENVIRONMENT

log = logging.getLogger("shopgate.discovery")

CACHE_SECONDS = 1.0
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 10.0
#: Methods whose request may be sent twice: a lost answer is asked for again.
REPLAY_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class PeerUnavailable(Exception):
    """No healthy instance of a service answered (or the catalog could not be asked)."""

    def __init__(self, service: str, reason: str):
        super().__init__(f"{service} unavailable: {reason}")
        self.service = service
        self.reason = reason


@dataclass(frozen=True)
class Endpoint:
    id: str
    address: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


def endpoints_from_health(service: str, entries: list[dict], environment: str = DEFAULT_ENVIRONMENT) -> list[Endpoint]:
    """Endpoints of the passing instances of `environment` in `/v1/health/service/<service>` entries."""
    return [Endpoint(e.id, e.address, e.port) for e in decode_health_entries(service, entries)
            if e.passing and e.address and e.port and e.environments == {environment}]


class _AskAgainOnce(Retry):
    """urllib3's retry, where a read timeout is not a reason to ask again (the instance may be working on it)."""

    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)


def peer_session() -> requests.Session:
    """A session that asks an instance once more after a connect failure (any method) or a dropped
    kept-alive connection (replay-safe methods only); never after a timeout or an answer."""
    retry = _AskAgainOnce(total=1, connect=1, read=1, status=0, other=0, redirect=0, allowed_methods=REPLAY_SAFE,
                          raise_on_status=False)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class Peers:
    """Client-side load balancing over the catalog's healthy instances."""

    def __init__(self, consul: ConsulAddress, environment: str = DEFAULT_ENVIRONMENT):
        self._catalog_url = consul.url
        self._environment = environment
        self._consul = connect(consul, timeout=2.0)
        self._http = peer_session()
        self._cache: dict[str, tuple[float, list[Endpoint]]] = {}
        self._lock = threading.Lock()

    def healthy(self, service: str, fresh: bool = False) -> list[Endpoint]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(service)
        if cached and not fresh and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            _, entries = self._consul.health.service(service, passing=True)
        except CATALOG_ERRORS as exc:
            raise PeerUnavailable(service, f"catalog {self._catalog_url} unreachable: {exc}") from None
        endpoints = endpoints_from_health(service, entries, self._environment)
        with self._lock:
            self._cache[service] = (now, endpoints)
        return endpoints

    def request(self, service: str, method: str, path: str, **kwargs) -> requests.Response:
        """Send one request to some healthy instance; another instance on connection failure."""
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        tried: set[str] = set()
        for fresh in (False, True):
            candidates = [e for e in self.healthy(service, fresh=fresh) if e.id not in tried]
            random.shuffle(candidates)
            for endpoint in candidates:
                tried.add(endpoint.id)
                try:
                    return self._http.request(method, endpoint.base_url + path, **kwargs)
                except requests.ConnectionError as exc:
                    log.warning("%s %s on %s failed (%s); trying another instance", method, path, endpoint.id, exc)
                except requests.Timeout:  # it may have been done: only the caller knows if a retry is safe
                    raise PeerUnavailable(service, f"{method} {path} on {endpoint.id} timed out") from None
        if not tried:
            raise PeerUnavailable(service, f"no healthy {self._environment} instance in the catalog")
        raise PeerUnavailable(service, f"no instance answered (tried {', '.join(sorted(tried))})")
