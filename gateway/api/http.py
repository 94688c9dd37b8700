"""The services handle of route modules (answers: `gateway.web.responses`)."""

from __future__ import annotations

from starlette.requests import Request

from gateway.api.services import Services
from gateway.web.responses import error_response, json_response

__all__ = ["error_response", "json_response", "services"]


def services(request: Request) -> Services:
    return request.app.state.services
