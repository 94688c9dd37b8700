"""The audit explorer: filters, one event, export and chain verification."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.ui.forms import AUDIT_FILTERS
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import harden, refuse, render
from gateway.web.audit_export import export_answer
from gateway.web.context import services


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


async def audit(request: Request) -> Response:
    filters = _audit_filters(request)
    query = list(filters)
    cursor = request.query_params.get("cursor")
    if cursor:
        query.append(("cursor", cursor))
    if not any(k == "limit" for k, _ in query):
        query.append(("limit", "50"))
    error, rows, next_cursor = None, [], None
    try:
        page_ = await api(request, "GET", "/audit/events", query=query)
        rows, next_cursor = page_["data"], page_.get("next_cursor")
    except ApiError as exc:
        if exc.status != 400:
            raise
        error = exc.message
    values = {k: request.query_params.get(k, "") for k in AUDIT_FILTERS}
    qs = urlencode(filters)
    return render(request, "audit.html", status=400 if error else 200, rows=rows,
                  error=error, values=values, filter_qs=qs,
                  next_qs=urlencode([*filters, ("cursor", next_cursor)]) if next_cursor else None)


async def audit_event_page(request: Request) -> Response:
    event = await api(request, "GET", f"/audit/events/{request.path_params['event_id']}")
    bodies = {}
    for name in ("request_body", "response_body"):
        value = event.get(name)
        if value is None or isinstance(value, str):
            bodies[name] = value
        else:
            bodies[name] = json.dumps(value, indent=2, ensure_ascii=False)
    return render(request, "audit_event.html", event=event, bodies=bodies)


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
