"""`/v1`: the OpenAI-compatible endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.http import json_response, services
from gateway.errors import GatewayError, ModelNotFound, excerpt
from gateway.pipeline.v1 import PATHS, V1Pipeline, error_response

_ENDPOINTS = {path: endpoint for endpoint, path in PATHS.items()}


class V1Front:
    """Pure ASGI: `POST` to the three model endpoints goes straight to the pipeline.

    These are the hot path. Starlette's router and its error and exception middleware add
    nothing there (the pipeline turns every error into its OpenAI-shaped answer and audit
    event), so they are skipped; every other request goes on to `app`. The request-id and
    audit-durability middleware wrap this, so both kinds of request get them.
    """

    def __init__(self, app: ASGIApp, pipeline: V1Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = _ENDPOINTS.get(scope["path"])
            if endpoint is not None:
                response = await self.pipeline.handle(endpoint, Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def chat_completions(request: Request) -> Response:
    return await services(request).v1.handle("chat", request)


async def completions(request: Request) -> Response:
    return await services(request).v1.handle("completions", request)


async def embeddings(request: Request) -> Response:
    return await services(request).v1.handle("embeddings", request)


async def list_models(request: Request) -> Response:
    """Only the models this key may use. Reads are not audited."""
    svc = services(request)
    try:
        principal = await svc.v1.authenticate(request)
    except GatewayError as exc:
        return error_response(exc)
    created = int(svc.config.base_dir.stat().st_mtime) if svc.config.base_dir.exists() else 0
    data = [{"id": name, "object": "model", "created": created, "owned_by": "gateway"}
            for name in svc.router.models() if principal.may_use_model(name)]
    return json_response({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    svc = services(request)
    try:
        principal = await svc.v1.authenticate(request)
    except GatewayError as exc:
        return error_response(exc)
    name = request.path_params["model"]
    if name not in svc.router.slots or not principal.may_use_model(name):
        return error_response(ModelNotFound(f"the model {excerpt(name)} does not exist"))
    return json_response({"id": name, "object": "model", "created": 0, "owned_by": "gateway"})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
