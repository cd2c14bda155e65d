"""/v1/agent and /v1/status: the local agent's services, checks, maintenance, and who leads."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from datetime import datetime, timezone

from aiohttp import web

from catalog.acl import ACCESS_KEY
from catalog.agent import Agent
from catalog.filtering import apply_filter
from catalog.parsing import BadRequest
from catalog.responses import REQUESTS_KEY, agent_of, json_response, query_of, read_fields
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
    service_id = request.match_info["service_id"]
    if not agent_of(request).service_maintenance(service_id, query.required_bool("enable"), query.get("reason")):
        return web.Response(status=404, text=f"Unknown service ID {service_id!r}")
    return web.Response()


@routes.put("/v1/agent/maintenance")
async def node_maintenance(request: web.Request) -> web.Response:
    query = query_of(request)
    agent_of(request).node_maintenance(query.required_bool("enable"), query.get("reason"))
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


@routes.put("/v1/agent/leave")
async def leave(request: web.Request) -> web.Response:
    """A graceful shutdown of this (the only) agent, as `consul leave`."""
    asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
    return web.Response()


@routes.put("/v1/agent/force-leave/{node}")
async def force_leave(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    if node != agent_of(request).node:
        raise BadRequest(f"No node found with name {node!r}")
    return web.Response()


#: The tokens an agent holds. Only `default` matters here: it stands in for requests without a token.
AGENT_TOKEN_TYPES = {"default", "agent", "agent_recovery", "agent_master", "replication",
                     "config_file_service_registration", "acl_token", "acl_agent_token",
                     "acl_agent_master_token", "acl_replication_token"}


@routes.put("/v1/agent/token/{kind}")
async def set_token(request: web.Request) -> web.Response:
    access = request.app[ACCESS_KEY]
    if not access.enabled:
        return web.Response(status=401, text="ACL support disabled")
    kind = request.match_info["kind"]
    if kind not in AGENT_TOKEN_TYPES:
        return web.Response(status=404, text=f"Token {kind!r} is unknown")
    token = (await read_fields(request, "token update")).text("Token")
    if kind in ("default", "acl_token"):
        access.default_token = token
    return web.Response()


@routes.get("/v1/agent/metrics")
async def metrics(request: web.Request) -> web.Response:
    """The catalog's own gauges and its request counter, in Consul's JSON shape or (`?format=prometheus`)
    as Prometheus text. Unlike Consul's per-interval counters, the counter is a total since start."""
    agent, query = agent_of(request), query_of(request)
    gauges = {
        "shopgate.catalog.index": agent.store.index,
        "shopgate.catalog.services": len(agent.store.services),
        "shopgate.catalog.checks": len(agent.store.checks),
        "shopgate.catalog.kv_entries": len(agent.store.kv),
        "shopgate.catalog.blocking_queries_held": agent.watchers.held,
    }
    counters = {"shopgate.catalog.http_requests": request.app[REQUESTS_KEY].received}
    if query.get("format") == "prometheus":
        lines = []
        for name, value in gauges.items():
            metric = name.replace(".", "_")
            lines += [f"# TYPE {metric} gauge", f"{metric} {value}"]
        for name, value in counters.items():
            metric = name.replace(".", "_")
            lines += [f"# TYPE {metric} counter", f"{metric}_total {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
    return json_response({"Timestamp": now, "Samples": [], "Points": [],
                          "Counters": [{"Name": name, "Count": value, "Sum": value, "Labels": {}} for name, value in counters.items()],
                          "Gauges": [{"Name": name, "Value": value, "Labels": {}} for name, value in gauges.items()]})


LOG_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "warning": logging.WARNING, "error": logging.ERROR}


class _LogTap(logging.Handler):
    """Copies log records into one monitor's queue; drops them when the reader falls behind."""

    def __init__(self, level: int, as_json: bool):
        super().__init__(level)
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1000)
        self.as_json = as_json

    def emit(self, record: logging.LogRecord) -> None:
        if self.as_json:
            line = json.dumps({"@level": record.levelname.lower(), "@module": record.name,
                               "@message": record.getMessage(), "@timestamp": record.created})
        else:
            line = f"{datetime.fromtimestamp(record.created).isoformat()} [{record.levelname}] {record.name}: " \
                   f"{record.getMessage()}"
        if not self.queue.full():
            self.queue.put_nowait(line)


@routes.get("/v1/agent/monitor")
async def monitor(request: web.Request) -> web.StreamResponse:
    """Stream the catalog's log lines until the client goes away."""
    query = query_of(request)
    level = query.get("loglevel", "info").lower()
    if level not in LOG_LEVELS:
        raise BadRequest(f"Unknown log level: {level}")
    tap = _LogTap(LOG_LEVELS[level], query.get("logjson") in ("true", "1"))
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    root = logging.getLogger()
    root.addHandler(tap)
    try:
        while True:
            line = await tap.queue.get()
            await response.write(line.encode() + b"\n")
    finally:
        root.removeHandler(tap)


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
