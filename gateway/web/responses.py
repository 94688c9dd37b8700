"""Answers as Starlette responses: JSON, and errors in the OpenAI envelope."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gateway.errors import GatewayError

JSON = "application/json"


def json_response(payload: Any, status_code: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status_code, media_type=JSON,
                    headers=headers)


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    merged = {**(headers or {}), **exc.headers} if headers or exc.headers else None
    return Response(exc.to_json(), status_code=exc.status_code, media_type=JSON,
                    headers=merged)
