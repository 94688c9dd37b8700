"""Pure-ASGI middleware: the request id on every response, and OpenAI-shaped 404/405/500."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ids import random_hex, time_ordered_id

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            try:
                candidate = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if _CLIENT_ID.match(candidate):
                return candidate
            break
    return new_request_id()


def new_request_id() -> str:
    """32 hex characters, time-ordered (milliseconds first, then 80 random bits): the audit
    log's `request_id` index then grows at its end, as the event ids do, instead of taking
    each insert at a random page (its cost grew with the table)."""
    return time_ordered_id() + random_hex(4)


class RequestIdMiddleware:
    """Keep a well-formed client `x-request-id`, else make one; echo it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
