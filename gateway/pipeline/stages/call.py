"""The terminal handler: route the request, try, retry, fall back (`Router`), and answer.

A whole answer is returned as `Reply.body`. A stream is pushed to the client here, through the
protocol's encoder wrapped by the stages' stream filters, so every stage's `finally` runs
after the last chunk: a stream that breaks after its first byte ends with the protocol's
error event (never a silent cut) and a `Reply` with its `error_code`; a client that leaves
cancels this task, and the upstream is closed. The answer names the public model that served
(after a fallback, the fallback's). Without provider usage, a stream's usage is estimated
(the request's prompt count, the streamed text's tokens), and a client that asked for
`include_usage` gets that estimate as its usage chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway import tokens
from gateway.core.iterators import close_later
from gateway.core.request import ChunkSink, Reply, RequestContext, StreamItem, Usage
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.limits.estimate import prompt_tokens_of
from gateway.protocols.anthropic import UPSTREAM_HEADERS
from gateway.providers.base import ProviderError
from gateway.routing.router import Attempts, Router
from gateway.timeutil import utcnow

# Fields that are the gateway's, not the provider's.
_GATEWAY_FIELDS = frozenset({"template", "stream_options"})


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    if _GATEWAY_FIELDS.isdisjoint(body):
        return body
    return {k: v for k, v in body.items() if k not in _GATEWAY_FIELDS}


def provider_body(ctx: RequestContext) -> dict[str, Any]:
    """The body for the provider: without the gateway's fields, with the client headers its
    protocol forwards to a passthrough deployment (Messages: `anthropic-version`,
    `anthropic-beta`) under `UPSTREAM_HEADERS`, which the providers take out."""
    body = upstream_body(ctx.body)
    forward = getattr(ctx.protocol, "forward_headers", None)
    headers = forward(ctx.headers) if forward is not None else None
    return {**body, UPSTREAM_HEADERS: headers} if headers else body


class CallProvider:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, ctx: RequestContext) -> Reply:
        if ctx.stream:
            return await self._stream(ctx)
        attempts = Attempts()
        assert ctx.model is not None
        try:
            result = await self.router.call(ctx.model, ctx.endpoint, provider_body(ctx),
                                            attempts, pin=ctx.pinned_deployment)
        finally:
            _served(ctx, attempts)
        protocol = ctx.protocol
        protocol.name_model(result, attempts.target.model if attempts.target else ctx.model)
        ctx.usage = protocol.answer_usage(result)
        ctx.event.fields["first_byte_at"] = utcnow()
        return Reply(body=result)

    async def _stream(self, ctx: RequestContext) -> Reply:
        attempts = Attempts()
        assert ctx.model is not None
        try:
            first, iterator, slot = await self.router.open_stream(
                ctx.model, ctx.endpoint, provider_body(ctx), attempts,
                pin=ctx.pinned_deployment)
        finally:
            _served(ctx, attempts)
        sink: ChunkSink = ctx.protocol.stream_encoder(ctx)
        for wrap in reversed(ctx.stream_filters):
            sink = wrap(sink)
        relay = _Relay(ctx, sink, slot.target.model)
        ok = False
        try:
            await relay.run(first, iterator)
            ok = True
            return Reply()
        except (ProviderError, GatewayError) as exc:
            if not ctx.transport.started:
                raise _as_gateway_error(exc) from None
            ctx.event.fields["partial"] = True
            error = _as_gateway_error(exc)
            await sink.fail(error)
            return Reply(error_code=error.code)
        except BaseException:  # cancelled: the client left
            ctx.event.fields["cancelled"] = True
            ctx.event.fields["partial"] = True
            raise
        finally:
            relay.account()
            self.router.stream_finished(slot, ok or ctx.event.fields["cancelled"])
            if not ok:
                close_later(iterator)


def _served(ctx: RequestContext, attempts: Attempts) -> None:
    event = ctx.event.fields
    event["attempts"] = attempts.count
    event["fallback_used"] = attempts.fallback_used
    if attempts.target is not None:
        ctx.target = attempts.target
        event["model_served"] = attempts.target.model
        event["deployment"] = attempts.target.deployment


def _as_gateway_error(exc: BaseException) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    assert isinstance(exc, ProviderError)
    if exc.kind == "timeout":
        return UpstreamTimeout(f"the upstream failed mid-stream ({exc.message})")
    return UpstreamError(f"the upstream failed mid-stream ({exc.message})")


class _Relay:
    """One stream, upstream to client: the public model name on every chunk, usage kept."""

    __slots__ = ("ctx", "include_usage", "merge_usage", "public", "relay_chunk", "sink",
                 "usage")

    def __init__(self, ctx: RequestContext, sink: ChunkSink, public: str) -> None:
        self.ctx = ctx
        self.sink = sink
        self.public = public
        self.usage: Any = None
        self.include_usage = ctx.include_usage
        self.relay_chunk = ctx.protocol.relay_chunk
        self.merge_usage = getattr(ctx.protocol, "merge_usage", None)

    async def run(self, first: StreamItem, iterator: AsyncIterator[StreamItem]) -> None:
        ctx, sink = self.ctx, self.sink
        ctx.event.fields["first_byte_at"] = utcnow()
        item: StreamItem | None = first
        last: dict[str, Any] = {}
        anext = iterator.__anext__
        while item is not None:
            if isinstance(item, list):  # a translator's events of one upstream chunk
                last = await self._send_all(item, last)
            else:
                last = item
                await self._send(item)
            try:
                item = await anext()
            except StopAsyncIteration:
                item = None
        if self.include_usage and self.usage is None:
            # The upstream ignored stream_options: the client still gets its usage chunk.
            usage_chunk = ctx.protocol.usage_chunk(last, self.public, await self._estimate())
            if usage_chunk is not None:
                await sink.send(usage_chunk)
        await sink.close(last)

    async def _send(self, chunk: dict[str, Any]) -> None:
        out, usage = self.relay_chunk(chunk, self.public, self.include_usage)
        if usage is not None:
            merge = self.merge_usage  # usage over several events (Messages): merged
            self.usage = usage if merge is None else merge(self.usage, usage)
        if out is not None:
            await self.sink.send(out)

    async def _send_all(self, events: list[dict[str, Any]], last: dict[str, Any]
                        ) -> dict[str, Any]:
        """Several events in one write: held by the transport until the last is through."""
        transport = self.ctx.transport
        transport.hold()
        try:
            for last in events:
                await self._send(last)
        finally:
            await transport.flush()  # also what came before a failure (sent as far as it got)
        return last

    async def _estimate(self) -> Usage:
        ctx = self.ctx
        prompt = await prompt_tokens_of(ctx)
        answer = ctx.answer
        text = "".join(answer) if isinstance(answer, list) else ""
        out = tokens.count_text(text, self.public)
        usage = Usage(prompt, out, prompt + out, "estimated")
        ctx.usage = usage
        return usage

    def account(self) -> None:
        """The usage the provider reported, else an estimate (sync: runs when cancelled)."""
        ctx = self.ctx
        if self.usage is not None:
            ctx.usage = ctx.protocol.stream_usage(self.usage)
        elif ctx.usage is None:
            answer = ctx.answer
            text = "".join(answer) if isinstance(answer, list) else ""
            prompt = ctx.prompt_tokens
            if prompt is None:
                prompt = ctx.protocol.count_prompt(ctx.body, ctx.model or "")
            out = tokens.count_text(text, self.public)
            ctx.usage = Usage(prompt, out, prompt + out, "estimated")
