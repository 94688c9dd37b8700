"""`/admin/keys`: create (secret shown once), list, get, update, revoke."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint, dump_fields, parse_model, record_change
from gateway.api.http import json_response, services
from gateway.context import Principal
from gateway.errors import InvalidRequest, NotFound, excerpt
from gateway.keys.schemas import KeyCreate, KeyUpdate, key_change_view, key_view, to_row


async def _check_refs(request: Request, fields: dict) -> None:
    svc = services(request)
    team = fields.get("team")
    if team is not None and await svc.teams.get(team) is None:
        raise InvalidRequest(f"unknown team {excerpt(team)}: create it first", param="team",
                             code="invalid_value")
    models = fields.get("models")
    if models:
        unknown = [m for m in models if m not in svc.router.slots]
        if unknown:
            raise InvalidRequest(f"unknown model {excerpt(unknown[0])}", param="models",
                                 code="invalid_value")


@admin_endpoint(audited=True, action="key.create")
async def create_key(request: Request, principal: Principal) -> Response:
    body = await parse_model(request, KeyCreate)
    fields = body.model_dump()
    await _check_refs(request, fields)
    row, secret = await services(request).keys.create(to_row(fields))
    record_change(request, None, key_change_view(row), target_id=row["id"],
                  target_name=row["name"])
    return json_response({**key_view(row), "key": secret}, status_code=201)


@admin_endpoint()
async def list_keys(request: Request, principal: Principal) -> Response:
    team = request.query_params.get("team")
    rows = await services(request).keys.list(team=team)
    return json_response({"data": [key_view(r) for r in rows]})


async def _get_or_404(request: Request) -> dict:
    key_id = request.path_params["key_id"]
    row = await services(request).keys.get(key_id)
    if row is None:
        raise NotFound(f"no key with id {excerpt(key_id)}", param="key_id")
    return row


@admin_endpoint()
async def get_key(request: Request, principal: Principal) -> Response:
    return json_response(key_view(await _get_or_404(request)))


@admin_endpoint(audited=True, action="key.update", target_param="key_id")
async def update_key(request: Request, principal: Principal) -> Response:
    before = await _get_or_404(request)
    fields = dump_fields(await parse_model(request, KeyUpdate))
    for required in ("name", "role"):
        if required in fields and fields[required] is None:
            raise InvalidRequest(f"{excerpt(required)} cannot be null", param=required,
                                 code="invalid_value")
    await _check_refs(request, fields)
    svc = services(request)
    row = await svc.keys.update(request.path_params["key_id"], to_row(fields))
    svc.auth.invalidate(request.path_params["key_id"])
    assert row is not None
    record_change(request, key_change_view(before), key_change_view(row),
                  target_name=row["name"])
    return json_response(key_view(row))


@admin_endpoint(audited=True, action="key.revoke", target_param="key_id")
async def revoke_key(request: Request, principal: Principal) -> Response:
    """Revoking a revoked key changes nothing: the answer is the key as it is (its
    `revoked_at` the first revocation's), the event's before and after the same."""
    before = await _get_or_404(request)
    svc = services(request)
    row = await svc.keys.revoke(request.path_params["key_id"])
    svc.auth.invalidate(request.path_params["key_id"])
    assert row is not None
    record_change(request, key_change_view(before), key_change_view(row),
                  target_name=row["name"])
    return json_response(key_view(row))


routes = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
    Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
