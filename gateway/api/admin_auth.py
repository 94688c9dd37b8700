"""Admin endpoints: role check, body parsing, one audit event per change (reads: none)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.http import services
from gateway.context import Principal
from gateway.core.audit_event import AuditEvent
from gateway.errors import Forbidden, GatewayError, InvalidRequest
from gateway.protocols.json_body import parse_object
from gateway.storage.outage import unexpected_error
from gateway.web.body import read_body
from gateway.web.responses import error_response

log = logging.getLogger("gateway.admin")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, Principal], Awaitable[Response]]


def admin_endpoint(*, roles: frozenset[str] = frozenset({"admin"}), audited: bool = False,
                   action: str | None = None, target_type: str | None = None,
                   target_param: str | None = None
                   ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Authenticate, check the role, map errors to OpenAI shape; audit when `audited`.

    An `action` (`key.update`, …) makes the event an admin change on a `target_type` whose
    id is the path parameter `target_param`; the handler adds the values before and after
    with `record_change`. A refused change keeps its action and target, without values."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def endpoint(request: Request) -> Response:
            svc = services(request)
            event = None
            if audited:
                route = request.scope.get("route")
                path = getattr(route, "path", request.url.path)
                event = AuditEvent(request.state.request_id, f"{request.method} {path}")
                if action is not None:
                    event.change(action, target_type or action.split(".")[0],
                                 _target_id(request, target_param))
                request.state.audit_event = event
            try:
                principal = await svc.auth.authenticate(request.headers.get("authorization"))
                if event is not None:
                    event.set_principal(principal)
                if principal.role not in roles:
                    raise Forbidden("this key's role may not use this endpoint",
                                    code="endpoint_not_allowed")
                response = await handler(request, principal)
            except GatewayError as exc:
                response = error_response(exc)
                known = getattr(exc, "principal", None)
                if event is not None and known is not None:
                    event.set_principal(known)
                if event is not None:
                    event.submit_to(svc.audit, exc.status_code, exc.code)
                return response
            except Exception as error:
                failed = unexpected_error(error, log, "admin endpoint failed")
                if event is not None:
                    event.submit_to(svc.audit, failed.status_code, failed.code)
                return error_response(failed)
            if event is not None:
                event.submit_to(svc.audit, response.status_code)
            return response

        return endpoint

    return wrap


def _target_id(request: Request, param: str | None) -> str | None:
    value = request.path_params.get(param) if param else None
    return value if isinstance(value, str) else None


def record_change(request: Request, before: Any, after: Any, *, target_id: str | None = None,
                  target_name: str | None = None, action: str | None = None) -> None:
    """The values before and after the change this request made (secrets only as
    fingerprints); `action` overrides the endpoint's where one route does several things."""
    event: AuditEvent | None = getattr(request.state, "audit_event", None)
    if event is None:
        return
    if action is not None:
        event.fields["action"] = action
    event.changed(before, after, target_id=target_id, target_name=target_name)


async def parse_model(request: Request, model: type[M]) -> M:
    svc = services(request)
    body = parse_object(await read_body(request, svc.config.server.max_body_bytes))
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        reason = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidRequest(f"{param}: {reason}" if param else reason, param=param,
                             code="invalid_value") from None


def dump_fields(model: BaseModel) -> dict[str, Any]:
    """Only the fields the client actually sent (so PATCH can clear with an explicit null)."""
    return {name: getattr(model, name) for name in model.model_fields_set}
