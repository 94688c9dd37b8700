"""`GET /admin/spend?group_by=key|team|model|template|day|hour&since&until`: spend from the
rollups (`hour` groups are `YYYY-MM-DDTHH:00Z`, for a time series over short ranges).

Admin keys see everything; a compliance key bound to a team sees that team only. Optional
filters `team`, `key_id`, `model`, `template`. Times are ISO 8601 with `Z`; rollups are hourly, so
`since` counts from the start of its hour. Reads are not audited.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint
from gateway.api.http import json_response, services
from gateway.context import Principal
from gateway.errors import excerpt, invalid_value
from gateway.limits.spend import GROUP_BY
from gateway.pricing import usd
from gateway.timeutil import parse_iso

_PARAMS = frozenset({"group_by", "since", "until", "team", "key_id", "model", "template"})


def _time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise invalid_value(name, f"{excerpt(name)}: {exc}") from None


@admin_endpoint(roles=frozenset({"admin", "compliance"}))
async def get_spend(request: Request, principal: Principal) -> Response:
    params = request.query_params
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise invalid_value(unknown[0], f"unknown query parameter {excerpt(unknown[0])}; use "
                            + ", ".join(sorted(_PARAMS)))
    for name in _PARAMS:
        if len(params.getlist(name)) > 1:
            raise invalid_value(name, f"{excerpt(name)} may be given once")
    group_by = params.get("group_by", "key")
    if group_by not in GROUP_BY:
        raise invalid_value("group_by", "'group_by' must be one of " + ", ".join(GROUP_BY))
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and since > until:
        raise invalid_value("since", "'since' is after 'until'")
    team = params.get("team")
    if principal.role == "compliance" and principal.team is not None:
        if team is not None and team != principal.team:
            raise invalid_value("team", "a compliance key may read its own team's spend only")
        team = principal.team
    svc = services(request)
    spend = svc.limits.spend
    with contextlib.suppress(Exception):  # the query below reports a database problem
        await spend.flush()  # what this replica summed but has not written yet
    rows = await spend.query(group_by, since=since, until=until, team=team,
                             key_id=params.get("key_id"), model=params.get("model"),
                             template=params.get("template"))
    data = [{"group": r["group"], "requests": r["requests"], "input_tokens": r["input_tokens"],
             "output_tokens": r["output_tokens"], "cost_usd": usd(r["cost_nanos"])}
            for r in rows]
    return json_response({"data": data})


routes = [Route("/admin/spend", get_spend, methods=["GET"])]
