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
from gateway.errors import Forbidden, GatewayError, InternalError, InvalidRequest
from gateway.protocols.json_body import parse_object
from gateway.web.body import read_body
from gateway.web.responses import error_response

log = logging.getLogger("gateway.admin")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, Principal], Awaitable[Response]]


def admin_endpoint(*, roles: frozenset[str] = frozenset({"admin"}), audited: bool = False
                   ) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Authenticate, check the role, map errors to OpenAI shape; audit when `audited`."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @wraps(handler)
        async def endpoint(request: Request) -> Response:
            svc = services(request)
            event = None
            if audited:
                route = request.scope.get("route")
                path = getattr(route, "path", request.url.path)
                event = AuditEvent(request.state.request_id, f"{request.method} {path}")
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
            except Exception:
                log.exception("admin endpoint failed")
                failed = InternalError("the gateway failed to handle this request")
                if event is not None:
                    event.submit_to(svc.audit, failed.status_code, failed.code)
                return error_response(failed)
            if event is not None:
                event.submit_to(svc.audit, response.status_code)
            return response

        return endpoint

    return wrap


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
