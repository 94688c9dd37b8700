"""The `/v1` request path: one function per request, one audit event per request.

auth -> body checks -> stages (template, model access, limits, PII) -> route + call
(stream or not) -> output filters -> usage + cost -> finishers -> audit
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import tokens
from gateway.config import LoadedConfig
from gateway.context import Principal
from gateway.errors import (
    Forbidden,
    GatewayError,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    excerpt,
)
from gateway.pipeline import audit_event, validate
from gateway.pipeline.auth import Authenticator
from gateway.pipeline.body import parse_object, read_body
from gateway.pipeline.state import RequestState, Stage
from gateway.policies.store import PolicyRegistry
from gateway.pricing import PriceBook, cost_nanos
from gateway.providers.base import Endpoint, ProviderError
from gateway.routing.router import Attempts, Router
from gateway.storage.audit_writer import AuditWriter
from gateway.timeutil import utcnow

log = logging.getLogger("gateway.v1")

_VALIDATORS = {"chat": validate.validate_chat, "completions": validate.validate_completion,
               "embeddings": validate.validate_embeddings}
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
         "embeddings": "/v1/embeddings"}
# Fields that are ours, not the provider's.
_GATEWAY_FIELDS = ("template", "stream_options")
_JSON = "application/json"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_DONE = b"data: [DONE]\n\n"


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    merged = {**(headers or {}), **exc.headers} if headers or exc.headers else None
    return Response(exc.to_json(), status_code=exc.status_code, media_type=_JSON,
                    headers=merged)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class ModelAccess:
    """Resolve the key's policy; the model must exist and be allowed by key, team and policy."""

    def __init__(self, router: Router, policies: PolicyRegistry) -> None:
        self.router = router
        self.policies = policies

    async def before(self, state: RequestState) -> None:
        model = state.body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("missing required parameter: 'model'", param="model",
                                 code="missing_required_parameter")
        state.model = model
        state.event["model_requested"] = model
        if model not in self.router.slots:
            raise ModelNotFound(f"the model {excerpt(model)} does not exist", param="model")
        assert state.principal is not None
        policy = self.policies.effective(state.principal)
        state.extra["policy"] = policy
        if not state.principal.may_use_model(model) or (
                policy.models is not None and not policy.models.permits(model)):
            raise Forbidden(f"this key may not use the model {excerpt(model)}", param="model",
                            code="model_not_allowed")


class V1Pipeline:
    def __init__(self, config: LoadedConfig, auth: Authenticator, router: Router,
                 prices: PriceBook, audit: AuditWriter, stages: Sequence[Stage],
                 observers: Sequence[Callable[[RequestState], None]] = ()) -> None:
        self.config = config
        self.server = config.server
        self.auth = auth
        self.router = router
        self.prices = prices
        self.audit = audit
        self.stages = list(stages)
        # Run once per request after the event is finished, before it is submitted (audit
        # bodies, metrics, trace attributes); sync, like finishers.
        self.observers = list(observers)

    async def authenticate(self, request: Request) -> Principal:
        principal = await self.auth.authenticate(request.headers.get("authorization"))
        if principal.role == "compliance":
            raise Forbidden("compliance keys may not call the model endpoints",
                            code="endpoint_not_allowed")
        return principal

    async def handle(self, endpoint: Endpoint, request: Request) -> Response:
        state = RequestState(endpoint=endpoint,
                             event=audit_event.new_event(request.state.request_id,
                                                         PATHS[endpoint]))
        try:
            state.principal = await self.authenticate(request)
            audit_event.set_principal(state.event, state.principal)
            validate.refuse_routing_headers(request.headers)
            body = parse_object(await read_body(request, self.server.max_body_bytes))
            validate.scan_body(body, self.server.max_json_depth)
            _VALIDATORS[endpoint](body, self.server)
            state.body = body
            state.event["user"] = body.get("user")
            for stage in self.stages:
                await stage.before(state)
            if state.body.get("stream"):
                return await self._stream(state)
            response = await self._call(state)
        except GatewayError as exc:
            known = getattr(exc, "principal", None)
            if known is not None:
                audit_event.set_principal(state.event, known)
            self.complete(state, exc.status_code, exc.code)
            return error_response(exc, state.headers)
        except Exception:
            log.exception("unexpected error", extra={"request_id": state.event["request_id"]})
            exc = InternalError("the gateway failed to handle this request")
            self.complete(state, exc.status_code, exc.code)
            return error_response(exc, state.headers)
        self.complete(state, 200)
        return response

    def complete(self, state: RequestState, status: int, error_code: str | None = None) -> None:
        """End the request: run the finishers once, then hand the audit event to the writer."""
        if state.completed:
            return
        state.completed = True
        event = state.event
        for finisher in state.finishers:
            try:
                finisher(state)
            except Exception:  # one failing finisher must not lose the audit event
                log.exception("request finisher failed")
        state.finishers.clear()
        if state.audit_request_body is not None:
            event["request_body"] = state.audit_request_body
        if state.audit_response_body is not None:
            event["response_body"] = state.audit_response_body
        audit_event.finish(event, status, error_code)
        for observer in self.observers:
            try:
                observer(state)
            except Exception:  # telemetry must not lose the audit event
                log.exception("request observer failed")
        self.audit.submit(event)

    @staticmethod
    def _upstream_body(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in _GATEWAY_FIELDS}

    def _record_usage(self, state: RequestState, usage: Any, source: str = "provider") -> None:
        if not isinstance(usage, dict):
            return
        event = state.event
        inp = usage.get("prompt_tokens") or 0
        out = usage.get("completion_tokens") or 0
        state.usage = usage
        event["input_tokens"] = inp
        event["output_tokens"] = out
        event["total_tokens"] = usage.get("total_tokens") or inp + out
        event["usage_source"] = source
        if state.target is not None:
            price = self.prices.price(state.target.model, state.target.litellm_model)
            state.cost_nanos = None if price is None else cost_nanos(inp, out, price)
            event["cost_nanos"] = state.cost_nanos

    @staticmethod
    def _served(state: RequestState, attempts: Attempts) -> None:
        event = state.event
        event["attempts"] = attempts.count
        event["fallback_used"] = attempts.fallback_used
        if attempts.target is not None:
            state.target = attempts.target
            event["model_served"] = attempts.target.model
            event["deployment"] = attempts.target.deployment

    async def _call(self, state: RequestState) -> Response:
        attempts = Attempts()
        assert state.model is not None
        try:
            result = await self.router.call(state.model, state.endpoint,
                                            self._upstream_body(state.body), attempts)
        finally:
            self._served(state, attempts)
        result["model"] = attempts.target.model if attempts.target else state.model
        self._record_usage(state, result.get("usage"))
        for output_filter in state.output_filters:
            result = output_filter.response(result)
        state.extra["response_body"] = result  # the answer as the client gets it (audit)
        state.event["first_byte_at"] = utcnow()
        return Response(orjson.dumps(result), media_type=_JSON, headers=state.headers or None)

    async def _stream(self, state: RequestState) -> Response:
        state.event["stream"] = True
        attempts = Attempts()
        assert state.model is not None
        try:
            first, iterator, slot = await self.router.open_stream(
                state.model, state.endpoint, self._upstream_body(state.body), attempts)
        finally:
            self._served(state, attempts)
        def abandoned() -> None:
            """The client left before the body started: `_relay` never ran."""
            if state.completed:
                return
            state.event["cancelled"] = True
            state.event["partial"] = True
            self.router.stream_finished(slot, True)
            asyncio.get_running_loop().create_task(_close_quietly(iterator))
            self.complete(state, 200)

        return _CompletingStream(self._relay(state, first, iterator, slot), abandoned,
                                 media_type="text/event-stream",
                                 headers={**_SSE_HEADERS, **state.headers})

    def _filtered(self, state: RequestState, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = [chunk]
        for output_filter in state.output_filters:
            chunks = [out for c in chunks for out in output_filter.chunk(c)]
        return chunks

    async def _relay(self, state: RequestState, first: dict[str, Any],
                     iterator: AsyncIterator[dict[str, Any]], slot: Any) -> AsyncIterator[bytes]:
        event = state.event
        options = state.body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        public = slot.target.model
        usage: dict[str, Any] | None = None
        text: list[str] = []
        error_code: str | None = None
        ok = False
        last: dict[str, Any] = first
        try:
            chunk: dict[str, Any] | None = first
            event["first_byte_at"] = utcnow()
            while chunk is not None:
                last = chunk
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if not include_usage:
                        chunk = {k: v for k, v in chunk.items() if k != "usage"}
                if chunk.get("choices") or (include_usage and chunk.get("usage")):
                    chunk["model"] = public
                    for out in self._filtered(state, chunk):
                        for choice in out.get("choices") or ():
                            piece = ((choice.get("delta") or {}).get("content")
                                     or choice.get("text"))
                            if isinstance(piece, str):
                                text.append(piece)
                        yield _sse(out)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    chunk = None
            for output_filter in state.output_filters:
                for out in output_filter.flush({**last, "model": public}):
                    yield _sse(out)
            yield _DONE
            ok = True
        except ProviderError as exc:
            event["partial"] = True
            error_code = "upstream_timeout" if exc.kind == "timeout" else "upstream_error"
            yield _sse({"error": {"message": f"the upstream failed mid-stream ({exc.message})",
                                  "type": "api_error", "param": None, "code": error_code}})
        except BaseException:
            event["cancelled"] = True
            event["partial"] = True
            raise
        finally:
            state.extra["response_text"] = "".join(text)  # what the client got (audit)
            if usage is not None:
                self._record_usage(state, usage)
            else:
                self._record_usage(state, {
                    "prompt_tokens": _prompt_tokens(state.body, public),
                    "completion_tokens": tokens.count_text("".join(text), public)},
                    source="estimated")
                event["cost_estimated"] = True
            self.router.stream_finished(slot, ok or event["cancelled"])
            if not ok:
                asyncio.get_running_loop().create_task(_close_quietly(iterator))
            self.complete(state, 200, error_code)


class _CompletingStream(StreamingResponse):
    """A streaming response that ends its request even if the body never started."""

    def __init__(self, content: AsyncIterator[bytes], on_abandon: Any, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_abandon = on_abandon

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_abandon()


def _prompt_tokens(body: dict[str, Any], model: str) -> int:
    if isinstance(body.get("messages"), list):
        return tokens.count_messages(body["messages"], model)
    return tokens.count_prompt(body.get("prompt"), model)


async def _close_quietly(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    with contextlib.suppress(Exception):  # the upstream is already broken; nothing to report
        await close()
