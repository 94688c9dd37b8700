"""Pure ASGI: one SERVER span around each `/v1` request (streams included)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.telemetry.tracing import (
    GATEWAY_REQUEST_ID,
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    TRACED_PATHS,
    URL_PATH,
    Tracing,
)


class TracingMiddleware:
    """Pure ASGI: one SERVER span around each `/v1` request (streams included)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        name = f"{method} {path}" if path in TRACED_PATHS else method
        attributes: dict[str, Any] = {HTTP_REQUEST_METHOD: method, URL_PATH: path}
        request_id = (scope.get("state") or {}).get("request_id")
        if request_id:
            attributes[GATEWAY_REQUEST_ID] = request_id
        span = self.tracing.tracer.start_span(name, kind=SpanKind.SERVER, attributes=attributes)

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            await self.app(scope, receive, send_traced)
