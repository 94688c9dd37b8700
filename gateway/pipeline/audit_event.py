"""The audit event of one request, assembled as it moves and handed to the writer once."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from gateway.context import Principal
from gateway.storage.ids import time_ordered_id
from gateway.timeutil import utcnow


def new_event(request_id: str, endpoint: str) -> dict[str, Any]:
    # One clock read for both, so ordering by id is ordering by received_at (to the ms).
    received = datetime.now(UTC)
    return {
        "id": time_ordered_id(int(received.timestamp() * 1000)),
        "request_id": request_id,
        "received_at": received.replace(tzinfo=None),
        "endpoint": endpoint,
        "attempts": 0,
        "fallback_used": False,
        "stream": False,
        "cancelled": False,
        "partial": False,
        "cost_estimated": False,
        "_t0": time.perf_counter(),
    }


def set_principal(event: dict[str, Any], principal: Principal) -> None:
    event["key_id"] = principal.key_id
    event["key_name"] = principal.key_name
    event["team"] = principal.team


def finish(event: dict[str, Any], status_code: int, error_code: str | None = None) -> None:
    event["status_code"] = status_code
    event["error_code"] = error_code
    event["completed_at"] = utcnow()
    event["latency_ms"] = round((time.perf_counter() - event.pop("_t0")) * 1000, 3)
