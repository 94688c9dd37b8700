"""`/admin/teams`: the same limits as keys, at team level; teams are addressed by name."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint, dump_fields, parse_model, record_change
from gateway.api.http import json_response, services
from gateway.context import Principal
from gateway.errors import Conflict, InvalidRequest, NotFound, excerpt
from gateway.keys.schemas import TeamCreate, TeamUpdate, team_view, to_row
from gateway.storage.keys import DuplicateName


def _check_models(request: Request, fields: dict) -> None:
    models = fields.get("models")
    if models:
        unknown = [m for m in models if m not in services(request).router.slots]
        if unknown:
            raise InvalidRequest(f"unknown model {excerpt(unknown[0])}", param="models",
                                 code="invalid_value")


@admin_endpoint(audited=True, action="team.create")
async def create_team(request: Request, principal: Principal) -> Response:
    fields = (await parse_model(request, TeamCreate)).model_dump()
    _check_models(request, fields)
    try:
        row = await services(request).teams.create(to_row(fields))
    except DuplicateName:
        raise Conflict(f"a team named {excerpt(fields['name'])} exists already", param="name",
                       code="team_exists") from None
    record_change(request, None, team_view(row), target_id=row["name"], target_name=row["name"])
    return json_response(team_view(row), status_code=201)


@admin_endpoint()
async def list_teams(request: Request, principal: Principal) -> Response:
    rows = await services(request).teams.list()
    return json_response({"data": [team_view(r) for r in rows]})


@admin_endpoint()
async def get_team(request: Request, principal: Principal) -> Response:
    name = request.path_params["name"]
    row = await services(request).teams.get(name)
    if row is None:
        raise NotFound(f"no team named {excerpt(name)}", param="name")
    return json_response(team_view(row))


@admin_endpoint(audited=True, action="team.update", target_param="name")
async def update_team(request: Request, principal: Principal) -> Response:
    name = request.path_params["name"]
    svc = services(request)
    before = await svc.teams.get(name)
    if before is None:
        raise NotFound(f"no team named {excerpt(name)}", param="name")
    fields = dump_fields(await parse_model(request, TeamUpdate))
    _check_models(request, fields)
    row = await svc.teams.update(name, to_row(fields))
    svc.auth.invalidate_team(name)
    assert row is not None
    record_change(request, team_view(before), team_view(row), target_name=name)
    return json_response(team_view(row))


routes = [
    Route("/admin/teams", create_team, methods=["POST"]),
    Route("/admin/teams", list_teams, methods=["GET"]),
    Route("/admin/teams/{name}", get_team, methods=["GET"]),
    Route("/admin/teams/{name}", update_team, methods=["PATCH"]),
]
