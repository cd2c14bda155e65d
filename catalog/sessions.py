"""Sessions over time: TTL timers, lock-delay, and invalidation when a session's check goes critical.

The store keeps sessions and key locks (pure); this keeper owns the clock:
a TTL session ends when not renewed within twice its TTL (Consul's grace),
and a key whose lock holder ended cannot be re-acquired for the session's
LockDelay, so a new holder does not act while the old one may still think
it holds the lock. It is given the store, the node name and a `commit`
callable, and needs nothing else of the agent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Callable

from catalog.parsing import BadRequest, Fields, NotFound
from catalog.records import Session
from shopgate.consul_client.protocol import CRITICAL, SERF_CHECK_ID

if TYPE_CHECKING:
    from catalog.state import Store

TTL_MULTIPLIER = 2            # Consul invalidates a TTL session after 2x its TTL without a renewal
MIN_TTL, MAX_TTL = 10.0, 86400.0
DEFAULT_LOCK_DELAY = 15.0
MAX_LOCK_DELAY = 60.0


class SessionKeeper:
    def __init__(self, store: Store, node: str, commit: Callable[[], None]):
        self.store = store
        self._node = node           # where a session lives when its request names no Node
        self._commit = commit       # write ahead and wake watchers, after every change to the store
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._lock_delays: dict[str, float] = {}   # key -> monotonic time until which it cannot be acquired

    def resume(self) -> None:
        """After a restart, every stored TTL session gets a fresh timer."""
        for session in self.store.sessions.values():
            self._arm(session)

    def create(self, body: Fields) -> Session:
        node = body.text("Node") or self._node
        if node not in self.store.nodes:
            raise BadRequest(f"Missing node registration: node {node!r} is not in the catalog")
        behavior = body.text("Behavior") or "release"
        if behavior not in ("release", "delete"):
            raise BadRequest(f"Invalid Behavior setting {behavior!r}: use release or delete")
        ttl = body.duration("TTL")
        if ttl is not None and ttl != 0 and not MIN_TTL <= ttl <= MAX_TTL:
            raise BadRequest(f"Invalid Session TTL '{body.raw('TTL')}', must be between [10s=24h0m0s]")
        lock_delay = body.duration("LockDelay")
        lock_delay = DEFAULT_LOCK_DELAY if lock_delay is None else min(lock_delay, MAX_LOCK_DELAY)
        node_checks = body.strings("NodeChecks") if body.has("NodeChecks") else (
            body.strings("Checks") if body.has("Checks") else [SERF_CHECK_ID])
        service_checks = [{"ID": c.text("ID"), "Namespace": c.text("Namespace")}
                          for c in body.objects("ServiceChecks")]
        for check_id in node_checks + [c["ID"] for c in service_checks]:
            check = self.store.checks.get((node, check_id))
            if check is None:
                raise BadRequest(f"Missing check {check_id!r} registration")
            if check.status == CRITICAL:
                raise BadRequest(f"Check {check_id!r} is in critical state")
        session = self.store.put_session(Session(str(uuid.uuid4()), body.text("Name"), node, lock_delay, behavior,
                                                 ttl or None, node_checks, service_checks))
        self._commit()
        self._arm(session)
        return session

    def renew(self, session_id: str) -> Session:
        session = self.store.sessions.get(session_id)
        if session is None:
            raise NotFound(f"Session id {session_id!r} not found")
        self._arm(session)
        return session

    def destroy(self, session_id: str) -> None:
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        session = self.store.sessions.get(session_id)
        if session is None:
            return
        released = self.store.end_session(session_id)
        self._commit()
        if session.lock_delay:
            until = time.monotonic() + session.lock_delay
            for key in released:
                self._lock_delays[key] = until

    def check_changed(self, node: str, check_id: str, status: str) -> None:
        """A session bound to a check ends when that check goes critical."""
        if status == CRITICAL:
            for session_id in self.store.sessions_of_check(node, check_id):
                self.destroy(session_id)

    def check_removed(self, node: str, check_id: str) -> None:
        """So does a session whose check is deregistered."""
        for session_id in self.store.sessions_of_check(node, check_id):
            self.destroy(session_id)

    def acquire(self, key: str, value: bytes, flags: int, session_id: str) -> bool:
        if session_id not in self.store.sessions:
            raise BadRequest(f"invalid session {session_id!r}")
        until = self._lock_delays.get(key)
        if until is not None:
            if time.monotonic() < until:
                return False
            del self._lock_delays[key]
        return self.store.kv_acquire(key, value, flags, session_id)

    def release(self, key: str, value: bytes, flags: int, session_id: str) -> bool:
        """False unless `session_id` holds the lock (an unknown session holds nothing)."""
        return self.store.kv_release(key, value, flags, session_id)

    def _arm(self, session: Session) -> None:
        if not session.ttl:
            return
        timer = self._timers.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[session.id] = loop.call_later(session.ttl * TTL_MULTIPLIER, self.destroy, session.id)
