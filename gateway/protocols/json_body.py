"""A request body as a JSON object, or the 400 that says why not."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest


def parse_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("the request body is empty: send a JSON object", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON ({exc.msg})",
                             code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    return body
