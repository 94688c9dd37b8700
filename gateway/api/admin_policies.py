"""`/admin/policies`: the effective policy of a key, and reloading `policies_dir`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint
from gateway.api.http import json_response, services
from gateway.config import ConfigError
from gateway.context import Principal
from gateway.errors import InvalidRequest, NotFound
from gateway.storage.keys import principal_from_row, team_from_row


@admin_endpoint()
async def effective(request: Request, principal: Principal) -> Response:
    key_id = request.query_params.get("key_id")
    if not key_id:
        raise InvalidRequest("missing required parameter: 'key_id'", param="key_id",
                             code="missing_required_parameter")
    svc = services(request)
    row = await svc.keys.get(key_id)
    if row is None:
        raise NotFound(f"no key with id {key_id!r}", param="key_id")
    team = None
    if row["team"] is not None:
        team_row = await svc.teams.get(row["team"])
        team = team_from_row(team_row) if team_row else None
    target = principal_from_row(row, team)
    policy = svc.policies.effective(target)
    name = policy.sources[0] if policy.sources else "(none)"
    return json_response(policy.as_dict(name))


@admin_endpoint(audited=True)
async def reload(request: Request, principal: Principal) -> Response:
    svc = services(request)
    try:
        current = svc.policies.reload()
    except ConfigError as exc:
        raise InvalidRequest("policies not reloaded (the old set stays): "
                             + "; ".join(exc.lines), param="policies_dir",
                             code="invalid_policy") from None
    return json_response({"policies": current.names()})


routes = [
    Route("/admin/policies/effective", effective, methods=["GET"]),
    Route("/admin/policies/reload", reload, methods=["POST"]),
]
