"""The optional ACL: one management token guards every /v1/ request (`--acl-token`).

A request carries its token as `X-Consul-Token`, `Authorization: Bearer`, or
`?token=`; without one, the agent's *default* token stands in (set with
PUT /v1/agent/token/default, as in Consul). Anything else is a 403.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler


@dataclass
class AccessPolicy:
    management_token: str = ""
    default_token: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.management_token)

    def allows(self, given: str) -> bool:
        if not self.enabled:
            return True
        token = given or self.default_token
        return hmac.compare_digest(token.encode(), self.management_token.encode())


ACCESS_KEY = web.AppKey("access", AccessPolicy)


def request_token(request: web.Request) -> str:
    return (request.headers.get("X-Consul-Token") or request.query.get("token")
            or request.headers.get("Authorization", "").removeprefix("Bearer ").strip())


@web.middleware
async def enforce(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/") and not request.app[ACCESS_KEY].allows(request_token(request)):
        return web.Response(status=403, text="Permission denied")
    return await handler(request)
