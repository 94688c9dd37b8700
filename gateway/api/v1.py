"""`/v1`: the model endpoints at the HTTP edge, and the model list.

`V1Front` (pure ASGI) is the hot path: a `POST` to a model endpoint becomes a
`RequestContext` for that endpoint's protocol and goes through the model pipeline; this
module only reads the body, frames the answer and renders errors (in the protocol's own
envelope, with the request's headers such as `x-ratelimit-*`). Starlette's router and its
error middleware add nothing there and are skipped; every other request goes on to `app`.
The request-id, tracing and audit-durability middleware wrap this, so both kinds get them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.http import json_response, services
from gateway.core.audit_event import AuditEvent
from gateway.core.request import RequestContext
from gateway.core.stages import Handler
from gateway.errors import Forbidden, GatewayError, ModelNotFound, excerpt
from gateway.protocols.openai import PROTOCOLS
from gateway.web.body import read_asgi_body
from gateway.web.responses import error_response

_BY_PATH = {p.path: p for p in PROTOCOLS.values()}
_JSON_HEADERS = [(b"content-type", b"application/json")]


class AsgiTransport:
    """A stream's connection: headers on the first write; a client that leaves cancels the
    request's task (its stages' `finally` blocks then run)."""

    __slots__ = ("_task", "_watcher", "left", "receive", "send", "started")

    def __init__(self, send: Send, receive: Receive) -> None:
        self.send = send
        self.receive = receive
        self.started = False
        self.left = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self, headers: Mapping[str, str]) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.left = True
                if self._task is not None:
                    self._task.cancel()
                return

    async def finish(self) -> None:
        """End the stream (the audit middleware holds this last message until durable)."""
        if self._watcher is not None:
            self._watcher.cancel()
        if not self.left:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]}


class V1Front:
    def __init__(self, app: ASGIApp, pipeline: Handler) -> None:
        self.app = app
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            protocol = _BY_PATH.get(scope["path"])
            if protocol is not None:
                await self.serve(protocol, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def serve(self, protocol: Any, scope: Scope, receive: Receive, send: Send) -> None:
        transport = AsgiTransport(send, receive)

        async def read_body(max_bytes: int) -> bytes:
            return await read_asgi_body(scope, receive, max_bytes)

        ctx = RequestContext(endpoint=protocol.name, protocol=protocol,
                             event=AuditEvent(scope["state"]["request_id"], protocol.path),
                             headers=_headers(scope), read_body=read_body,
                             transport=transport)
        try:
            reply = await self.pipeline(ctx)
        except GatewayError as exc:
            if transport.started:  # cannot happen: the call stage ends a started stream
                await transport.finish()
                return
            await _send(send, exc.status_code, protocol.error_body(exc),
                        {**ctx.response_headers, **exc.headers})
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if transport.left and task is not None and task.uncancel() == 0:
                return  # the client left mid-stream: its request has ended
            raise
        if reply.body is not None:
            await _send(send, 200, orjson.dumps(reply.body), ctx.response_headers)
        else:
            await transport.finish()


async def _send(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    start: Message = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def _principal(request: Request) -> Any:
    """The caller of a model-list read (not audited): app and admin keys."""
    principal = await services(request).auth.authenticate(request.headers.get("authorization"))
    if principal.role == "compliance":
        raise Forbidden("compliance keys may not call the model endpoints",
                        code="endpoint_not_allowed")
    return principal


async def list_models(request: Request) -> Response:
    """Only the models this key may use. Reads are not audited."""
    svc = services(request)
    try:
        principal = await _principal(request)
    except GatewayError as exc:
        return error_response(exc)
    created = int(svc.config.base_dir.stat().st_mtime) if svc.config.base_dir.exists() else 0
    data = [{"id": name, "object": "model", "created": created, "owned_by": "gateway"}
            for name in svc.router.models() if principal.may_use_model(name)]
    return json_response({"object": "list", "data": data},
                         headers=svc.rooms.headers(principal) or None)


async def get_model(request: Request) -> Response:
    svc = services(request)
    try:
        principal = await _principal(request)
    except GatewayError as exc:
        return error_response(exc)
    name = request.path_params["model"]
    headers = svc.rooms.headers(principal) or None
    if name not in svc.router.slots or not principal.may_use_model(name):
        return error_response(ModelNotFound(f"the model {excerpt(name)} does not exist"),
                              headers)
    return json_response({"id": name, "object": "model", "created": 0, "owned_by": "gateway"},
                         headers=headers)


async def _served_by_front(request: Request) -> Response:  # pragma: no cover
    raise AssertionError("V1Front answers POST to the model endpoints before the router")


# The model endpoints are routes too, so other methods on them get the router's 405.
routes = [
    *(Route(p.path, _served_by_front, methods=["POST"]) for p in PROTOCOLS.values()),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
