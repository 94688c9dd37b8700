"""The canonical request: what every protocol becomes, and what every stage reads and writes.

A `RequestContext` is built by the API layer for each model request (chat, completions,
embeddings, and the protocols added later), whatever protocol the client speaks. Its
`protocol` adapter knows that protocol's wire shape: validating a body, walking its texts,
counting its prompt, encoding answers and errors. The typed fields are what governance needs
from every protocol; `body` keeps the request in its own wire shape (the client's extra fields
included, opaque), as it will go upstream after the stages are done with it.

A stage's "after" work is a `try/finally` around `call_next`: a stream is pushed to the client
through `sink` *inside* the terminal stage, so `call_next` returns only when the answer has
been sent in full, has failed or was cancelled, and every stage's `finally` sees the outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.context import Principal
from gateway.core.audit_event import AuditEvent

if TYPE_CHECKING:
    from gateway.providers.base import Target

Endpoint = Literal["chat", "completions", "embeddings", "responses", "messages"]
UsageSource = Literal["provider", "estimated"]
# What a stream yields: a chunk, or the events a translator made of one upstream chunk (the
# relay sends those in one write)
StreamItem = dict[str, Any] | list[dict[str, Any]]


@dataclass(slots=True)
class Usage:
    """Tokens of one answer. `details` is the provider's usage object in OpenAI's shape
    (cached and reasoning token details for pricing), when it reported one."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    source: UsageSource = "provider"
    details: Mapping[str, Any] | None = None

    @classmethod
    def from_openai(cls, usage: Any, source: UsageSource = "provider") -> Usage | None:
        """From an OpenAI `usage` object (None when it is not one)."""
        if not isinstance(usage, Mapping):
            return None
        inp = _count(usage.get("prompt_tokens"))
        out = _count(usage.get("completion_tokens"))
        total = _count(usage.get("total_tokens")) or inp + out
        return cls(inp, out, total, source, usage)

    def as_openai(self) -> dict[str, int]:
        return {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens,
                "total_tokens": self.total_tokens}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Transport(Protocol):
    """The client connection of one request (the API layer implements it)."""

    started: bool

    async def start(self, headers: Mapping[str, str]) -> None:
        """Send the status line (200) and headers of a stream; watch for the client leaving."""

    async def write(self, data: bytes) -> None: ...

    def hold(self) -> None:
        """Keep what `write` gets from now on, for `flush` to send in one piece."""

    async def flush(self) -> None:
        """Send what was held, in one write, and stop holding."""


class ChunkSink(Protocol):
    """Where a stream's chunks go, in the client's protocol; output filters wrap it."""

    async def send(self, chunk: dict[str, Any]) -> None: ...

    async def close(self, last: dict[str, Any]) -> None:
        """The stream ended complete; `last` is its last upstream chunk (ids, model)."""

    async def fail(self, error: Any) -> None:
        """The stream broke after it started: tell the client (never a silent cut)."""


@dataclass(slots=True)
class Reply:
    """What the pipeline answers. `body`: a whole answer, in the client's protocol. A stream
    has been sent through the sink already (`body` None); `error_code` says when it broke
    after its first byte."""

    body: dict[str, Any] | None = None
    status: int = 200
    error_code: str | None = None


@dataclass(slots=True, eq=False)
class RequestContext:
    endpoint: Endpoint
    protocol: Any  # gateway.protocols.base.Protocol: a protocol adapter
    event: AuditEvent
    headers: Mapping[str, str]  # the client's request headers, names in lower case
    read_body: Callable[[int], Awaitable[bytes]]  # the raw body, at most N bytes
    transport: Transport
    principal: Principal | None = None
    # The request in its protocol's shape, as it will go upstream (stages rewrite it:
    # templates expand into it, PII is redacted in it) and the caller's own when it was.
    body: dict[str, Any] = field(default_factory=dict)
    original_body: dict[str, Any] | None = None
    model: str | None = None
    stream: bool = False
    include_usage: bool = False  # a stream's client asked for a usage chunk
    user: str | None = None
    policy: Any = None  # gateway.policies.model.EffectivePolicy once model access ran
    template: Any = None  # the resolved template version, when the request used one
    prompt_tokens: int | None = None  # the one prompt-token count (an estimate)
    target: Target | None = None  # the deployment that served (the last one tried)
    usage: Usage | None = None
    cost_nanos: int | None = None
    # Added to every answer of this request, errors included (x-ratelimit-*, …).
    response_headers: dict[str, str] = field(default_factory=dict)
    # Streams: wrappers of the protocol's chunk encoder, innermost last (PII output rules).
    stream_filters: list[Callable[[ChunkSink], ChunkSink]] = field(default_factory=list)
    # The answer as the client got it: a JSON object, or the text pieces a stream sent.
    answer: Any = None
    conceal: Callable[[Any], Any] | None = None  # PII restore: originals -> placeholders
    stored: Any = None  # the audit stage's redacted view of the bodies (made once)
    # Per-request state of a protocol that keeps some (Responses: the response id, the chain).
    protocol_state: Any = None
    # Routing may try only this deployment of the model (a chain whose state an upstream
    # holds), with no fallbacks.
    pinned_deployment: str | None = None
    cache: Any = None  # gateway.cache.state.CacheState when the route caches answers
    output_pii_found: bool = False  # the output rules found (and changed) something
