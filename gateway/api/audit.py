"""`/audit`: query, export and verify the audit log (compliance and admin keys; not audited).

A compliance key bound to a team sees only that team's events; app keys get 403.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint
from gateway.api.http import json_response, services
from gateway.audit.chain import hasher_from_settings
from gateway.audit.query import fetch_one, fetch_page, parse_params, signer_from_settings
from gateway.audit.verify import verify_chains
from gateway.context import Principal
from gateway.errors import InvalidRequest, NotFound, excerpt
from gateway.services import Services
from gateway.web.audit_export import READERS, export_answer
from gateway.web.audit_export import team_scope as _scope


@admin_endpoint(roles=READERS)
async def list_events(request: Request, principal: Principal) -> Response:
    svc: Services = services(request)
    signer = signer_from_settings(svc.settings)
    query = parse_params(request.query_params.multi_items(), signer=signer,
                         scope_team=_scope(principal))
    return json_response(await fetch_page(svc.engine, query, signer))


@admin_endpoint(roles=READERS)
async def get_event(request: Request, principal: Principal) -> Response:
    svc = services(request)
    event_id = request.path_params["event_id"]
    event = await fetch_one(svc.engine, event_id, _scope(principal)) \
        if len(event_id) <= 32 else None
    if event is None:
        raise NotFound(f"no audit event with id {excerpt(event_id[:64])}")
    return json_response(event)


@admin_endpoint(roles=READERS)
async def export_events(request: Request, principal: Principal) -> Response:
    return await export_answer(services(request), principal,
                               request.query_params.multi_items())


@admin_endpoint(roles=READERS)
async def verify(request: Request, principal: Principal) -> Response:
    svc = services(request)
    if request.query_params:
        name = next(iter(request.query_params))
        raise InvalidRequest(f"unknown parameter {excerpt(name)}: verify takes none", param=name,
                             code="unknown_parameter")
    result = await verify_chains(svc.engine, hasher_from_settings(svc.settings))
    return json_response(result.as_api())


routes = [
    Route("/audit/events", list_events, methods=["GET"]),
    Route("/audit/events/{event_id}", get_event, methods=["GET"]),
    Route("/audit/export", export_events, methods=["GET"]),
    Route("/audit/verify", verify, methods=["GET"]),
]
