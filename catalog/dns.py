"""The catalog's DNS server: UDP and TCP on one port, on the catalog's own event loop.

Only transport: each query's bytes go to `catalog.dns_answers.respond` with the live `Store`, so DNS
and `/v1/health/service` read the same records at the same moment (no copy to keep in step). A packet
that is not a query is dropped and counted (`DnsServer.malformed`), never answered and never fatal;
a TCP client that sends garbage or stalls loses its connection, not the server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from dataclasses import dataclass, field

from catalog.dns_answers import DnsConfig, Malformed, respond
from catalog.state import Store

log = logging.getLogger("catalog.dns")

TCP_IDLE_SECONDS = 10.0     # a TCP client that sends nothing for this long is disconnected


@dataclass
class DnsCounters:
    """What the server did, for its log and its tests."""

    udp: int = 0
    tcp: int = 0
    malformed: int = 0
    errors: int = 0


@dataclass
class DnsServer:
    store: Store
    config: DnsConfig
    counters: DnsCounters = field(default_factory=DnsCounters)
    rng: random.Random = field(default_factory=random.Random)
    port: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.AbstractServer | None = None

    def answer(self, wire: bytes, udp: bool) -> bytes | None:
        """The answer's bytes, or None for a packet to drop (counted)."""
        try:
            return respond(self.store, self.config, wire, udp, self.rng)
        except Malformed as exc:
            self.counters.malformed += 1
            log.debug("dropped a malformed DNS packet: %s", exc)
        except Exception:  # a bug must cost one answer, not the server
            self.counters.errors += 1
            log.exception("DNS query failed")
        return None

    async def start(self, host: str, port: int) -> int:
        """Listen on UDP and TCP `port` (0: one the kernel picks, the same number for both); returns it."""
        loop = asyncio.get_running_loop()
        for _ in range(20 if port == 0 else 1):
            udp, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(self), local_addr=(host, port),
                                                         family=socket.AF_INET6 if ":" in host else socket.AF_INET)
            chosen = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self.serve_tcp, host, chosen, reuse_address=True)
            except OSError:
                udp.close()
                if port != 0:
                    raise
                continue
            self._udp, self.port = udp, chosen
            return chosen
        raise OSError(f"no port on {host} was free for both DNS over UDP and TCP")

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """RFC 1035 §4.2.2: each message prefixed by its length; several queries per connection."""
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                wire = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", header)[0]), TCP_IDLE_SECONDS)
                self.counters.tcp += 1
                reply = self.answer(wire, udp=False)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        self.server.counters.udp += 1
        reply = self.server.answer(data, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable from a client gone away
        log.debug("DNS over UDP: %s", exc)
