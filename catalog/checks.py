"""Run the agent's health checks on the event loop: HTTP, TCP and script probes at their Interval, TTL timers.

One asyncio task per probing check and one timer per TTL check — no thread
per check. Results go to the `on_result` callable it is given (the agent's,
which stores them and wakes watchers), so the runner needs nothing else of
the agent.
HTTP: 2xx passing, 429 warning, anything else critical (as in Consul).
Script: exit 0 passing, 1 warning, else critical.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp

from catalog.records import Check, CheckDefinition
from shopgate.consul_client.protocol import CRITICAL, PASSING, WARNING

log = logging.getLogger("catalog.checks")

MAX_BODY = 4096

#: Where a check's outcome goes: (check ID, status, output).
ResultSink = Callable[[str, str, str], None]


class CheckRunner:
    def __init__(self, on_result: ResultSink):
        self._on_result = on_result
        self._probes: dict[str, tuple[asyncio.Task, CheckDefinition]] = {}
        self._ttl_timers: dict[str, asyncio.TimerHandle] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Consul's checks do not keep connections alive: each probe is a fresh connection.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True),
                                                  auto_decompress=True)
        return self._session

    def sync(self, check: Check) -> None:
        """Start, restart or stop running `check` according to its definition."""
        definition = check.definition
        current = self._probes.get(check.check_id)
        if current is not None and current[1] == definition:
            return
        self.stop(check.check_id)
        if definition.kind in ("http", "tcp", "script"):
            task = asyncio.get_running_loop().create_task(self._probe_loop(check.check_id, definition))
            self._probes[check.check_id] = (task, definition)
        elif definition.kind == "ttl":
            self.ttl_reset(check)

    def stop(self, check_id: str) -> None:
        probe = self._probes.pop(check_id, None)
        if probe is not None:
            probe[0].cancel()
        timer = self._ttl_timers.pop(check_id, None)
        if timer is not None:
            timer.cancel()

    def ttl_reset(self, check: Check) -> None:
        timer = self._ttl_timers.pop(check.check_id, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._ttl_timers[check.check_id] = loop.call_later(check.definition.ttl, self._ttl_expired, check.check_id)

    def _ttl_expired(self, check_id: str) -> None:
        self._ttl_timers.pop(check_id, None)
        self._on_result(check_id, CRITICAL, "TTL expired")

    async def close(self) -> None:
        for check_id in list(self._probes) + list(self._ttl_timers):
            self.stop(check_id)
        if self._session is not None:
            await self._session.close()

    async def _probe_loop(self, check_id: str, definition: CheckDefinition) -> None:
        while True:
            try:
                status, output = await self.probe(definition)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a probe must never take the scheduler down
                log.exception("check %s failed to run", check_id)
                status, output = CRITICAL, f"check failed to run: {exc}"
            self._on_result(check_id, status, output)
            await asyncio.sleep(definition.interval)

    async def probe(self, definition: CheckDefinition) -> tuple[str, str]:
        if definition.kind == "http":
            return await self._http(definition)
        if definition.kind == "tcp":
            return await self._tcp(definition)
        return await self._script(definition)

    async def _http(self, d: CheckDefinition) -> tuple[str, str]:
        method = d.method or "GET"
        headers = {k: ", ".join(v) for k, v in d.header.items()}
        headers.setdefault("User-Agent", "Consul Health Check")
        headers.setdefault("Accept", "text/plain, text/*, */*")
        try:
            async with self.session.request(method, d.http, headers=headers, data=d.body or None,
                                            ssl=False if d.tls_skip_verify else None,
                                            timeout=aiohttp.ClientTimeout(total=d.timeout),
                                            allow_redirects=True) as response:
                body = (await response.content.read(MAX_BODY)).decode("utf-8", "replace")
                output = f"HTTP {method} {d.http}: {response.status} {response.reason} Output: {body}"
                if 200 <= response.status < 300:
                    return PASSING, output
                if response.status == 429:
                    return WARNING, output
                return CRITICAL, output
        except asyncio.TimeoutError:
            return CRITICAL, f"{method} {d.http}: timed out after {d.timeout:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return CRITICAL, f"{method} {d.http}: {exc or type(exc).__name__}"

    async def _tcp(self, d: CheckDefinition) -> tuple[str, str]:
        host, _, port = d.tcp.rpartition(":")
        host = host.strip("[]")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), d.timeout)
        except asyncio.TimeoutError:
            return CRITICAL, f"dial tcp {d.tcp}: i/o timeout"
        except OSError as exc:
            return CRITICAL, f"dial tcp {d.tcp}: {exc.strerror or exc}"
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return PASSING, f"TCP connect {d.tcp}: Success"

    async def _script(self, d: CheckDefinition) -> tuple[str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(*d.args, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT,
                                                        stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            return CRITICAL, f"could not run {d.args[0]!r}: {exc}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), d.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return CRITICAL, f"Timed out ({d.timeout:g}s) running check"
        output = out[:MAX_BODY].decode("utf-8", "replace")
        code = proc.returncode
        return (PASSING if code == 0 else WARNING if code == 1 else CRITICAL), output
