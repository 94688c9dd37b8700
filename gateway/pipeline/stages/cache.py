"""The response cache, as two stages around the PII stage (`gateway.cache` holds the rest).

`CacheLookup` runs last before the call, when the body is what goes upstream (template
expanded, PII redacted): it decides (BYPASS for requests whose answer is not one answer:
`n > 1`, sampled without a seed unless the route opts in, a `user`-scoped route without an
end user; `Cache-Control: no-cache, no-store`), looks the key up and serves a hit, whole or
replayed as a stream through the protocol's encoder and the stages' stream filters (so PII
is restored from this request's own placeholders). On a miss it calls the provider and keeps
the answer in its redacted form (a stream: rebuilt from its chunks, only when it reached its
end). `CacheFill` runs outside the PII and cost stages: it writes that answer after the
output rules passed it unchanged, with the usage and cost the stages settled on. Errors,
cut streams and cancelled requests never reach the write.

A hit: `x-gateway-cache: HIT` and `Age`, audit `cache_status`, `cache_source_request_id`
and `saved_cost_nanos` (the source's cost), cost 0, the stored usage (not counted against
tpm unless `hits_use_tpm`; rpm counts every request).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.cache.controls import NAMESPACE_HEADER, namespace, parse_cache_control
from gateway.cache.entry import Entry, decode, encode
from gateway.cache.keys import KeyMaker, scope_of
from gateway.cache.rules import RulesBook
from gateway.cache.state import STATUS_HEADER, CacheState
from gateway.cache.store import CacheStore
from gateway.config import CacheRules
from gateway.core.request import ChunkSink, Reply, RequestContext, Usage
from gateway.core.stages import Handler
from gateway.protocols.replay import Assembler, replay_chunks
from gateway.protocols.replay_more import EventAssembler, replay_events, replayable
from gateway.timeutil import utcnow

_SAMPLED_ENDPOINTS = frozenset({"chat", "completions", "responses", "messages"})
_CHUNKED = frozenset({"chat", "completions"})  # OpenAI chunk streams (the others: events)


def _usage_dict(usage: Usage | None) -> dict[str, Any] | None:
    """Usage as stored: OpenAI's shape, whatever the protocol (its details for pricing)."""
    return dict(usage.details or usage.as_openai()) if usage is not None else None


def bypass_reason(ctx: RequestContext, rules: CacheRules) -> str | None:
    """Why this request's answer is not one reusable answer, or None."""
    body = ctx.body
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return "n"
    if ctx.endpoint == "responses":
        # A response that is stored or continues one has state beyond its answer.
        state = ctx.protocol_state
        if state is None or state.store or state.previous_id is not None \
                or body.get("conversation") is not None:
            return "stateful"
    if ctx.endpoint in _SAMPLED_ENDPOINTS and not rules.sampled and body.get("seed") is None:
        temperature = body.get("temperature")
        # Absent: the provider's default (1 for OpenAI and Anthropic), a sampled answer.
        if not isinstance(temperature, (int, float)) or temperature > 0:
            return "sampled"
    return None


class CacheLookup:
    def __init__(self, rules: RulesBook, keys: KeyMaker, store: CacheStore,
                 metrics: Any = None) -> None:
        self.rules = rules
        self.keys = keys
        self.store = store
        self.metrics = metrics

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        rules = self.rules.of(ctx.model, ctx.policy)
        if rules is None:
            return await call_next(ctx)
        state = ctx.cache = CacheState(rules)
        controls = parse_cache_control(ctx.headers.get("cache-control"))
        ns = namespace(ctx.headers.get(NAMESPACE_HEADER))
        assert ctx.principal is not None
        scope = scope_of(rules.scope, ctx.principal, ctx.user)
        if scope is None or bypass_reason(ctx, rules) is not None \
                or (controls.no_cache and controls.no_store):
            self._status(ctx, state, "BYPASS")
            return await call_next(ctx)
        forwarded = getattr(ctx.protocol, "forward_headers", None)
        key = state.key = self.keys.prefix(*scope, ns) + self.keys.digest(
            ctx.endpoint, ctx.model or "", ctx.template, ctx.policy, ctx.body,
            forwarded(ctx.headers) if forwarded is not None else None)
        if not controls.no_cache:
            raw = await self.store.get(key)
            entry = decode(raw) if raw is not None else None
            if entry is not None:
                age = entry.age_s()
                if controls.max_age_s is None or age <= controls.max_age_s:
                    return await self._hit(ctx, state, entry, age)
        self._status(ctx, state, "REFRESH" if controls.no_cache else "MISS")
        state.store = not controls.no_store
        if not state.store:
            return await call_next(ctx)
        assembler: Assembler | EventAssembler | None = None
        if ctx.stream:
            assembler = Assembler(ctx.endpoint) if ctx.endpoint in _CHUNKED \
                else EventAssembler(ctx.endpoint)
            ctx.stream_filters.insert(0, assembler.wrap)  # outermost: the upstream's chunks
        reply = await call_next(ctx)
        if reply.status == 200 and reply.error_code is None:
            answer = reply.body if assembler is None \
                else assembler.answer(_usage_dict(ctx.usage))
            if answer is not None and replayable(ctx.endpoint, answer):
                state.pending = orjson.dumps(answer)  # before later stages touch it
        return reply

    def _status(self, ctx: RequestContext, state: CacheState, status: Any) -> None:
        state.status = status
        ctx.response_headers[STATUS_HEADER] = status
        ctx.event.fields["cache_status"] = status
        if self.metrics is not None:
            principal = ctx.principal
            self.metrics.cache_requests.labels(
                ctx.model or "", (principal.team if principal else None) or "", status).inc()

    async def _hit(self, ctx: RequestContext, state: CacheState, entry: Entry, age: int
                   ) -> Reply:
        self._status(ctx, state, "HIT")
        ctx.response_headers["age"] = str(age)
        fields = ctx.event.fields
        fields["cache_source_request_id"] = entry.source_request_id
        fields["saved_cost_nanos"] = entry.cost_nanos
        fields["model_served"] = entry.model_served
        fields["deployment"] = entry.deployment
        fields["first_byte_at"] = utcnow()
        if self.metrics is not None and entry.cost_nanos:
            principal = ctx.principal
            self.metrics.cache_saved.labels(
                ctx.model or "", (principal.team if principal else None) or "").inc(
                entry.cost_nanos / 1e9)
        usage = entry.usage
        if usage is not None:
            ctx.usage = Usage.from_openai(
                usage, "provider" if entry.usage_source == "provider" else "estimated")
        answer = entry.answer
        if not ctx.stream:
            return Reply(body=answer)
        sink: ChunkSink = ctx.protocol.stream_encoder(ctx)
        for wrap in reversed(ctx.stream_filters):
            sink = wrap(sink)
        last: dict[str, Any] = {}
        if ctx.endpoint in _CHUNKED:
            for last in replay_chunks(ctx.endpoint, answer,
                                      usage if ctx.include_usage else None):
                await sink.send(last)
        else:
            async for last in replay_events(ctx.endpoint, answer, usage, ctx.body):
                await sink.send(last)
        await sink.close(last)
        return Reply()


class CacheFill:
    """Writes what `CacheLookup` kept, once the answer is known to be storable."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        reply = await call_next(ctx)
        state: CacheState | None = ctx.cache
        if state is None or state.pending is None or ctx.output_pii_found:
            return reply
        usage: Usage | None = ctx.usage
        fields = ctx.event.fields
        assert state.key is not None
        await self.store.put(state.key, encode(
            answer=state.pending, source_request_id=fields["request_id"],
            model_served=fields.get("model_served"), deployment=fields.get("deployment"),
            usage=_usage_dict(usage),
            usage_source=usage.source if usage is not None else "provider",
            cost_nanos=ctx.cost_nanos), state.rules.ttl_s)
        return reply
