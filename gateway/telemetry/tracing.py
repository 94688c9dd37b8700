"""OpenTelemetry traces: a server span per `/v1` request, a client span per provider attempt.

Attribute names follow the GenAI semantic conventions; they are constants here, checked
against `opentelemetry.semconv` by `tests/audit/test_audit_telemetry.py`. Prompt and answer text are
left out unless `GATEWAY_TRACE_CONTENT=true`, and then redacted for every PII kind, whatever
the policy lets through (`audit.bodies.stored_view`: what the audit store keeps under
`redacted`). Spans are exported over OTLP/HTTP when the
standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER=otlp`; `OTEL_SDK_DISABLED=true`
or `OTEL_TRACES_EXPORTER=none` turn it off); the SDK reads the other `OTEL_*` variables
(headers, timeouts, batching, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`). Without them
nothing is wired and requests pay nothing; the SDK is imported only when tracing is on.

Per-attempt spans come from wrapping the provider objects the router calls (`TracedProvider`),
so routing needs no tracing code: every try, retry and fallback is one `chat gpt-4o-mini`-style
CLIENT span under the request's SERVER span.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.audit.bodies import stored_view
from gateway.core.iterators import aclose_quietly
from gateway.core.request import StreamItem
from gateway.providers.base import Endpoint, Provider, ProviderError, Target

log = logging.getLogger("gateway.tracing")

# --- attribute names (GenAI and general semantic conventions) ------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"  # the older name of gen_ai.provider.name, still read by tools
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_PATH = "url.path"
# The gateway's own (no convention exists for these).
GATEWAY_REQUEST_ID = "gateway.request_id"
GATEWAY_DEPLOYMENT = "gateway.deployment"
GATEWAY_MODEL = "gateway.model"
GATEWAY_ATTEMPTS = "gateway.attempts"
GATEWAY_FALLBACK_USED = "gateway.fallback_used"
GATEWAY_CANCELLED = "gateway.cancelled"
GATEWAY_PARTIAL = "gateway.partial"
GATEWAY_KEY_ID = "gateway.key_id"
GATEWAY_TEAM = "gateway.team"
GATEWAY_AUDIT_EVENT_ID = "gateway.audit.event_id"

OPERATIONS: dict[str, str] = {"chat": "chat", "completions": "text_completion",
                              "embeddings": "embeddings", "messages": "chat"}
OPERATIONS["responses"] = "chat"  # the Responses API: a chat turn (GenAI has no own name)
# litellm provider prefix -> gen_ai.provider.name (well-known values; others pass through).
PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai", "anthropic": "anthropic", "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference", "bedrock": "aws.bedrock", "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini", "mistral": "mistral_ai", "cohere": "cohere",
    "cohere_chat": "cohere", "groq": "groq", "deepseek": "deepseek", "xai": "x_ai",
    "perplexity": "perplexity", "watsonx": "ibm.watsonx.ai"}
_CONTENT_LIMIT = 16 * 1024
TRACED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                           "/v1/models"})


def provider_name(prefix: str) -> str:
    return PROVIDER_NAMES.get(prefix, prefix)


def otlp_requested(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {x.strip().lower() for x in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
                 if x.strip()}
    if "none" in exporters:
        return False
    return "otlp" in exporters or bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                       or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Tracing:
    """The tracer of one app (no global provider is set), and what to put on spans."""

    def __init__(self, provider: Any = None, *, capture_content: bool = False) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.capture_content = capture_content
        self.tracer = (provider.get_tracer("gateway") if provider is not None
                       else trace.NoOpTracer())

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *,
                         capture_content: bool = False) -> Tracing:
        environ = os.environ if environ is None else environ
        if not otlp_requested(environ):
            return cls(None, capture_content=capture_content)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        if protocol != "http/protobuf":
            log.warning("only OTLP over HTTP (http/protobuf) is built in; using it",
                        extra={"asked": protocol})
        named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", "")
        resource = Resource.create({} if named else {SERVICE_NAME: "llm-gateway"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider, capture_content=capture_content)

    def shutdown(self) -> None:
        """Export what is buffered (blocking: call it off the event loop)."""
        if self.provider is not None:
            with contextlib.suppress(Exception):  # the collector may be gone at shutdown
                self.provider.shutdown()

    def wrap_providers(self, providers: dict[str, Provider]) -> dict[str, Provider]:
        if not self.enabled:
            return providers
        return {name: TracedProvider(p, self) for name, p in providers.items()}

    def content(self, value: Any) -> str:
        text = orjson.dumps(value, default=str).decode()
        return text if len(text) <= _CONTENT_LIMIT else text[:_CONTENT_LIMIT] + "…"


class TraceRecorder:
    """The request's outcome as GenAI attributes on its server span (the telemetry stage
    calls it)."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def __call__(self, ctx: Any) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        event = ctx.event.fields
        attrs: dict[str, Any] = {GEN_AI_OPERATION_NAME: OPERATIONS.get(ctx.endpoint,
                                                                       ctx.endpoint)}
        for attr, key in ((GEN_AI_REQUEST_MODEL, "model_requested"),
                          (GEN_AI_RESPONSE_MODEL, "model_served"),
                          (GATEWAY_DEPLOYMENT, "deployment"), (GATEWAY_KEY_ID, "key_id"),
                          (GATEWAY_TEAM, "team"), (GATEWAY_AUDIT_EVENT_ID, "id"),
                          (GEN_AI_USAGE_INPUT_TOKENS, "input_tokens"),
                          (GEN_AI_USAGE_OUTPUT_TOKENS, "output_tokens"),
                          (ERROR_TYPE, "error_code")):
            value = event.get(key)
            if value is not None and value != "":
                attrs[attr] = value
        if ctx.target is not None:
            attrs[GEN_AI_PROVIDER_NAME] = attrs[GEN_AI_SYSTEM] = provider_name(
                ctx.target.provider)
        attrs[GEN_AI_REQUEST_STREAM] = bool(event.get("stream"))
        attrs[GATEWAY_ATTEMPTS] = int(event.get("attempts") or 0)
        attrs[GATEWAY_FALLBACK_USED] = bool(event.get("fallback_used"))
        attrs[GATEWAY_CANCELLED] = bool(event.get("cancelled"))
        attrs[GATEWAY_PARTIAL] = bool(event.get("partial"))
        if self.tracing.capture_content:  # redacted for every PII kind, like audit bodies
            view = stored_view(ctx)
            body = view.request() or {}
            prompt = body.get("messages", body.get("prompt", body.get("input")))
            if prompt is not None:
                attrs[GEN_AI_INPUT_MESSAGES] = self.tracing.content(prompt)
            answer = view.answer()
            if answer is not None:
                attrs[GEN_AI_OUTPUT_MESSAGES] = self.tracing.content(answer)
        span.set_attributes(attrs)
        if event.get("error_code") and int(event.get("status_code") or 0) >= 500:
            span.set_status(Status(StatusCode.ERROR, str(event["error_code"])))


def _attempt_attributes(endpoint: Endpoint, body: dict[str, Any], target: Target
                        ) -> dict[str, Any]:
    name = provider_name(target.provider)
    attrs: dict[str, Any] = {GEN_AI_OPERATION_NAME: OPERATIONS.get(endpoint, endpoint),
                             GEN_AI_PROVIDER_NAME: name, GEN_AI_SYSTEM: name,
                             GEN_AI_REQUEST_MODEL: target.upstream_model,
                             GATEWAY_MODEL: target.model, GATEWAY_DEPLOYMENT: target.deployment,
                             GEN_AI_REQUEST_STREAM: bool(body.get("stream"))}
    if target.api_base:
        parts = urlsplit(target.api_base)
        if parts.hostname:
            attrs[SERVER_ADDRESS] = parts.hostname
            attrs[SERVER_PORT] = parts.port or (443 if parts.scheme == "https" else 80)
    for attr, key in ((GEN_AI_REQUEST_MAX_TOKENS, "max_tokens"),
                      (GEN_AI_REQUEST_TEMPERATURE, "temperature"),
                      (GEN_AI_REQUEST_TOP_P, "top_p"), (GEN_AI_REQUEST_CHOICE_COUNT, "n")):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[attr] = value
    return attrs


def _response_attributes(result: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if isinstance(result.get("model"), str):
        attrs[GEN_AI_RESPONSE_MODEL] = result["model"]
    if isinstance(result.get("id"), str):
        attrs[GEN_AI_RESPONSE_ID] = result["id"]
    usage = result.get("usage")
    if isinstance(usage, dict):
        for attr, keys in ((GEN_AI_USAGE_INPUT_TOKENS, ("prompt_tokens", "input_tokens")),
                           (GEN_AI_USAGE_OUTPUT_TOKENS, ("completion_tokens", "output_tokens"))):
            for key in keys:  # Chat's names, then the Responses API's
                if isinstance(usage.get(key), int):
                    attrs[attr] = usage[key]
                    break
    for choice in result.get("choices") or ():
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if isinstance(reason, str) and reason not in reasons:
            reasons.append(reason)
    if reasons:
        attrs[GEN_AI_RESPONSE_FINISH_REASONS] = list(reasons)
    return attrs


def _failed(span: Any, exc: BaseException) -> None:
    if isinstance(exc, ProviderError):
        kind = exc.kind if exc.kind != "http" else str(exc.status or "http")
    else:
        kind = type(exc).__name__
    span.set_attribute(ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, kind))


class TracedProvider:
    """A provider whose every call is one CLIENT span (child of the current request span)."""

    def __init__(self, inner: Provider, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _start(self, endpoint: Endpoint, body: dict[str, Any], target: Target) -> Any:
        operation = OPERATIONS.get(endpoint, endpoint)
        return self.tracing.tracer.start_span(
            f"{operation} {target.upstream_model}", kind=SpanKind.CLIENT,
            attributes=_attempt_attributes(endpoint, body, target))

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        span = self._start(endpoint, body, target)
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            try:
                result = await self.inner.call(endpoint, body, target)
            except BaseException as exc:
                _failed(span, exc)
                raise
            if isinstance(result, dict):
                span.set_attributes(_response_attributes(result, []))
            return result

    def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
               ) -> AsyncIterator[StreamItem]:
        return self._stream(endpoint, body, target)

    async def _stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                      ) -> AsyncIterator[StreamItem]:
        span = self._start(endpoint, body, target)
        inner = self.inner.stream(endpoint, body, target)
        reasons: list[str] = []
        try:
            async for chunk in inner:
                if isinstance(chunk, dict):
                    attrs = _response_attributes(chunk, reasons)
                    if attrs:
                        span.set_attributes(attrs)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):  # the caller stopped reading
            span.set_attribute(GATEWAY_CANCELLED, True)
            raise
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            await aclose_quietly(inner)
            span.end()
