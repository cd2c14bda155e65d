"""Indexed answers encoded once and written as bytes: the wake-up path of a thousand blocking queries.

One change wakes every watcher of a query at once, and they all get the same
answer (`responses.BodyCache` shares it per query and index). aiohttp's
general response path — a header multidict per response, keep-alive,
chunking and compression decisions, header serialization, the stream
writer — cost more per answer than everything else in the wake-up burst
together (profiled at 1,000 watchers). So an `Answer` carries its status
line and its answer-wide headers already encoded; each request adds only
its own lines (consistency, Date, `Connection: close`) and hands the pieces
to the transport in one write.

Only HTTP/1.1 GETs take the encoded path; a HEAD or an HTTP/1.0 request
gets the same answer through a plain `web.Response`. The encoded path skips
aiohttp's `on_response_prepare` signal and compression: the catalog uses neither.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

#: Writes at least this long go to the transport as separate pieces instead of one joined copy (as aiohttp does).
_JOIN_BELOW = 16 * 1024
_CONSISTENCY = {kind: f"X-Consul-Effective-Consistency: {kind}\r\n".encode()
                for kind in ("leader", "consistent", "stale")}
_CLOSE = b"Connection: close\r\n"


@dataclass(frozen=True)
class Answer:
    """One indexed answer: what every watcher of the same query at the same index is sent."""

    index: int
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str]     # the answer-wide headers: Consul's index headers and the endpoint's own
    head: bytes     # the status line and `headers` (and Content-Type, -Length, Server) encoded, each line ending in CRLF

    @classmethod
    def of(cls, index: int, status: int, body: bytes, content_type: str, own_headers: dict[str, str]) -> "Answer":
        if status == 404:
            body = b""      # Consul's 404 of an indexed read carries the index headers and no body
        headers = {**index_headers(index), **own_headers}
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{name}: {value}" for name, value in
                                                                      headers.items())]
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines += [f"Content-Length: {len(body)}", f"Server: {SERVER_SOFTWARE}", ""]
        return cls(index, status, body, content_type, headers, "\r\n".join(lines).encode())

    def response(self, request: web.Request, consistency: str) -> web.StreamResponse:
        """The cheapest response that sends this answer to `request`."""
        if request.method == "GET" and request.version == HttpVersion11:
            return EncodedResponse(self, _CONSISTENCY[consistency])
        headers = {**self.headers, "X-Consul-Effective-Consistency": consistency}
        if not self.body:
            return web.Response(status=self.status, headers=headers)
        return web.Response(status=self.status, body=self.body, content_type=self.content_type, headers=headers)


def index_headers(index: int) -> dict[str, str]:
    """Consul's headers of every indexed read (a single node is always its own leader)."""
    return {"X-Consul-Index": str(max(index, 1)), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}


class EncodedResponse(web.StreamResponse):
    """Sends an `Answer` with one transport write in `prepare()`; aiohttp's `write_eof()` then has nothing left."""

    def __init__(self, answer: Answer, consistency_line: bytes):
        super().__init__(status=answer.status)
        self._answer = answer
        self._consistency_line = consistency_line
        self._keep = True
        self._sent = False

    @property
    def keep_alive(self) -> bool:
        return self._keep

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._sent:
            return
        if self.headers:
            raise RuntimeError(f"headers {list(self.headers)} were added to an encoded answer and would be lost; "
                               "give them to indexed(headers=...)")
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection before its answer")
        self._keep = request.keep_alive
        answer = self._answer
        pieces = (answer.head, self._consistency_line, date_line(), b"\r\n" if self._keep else _CLOSE + b"\r\n",
                  answer.body)
        if len(answer.body) < _JOIN_BELOW:
            transport.write(b"".join(pieces))
        else:
            transport.writelines(pieces)
        self._sent = True

    async def write_eof(self, data: bytes = b"") -> None:
        assert not data, "an encoded answer is complete; nothing can follow it"


_date = (0, b"")


def date_line() -> bytes:
    """The `Date:` header line, formatted once a second (HTTP dates have whole seconds)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, f"Date: {formatdate(now, usegmt=True)}\r\n".encode())
    return _date[1]
