"""/v1/health: service instances with their checks, and checks by service, node or state."""

from __future__ import annotations

from typing import Callable

from aiohttp import web

from catalog.filtering import apply_filter
from catalog.parsing import BadRequest
from catalog.records import Check
from catalog.responses import agent_of, fragments_of, indexed, query_of
from catalog.shapes import check_json, health_service_json, node_json
from catalog.state import Store, service_topic
from shopgate.consul_client.protocol import PASSING, STATUSES

routes = web.RouteTableDef()


@routes.get("/v1/health/service/{name}")
async def service(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    name, tags, expression = request.match_info["name"], query.getall("tag"), query.get("filter")
    passing_only, node_meta, peer = query.truthy("passing"), query.node_meta(), query.get("peer")
    store = agent.store

    fragments = fragments_of(request, "health")

    def entry(instance, checks):
        return {"Node": node_json(store.nodes[instance.node]), "Service": health_service_json(instance),
                "Checks": [check_json(c) for c in checks]}

    def read():
        found = []
        if not peer:  # no cluster peering here: nothing comes from a peer
            for instance in store.service_instances(name, tags, node_meta):
                checks = store.checks_of(instance.node, instance.id)
                if not (passing_only and any(c.status != PASSING for c in checks)):
                    found.append((instance, checks))
        if expression:
            return store.index_for_service(name), apply_filter([entry(i, c) for i, c in found], expression)
        # An entry changes only with its node, its service or one of its checks: reuse its JSON until then.
        items = [((i.node, i.id), (store.nodes[i.node].modify_index, i.modify_index,
                                   tuple((c.check_id, c.modify_index) for c in checks)),
                  lambda i=i, checks=checks: entry(i, checks)) for i, checks in found]
        return store.index_for_service(name), fragments.array(items, store.services)

    return await indexed(request, (service_topic(name),), read)


@routes.get("/v1/health/connect/{name}")
@routes.get("/v1/health/ingress/{name}")
async def mesh(request: web.Request) -> web.Response:
    """No service mesh here: nothing is connect-capable or behind an ingress gateway."""
    agent, query = agent_of(request), query_of(request)
    apply_filter([], query.get("filter"))
    name = request.match_info["name"]
    return await indexed(request, (service_topic(name),), lambda: (agent.store.index_for_service(name), []))


@routes.get("/v1/health/checks/{name}")
async def service_checks(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await check_list(request, lambda store: store.checks_of_service_name(name))


@routes.get("/v1/health/state/{state}")
async def state(request: web.Request) -> web.Response:
    wanted = request.match_info["state"]
    if wanted != "any" and wanted not in STATUSES:
        raise BadRequest(f"Bad check state {wanted!r}: use any, passing, warning or critical")
    keep = None if wanted == "any" else (lambda check: check.status == wanted)
    return await check_list(request, lambda store: store.sorted_checks(keep))


@routes.get("/v1/health/node/{node}")
async def node(request: web.Request) -> web.Response:
    name = request.match_info["node"]
    return await check_list(request, lambda store: store.node_checks(name))


async def check_list(request: web.Request, find: Callable[[Store], list[Check]]) -> web.Response:
    """Every list of checks moves with the `checks` table index, as in Consul."""
    store, expression = agent_of(request).store, query_of(request).get("filter")
    return await indexed(request, ("checks",),
                         lambda: (store.table_index["checks"], checks_body(request, find(store), expression)))


def checks_body(request: web.Request, checks: list[Check], expression: str) -> list | bytes:
    """A list of checks as JSON: filtered as dicts, else joined from each check's cached JSON."""
    if expression:
        return apply_filter([check_json(c) for c in checks], expression)
    store = agent_of(request).store
    return fragments_of(request, "checks").array(
        (((c.node, c.check_id), c.modify_index, lambda c=c: check_json(c)) for c in checks), store.checks)
