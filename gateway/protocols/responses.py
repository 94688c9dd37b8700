"""The OpenAI Responses API (`POST /v1/responses`) at the edge.

The adapter validates the body (`responses_validate`), counts its prompt, reads usage in the
Responses shape, and encodes answers: errors in OpenAI's envelope, streams as SSE with an
`event:` line per event and no `data: [DONE]`. The encoder is the last hand on every event:
it gives each one its `sequence_number` (1, 2, … after PII filters dropped or added events),
puts the gateway's one response id (`ResponseState.id`) on every response object, keeps the
snapshot a failure needs, and ends a stream that broke after its first byte with
`response.failed` carrying what was completed and the error. Before a terminal event goes out
it hands the final response to `ResponseState.on_final` (the store), so a client that chains
on it the moment it arrives finds it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway import tokens
from gateway.config import ServerConfig
from gateway.core.request import RequestContext, Usage
from gateway.errors import GatewayError
from gateway.protocols.responses_shapes import (
    ESTIMATED,
    RESPONSE_EVENTS,
    TERMINAL_EVENTS,
    new_id,
    usage_of,
)
from gateway.protocols.responses_validate import check_tool_choice, validate_responses

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}


@dataclass(slots=True)
class ResponseState:
    """One `/v1/responses` request's own state (on `ctx.protocol_state`)."""

    id: str  # the id the client sees, first to last event, whatever the upstream said
    store: bool = True
    previous_id: str | None = None  # the client's `previous_response_id`
    template_items: int = 0  # leading input items a template put there
    history_items: int = 0  # replayed items after them (a previous response's)
    upstream_id: str | None = None  # what a native upstream called it
    created_at: int = field(default_factory=lambda: int(time.time()))
    final: dict[str, Any] | None = None  # the last response object the client got
    on_final: Callable[[dict[str, Any]], Awaitable[None]] | None = None


def response_state(ctx: RequestContext) -> ResponseState:
    state = ctx.protocol_state
    if state is None:
        state = ctx.protocol_state = ResponseState(new_id("resp"))
    return state


def own_response(response: dict[str, Any], state: ResponseState) -> None:
    """The gateway's id, chain and store flag on a response object (in place)."""
    rid = response.get("id")
    if isinstance(rid, str) and rid != state.id and state.upstream_id is None:
        state.upstream_id = rid
    response["id"] = state.id
    response["previous_response_id"] = state.previous_id
    response["store"] = state.store


def count_items(items: Any, model: str) -> int:
    """Prompt tokens of Responses input items (3 per item, as for chat messages)."""
    if isinstance(items, str):
        return 3 + tokens.count_text(items, model)
    total = 0
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping):
            continue
        total += 3
        content = item.get("content")
        if isinstance(content, str):
            total += tokens.count_text(content, model)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                text = part.get("text") or part.get("refusal")
                if isinstance(text, str):
                    total += tokens.count_text(text, model)
                else:
                    total += tokens.NON_TEXT_PART_TOKENS
        for key in ("name", "arguments", "output"):
            value = item.get(key)
            if isinstance(value, str):
                total += tokens.count_text(value, model)
            elif isinstance(value, list):
                total += tokens.count_text(orjson.dumps(value).decode(), model)
    return total


class ResponsesProtocol:
    name = "responses"
    path = "/v1/responses"
    prompt_field = "input"
    can_stream = True
    templates = True
    output_cap_field = "max_output_tokens"  # what the limits stage sets when a policy caps it
    credential_headers: frozenset[str] = frozenset()

    @staticmethod
    def authorization(headers: Mapping[str, str]) -> str | None:
        return headers.get("authorization")

    @staticmethod
    def validate(body: dict[str, Any], server: ServerConfig) -> None:
        validate_responses(body, server)

    @staticmethod
    def count_prompt(body: Mapping[str, Any], model: str) -> int:
        total = 3 + count_items(body.get("input"), model)
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            total += 3 + tokens.count_text(instructions, model)
        for key in ("tools", "text"):
            value = body.get(key)
            if value:
                total += tokens.count_text(orjson.dumps(value).decode(), model)
        return total

    @staticmethod
    def prompt_size(body: Mapping[str, Any]) -> int:
        return tokens.text_size(body.get("input")) + tokens.text_size(body.get("instructions"))

    @staticmethod
    def error_body(exc: GatewayError) -> bytes:
        return exc.to_json()

    @staticmethod
    def merge_template(ctx: RequestContext, found: Any, messages: list[dict[str, str]]
                       ) -> None:
        """A template's messages before the request's own input items, its params where the
        request leaves them unset (Chat names mapped to Responses names)."""
        body = ctx.body
        own = body.get("input")
        items: list[Any] = [{"type": "message", "role": m["role"], "content": m["content"]}
                            for m in messages]
        body["input"] = items + ([{"type": "message", "role": "user", "content": own}]
                                 if isinstance(own, str) else list(own or []))
        response_state(ctx).template_items = len(items)
        for key, value in found.params.items():
            name, value = _param(key, value)
            if name is not None and body.get(name) is None:
                body[name] = orjson.loads(orjson.dumps(value)) \
                    if isinstance(value, (dict, list)) else value
        check_tool_choice(body)  # tools and tool_choice may each come from either

    # --- answers ---------------------------------------------------------------------------
    @staticmethod
    def name_model(result: dict[str, Any], public: str) -> None:
        result["model"] = public

    @staticmethod
    def answer_usage(result: Mapping[str, Any]) -> Usage | None:
        return usage_of(result.get("usage"))

    @staticmethod
    def stream_usage(usage: Any) -> Usage | None:
        return usage_of(usage)

    @staticmethod
    def relay_chunk(event: dict[str, Any], public: str, include_usage: bool
                    ) -> tuple[dict[str, Any] | None, Any]:
        """Every event goes to the client; a response object names the public model, and a
        terminal one carries the usage."""
        response = event.get("response")
        if not isinstance(response, dict):
            return event, None
        response["model"] = public
        if event.get("type") not in TERMINAL_EVENTS:
            return event, None
        usage = response.get("usage")
        if isinstance(usage, dict) and usage.get(ESTIMATED):
            response["usage"] = {k: v for k, v in usage.items() if k != ESTIMATED}
        return event, usage

    @staticmethod
    def usage_chunk(last: Mapping[str, Any], public: str, usage: Usage) -> None:
        return None  # usage travels in the terminal event, never in a chunk of its own

    def stream_encoder(self, ctx: RequestContext) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(ctx)


_PARAMS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_output_tokens",
           "max_completion_tokens": "max_output_tokens", "user": "user",
           "parallel_tool_calls": "parallel_tool_calls", "tool_choice": "tool_choice",
           "tools": "tools", "response_format": "text", "reasoning_effort": "reasoning",
           "store": "store", "stream": "stream", "metadata": "metadata"}


def _param(key: str, value: Any) -> tuple[str | None, Any]:
    """A template param (Chat names) as a Responses field; None: no Responses meaning."""
    name = _PARAMS.get(key)
    if name == "tools" and isinstance(value, list):
        value = [{"type": "function", **t["function"]} if isinstance(t, dict)
                 and isinstance(t.get("function"), dict) else t for t in value]
    elif name == "tool_choice" and isinstance(value, dict) and isinstance(
            value.get("function"), dict):
        value = {"type": "function", "name": value["function"].get("name")}
    elif name == "text" and isinstance(value, dict):
        fmt = dict(value.get("json_schema") or {}) if value.get("type") == "json_schema" else {}
        value = {"format": {"type": value.get("type"), **fmt}}
    elif name == "reasoning":
        value = {"effort": value}
    return name, value


class ResponsesStreamEncoder:
    """Events to SSE (see the module docstring); what the client got is kept for the audit
    event (`ctx.answer`: the output text) and for the store (`ResponseState.final`)."""

    __slots__ = ("ctx", "done", "items", "parts", "seq", "snapshot", "state", "transport")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.transport = ctx.transport
        self.state = response_state(ctx)
        self.parts: list[str] = []
        ctx.answer = self.parts
        self.seq = 0
        self.snapshot: dict[str, Any] | None = None  # the last response object sent
        self.items: dict[int, dict[str, Any]] = {}  # output items done, by output_index
        self.done = False

    async def _write(self, kind: str, event: dict[str, Any]) -> None:
        if not self.transport.started:
            await self.transport.start({**SSE_HEADERS, **self.ctx.response_headers})
        self.seq += 1
        event["sequence_number"] = self.seq
        await self.transport.write(b"event: " + kind.encode() + b"\ndata: "
                                   + orjson.dumps(event) + b"\n\n")

    async def send(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or self.done:
            return
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            delta = event.get("delta")
            if isinstance(delta, str):
                self.parts.append(delta)
        elif kind == "response.output_item.done":
            index, item = event.get("output_index"), event.get("item")
            if isinstance(index, int) and isinstance(item, dict):
                self.items[index] = item
        elif kind in RESPONSE_EVENTS:
            response = event.get("response")
            if isinstance(response, dict):
                own_response(response, self.state)
                self.snapshot = response
                if kind in TERMINAL_EVENTS:
                    self.done = True
                    self.state.final = response
                    if self.state.on_final is not None:
                        await self.state.on_final(response)
        await self._write(kind, event)

    async def close(self, last: dict[str, Any]) -> None:
        return None  # the terminal event was the last one (a stream without one failed)

    async def fail(self, error: GatewayError) -> None:
        """`response.failed`: the response so far, its completed items and the error."""
        if self.done:
            return
        self.done = True
        base = dict(self.snapshot) if self.snapshot is not None else {
            "id": self.state.id, "object": "response", "created_at": self.state.created_at,
            "model": self.ctx.model}
        response = {**base, "status": "failed", "completed_at": None,
                    "output": [self.items[i] for i in sorted(self.items)],
                    "error": {"code": error.code or "upstream_error",
                              "message": error.message}, "usage": None}
        own_response(response, self.state)
        self.state.final = response
        await self._write("response.failed", {"type": "response.failed", "response": response})


RESPONSES = ResponsesProtocol()
