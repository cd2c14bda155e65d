"""/v1/catalog: datacenters, nodes, services, and direct register/deregister."""

from __future__ import annotations

from typing import Any, Callable

from aiohttp import web

from catalog.filtering import apply_filter
from catalog.responses import agent_of, indexed, json_response, query_of, read_fields
from catalog.shapes import agent_service_json, catalog_service_json, node_json
from catalog.state import service_topic

routes = web.RouteTableDef()


@routes.get("/v1/catalog/datacenters")
async def datacenters(request: web.Request) -> web.Response:
    return json_response([agent_of(request).config.datacenter])


@routes.get("/v1/catalog/nodes")
async def nodes(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    expression, node_meta = query.get("filter"), query.node_meta()
    store = agent.store

    def read():
        found = [node_json(store.nodes[name]) for name in sorted(store.nodes) if store.node_has_meta(name, node_meta)]
        return store.table_index["nodes"], apply_filter(found, expression)

    return await indexed(request, ("nodes",), read)


@routes.get("/v1/catalog/services")
async def services(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    expression = query.get("filter")
    store = agent.store

    def read():
        if not expression:
            return store.table_index["services"], store.service_tags()
        rows = [catalog_service_json(s, store.nodes[s.node]) for s in store.services.values()]
        kept: dict[str, set[str]] = {}
        for row in apply_filter(rows, expression):
            kept.setdefault(row["ServiceName"], set()).update(row["ServiceTags"])
        return store.table_index["services"], {name: sorted(tags) for name, tags in sorted(kept.items())}

    return await indexed(request, ("services",), read)


@routes.get("/v1/catalog/service/{name}")
async def service(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    name, tags, expression = request.match_info["name"], query.getall("tag"), query.get("filter")
    node_meta, peer = query.node_meta(), query.get("peer")
    store = agent.store

    def read():
        if peer:  # no cluster peering here: nothing comes from a peer
            return store.index_for_service(name), []
        rows = [catalog_service_json(s, store.nodes[s.node]) for s in store.service_instances(name, tags, node_meta)]
        return store.index_for_service(name), apply_filter(rows, expression)

    return await indexed(request, (service_topic(name),), read)


@routes.get("/v1/catalog/connect/{name}")
async def connect(request: web.Request) -> web.Response:
    """No service mesh here: no service is connect-capable."""
    store = agent_of(request).store
    name = request.match_info["name"]
    return await indexed(request, (service_topic(name),), lambda: (store.index_for_service(name), []))


@routes.get("/v1/catalog/node/{node}")
async def node(request: web.Request) -> web.Response:
    expression = query_of(request).get("filter")
    return await node_with_services(request, lambda services: apply_filter({s["ID"]: s for s in services}, expression))


@routes.get("/v1/catalog/node-services/{node}")
async def node_services(request: web.Request) -> web.Response:
    return await node_with_services(request, lambda services: services)


async def node_with_services(request: web.Request, arrange: Callable[[list[dict]], Any]) -> web.Response:
    """A node and its services (null for an unknown node); the two endpoints differ only in how they list them."""
    store, name = agent_of(request).store, request.match_info["node"]

    def read():
        index = max(store.table_index["nodes"], store.table_index["services"])
        found = store.nodes.get(name)
        if found is None:
            return index, None
        services = [{**agent_service_json(s, found.datacenter), "CreateIndex": s.create_index,
                     "ModifyIndex": s.modify_index} for s in store.node_services(name)]
        return index, {"Node": node_json(found), "Services": arrange(services)}

    return await indexed(request, ("nodes", "services"), read)


@routes.put("/v1/catalog/register")
async def register(request: web.Request) -> web.Response:
    query_of(request)
    agent_of(request).catalog_register(await read_fields(request, "catalog registration"))
    return json_response(True)


@routes.put("/v1/catalog/deregister")
async def deregister(request: web.Request) -> web.Response:
    query_of(request)
    agent_of(request).catalog_deregister(await read_fields(request, "catalog deregistration"))
    return json_response(True)
