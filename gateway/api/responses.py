"""`GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.

Only the key that created a response reads, deletes or lists it: another key's id, an
unknown one and an expired or deleted one are the same 404 `not_found`, never 403 (no
oracle). App and admin keys may call them (compliance keys: 403, as on every model
endpoint). Each request is one audit event, like every `/v1` request: `endpoint` is the
method and route (`GET /v1/responses/{response_id}`), the response id is its request body
(unless the key's policy keeps no bodies), and its status what the client got.

`input_items` lists the request's own items (not a template's, not those replayed from a
previous response), with `limit` (1-100, default 20), `order` (`desc` by default, as OpenAI
does, or `asc`) and `after` (an item id).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.http import error_response, json_response, services
from gateway.context import Principal
from gateway.core.audit_event import AuditEvent
from gateway.errors import (
    Forbidden,
    GatewayError,
    InternalError,
    NotFound,
    excerpt,
    invalid_value,
)
from gateway.services import Services

ROUTE = "/v1/responses/{response_id}"
ITEMS_ROUTE = "/v1/responses/{response_id}/input_items"


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"no response with id {excerpt(response_id)} was found")


async def _caller(svc: Services, request: Request, event: AuditEvent) -> Principal:
    principal = await svc.auth.authenticate(request.headers.get("authorization"))
    event.set_principal(principal)
    if principal.role == "compliance":
        raise Forbidden("compliance keys may not call the model endpoints",
                        code="endpoint_not_allowed")
    return principal


async def _serve(request: Request, route: str, answer: Any) -> Response:
    svc = services(request)
    response_id = request.path_params["response_id"]
    event = AuditEvent(request.state.request_id, f"{request.method} {route}")
    headers: dict[str, str] | None = None
    try:
        principal = await _caller(svc, request, event)
        headers = svc.rooms.headers(principal) or None
        rules = getattr(svc.policies.effective(principal), "audit", None)
        if (getattr(rules, "bodies", None) or svc.config.audit.bodies) != "none":
            event.fields["request_body"] = {"response_id": response_id[:128]}
        if svc.responses is None:
            raise _not_found(response_id)
        payload = await answer(svc, principal, response_id, request)
    except GatewayError as exc:
        known = getattr(exc, "principal", None)
        if known is not None:
            event.set_principal(known)
        event.submit_to(svc.audit, exc.status_code, exc.code)
        return error_response(exc, headers)
    except Exception:
        failed = InternalError("the gateway failed to handle this request")
        event.submit_to(svc.audit, failed.status_code, failed.code)
        return error_response(failed, headers)
    event.submit_to(svc.audit, 200)
    return json_response(payload, headers=headers)


async def _get(svc: Services, principal: Principal, response_id: str, request: Request
               ) -> dict[str, Any]:
    assert svc.responses is not None
    found = await svc.responses.find(response_id, principal.key_id)
    if found is None:
        raise _not_found(response_id)
    return found.response


async def _delete(svc: Services, principal: Principal, response_id: str, request: Request
                  ) -> dict[str, Any]:
    assert svc.responses is not None
    if not await svc.responses.delete(response_id, principal.key_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


async def _input_items(svc: Services, principal: Principal, response_id: str,
                       request: Request) -> dict[str, Any]:
    assert svc.responses is not None
    query = request.query_params
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise invalid_value("limit", "'limit' must be an integer between 1 and 100")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid_value("order", "'order' must be asc or desc")
    found = await svc.responses.find(response_id, principal.key_id)
    if found is None:
        raise _not_found(response_id)
    items = [i for i in found.input_items if isinstance(i, dict)]
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [i.get("id") for i in items]
        if after not in ids:
            raise invalid_value("after", f"no input item {excerpt(after)} in this response")
        items = items[ids.index(after) + 1:]
    page = items[:int(limit_text)]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page)}


async def get_response(request: Request) -> Response:
    return await _serve(request, ROUTE, _get)


async def delete_response(request: Request) -> Response:
    return await _serve(request, ROUTE, _delete)


async def list_input_items(request: Request) -> Response:
    return await _serve(request, ITEMS_ROUTE, _input_items)


routes = [
    Route(ROUTE, get_response, methods=["GET"]),
    Route(ROUTE, delete_response, methods=["DELETE"]),
    Route(ITEMS_ROUTE, list_input_items, methods=["GET"]),
]
