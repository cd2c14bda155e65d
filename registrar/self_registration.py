"""Keep one service instance registered in the catalog for as long as it serves.

Lifecycle, driven by the process that serves:

    keeper = SelfRegistration(registration, ConsulAddress.parse())
    keeper.start()                 # registers now, or retries with backoff while the catalog is down
    ...                            # a background thread re-registers whenever the catalog forgets us
    keeper.enter_maintenance()     # on SIGTERM: gateways stop sending new requests
    ...drain...
    keeper.deregister()            # after in-flight requests finished

The keep-alive check is one cheap `GET /v1/agent/services` every few seconds, which
also covers a catalog that restarted with empty state.
"""

from __future__ import annotations

import logging
import threading

import requests
from consul import ConsulException

from registrar.registration import Registration
from shopgate import settings
from shopgate.settings import ConsulAddress

log = logging.getLogger("shopgate.registrar")

#: Errors that mean "the catalog did not take it", never "our bug".
CATALOG_ERRORS = (requests.RequestException, ConsulException)

FIRST_BACKOFF_SECONDS = 0.5
CATALOG_TIMEOUT_SECONDS = 2.0


class SelfRegistration:
    """Registers `registration` and keeps it registered until shutdown begins."""

    def __init__(
        self,
        registration: Registration,
        consul: ConsulAddress,
        recheck_seconds: float = settings.REGISTRATION_RECHECK_SECONDS,
        max_backoff_seconds: float = settings.REGISTRATION_MAX_BACKOFF_SECONDS,
    ):
        self.registration = registration
        self.consul = consul
        self.recheck_seconds = recheck_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.registrations = 0  # how many times we (re-)registered
        self._client = consul.client(connections_timeout=CATALOG_TIMEOUT_SECONDS)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register in the background; the service serves whether or not the catalog answers."""
        self._thread = threading.Thread(target=self._keep_registered, name="self-registration", daemon=True)
        self._thread.start()

    def stop_keeping(self) -> None:
        """Stop re-registering (shutdown has begun); waits for an attempt in progress."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=CATALOG_TIMEOUT_SECONDS * 2)

    def enter_maintenance(self, reason: str = "shutting down: draining") -> bool:
        """Mark the instance as in maintenance so that gateways drain it. True if the catalog took it."""
        self.stop_keeping()
        service_id = self.registration.id
        try:
            self._client.agent.service.maintenance(service_id, "true", reason)
        except CATALOG_ERRORS as exc:
            log.warning("maintenance for %s not set (catalog %s: %s)", service_id, self.consul.url, exc)
            return False
        log.info("maintenance on for %s: %s", service_id, reason)
        return True

    def deregister(self) -> bool:
        """Remove the instance from the catalog. True if the catalog took it."""
        self.stop_keeping()
        service_id = self.registration.id
        try:
            self._client.agent.service.deregister(service_id)
        except CATALOG_ERRORS as exc:
            log.warning("deregistration of %s failed (catalog %s: %s)", service_id, self.consul.url, exc)
            return False
        log.info("deregistered %s", service_id)
        return True

    def _keep_registered(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                self._ensure_registered()
            except CATALOG_ERRORS as exc:
                log.warning(
                    "catalog %s unreachable for %s (%s); retrying in %.1fs",
                    self.consul.url, self.registration.id, _short(exc), backoff,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            backoff = FIRST_BACKOFF_SECONDS
            self._stopping.wait(self.recheck_seconds)

    def _ensure_registered(self) -> None:
        if self.registrations and self.registration.id in self._client.agent.services():
            return
        if self._stopping.is_set():
            return
        self._client.agent.service.register(**self.registration.register_kwargs())
        self.registrations += 1
        what = "registered" if self.registrations == 1 else "re-registered (the catalog had forgotten it)"
        reg = self.registration
        log.info("%s %s as %s at %s:%d in %s", what, reg.name, reg.id, reg.address, reg.port, self.consul.url)


def _short(exc: Exception) -> str:
    """The gist of a requests error (its repr nests several layers of wrappers)."""
    text = str(exc)
    return text if len(text) <= 160 else text[:157] + "..."
