"""The `/v1` request path: one function per request, one audit event per request.

auth -> body -> checks -> model access -> route + call (stream or not) -> usage + cost -> audit
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import tokens
from gateway.config import LoadedConfig
from gateway.context import Principal
from gateway.errors import Forbidden, GatewayError, InternalError, InvalidRequest, ModelNotFound
from gateway.pipeline import audit_event, validate
from gateway.pipeline.auth import Authenticator
from gateway.pipeline.body import parse_object, read_body
from gateway.pricing import PriceBook, cost_nanos
from gateway.providers.base import Endpoint, ProviderError
from gateway.routing.router import Attempts, Router
from gateway.storage.audit_writer import AuditWriter
from gateway.timeutil import utcnow

log = logging.getLogger("gateway.v1")

_VALIDATORS = {"chat": validate.validate_chat, "completions": validate.validate_completion,
               "embeddings": validate.validate_embeddings}
_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
          "embeddings": "/v1/embeddings"}
# Fields that are ours, not the provider's.
_GATEWAY_FIELDS = ("template", "stream_options")
_JSON = "application/json"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_DONE = b"data: [DONE]\n\n"


def error_response(exc: GatewayError) -> Response:
    return Response(exc.to_json(), status_code=exc.status_code, media_type=_JSON,
                    headers=exc.headers or None)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class V1Pipeline:
    def __init__(self, config: LoadedConfig, auth: Authenticator, router: Router,
                 prices: PriceBook, audit: AuditWriter) -> None:
        self.config = config
        self.server = config.server
        self.auth = auth
        self.router = router
        self.prices = prices
        self.audit = audit

    async def authenticate(self, request: Request) -> Principal:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        if principal.role == "compliance":
            raise Forbidden("compliance keys may not call the model endpoints",
                            code="endpoint_not_allowed")
        return principal

    async def handle(self, endpoint: Endpoint, request: Request) -> Response:
        event = audit_event.new_event(request.state.request_id, _PATHS[endpoint])
        try:
            principal = await self.authenticate(request)
            audit_event.set_principal(event, principal)
            validate.refuse_routing_headers(request.headers)
            body = parse_object(await read_body(request, self.server.max_body_bytes))
            validate.scan_body(body, self.server.max_json_depth)
            _VALIDATORS[endpoint](body, self.server)
            if "template" in body:
                raise InvalidRequest(f"unknown template {body['template'].get('name')!r}",
                                     param="template.name", code="template_not_found")
            model = body["model"]
            event["model_requested"] = model
            event["user"] = body.get("user")
            if model not in self.router.slots:
                raise ModelNotFound(f"the model {model!r} does not exist", param="model")
            if not principal.may_use_model(model):
                raise Forbidden(f"this key may not use the model {model!r}", param="model",
                                code="model_not_allowed")
            if body.get("stream"):
                return await self._stream(endpoint, body, model, event)
            response = await self._call(endpoint, body, model, event)
        except GatewayError as exc:
            known = getattr(exc, "principal", None)
            if known is not None:
                audit_event.set_principal(event, known)
            audit_event.finish(event, exc.status_code, exc.code)
            self.audit.submit(event)
            return error_response(exc)
        except Exception:
            log.exception("unexpected error", extra={"request_id": event["request_id"]})
            exc = InternalError("the gateway failed to handle this request")
            audit_event.finish(event, exc.status_code, exc.code)
            self.audit.submit(event)
            return error_response(exc)
        audit_event.finish(event, 200)
        self.audit.submit(event)
        return response

    @staticmethod
    def _upstream_body(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in _GATEWAY_FIELDS}

    def _usage(self, event: dict[str, Any], usage: Any, source: str = "provider") -> None:
        if not isinstance(usage, dict):
            return
        inp = usage.get("prompt_tokens") or 0
        out = usage.get("completion_tokens") or 0
        event["input_tokens"] = inp
        event["output_tokens"] = out
        event["total_tokens"] = usage.get("total_tokens") or inp + out
        event["usage_source"] = source
        target = event.get("_target")
        if target is not None:
            price = self.prices.price(target.model, target.litellm_model)
            event["cost_nanos"] = None if price is None else cost_nanos(inp, out, price)

    def _served(self, event: dict[str, Any], attempts: Attempts) -> None:
        event["attempts"] = attempts.count
        event["fallback_used"] = attempts.fallback_used
        if attempts.target is not None:
            event["model_served"] = attempts.target.model
            event["deployment"] = attempts.target.deployment
            event["_target"] = attempts.target

    async def _call(self, endpoint: Endpoint, body: dict[str, Any], model: str,
                    event: dict[str, Any]) -> Response:
        attempts = Attempts()
        try:
            result = await self.router.call(model, endpoint, self._upstream_body(body), attempts)
        finally:
            self._served(event, attempts)
        result["model"] = attempts.target.model if attempts.target else model
        self._usage(event, result.get("usage"))
        event["first_byte_at"] = utcnow()
        event.pop("_target", None)
        return Response(orjson.dumps(result), media_type=_JSON)

    async def _stream(self, endpoint: Endpoint, body: dict[str, Any], model: str,
                      event: dict[str, Any]) -> Response:
        event["stream"] = True
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        attempts = Attempts()
        try:
            first, iterator, slot = await self.router.open_stream(
                model, endpoint, self._upstream_body(body), attempts)
        finally:
            self._served(event, attempts)
        public = slot.target.model
        return StreamingResponse(
            self._relay(first, iterator, slot, public, include_usage, event, body),
            media_type="text/event-stream", headers=_SSE_HEADERS)

    async def _relay(self, first: dict[str, Any], iterator: AsyncIterator[dict[str, Any]],
                     slot: Any, public: str, include_usage: bool, event: dict[str, Any],
                     body: dict[str, Any]) -> AsyncIterator[bytes]:
        usage: dict[str, Any] | None = None
        text: list[str] = []
        status_error: tuple[int, str | None] = (200, None)
        ok = False
        try:
            chunk: dict[str, Any] | None = first
            event["first_byte_at"] = utcnow()
            while chunk is not None:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not include_usage:
                        chunk = dict(chunk)
                        del chunk["usage"]
                        if not chunk.get("choices"):
                            chunk = None
                if chunk is not None:
                    chunk["model"] = public
                    for choice in chunk.get("choices") or ():
                        piece = (choice.get("delta") or {}).get("content") or choice.get("text")
                        if isinstance(piece, str):
                            text.append(piece)
                    yield _sse(chunk)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    chunk = None
            yield _DONE
            ok = True
        except ProviderError as exc:
            event["partial"] = True
            code = "upstream_timeout" if exc.kind == "timeout" else "upstream_error"
            status_error = (200, code)
            err = {"error": {"message": f"the upstream failed mid-stream ({exc.message})",
                             "type": "api_error", "param": None, "code": code}}
            yield _sse(err)
        except BaseException:
            event["cancelled"] = True
            event["partial"] = True
            raise
        finally:
            if usage is not None:
                self._usage(event, usage)
            else:
                self._usage(event, {"prompt_tokens": _prompt_tokens(body, public),
                                    "completion_tokens": tokens.count_text("".join(text), public)},
                            source="estimated")
                event["cost_estimated"] = True
            event.pop("_target", None)
            self.router.stream_finished(slot, ok or event["cancelled"])
            if not ok:
                asyncio.get_running_loop().create_task(_close_quietly(iterator))
            audit_event.finish(event, *status_error)
            self.audit.submit(event)


def _prompt_tokens(body: dict[str, Any], model: str) -> int:
    if isinstance(body.get("messages"), list):
        return tokens.count_messages(body["messages"], model)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return sum(tokens.count_text(p, model) for p in prompt if isinstance(p, str))
    return tokens.count_text(prompt, model) if isinstance(prompt, str) else 0


async def _close_quietly(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    with contextlib.suppress(Exception):  # the upstream is already broken; nothing to report
        await close()
