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
import re
from collections.abc import Mapping
from datetime import UTC, datetime
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
from gateway.protocols.anthropic import COUNT_TOKENS, MESSAGES
from gateway.protocols.openai import PROTOCOLS
from gateway.web.body import read_asgi_body
from gateway.web.responses import error_response

# A client's session (Claude Code sends it on every request): the audit event's `session_id`,
# kept when it looks like an id (as `x-request-id`), else left out.
SESSION_HEADER = "x-claude-code-session-id"
_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Routes served by a chain of their own (`V1Front(pipelines=...)`), by path.
OWN_CHAIN = {COUNT_TOKENS.path: COUNT_TOKENS}
_BY_PATH = {**{p.path: p for p in PROTOCOLS.values()}, **OWN_CHAIN}
_JSON_HEADERS = [(b"content-type", b"application/json")]


class AsgiTransport:
    """A stream's connection: headers on the first write; a client that leaves cancels the
    request's task (its stages' `finally` blocks then run)."""

    __slots__ = ("_held", "_task", "_watcher", "left", "receive", "send", "started")

    def __init__(self, send: Send, receive: Receive) -> None:
        self.send = send
        self.receive = receive
        self.started = False
        self.left = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._held: list[bytes] | None = None

    async def start(self, headers: Mapping[str, str]) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
            return
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    def hold(self) -> None:
        self._held = []

    async def flush(self) -> None:
        held, self._held = self._held, None
        if held and not self.left:
            await self.send({"type": "http.response.body", "body": b"".join(held),
                             "more_body": True})

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
    def __init__(self, app: ASGIApp, pipeline: Handler,
                 pipelines: Mapping[str, Handler] | None = None) -> None:
        self.app = app
        self.pipeline = pipeline
        self.pipelines = dict(pipelines or {})  # path -> its own chain (`OWN_CHAIN`)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            protocol = _BY_PATH.get(scope["path"])
            if protocol is not None:
                await self.serve(protocol, scope, receive, send,
                                 self.pipelines.get(scope["path"], self.pipeline))
                return
        await self.app(scope, receive, send)

    async def serve(self, protocol: Any, scope: Scope, receive: Receive, send: Send,
                    pipeline: Handler) -> None:
        transport = AsgiTransport(send, receive)

        async def read_body(max_bytes: int) -> bytes:
            return await read_asgi_body(scope, receive, max_bytes)

        ctx = RequestContext(endpoint=protocol.name, protocol=protocol,
                             event=AuditEvent(scope["state"]["request_id"], protocol.path),
                             headers=_headers(scope), read_body=read_body,
                             transport=transport)
        session = ctx.headers.get(SESSION_HEADER)
        if session is not None and _SESSION_ID.fullmatch(session):
            ctx.event.fields["session_id"] = session
        try:
            reply = await pipeline(ctx)
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


def _anthropic(request: Request) -> bool:
    """A model-list read from an Anthropic client: answered in Anthropic's shape."""
    return "anthropic-version" in request.headers


def _error(request: Request, exc: GatewayError, headers: dict[str, str] | None = None
           ) -> Response:
    if _anthropic(request):
        return Response(MESSAGES.error_body(exc), status_code=exc.status_code,
                        media_type="application/json", headers={**(headers or {}),
                                                                **exc.headers} or None)
    return error_response(exc, headers)


def _anthropic_model(name: str, created: int) -> dict[str, Any]:
    when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": name, "display_name": name, "created_at": when,
            "lifecycle": "active"}


async def _principal(request: Request) -> Any:
    """The caller of a model-list read (not audited): app and admin keys."""
    authorization = MESSAGES.authorization(request.headers) if _anthropic(request) \
        else request.headers.get("authorization")
    principal = await services(request).auth.authenticate(authorization)
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
        return _error(request, exc)
    created = int(svc.config.base_dir.stat().st_mtime) if svc.config.base_dir.exists() else 0
    names = [name for name in svc.router.models() if principal.may_use_model(name)]
    headers = svc.rooms.headers(principal) or None
    if _anthropic(request):
        data = [_anthropic_model(name, created) for name in names]
        return json_response({"data": data, "has_more": False,
                              "first_id": names[0] if names else None,
                              "last_id": names[-1] if names else None}, headers=headers)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "gateway"}
            for name in names]
    return json_response({"object": "list", "data": data}, headers=headers)


async def get_model(request: Request) -> Response:
    svc = services(request)
    try:
        principal = await _principal(request)
    except GatewayError as exc:
        return _error(request, exc)
    name = request.path_params["model"]
    headers = svc.rooms.headers(principal) or None
    if name not in svc.router.slots or not principal.may_use_model(name):
        return _error(request, ModelNotFound(f"the model {excerpt(name)} does not exist"),
                      headers)
    if _anthropic(request):
        return json_response(_anthropic_model(name, 0), headers=headers)
    return json_response({"id": name, "object": "model", "created": 0, "owned_by": "gateway"},
                         headers=headers)


async def _served_by_front(request: Request) -> Response:  # pragma: no cover
    raise AssertionError("V1Front answers POST to the model endpoints before the router")


# The model endpoints are routes too, so other methods on them get the router's 405.
routes = [
    *(Route(p.path, _served_by_front, methods=["POST"]) for p in PROTOCOLS.values()),
    *(Route(path, _served_by_front, methods=["POST"]) for path in OWN_CHAIN),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
