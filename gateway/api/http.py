"""Small helpers shared by route modules: JSON responses and the services handle."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.services import Services


def services(request: Request) -> Services:
    return request.app.state.services


def json_response(payload: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")
