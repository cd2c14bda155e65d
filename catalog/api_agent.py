"""/v1/agent and /v1/status: the local agent's services, checks, maintenance, and who leads."""

from __future__ import annotations

import time

from aiohttp import web

from catalog.agent import Agent
from catalog.filtering import apply_filter
from catalog.parsing import BadRequest, parse_bool
from catalog.responses import agent_of, json_response, query_of, read_fields, true_response
from catalog.shapes import agent_service_json, check_json

VERSION = "1.22.0"  # the Consul API level this catalog speaks; py-consul's suite keys its skips on it

routes = web.RouteTableDef()


@routes.put("/v1/agent/service/register")
async def service_register(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    body = await read_fields(request, "service definition")
    agent.register_service(body, replace_existing_checks=query.present("replace-existing-checks")
                           and query.get("replace-existing-checks") not in ("false", "0"))
    return web.Response()


@routes.put("/v1/agent/service/deregister/{service_id:.+}")
async def service_deregister(request: web.Request) -> web.Response:
    agent_of(request).deregister_service(request.match_info["service_id"])
    return web.Response()


@routes.put("/v1/agent/service/maintenance/{service_id:.+}")
async def service_maintenance(request: web.Request) -> web.Response:
    query = query_of(request)
    if not query.present("enable"):
        raise BadRequest("Missing value for enable")
    enable = parse_bool(query.get("enable"), "enable")
    service_id = request.match_info["service_id"]
    if not agent_of(request).service_maintenance(service_id, enable, query.get("reason")):
        return web.Response(status=404, text=f"Unknown service ID {service_id!r}")
    return web.Response()


@routes.put("/v1/agent/maintenance")
async def node_maintenance(request: web.Request) -> web.Response:
    query = query_of(request)
    if not query.present("enable"):
        raise BadRequest("Missing value for enable")
    agent_of(request).node_maintenance(parse_bool(query.get("enable"), "enable"), query.get("reason"))
    return web.Response()


@routes.get("/v1/agent/services")
async def services(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    found = {s.id: agent_service_json(s, agent.config.datacenter) for s in agent.local_services()}
    return json_response(apply_filter(found, query.get("filter")))


@routes.get("/v1/agent/service/{service_id:.+}")
async def service(request: web.Request) -> web.Response:
    agent = agent_of(request)
    found = agent.local_service(request.match_info["service_id"])
    if found is None:
        return web.Response(status=404, text=f"unknown service ID: {request.match_info['service_id']}")
    return json_response(agent_service_json(found, agent.config.datacenter))


@routes.get("/v1/agent/checks")
async def checks(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    found = {c.check_id: {**check_json(c), "CreateIndex": 0, "ModifyIndex": 0} for c in agent.local_checks()}
    return json_response(apply_filter(found, query.get("filter")))


@routes.put("/v1/agent/check/register")
async def check_register(request: web.Request) -> web.Response:
    agent_of(request).register_check(await read_fields(request, "check definition"))
    return web.Response()


@routes.put("/v1/agent/check/deregister/{check_id:.+}")
async def check_deregister(request: web.Request) -> web.Response:
    check_id = request.match_info["check_id"]
    if not agent_of(request).deregister_check(check_id):
        return web.Response(status=404, text=f"Unknown check ID {check_id!r}")
    return web.Response()


def _ttl_handler(status: str):
    async def handler(request: web.Request) -> web.Response:
        query = query_of(request)
        return _ttl_update(request, status, query.get("note"))

    return handler


for _status, _verb in (("passing", "pass"), ("warning", "warn"), ("critical", "fail")):
    routes.put(f"/v1/agent/check/{_verb}/{{check_id:.+}}")(_ttl_handler(_status))


@routes.put("/v1/agent/check/update/{check_id:.+}")
async def check_update(request: web.Request) -> web.Response:
    body = await read_fields(request, "check update")
    status = body.text("Status")
    if not status:
        raise BadRequest("Missing check status")
    return _ttl_update(request, status, body.text("Output"))


def _ttl_update(request: web.Request, status: str, output: str) -> web.Response:
    agent_of(request).update_ttl(request.match_info["check_id"], status, output)
    return web.Response()


@routes.get("/v1/agent/self")
async def self_(request: web.Request) -> web.Response:
    agent = agent_of(request)
    return json_response(self_json(agent))


@routes.get("/v1/agent/members")
async def members(request: web.Request) -> web.Response:
    agent, query = agent_of(request), query_of(request)
    member = member_json(agent)
    if query.present("wan") and query.get("wan") not in ("0", "false"):
        member = {**member, "Name": f"{agent.node}.{agent.config.datacenter}", "Port": 8302}
    return json_response([member])


@routes.put("/v1/agent/reload")
async def reload(request: web.Request) -> web.Response:
    return web.Response()


@routes.get("/v1/status/leader")
async def leader(request: web.Request) -> web.Response:
    return json_response(agent_of(request).leader_address)


@routes.get("/v1/status/peers")
async def peers(request: web.Request) -> web.Response:
    return json_response([agent_of(request).leader_address])


def member_json(agent: Agent) -> dict:
    return {
        "Name": agent.node,
        "Addr": agent.config.address,
        "Port": 8301,
        "Tags": {"role": "consul", "dc": agent.config.datacenter, "segment": "", "build": f"{VERSION}:shopgate",
                 "port": "8300", "bootstrap": "1", "vsn": "2", "vsn_min": "2", "vsn_max": "3",
                 "id": agent.node_id, "raft_vsn": "3"},
        "Status": 1,
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    }


def self_json(agent: Agent) -> dict:
    config = {
        "Datacenter": agent.config.datacenter,
        "PrimaryDatacenter": agent.config.datacenter,
        "NodeName": agent.node,
        "NodeID": agent.node_id,
        "Revision": "shopgate",
        "Server": True,
        "Version": VERSION,
        "BuildDate": "",
    }
    return {
        "Config": config,
        "DebugConfig": {**config, "EnableScriptChecks": agent.config.enable_script_checks,
                        "ClientAddrs": [agent.config.address], "ACLsEnabled": False},
        "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
        "Member": member_json(agent),
        "Stats": {
            "agent": {"check_monitors": "0", "check_ttls": "0", "checks": str(len(agent.local_checks())),
                      "services": str(len(agent.local_services()))},
            "consul": {"leader": "true", "leader_addr": agent.leader_address, "server": "true",
                       "bootstrap": "true", "known_datacenters": "1", "last_index": str(agent.store.index)},
            "runtime": {"uptime_seconds": str(int(time.monotonic()))},
        },
        "Meta": {"consul-network-segment": ""},
        "xDS": {"SupportedProxies": {}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}},
    }
