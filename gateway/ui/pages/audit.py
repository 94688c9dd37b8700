"""The audit explorer: filters by name (pickers), a total, one event, export, chain
verification and retention."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.ui.display import change_rows
from gateway.ui.forms import AUDIT_FILTERS
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import harden, refuse, render
from gateway.web.audit_export import export_answer
from gateway.web.context import services

PAGE_SIZE = "50"
# Who made an admin change without a key of their own.
SPECIAL_ACTORS = (("bootstrap", "bootstrap admin key (GATEWAY_ADMIN_KEY)"),
                  ("cli", "the gateway CLI"))


def _iso_input(value: str) -> str:
    """`datetime-local` (`2026-11-26T10:00`) → ISO UTC with Z; other forms pass through."""
    if len(value) == 16 and value[10] == "T":
        return value + ":00Z"
    if len(value) == 19 and value[10] == "T":
        return value + "Z"
    return value


def _audit_filters(request: Request) -> list[tuple[str, str]]:
    out = []
    for name in AUDIT_FILTERS:
        value = request.query_params.get(name, "").strip()
        if value:
            out.append((name, _iso_input(value) if name in ("since", "until") else value))
    return out


def _shown_filters(request: Request) -> list[tuple[str, str]]:
    """The filters as the form holds them (times as typed), for links back here."""
    return [(k, request.query_params.get(k, "").strip()) for k in AUDIT_FILTERS
            if request.query_params.get(k, "").strip()]


async def audit(request: Request) -> Response:
    filters = _audit_filters(request)
    query = list(filters)
    cursor = request.query_params.get("cursor")
    if cursor:
        query.append(("cursor", cursor))
    if not any(k == "limit" for k, _ in query):
        query.append(("limit", PAGE_SIZE))
    error, rows, next_cursor, total = None, [], None, None
    try:
        page_ = await api(request, "GET", "/audit/events", query=query)
        rows, next_cursor = page_["data"], page_.get("next_cursor")
        total = await api(request, "GET", "/audit/count",
                          query=[(k, v) for k, v in filters if k != "limit"])
    except ApiError as exc:
        if exc.status not in (400, 403):
            raise
        error = exc.message
    facets = await api(request, "GET", "/audit/facets")
    values = {k: request.query_params.get(k, "") for k in AUDIT_FILTERS}
    shown = _shown_filters(request)
    here = urlencode([*shown, ("cursor", cursor)] if cursor else shown)
    return render(request, "audit.html", status=400 if error else 200, rows=rows,
                  error=error, values=values, facets=facets, total=total,
                  key_names={k["id"]: k for k in facets["keys"]},
                  special_actors=SPECIAL_ACTORS, filter_qs=urlencode(filters),
                  back_qs=urlencode([("back", here)]) if here else "",
                  any_filter=bool(shown), page_size=PAGE_SIZE,
                  next_qs=urlencode([*shown, ("cursor", next_cursor)]) if next_cursor else None)


def _back_link(request: Request) -> str:
    """The explorer with the filters the event was opened from (only ours: a query string
    whose names are audit filters, so the link cannot lead anywhere else)."""
    back = request.query_params.get("back", "")
    kept = [(k, v) for k, v in parse_qsl(back) if k in AUDIT_FILTERS or k == "cursor"]
    return "/ui/audit" + (f"?{urlencode(kept)}" if kept else "")


async def audit_event_page(request: Request) -> Response:
    event = await api(request, "GET", f"/audit/events/{request.path_params['event_id']}")
    bodies = {}
    for name in ("request_body", "response_body"):
        value = event.get(name)
        if value is None or isinstance(value, str):
            bodies[name] = value
        else:
            bodies[name] = json.dumps(value, indent=2, ensure_ascii=False)
    return render(request, "audit_event.html", event=event, bodies=bodies,
                  change=change_rows(event.get("before"), event.get("after")),
                  back=_back_link(request))


async def audit_export(request: Request) -> Response:
    """The API's export answer, for the key the door re-authenticated on this request (its
    current role, checked against the same readers, and its team scope)."""
    fmt = request.query_params.get("format", "jsonl")
    try:
        answer = await export_answer(services(request), request.scope["ui_principal"],
                                     [("format", fmt), *_audit_filters(request)])
    except GatewayError as exc:
        return refuse(request, exc.status_code, exc.message)
    return harden(answer)


async def audit_verify(request: Request) -> Response:
    result = await api(request, "GET", "/audit/verify")
    return render(request, "verify.html", result=result)


async def audit_retention(request: Request) -> Response:
    report: dict[str, Any] = await api(request, "GET", "/audit/retention")
    return render(request, "retention.html", report=report)
