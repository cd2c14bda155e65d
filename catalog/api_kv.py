"""/v1/kv: Consul's key/value store — get (recurse, keys + separator, raw), put (cas, flags, acquire/release),
delete (recurse, cas)."""

from __future__ import annotations

import re

from aiohttp import web

from catalog.parsing import BadRequest, Query
from catalog.responses import agent_of, fragments_of, indexed, json_response, query_of
from catalog.shapes import kv_json
from catalog.state import key_topic

MAX_VALUE_SIZE = 512 * 1024
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
MAX_FLAGS = 2**64 - 1

routes = web.RouteTableDef()


def key_of(request: web.Request, required: bool) -> str:
    """The key from the path, refused when it could escape its place (leading '/', '..', control characters)."""
    key = request.match_info["key"]
    if not key:
        if required:
            raise BadRequest("Missing key name")
        return key
    if key.startswith("/"):
        raise BadRequest("Invalid key: key must not begin with a '/'")
    if "../" in key or key.endswith("/..") or key == "..":
        raise BadRequest("Invalid key: key contains path traversal sequence")
    if CONTROL_CHARACTER.search(key):
        raise BadRequest("Invalid key: key contains a control character")
    return key


def refuse_conflicting(query: Query, *flags: str) -> None:
    given = [flag for flag in flags if query.present(flag)]
    if len(given) > 1:
        raise BadRequest(f"Conflicting flags: {', '.join(given)} cannot be combined")


RAW_VALUE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


@routes.get("/v1/kv/{key:.*}")
async def kv_get(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    key = key_of(request, required=not (query.present("keys") or query.present("recurse")))
    store = agent.store

    if query.present("keys"):
        separator = query.get("separator", query.get("seperator"))  # Consul accepts its historic misspelling

        def read_keys():
            index, entries = store.kv_list(key)
            keys: list[str] = []
            for entry in entries:
                name = entry.key
                if separator:
                    cut = name.find(separator, len(key))
                    if cut >= 0:
                        name = name[:cut + len(separator)]
                if not keys or keys[-1] != name:
                    keys.append(name)
            return index, keys

        return await indexed(request, ("kvs",), read_keys, not_found=lambda keys: not keys and key != "")

    if query.present("recurse"):
        fragments = fragments_of(request, "kv")

        def read_tree():
            index, entries = store.kv_list(key)
            if not entries:
                return index, None
            return index, fragments.array(((e.key, e.modify_index, lambda e=e: kv_json(e)) for e in entries),
                                          store.kv)

        return await indexed(request, ("kvs",), read_tree, not_found=lambda data: data is None)

    raw = query.present("raw")

    def read_one():
        entry = store.kv.get(key)
        if entry is None:
            return store.kv_index(), None
        return entry.modify_index, (entry.value if raw else [kv_json(entry)])

    # As Consul: a raw stored value must never run as a page in a browser.
    return await indexed(request, (key_topic(key),), read_one, not_found=lambda data: data is None,
                         content_type="text/plain" if raw else "application/json",
                         headers=RAW_VALUE_HEADERS if raw else {})


@routes.put("/v1/kv/{key:.*}")
async def kv_put(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    key = key_of(request, required=True)
    refuse_conflicting(query, "cas", "acquire", "release")
    if request.content_length is not None and request.content_length > MAX_VALUE_SIZE:
        return _too_large(request.content_length)
    value = await request.content.read(MAX_VALUE_SIZE + 1)
    if len(value) > MAX_VALUE_SIZE:
        return _too_large(len(value))
    flags = query.uint("flags")
    if flags > MAX_FLAGS:
        raise BadRequest(f"Invalid flags: {flags} does not fit in 64 bits")
    if query.present("acquire"):
        stored = agent.sessions.acquire(key, value, flags, query.get("acquire"))
    elif query.present("release"):
        stored = agent.sessions.release(key, value, flags, query.get("release"))
    else:
        cas = query.uint("cas") if query.present("cas") else None
        stored = agent.store.kv_put(key, value, flags, cas)
    agent.commit()
    return json_response(stored)


@routes.delete("/v1/kv/{key:.*}")
async def kv_delete(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    key = key_of(request, required=not query.present("recurse"))
    refuse_conflicting(query, "recurse", "cas")
    if query.present("recurse"):
        agent.store.kv_delete_tree(key)
        agent.commit()
        return json_response(True)
    cas = query.uint("cas") if query.present("cas") else None
    deleted = agent.store.kv_delete(key, cas)
    agent.commit()
    return json_response(deleted)


def _too_large(size: int) -> web.Response:
    return web.Response(status=413, text=f"Request body({size} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. "
                                         "See https://developer.hashicorp.com/consul/docs/agent/config/"
                                         "config-files#kv_max_value_size.")
