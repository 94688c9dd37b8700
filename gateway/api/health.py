"""`/healthz` (process up) and `/readyz` (database reachable, config loaded)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.http import json_response, services
from gateway.storage.engine import ping


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {"config": "ok"}
    try:
        async with asyncio.timeout(2):
            await ping(svc.engine)
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the reason is the class name only
        checks["database"] = f"unreachable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    # Redis is reported, never a reason to be unready: without it every replica falls back
    # as `limits.on_redis_error` says (local share, open, or 429 from the replica itself).
    limiter = svc.limits.status()
    if "redis" in limiter:
        state = limiter["redis"]
        if state == "recovering":  # back, and the local share still applies for 5 s
            state = "recovering (the local share still applies for a few seconds)"
        elif state != "ok":
            state = f"unreachable (limits.on_redis_error: {limiter['on_redis_error']})"
        checks["redis"] = state
    return json_response({"status": "ready" if ready else "not_ready", "checks": checks,
                          "limiter": limiter}, status_code=200 if ready else 503)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
