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
from gateway.errors import Forbidden, GatewayError, InvalidRequest
from gateway.pipeline import audit_event
from gateway.pipeline.body import parse_object, read_body
from gateway.pipeline.v1 import error_response
from gateway.storage.outage import unexpected_error

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
                event = audit_event.new_event(request.state.request_id,
                                              f"{request.method} {path}")
            try:
                principal = await svc.auth.authenticate(request.headers.get("authorization"))
                if event is not None:
                    audit_event.set_principal(event, principal)
                if principal.role not in roles:
                    raise Forbidden("this key's role may not use this endpoint",
                                    code="endpoint_not_allowed")
                response = await handler(request, principal)
            except GatewayError as exc:
                response = error_response(exc)
                known = getattr(exc, "principal", None)
                if event is not None and known is not None:
                    audit_event.set_principal(event, known)
                if event is not None:
                    audit_event.finish(event, exc.status_code, exc.code)
                    svc.audit.submit(event)
                return response
            except Exception as error:
                exc = unexpected_error(error, log, "admin endpoint failed")
                if event is not None:
                    audit_event.finish(event, exc.status_code, exc.code)
                    svc.audit.submit(event)
                return error_response(exc)
            if event is not None:
                audit_event.finish(event, response.status_code)
                svc.audit.submit(event)
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
