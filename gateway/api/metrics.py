"""`GET /metrics`: the app's Prometheus registry as text (scrapers need no key)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.http import services


async def metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
