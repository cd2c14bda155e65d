"""What every endpoint shares: JSON bodies, and indexed (blocking) reads with Consul's headers.

`indexed()` answers a read with `X-Consul-Index` and friends, holding it
first when the client sent `?index=`. Answers are serialized and encoded
once per (query, store index) (`catalog.answers`), so that a thousand
watchers of one query woken by one change cost one serialization.
"""

from __future__ import annotations

from typing import Any, Callable

from aiohttp import web

from catalog.agent import Agent
from catalog.answers import Answer
from catalog.parsing import BadRequest, Fields, Query, decode_json
from catalog.shapes import Fragments, dumps

AGENT_KEY = web.AppKey("agent", Agent)


class RequestCount:
    """HTTP requests the catalog has received since it started (what its clients cost it, e.g. a fleet of gateways)."""

    def __init__(self) -> None:
        self.received = 0


REQUESTS_KEY = web.AppKey("requests", RequestCount)

#: Query parameters that do not change what a read returns (they say how to wait or whom to trust).
_NOT_PART_OF_RESULT = {"index", "wait", "stale", "consistent", "cached", "token", "dc", "near"}


def agent_of(request: web.Request) -> Agent:
    return request.app[AGENT_KEY]


def query_of(request: web.Request) -> Query:
    query = Query(request.query)
    dc = query.get("dc")
    if dc and dc != agent_of(request).config.datacenter:
        raise BadRequest(f"No path to datacenter {dc!r}")
    return query


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json", headers=headers)


async def read_fields(request: web.Request, where: str) -> Fields:
    return Fields(decode_json(await request.read(), where), where)


class BodyCache:
    """Encoded answers of the current store index, shared by every watcher of the same query."""

    def __init__(self) -> None:
        self.index = -1
        self.answers: dict[str, Answer] = {}

    def get(self, key: str, store_index: int, read: Callable[[], Answer]) -> Answer:
        if store_index != self.index:
            self.answers.clear()
            self.index = store_index
        hit = self.answers.get(key)
        if hit is None:
            hit = self.answers[key] = read()
        return hit


BODY_CACHE_KEY = web.AppKey("body_cache", BodyCache)
FRAGMENTS_KEY = web.AppKey("fragments", dict)   # kind ("checks", "kv", "health") -> Fragments


def fragments_of(request: web.Request, kind: str) -> Fragments:
    return request.app[FRAGMENTS_KEY].setdefault(kind, Fragments())


async def indexed(request: web.Request, topics: tuple[str, ...], read: Callable[[], tuple[int, Any]],
                  not_found: Callable[[Any], bool] = lambda data: False,
                  content_type: str = "application/json", headers: dict[str, str] | None = None
                  ) -> web.StreamResponse:
    """Answer an indexed read; block first when `?index=` asks to.

    `not_found(data)` turns the answer into a 404 (still with its index); `read` may return bytes to send as they are.
    `headers` are the endpoint's own (the answer is encoded once: headers cannot be added to it afterwards).
    """
    query = query_of(request)
    consistency = query.consistency()
    min_index, wait = query.blocking()
    agent = agent_of(request)
    cache = request.app[BODY_CACHE_KEY]
    key = request.path + "?" + "&".join(
        f"{k}={v}" for k, v in sorted(request.query.items()) if k not in _NOT_PART_OF_RESULT)

    def read_once() -> tuple[int, Answer]:
        def produce() -> Answer:
            index, data = read()
            return Answer.of(index, 404 if not_found(data) else 200,
                             data if isinstance(data, bytes) else dumps(data), content_type, headers or {})

        answer = cache.get(key, agent.store.index, produce)
        return answer.index, answer

    _, answer = await agent.watchers.block(topics, min_index, wait, read_once)
    return answer.response(request, consistency)
