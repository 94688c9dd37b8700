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
from gateway.audit.query import (
    COUNT_CAP,
    AuditQuery,
    cache_savings,
    count_events,
    fetch_one,
    fetch_page,
    parse_params,
    signer_from_settings,
)
from gateway.audit.retention import retention_report
from gateway.audit.verify import verify_chains
from gateway.context import Principal
from gateway.core.audit_event import ADMIN_ACTIONS, TARGET_TYPES
from gateway.errors import Forbidden, InvalidRequest, NotFound, excerpt
from gateway.policies.model import PII_KINDS
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


@admin_endpoint(roles=READERS)
async def count(request: Request, principal: Principal) -> Response:
    """`{"count", "capped"}`: how many events match the filters (the explorer's total);
    counting stops past 100,000 (`capped: true`)."""
    svc: Services = services(request)
    query = _filters_only(request, principal, "a count takes")
    n = await count_events(svc.engine, query)
    return json_response({"count": min(n, COUNT_CAP), "capped": n > COUNT_CAP})


@admin_endpoint(roles=READERS)
async def cache_savings_of(request: Request, principal: Principal) -> Response:
    """`{"hits", "saved_cost_usd"}`: cache hits among the events the filters match, and what
    their answers cost when they were first paid for (the spend page's savings)."""
    svc: Services = services(request)
    query = _filters_only(request, principal, "savings take")
    return json_response(await cache_savings(svc.engine, query))


def _filters_only(request: Request, principal: Principal, what: str) -> AuditQuery:
    """The query of a request that takes the filters and no page (`limit`, `cursor`)."""
    items = request.query_params.multi_items()
    for name, _ in items:
        if name in ("limit", "cursor"):
            raise InvalidRequest(f"{excerpt(name)}: {what} the filters only",
                                 param=name, code="unknown_parameter")
    return parse_params(items, signer=signer_from_settings(services(request).settings),
                        scope_team=_scope(principal), max_limit=None, default_limit=None)


# Statuses a person filters by; any other is still a valid `status_code` filter.
COMMON_STATUSES = (200, 201, 204, 400, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504)


@admin_endpoint(roles=READERS)
async def facets(request: Request, principal: Principal) -> Response:
    """What the filters can be, by name: the keys (id, name, team, revoked) and teams this
    key may see, the configured models, templates, common statuses, PII kinds, admin
    actions and target types (the explorer's pickers)."""
    svc: Services = services(request)
    scope = _scope(principal)
    keys = await svc.keys.list(team=scope)
    teams = [scope] if scope is not None else [t["name"] for t in await svc.teams.list()]
    return json_response({
        "keys": [{"id": k["id"], "name": k["name"], "team": k["team"],
                  "revoked": k["revoked_at"] is not None} for k in keys],
        "teams": teams, "models": sorted(svc.router.slots),
        "templates": svc.templates.names(), "statuses": list(COMMON_STATUSES),
        "pii_kinds": list(PII_KINDS), "actions": list(ADMIN_ACTIONS),
        "target_types": list(TARGET_TYPES)})


@admin_endpoint(roles=READERS)
async def retention(request: Request, principal: Principal) -> Response:
    """The retention period, the log's size and oldest event, what the next purge removes
    and the last purge. Gateway-wide: not for a compliance key bound to one team."""
    if _scope(principal) is not None:
        raise Forbidden("retention covers every team's events: a key bound to a team may "
                        "not read it", code="endpoint_not_allowed")
    svc: Services = services(request)
    return json_response(await retention_report(svc.engine, svc.config.audit.retention_days))


routes = [
    Route("/audit/count", count, methods=["GET"]),
    Route("/audit/cache-savings", cache_savings_of, methods=["GET"]),
    Route("/audit/facets", facets, methods=["GET"]),
    Route("/audit/retention", retention, methods=["GET"]),
    Route("/audit/events", list_events, methods=["GET"]),
    Route("/audit/events/{event_id}", get_event, methods=["GET"]),
    Route("/audit/export", export_events, methods=["GET"]),
    Route("/audit/verify", verify, methods=["GET"]),
]
