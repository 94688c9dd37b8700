"""OpenAI's three model protocols (chat, completions, embeddings) at the edge.

Each adapter validates its wire body, says where its prompt is, counts the prompt (the one
token count of a request), and encodes answers: errors in OpenAI's envelope, streams as SSE
`data:` lines ending with `data: [DONE]`, or with an error event when the upstream failed
after the first byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from gateway import tokens
from gateway.config import ServerConfig
from gateway.core.request import RequestContext, Usage
from gateway.errors import GatewayError
from gateway.protocols import validate
from gateway.protocols.anthropic import MESSAGES
from gateway.protocols.responses import RESPONSES

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
               "x-accel-buffering": "no"}
_DONE = b"data: [DONE]\n\n"


class OpenAIProtocol:
    """One OpenAI protocol: `name` is the endpoint kind, `path` its route."""

    def __init__(self, name: str, path: str, *, prompt_field: str, can_stream: bool,
                 templates: bool, validator: Callable[[dict[str, Any], ServerConfig], None]
                 ) -> None:
        self.name = name
        self.path = path
        self.prompt_field = prompt_field
        self.can_stream = can_stream
        self.templates = templates
        self._validate = validator

    # The caller's key: `Authorization: Bearer <virtual key>`.
    credential_headers: frozenset[str] = frozenset()

    @staticmethod
    def authorization(headers: Mapping[str, str]) -> str | None:
        """The `Authorization` value to authenticate (a protocol may take another header)."""
        return headers.get("authorization")

    def validate(self, body: dict[str, Any], server: ServerConfig) -> None:
        """400 naming the field for a body this protocol does not accept."""
        self._validate(body, server)

    def count_prompt(self, body: Mapping[str, Any], model: str) -> int:
        """Prompt tokens of a request (tools, schemas and images included, estimated)."""
        return tokens.count_request(self.name, body, model)

    def prompt_size(self, body: Mapping[str, Any]) -> int:
        """Characters of prompt text: a cheap bound that says when counting is heavy."""
        return tokens.text_size(body.get(self.prompt_field))

    @staticmethod
    def error_body(exc: GatewayError) -> bytes:
        return exc.to_json()

    # --- answers ---------------------------------------------------------------------------
    @staticmethod
    def name_model(result: dict[str, Any], public: str) -> None:
        """An answer names the public model that served (after a fallback, the fallback)."""
        result["model"] = public

    @staticmethod
    def answer_usage(result: Mapping[str, Any]) -> Usage | None:
        return Usage.from_openai(result.get("usage"))

    @staticmethod
    def stream_usage(usage: Any) -> Usage | None:
        """The usage a stream reported (what `relay_chunk` returned)."""
        return Usage.from_openai(usage)

    @staticmethod
    def relay_chunk(chunk: dict[str, Any], public: str, include_usage: bool
                    ) -> tuple[dict[str, Any] | None, Any]:
        """What of an upstream chunk goes to the client (None: nothing), and its usage.

        The usage chunk goes out only when the client asked for it (the gateway always asks
        the upstream, to count)."""
        usage = chunk.get("usage") or None
        if usage is not None and not include_usage:
            chunk = {k: v for k, v in chunk.items() if k != "usage"}
        if not (chunk.get("choices") or (include_usage and usage is not None)):
            return None, usage
        chunk["model"] = public
        return chunk, usage

    @staticmethod
    def usage_chunk(last: Mapping[str, Any], public: str, usage: Usage) -> dict[str, Any]:
        """The usage chunk of a stream whose upstream sent none (the gateway's estimate)."""
        ids = {k: last[k] for k in ("id", "object", "created", "system_fingerprint")
               if k in last}
        return {**ids, "model": public, "choices": [], "usage": usage.as_openai()}

    def stream_encoder(self, ctx: RequestContext) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(ctx)


class OpenAIStreamEncoder:
    """Chunks to SSE; the text the client got is kept for the audit event (`ctx.answer`)."""

    __slots__ = ("ctx", "parts", "transport")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.transport = ctx.transport
        self.parts: list[str] = []
        ctx.answer = self.parts  # joined by the audit stage: what the client got, even if cut

    async def _write(self, data: bytes) -> None:
        if not self.transport.started:
            await self.transport.start({**SSE_HEADERS, **self.ctx.response_headers})
        await self.transport.write(data)

    async def send(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if "delta" in choice \
                else choice.get("text")
            if isinstance(piece, str) and piece:
                self.parts.append(piece)
        await self._write(b"data: " + orjson.dumps(chunk) + b"\n\n")

    async def close(self, last: dict[str, Any]) -> None:
        await self._write(_DONE)  # a complete answer

    async def fail(self, error: GatewayError) -> None:
        await self._write(b"data: " + error.to_json() + b"\n\n")


CHAT = OpenAIProtocol("chat", "/v1/chat/completions", prompt_field="messages",
                      can_stream=True, templates=True, validator=validate.validate_chat)
COMPLETIONS = OpenAIProtocol("completions", "/v1/completions", prompt_field="prompt",
                             can_stream=True, templates=True,
                             validator=validate.validate_completion)
EMBEDDINGS = OpenAIProtocol("embeddings", "/v1/embeddings", prompt_field="input",
                            can_stream=False, templates=False,
                            validator=validate.validate_embeddings)
PROTOCOLS: dict[str, Any] = {p.name: p for p in (CHAT, COMPLETIONS, EMBEDDINGS, MESSAGES)}
PROTOCOLS[RESPONSES.name] = RESPONSES  # /v1/responses (protocols/responses.py)
