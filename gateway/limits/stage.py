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

After the request (a finisher: exactly once, also for failed, cancelled and partial streams):
the cost of the usage the provider reported (or the pipeline estimated from the streamed
text), the settlement of the reservation to it, and the spend rollup.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from gateway.errors import Forbidden, InvalidRequest, QuotaExceeded, RateLimited
from gateway.limits import estimate
from gateway.limits.limiter import Limiter
from gateway.limits.model import Decision, Reservation
from gateway.pipeline.state import RequestState
from gateway.timeutil import utcnow

log = logging.getLogger("gateway.limits")

_SCOPE_NAMES = {"key": "this key", "team": "this key's team", "user": "this end user",
                "key_model": "this model for this key", None: "the gateway"}
_PROMPT_PARAM = {"chat": "messages", "completions": "prompt", "embeddings": "input"}


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `12.5s`, `1m0s`."""
    seconds = max(0.0, seconds)
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}m{rest:.0f}s"
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    if decision.requests is not None:
        room = decision.requests
        headers["x-ratelimit-limit-requests"] = str(room.limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, room.remaining))
        headers["x-ratelimit-reset-requests"] = _duration(room.reset_s)
    if decision.tokens is not None:
        room = decision.tokens
        headers["x-ratelimit-limit-tokens"] = str(room.limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, room.remaining))
        headers["x-ratelimit-reset-tokens"] = _duration(room.reset_s)
    return headers


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


class Limits:
    """The pipeline stage (after `ModelAccess`: the model and the key's policy are known)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.prices = limiter.prices
        self._warned: set[tuple[str, str]] = set()

    async def before(self, state: RequestState) -> None:
        principal, model, body = state.principal, state.model, state.body
        assert principal is not None and model is not None
        policy = state.extra.get("policy")
        limits = getattr(policy, "limits", None)
        worst = self.prices.worst_case(model)
        if worst.unpriced and self.limiter.unpriced_models == "block":
            state.event["cost_nanos"] = 0
            raise Forbidden(f"the model {model!r} has no price ({worst.unpriced[0]}) and "
                            "limits.unpriced_models is block: add `pricing:` for it",
                            param="model", code="model_unpriced")
        max_output = getattr(limits, "max_output_tokens", None)
        field, asked = estimate.requested_output(body)
        if state.endpoint != "embeddings" and max_output is not None:
            if asked is not None and asked > max_output:
                raise InvalidRequest(f"{field!r} is {asked}, over this key's limit of "
                                     f"{max_output} output tokens per request", param=field,
                                     code="invalid_value")
            if asked is None:
                body["max_tokens"] = asked = max_output
        scopes = self.limiter.scopes(principal, limits, model, body.get("user"))
        now = utcnow()
        budgets = self.limiter.budgets(principal, getattr(policy, "budget", None), now)
        max_input = getattr(limits, "max_input_tokens", None)
        counted = budgets or max_input is not None or any(s.tpm is not None for s in scopes)
        prompt = out = 0
        if counted:
            prompt = await estimate.prompt_tokens(state.endpoint, body, model)
            state.extra["prompt_tokens_estimate"] = prompt
            if max_input is not None and prompt > max_input:
                raise InvalidRequest(f"the prompt has {prompt} tokens, over this key's limit of "
                                     f"{max_input} input tokens per request",
                                     param=_PROMPT_PARAM[state.endpoint],
                                     code="context_length_exceeded")
            if state.endpoint != "embeddings":
                cap = asked if asked is not None else (
                    worst.max_output_tokens or estimate.DEFAULT_MAX_OUTPUT_TOKENS)
                out = cap * estimate.choices(body)
        reservation: Reservation | None = None
        if scopes or budgets:
            tokens = prompt + out
            tpms = [s.tpm for s in scopes if s.tpm is not None]
            if asked is None and tpms:
                tokens = prompt + max(0, min(out, min(tpms) - prompt))
            reservation = Reservation(state.event["id"], scopes, budgets, tokens,
                                      worst.cost_nanos(worst.reserve_input(prompt), out))
            decision = await self.limiter.reserve(reservation)
            headers = ratelimit_headers(decision)
            if headers:
                state.headers.update(headers)
            if not decision.allowed:
                state.event["cost_nanos"] = 0
                if self.limiter.metrics is not None:
                    self.limiter.metrics.limiter_rejections.labels(
                        decision.scope or "store", decision.reason or "unknown").inc()
                raise _refusal(decision, reservation)
        state.finishers.append(lambda s: self.finish(s, reservation))

    def finish(self, state: RequestState, reservation: Reservation | None) -> None:
        usage = state.usage if isinstance(state.usage, dict) else None
        inp = out = total = 0
        cost: int | None = 0
        target = state.target
        if usage is not None:
            inp = _count(usage.get("prompt_tokens"))
            out = _count(usage.get("completion_tokens"))
            total = _count(usage.get("total_tokens")) or inp + out
            if target is not None:
                cost = self.prices.cost(target.model, target.litellm_model, usage)
                if cost is None:
                    cost = self._unpriced(target.model, target.litellm_model)
        state.cost_nanos = cost
        state.event["cost_nanos"] = cost
        if reservation is not None:
            self.limiter.settle(reservation, total, cost or 0)
        principal = state.principal
        event = state.event
        self.limiter.spend.record(
            event.get("received_at") or utcnow(), principal.key_id if principal else None,
            principal.team if principal else None, event.get("model_served") or state.model,
            event.get("template_name"), inp, out, cost or 0)

    def _unpriced(self, model: str, deployment: str) -> int | None:
        """No price for what served: `zero` says it is free; otherwise the cost is unknown
        (None in the audit event, never a silent $0) and counted in a metric."""
        if self.limiter.unpriced_models == "zero":
            return 0
        if self.limiter.metrics is not None:
            self.limiter.metrics.unpriced.labels(model).inc()
        if (model, deployment) not in self._warned and len(self._warned) < 10_000:
            self._warned.add((model, deployment))
            log.warning("no price for this deployment: its cost is recorded as unknown",
                        extra={"model": model, "deployment": deployment})
        return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
