"""/v1/session: create, renew, destroy and list the sessions that own KV locks."""

from __future__ import annotations

from aiohttp import web

from catalog.responses import agent_of, indexed, json_response, query_of, read_fields
from catalog.shapes import session_json

routes = web.RouteTableDef()


@routes.put("/v1/session/create")
async def create(request: web.Request) -> web.Response:
    query_of(request)
    session = agent_of(request).sessions.create(await read_fields(request, "session"))
    return json_response({"ID": session.id})


@routes.put("/v1/session/destroy/{session_id}")
async def destroy(request: web.Request) -> web.Response:
    query_of(request)
    agent_of(request).sessions.destroy(request.match_info["session_id"])
    return json_response(True)


@routes.put("/v1/session/renew/{session_id}")
async def renew(request: web.Request) -> web.Response:
    query_of(request)
    return json_response([session_json(agent_of(request).sessions.renew(request.match_info["session_id"]))])


@routes.get("/v1/session/info/{session_id}")
async def info(request: web.Request) -> web.Response:
    store = agent_of(request).store
    session_id = request.match_info["session_id"]

    def read():
        session = store.sessions.get(session_id)
        return store.table_index["sessions"], [session_json(session)] if session else []

    return await indexed(request, ("sessions",), read)


@routes.get("/v1/session/list")
@routes.get("/v1/session/node/{node}")
async def listing(request: web.Request) -> web.Response:
    store = agent_of(request).store
    node = request.match_info.get("node")

    def read():
        found = sorted((s for s in store.sessions.values() if node is None or s.node == node), key=lambda s: s.id)
        return store.table_index["sessions"], [session_json(s) for s in found]

    return await indexed(request, ("sessions",), read)
