"""The limits stage: check per-request caps, reserve in every scope, settle when it ends.

Before the provider call: `max_output_tokens` (400 when the request asks for more; sent as
`max_tokens` when it sets none), prompt tokens against `max_input_tokens` (400), then one
reservation of the estimated tokens (prompt + output cap x choices) and the worst-case cost
(the dearest deployment the model and its fallbacks may reach) in every scope and budget.
A refusal is 429 `rate_limit_exceeded` with `Retry-After`, or 429 `insufficient_quota` for
a spent budget. When the request sets no output cap, the cap assumed is the model's maximum
output from the price map (else `DEFAULT_MAX_OUTPUT_TOKENS`); for tpm it is cut to what the
tightest tpm leaves after the prompt, since a client that asked for no cap cannot be
refused for one it did not ask for.

After the request (in `finally`: exactly once, also for failed, cancelled and partial
streams): the reservation settled to the usage and cost the cost stage put on the request
(provider-reported, or estimated from the streamed text), and the spend rollup.
"""

from __future__ import annotations

import math

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidRequest,
    QuotaExceeded,
    RateLimited,
    excerpt,
)
from gateway.limits import estimate
from gateway.limits.headers import RoomMemory, ratelimit_headers
from gateway.limits.limiter import Limiter
from gateway.limits.model import Decision, Reservation
from gateway.timeutil import utcnow

_SCOPE_NAMES = {"key": "this key", "team": "this key's team", "user": "this end user",
                "key_model": "this model for this key", None: "the gateway"}


def _refusal(d: Decision, r: Reservation) -> Exception:
    who = _SCOPE_NAMES.get(d.scope, "this key")
    if d.reason == "budget":
        return QuotaExceeded(f"the budget of {who} is spent: this request could cost up to "
                             f"${r.cost_nanos / 1e9:.6f}; set a lower max_tokens or wait for "
                             "the next budget period")
    retry = max(1, math.ceil(d.retry_after_s or 1))
    if d.reason == "rpm":
        limit = d.requests.limit if d.requests else "its"
        message = f"rate limit reached for {who}: {limit} requests per minute"
    elif d.reason == "tpm" and d.too_large:
        limit = d.tokens.limit if d.tokens else "its"
        message = (f"this request needs up to {r.tokens} tokens, more than the limit of {who} "
                   f"({limit} tokens per minute): send a shorter prompt or a lower max_tokens")
    elif d.reason == "tpm":
        limit = d.tokens.limit if d.tokens else "its"
        message = (f"rate limit reached for {who}: {limit} tokens per minute "
                   f"(this request needs up to {r.tokens})")
    elif d.reason == "concurrency":
        message = f"too many concurrent requests for {who}"
    else:
        message = "the rate limiter is unavailable; retry shortly"
    return RateLimited(f"{message}; retry after {retry}s", headers={"retry-after": str(retry)})


class LimitHeaders:
    """`x-ratelimit-*` on answers the limits stage did not decide (refused before it), for
    a key with a limit in any scope."""

    def __init__(self, rooms: RoomMemory) -> None:
        self.rooms = rooms

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        try:
            return await call_next(ctx)
        except GatewayError:
            if ctx.principal is not None and "x-ratelimit-limit-requests" not in \
                    ctx.response_headers and "x-ratelimit-limit-tokens" not in \
                    ctx.response_headers:
                ctx.response_headers.update(self.rooms.headers(ctx.principal))
            raise


class Limits:
    """The pipeline stage (after `ModelAccess`: the model and the key's policy are known)."""

    def __init__(self, limiter: Limiter, rooms: RoomMemory) -> None:
        self.limiter = limiter
        self.prices = limiter.prices
        self.rooms = rooms

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        reservation = await self.reserve(ctx)
        try:
            return await call_next(ctx)
        finally:
            self.settle(ctx, reservation)

    async def reserve(self, ctx: RequestContext) -> Reservation | None:
        principal, model, body = ctx.principal, ctx.model, ctx.body
        assert principal is not None and model is not None
        event = ctx.event.fields
        limits = getattr(ctx.policy, "limits", None)
        worst = self.prices.worst_case(model)
        if worst.unpriced and self.limiter.unpriced_models == "block":
            event["cost_nanos"] = 0
            raise Forbidden(f"the model {excerpt(model)} has no price ({worst.unpriced[0]}) "
                            "and limits.unpriced_models is block: add `pricing:` for it",
                            param="model", code="model_unpriced")
        max_output = getattr(limits, "max_output_tokens", None)
        field, asked = estimate.requested_output(body)
        if ctx.endpoint != "embeddings" and max_output is not None:
            if asked is not None and asked > max_output:
                raise InvalidRequest(f"{field!r} is {asked}, over this key's limit of "
                                     f"{max_output} output tokens per request", param=field,
                                     code="invalid_value")
            if asked is None:
                body[getattr(ctx.protocol, "output_cap_field", "max_tokens")] = asked = \
                    max_output
        scopes = self.limiter.scopes(principal, limits, model, body.get("user"))
        budgets = self.limiter.budgets(principal, getattr(ctx.policy, "budget", None),
                                       utcnow())
        max_input = getattr(limits, "max_input_tokens", None)
        counted = budgets or max_input is not None or any(s.tpm is not None for s in scopes)
        prompt = out = 0
        if counted:
            prompt = await estimate.prompt_tokens_of(ctx)
            if max_input is not None and prompt > max_input:
                raise InvalidRequest(f"the prompt has {prompt} tokens, over this key's limit of "
                                     f"{max_input} input tokens per request",
                                     param=ctx.protocol.prompt_field,
                                     code="context_length_exceeded")
            if ctx.endpoint != "embeddings":
                cap = asked if asked is not None else (
                    worst.max_output_tokens or estimate.DEFAULT_MAX_OUTPUT_TOKENS)
                out = cap * estimate.choices(body)
        if not (scopes or budgets):
            return None
        tokens = prompt + out
        tpms = [s.tpm for s in scopes if s.tpm is not None]
        if asked is None and tpms:
            tokens = prompt + max(0, min(out, min(tpms) - prompt))
        reservation = Reservation(ctx.event.id, scopes, budgets, tokens,
                                  worst.cost_nanos(worst.reserve_input(prompt), out))
        decision = await self.limiter.reserve(reservation)
        headers = ratelimit_headers(decision)
        if headers:
            ctx.response_headers.update(headers)
            self.rooms.remember(principal.key_id, decision)
        if not decision.allowed:
            event["cost_nanos"] = 0
            if self.limiter.metrics is not None:
                self.limiter.metrics.limiter_rejections.labels(
                    decision.scope or "store", decision.reason or "unknown").inc()
            raise _refusal(decision, reservation)
        return reservation

    def settle(self, ctx: RequestContext, reservation: Reservation | None) -> None:
        """The reservation to what the request used, and the spend rollup."""
        usage = ctx.usage
        cost = ctx.cost_nanos or 0
        if reservation is not None:
            self.limiter.settle(reservation, usage.total_tokens if usage else 0, cost)
        principal = ctx.principal
        event = ctx.event.fields
        self.limiter.spend.record(
            event.get("received_at") or utcnow(), principal.key_id if principal else None,
            principal.team if principal else None, event.get("model_served") or ctx.model,
            event.get("template_name"), usage.input_tokens if usage else 0,
            usage.output_tokens if usage else 0, cost)
