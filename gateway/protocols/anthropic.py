"""Anthropic's Messages API at the edge: `POST /v1/messages` and its `count_tokens`.

The adapter validates the body (`anthropic_validate`), counts its prompt, takes the caller's
key from `x-api-key` as well as `Authorization: Bearer`, renders errors in Anthropic's
envelope (`{"type": "error", "error": {"type", "message"}}`, the type by status), reads usage
in Anthropic's shape and encodes streams as Anthropic's SSE (`event:` lines; the last event is
`message_stop`, or an `error` event when the upstream failed after the first byte).

Usage: Anthropic's `input_tokens` excludes cache reads and writes, OpenAI's `prompt_tokens`
includes them. The gateway's `Usage` (audit, limits, cost) counts every prompt token, as on
chat: input + cache read + cache write, with the two cache parts in OpenAI's details so the
price map's cache rates apply (`pricing.usage_cost_nanos`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from gateway import tokens
from gateway.config import ServerConfig
from gateway.core.request import RequestContext, Usage
from gateway.errors import MESSAGE_CHARS, GatewayError, clip
from gateway.protocols.anthropic_validate import (
    check_expanded,
    validate_count_tokens,
    validate_messages,
)

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
# Headers of the client's request that reach a passthrough deployment, byte for byte.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
# The body key under which the call stage hands those headers to the provider (never a
# client's: `scan_body` refuses any key naming an upstream or headers).
UPSTREAM_HEADERS = "_upstream_headers"
# On a translated stream's `message_start` (and `message_delta`): its usage is the gateway's
# estimate, not the provider's. The relay and the encoder take these marks out.
ESTIMATED = "_gateway_estimated"
_OFFLOAD_CHARS = 64 * 1024

# Anthropic's error types by HTTP status (DESIGN.md, "More protocols").
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
               409: "invalid_request_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 502: "api_error",
               503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def error_envelope(exc: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(exc.status_code),
                                       "message": clip(exc.message, MESSAGE_CHARS)}}


def _n(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_anthropic(usage: Any, source: Any = "provider") -> Usage | None:
    """An Anthropic `usage` object as the gateway's `Usage` (every prompt token counted,
    cache reads and writes in OpenAI's details for pricing)."""
    if not isinstance(usage, Mapping):
        return None
    read = _n(usage.get("cache_read_input_tokens"))
    written = _n(usage.get("cache_creation_input_tokens"))
    prompt = _n(usage.get("input_tokens")) + read + written
    out = _n(usage.get("output_tokens"))
    details: dict[str, Any] = {
        "prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written}}
    split = usage.get("cache_creation")
    if isinstance(split, Mapping) and _n(split.get("ephemeral_1h_input_tokens")):
        details["cache_creation"] = {
            "ephemeral_1h_input_tokens": _n(split.get("ephemeral_1h_input_tokens"))}
    return Usage(prompt, out, prompt + out, source, details)


def merge_usage(old: Any, new: Any) -> Any:
    """A stream's usage so far: `message_start` gives the input side, each `message_delta`
    the cumulative rest (and sometimes corrected cache counts)."""
    if not isinstance(old, Mapping):
        return new
    if not isinstance(new, Mapping):
        return old
    return {**old, **{k: v for k, v in new.items() if v is not None}}


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return ""
    kind = block.get("type")
    if kind == "text":
        return block.get("text") or ""
    if kind == "thinking":
        return block.get("thinking") or ""
    if kind == "tool_use":
        return f"{block.get('name') or ''} {orjson.dumps(block.get('input') or {}).decode()}"
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return " ".join(_block_text(b) for b in content)
        return content if isinstance(content, str) else ""
    return ""


def _non_text_blocks(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    count = 0
    for block in content:
        if isinstance(block, Mapping):
            if block.get("type") in ("image", "document"):
                count += 1
            elif block.get("type") == "tool_result":
                count += _non_text_blocks(block.get("content"))
    return count


def count_messages_prompt(body: Mapping[str, Any], model: str) -> int:
    """A Messages request's prompt tokens (tiktoken: an estimate for Claude's tokenizer): the
    system prompt, every block's text, tool calls and results, thinking, the tools' schemas,
    and a flat estimate per image or document (as on chat)."""
    system = body.get("system")
    texts = [system] if isinstance(system, str) else \
        [_block_text(b) for b in system] if isinstance(system, list) else []
    total = 3
    images = _non_text_blocks(system)
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        total += 4
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(_block_text(b) for b in content)
            images += _non_text_blocks(content)
    tools = body.get("tools")
    if tools:
        texts.append(orjson.dumps(tools).decode())
    return total + tokens.count_text("\n".join(t for t in texts if t), model) + \
        images * tokens.NON_TEXT_PART_TOKENS


class MessagesProtocol:
    """The Messages protocol adapter (see the module docstring); `count_tokens` is the same
    protocol on its own route, through a shorter chain (no limits, no cost, no call)."""

    name = "messages"
    prompt_field = "messages"
    templates = True
    # The caller's key: `x-api-key` (the Anthropic SDKs) or `Authorization: Bearer`.
    credential_headers: frozenset[str] = frozenset({"x-api-key"})

    def __init__(self, path: str, *, count_tokens: bool = False) -> None:
        self.path = path
        self.counts_tokens = count_tokens
        self.can_stream = not count_tokens

    @staticmethod
    def authorization(headers: Mapping[str, str]) -> str | None:
        key = headers.get("x-api-key")
        if key:
            return f"Bearer {key.strip()}"
        return headers.get("authorization")

    def validate(self, body: dict[str, Any], server: ServerConfig) -> None:
        (validate_count_tokens if self.counts_tokens else validate_messages)(body, server)

    @staticmethod
    def count_prompt(body: Mapping[str, Any], model: str) -> int:
        return count_messages_prompt(body, model)

    @staticmethod
    def prompt_size(body: Mapping[str, Any]) -> int:
        return tokens.text_size(body.get("messages")) + tokens.text_size(body.get("system"))

    @staticmethod
    def error_body(exc: GatewayError) -> bytes:
        return orjson.dumps(error_envelope(exc))

    @staticmethod
    def apply_template(body: dict[str, Any], rendered: list[dict[str, Any]]) -> None:
        """A template's messages: its `system` ones go before the request's `system`, the
        others before the request's `messages`."""
        system = [m["content"] for m in rendered if m.get("role") in ("system", "developer")]
        turns = [{"role": m["role"], "content": m["content"]} for m in rendered
                 if m.get("role") in ("user", "assistant")]
        if system:
            own = body.get("system")
            blocks = [{"type": "text", "text": text} for text in system]
            if isinstance(own, str) and own:
                blocks.append({"type": "text", "text": own})
            elif isinstance(own, list):
                blocks.extend(own)
            body["system"] = blocks
        body["messages"] = turns + list(body.get("messages") or [])
        check_expanded(body)

    @staticmethod
    def forward_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
        """The client's headers a passthrough deployment gets unchanged."""
        found = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
        return found or None

    # --- answers ---------------------------------------------------------------------------
    @staticmethod
    def name_model(result: dict[str, Any], public: str) -> None:
        result["model"] = public

    @staticmethod
    def answer_usage(result: Mapping[str, Any]) -> Usage | None:
        return usage_from_anthropic(result.get("usage"))

    @staticmethod
    def stream_usage(usage: Any) -> Usage | None:
        return usage_from_anthropic(usage)

    merge_usage = staticmethod(merge_usage)

    @staticmethod
    def relay_chunk(chunk: dict[str, Any], public: str, include_usage: bool
                    ) -> tuple[dict[str, Any] | None, Any]:
        """Every event goes to the client; `message_start` names the public model. Usage:
        `message_start`'s and `message_delta`'s (merged by `merge_usage`), unless the event
        carries the gateway's estimate instead (a translated stream without usage)."""
        kind = chunk.get("type")
        if kind == "message_start":
            message = chunk.get("message")
            if isinstance(message, dict):
                message["model"] = public
                if ESTIMATED not in chunk:
                    return chunk, message.get("usage")
            return chunk, None
        if kind == "message_delta":
            if chunk.pop(ESTIMATED, False):
                return chunk, None
            return chunk, chunk.get("usage")
        return chunk, None

    @staticmethod
    def usage_chunk(last: Mapping[str, Any], public: str, usage: Usage) -> None:
        """A Messages stream carries its usage in its own events: nothing to add."""
        return None

    def stream_encoder(self, ctx: RequestContext) -> MessagesStreamEncoder:
        return MessagesStreamEncoder(ctx)


class MessagesStreamEncoder:
    """Events to Anthropic SSE (`event: TYPE` + `data: JSON`). The text the client got is
    kept for the audit event (`ctx.answer`). A translated stream's `message_start` gets the
    request's prompt count as its `input_tokens` (the provider's own comes in
    `message_delta`)."""

    __slots__ = ("ctx", "parts", "transport")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.transport = ctx.transport
        self.parts: list[str] = []
        ctx.answer = self.parts

    async def _write(self, data: bytes) -> None:
        if not self.transport.started:
            await self.transport.start({**SSE_HEADERS, **self.ctx.response_headers})
        await self.transport.write(data)

    async def send(self, chunk: dict[str, Any]) -> None:
        kind = chunk.get("type")
        if kind == "content_block_delta":
            delta = chunk.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str):
                    self.parts.append(text)
        elif kind == "message_start" and chunk.pop(ESTIMATED, False):
            usage = (chunk.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                usage["input_tokens"] = await self._prompt_tokens()
        name = kind.encode() if isinstance(kind, str) else b"message"
        await self._write(b"event: " + name + b"\ndata: " + orjson.dumps(chunk) + b"\n\n")

    async def _prompt_tokens(self) -> int:
        ctx = self.ctx
        if ctx.prompt_tokens is not None:
            return ctx.prompt_tokens
        count = ctx.protocol.count_prompt
        if ctx.protocol.prompt_size(ctx.body) > _OFFLOAD_CHARS:
            found: int = await asyncio.to_thread(count, ctx.body, ctx.model or "")
        else:
            found = count(ctx.body, ctx.model or "")
        ctx.prompt_tokens = found
        return found

    async def close(self, last: dict[str, Any]) -> None:
        return None  # `message_stop` was the last event

    async def fail(self, error: GatewayError) -> None:
        body = orjson.dumps(error_envelope(error))
        await self._write(b"event: error\ndata: " + body + b"\n\n")


MESSAGES = MessagesProtocol("/v1/messages")
COUNT_TOKENS = MessagesProtocol("/v1/messages/count_tokens", count_tokens=True)
