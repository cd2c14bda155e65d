"""Keep one service instance registered in the catalog for as long as it serves.

Lifecycle, driven by the process that serves:

    keeper = SelfRegistration(registration, ConsulAddress.parse())
    keeper.poll()                  # call about once a second from the server's own loop:
                                   # registers, re-registers when the catalog forgot us, and
                                   # retries with backoff (logged) while the catalog is down
    keeper.enter_maintenance()     # on SIGTERM: gateways stop sending new requests
    ...drain...
    keeper.deregister()            # after in-flight requests finished

`poll` runs in the caller's thread on purpose: a pre-fork server (gunicorn) must not fork
while another thread is inside an import or holds a lock, or its workers can deadlock.
The keep-alive check is one cheap `GET /v1/agent/services` every few seconds, which also
covers a catalog that restarted with empty state.
"""

from __future__ import annotations

import logging
import re
import time

from registrar.registration import Registration
from shopgate import settings
from shopgate.consul_client import CATALOG_ERRORS, ConsulAddress, connect

log = logging.getLogger("shopgate.registrar")

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
        self._client = connect(consul, timeout=CATALOG_TIMEOUT_SECONDS)
        self._stopping = False
        self._next_attempt = 0.0
        self._backoff = FIRST_BACKOFF_SECONDS

    def poll(self) -> None:
        """Check (and register) when due; cheap to call often. Never raises for catalog trouble."""
        now = time.monotonic()
        if self._stopping or now < self._next_attempt:
            return
        try:
            self._ensure_registered()
        except CATALOG_ERRORS as exc:
            log.warning(
                "catalog %s unreachable for %s (%s); retrying in %.1fs",
                self.consul.url, self.registration.id, _short(exc), self._backoff,
            )
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff_seconds)
            return
        self._backoff = FIRST_BACKOFF_SECONDS
        self._next_attempt = now + self.recheck_seconds

    def enter_maintenance(self, reason: str = "shutting down: draining") -> bool:
        """Mark the instance as in maintenance so that gateways drain it. True if the catalog took it."""
        self._stopping = True
        service_id = self.registration.id
        try:
            self._client.agent.service.maintenance(service_id, "true", reason)
        except CATALOG_ERRORS as exc:
            log.warning("maintenance for %s not set (catalog %s: %s)", service_id, self.consul.url, _short(exc))
            return False
        log.info("maintenance on for %s: %s", service_id, reason)
        return True

    def deregister(self) -> bool:
        """Remove the instance from the catalog. True if the catalog took it."""
        self._stopping = True
        service_id = self.registration.id
        try:
            self._client.agent.service.deregister(service_id)
        except CATALOG_ERRORS as exc:
            log.warning("deregistration of %s failed (catalog %s: %s)", service_id, self.consul.url, _short(exc))
            return False
        log.info("deregistered %s", service_id)
        return True

    def _ensure_registered(self) -> None:
        if self.registrations and self.registration.id in self._client.agent.services():
            return
        self._client.agent.service.register(**self.registration.register_kwargs())
        self.registrations += 1
        what = "registered" if self.registrations == 1 else "re-registered (the catalog had forgotten it)"
        reg = self.registration
        log.info("%s %s as %s at %s:%d in %s", what, reg.name, reg.id, reg.address, reg.port, self.consul.url)


def _short(exc: Exception) -> str:
    """The gist of a requests error, whose text nests several layers of wrappers."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:
        return errno.group(0)
    return text if len(text) <= 160 else text[:157] + "..."
