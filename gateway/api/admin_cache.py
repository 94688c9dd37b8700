"""`DELETE /admin/cache?team=NAME | key_id=ID | scope=global`: purge one tenant's cached
answers (every entry under its storage prefix: its namespaces and end users included).

Exactly one of the three. The answer is `{"deleted": N}`; the purge is an admin change
(`cache.purge`, target `team:NAME`, `key:ID` or `global`). With Redis every replica's entries
go; without it, the entries of the replica that answered (each keeps its own).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint, record_change
from gateway.api.http import json_response, services
from gateway.context import Principal
from gateway.errors import invalid_value

_PARAMS = ("team", "key_id", "scope")


@admin_endpoint(audited=True, action="cache.purge", target_type="cache")
async def purge(request: Request, principal: Principal) -> Response:
    params = request.query_params
    given = [name for name in params if name in _PARAMS]
    unknown = [name for name in params if name not in _PARAMS]
    if unknown or len(given) != 1 or len(params.getlist(given[0])) != 1:
        raise invalid_value((unknown or given or ["team"])[0],
                            "give exactly one of team=NAME, key_id=ID or scope=global")
    name = given[0]
    value = params[name]
    if name == "scope" and value != "global":
        raise invalid_value("scope", "'scope' may only be global (else use team or key_id)")
    if not value:
        raise invalid_value(name, f"'{name}' must not be empty")
    owner = "global" if name == "scope" else f"{'team' if name == 'team' else 'key'}:{value}"
    cache = services(request).cache
    deleted = await cache.store.purge(cache.keys.owner_prefix(owner))
    record_change(request, None, {"deleted": deleted}, target_id=owner[:128])
    return json_response({"deleted": deleted})


routes = [Route("/admin/cache", purge, methods=["DELETE"])]
