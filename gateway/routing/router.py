"""Pick a deployment, try it, retry on another, then walk the fallback chain.

`router.retries` extra tries per model (another deployment first; the same one only when it is
the only one left), then each `fallbacks` model in order, all within `total_timeout_s` (for a
stream: until its first chunk). A try that times out counts as an attempt. Until its first
chunk a stream is routed exactly like a non-stream request; it waits for that chunk at most
`first_token_timeout_s` and never longer than `timeout_s` (`deployments.build_slots`).

- Retried: connect errors, resets, timeouts, 408, 409, 429 and 5xx, with backoff and jitter
  before a deployment is tried again (`backoff.py`). 401/403/404 and other upstream 4xx say
  the deployment is misconfigured: the next deployment is tried, never that one again. The
  client's own errors (400, 413, 422) are not retried; a context-window error skips to the
  first fallback with a larger window.
- `Retry-After` (`pauses.py`): a deployment that answered with one (a 429 without one: 1 s)
  gets no request, from any replica when Redis is configured, until it has passed. Others are
  tried first; when every usable deployment of a model is waiting, the router waits for the
  first one free only if that fits before the deadline, else it moves on (never sleeping
  past the deadline). A 429 is not a health failure: it never trips the cooldown.
- Retries need a token from the `RetryBudget`; fallbacks' first tries do not.
- Cooldown (`health.py`): `failures_to_cooldown` failures in a row take a deployment out, never
  more than half of a model's deployments at once (a model with one deployment can lose it).
- Final errors, after every attempt and fallback:
  429 `rate_limit_exceeded` when the providers' rate limits are all that stopped the request:
  every failed attempt was a 429 (and at least one attempt was, or a deployment was skipped in
  a 429's Retry-After window); cooling-down or capped deployments do not change that.
  `Retry-After` is the time until the first deployment of the model or of a fallback takes
  requests again (whole seconds, at least 1). Any other failure in the mix decides instead:
  504 `upstream_timeout` when the last failure was a timeout (connect, first token, total),
  else 502 `upstream_error`; 503 `no_healthy_deployment` when nothing could be tried (all
  cooling down, at their caps, or waiting out a 503's Retry-After), with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import LoadedConfig
from gateway.core.iterators import aclose_quietly
from gateway.core.request import StreamItem
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.providers.base import Endpoint, Provider, ProviderError, Target
from gateway.providers.openai_compat import DIRECT_PROVIDERS
from gateway.providers.summary import scrub
from gateway.routing.backoff import backoff_s
from gateway.routing.context_window import context_windows, is_context_error, larger_fallback
from gateway.routing.deployments import DeploymentSlot, build_slots, monotonic
from gateway.routing.pauses import DEFAULT_RATE_LIMIT_S, Pauses, paused_for
from gateway.routing.retry_budget import RetryBudget
from gateway.routing.shared_pauses import SharedPauses
from gateway.routing.strategies import Picker, picker

log = logging.getLogger("gateway.routing")

_CLIENT_ERRORS = frozenset({400, 413, 422})
_NEVER_AGAIN = 1 << 30  # a `tried` count that keeps a deployment out for the rest of a request
T = TypeVar("T")


@dataclass(slots=True)
class Attempts:
    """What routing did for one request; read by the audit event."""

    count: int = 0
    fallback_used: bool = False
    target: Target | None = None


class _Blocked:
    """Why nothing could be tried (so far), and when something frees up."""

    __slots__ = ("rate_limited", "reasons", "wait_s")

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.wait_s = math.inf
        self.rate_limited = False  # a deployment was skipped in a 429's Retry-After window

    def note(self, wait_s: float, reason: str) -> None:
        self.wait_s = min(self.wait_s, wait_s)
        if reason not in self.reasons:
            self.reasons.append(reason)


class Router:
    def __init__(self, config: LoadedConfig, providers: dict[str, Provider],
                 rng: random.Random | None = None, *, metrics: Any = None,
                 price_map: Path | None = None, budget: RetryBudget | None = None,
                 shared_pauses: SharedPauses | None = None) -> None:
        self.config = config
        self.router_config = config.router
        self.slots = build_slots(config)
        self.fallbacks = {name: list(m.fallbacks) for name, m in config.models.items()}
        self._providers = providers
        for slots in self.slots.values():
            for slot in slots:
                with contextlib.suppress(KeyError):
                    slot.provider_times_out = bool(
                        getattr(self.provider_for(slot.target), "enforces_timeouts", False))
        self._rng = rng or random.Random()
        self._pickers: dict[str, Picker] = {
            name: picker(m.strategy or self.router_config.strategy)
            for name, m in config.models.items()}
        self._windows = context_windows(config, price_map)
        # Models that litellm may serve (a deployment of theirs or of a fallback): requests
        # to them carry only the fields litellm is allowed to see (`litellm_params`).
        self.translated = frozenset(
            name for name in self.slots
            if any(_translated(s.target) for m in (name, *self.fallbacks.get(name, ()))
                   for s in self.slots.get(m, ())))
        self.budget = budget or RetryBudget()
        self.shared_pauses = shared_pauses
        self.pauses = Pauses(s for slots in self.slots.values() for s in slots)
        if metrics is not None:
            for slots in self.slots.values():
                for slot in slots:
                    slot.bind_metrics(metrics)

    async def start(self) -> None:
        """Hear the other replicas' Retry-After waits (when they are shared)."""
        if self.shared_pauses is not None:
            self.shared_pauses.start(self._heard_pause)

    async def close(self) -> None:
        if self.shared_pauses is not None:
            await self.shared_pauses.close()
        for provider in self._providers.values():
            await provider.close()

    def _heard_pause(self, pause_id: str, seconds: float, rate_limit: bool) -> None:
        self.pauses.apply(pause_id, seconds, rate_limit, monotonic())

    def provider_for(self, target: Target) -> Provider:
        if target.provider == "demo":
            return self._providers["demo"]
        if _translated(target):
            return self._providers["litellm"]
        return self._providers["direct"]

    def models(self) -> list[str]:
        return list(self.slots)

    # ------------------------------------------------------------------ the two entry points

    async def call(self, model: str, endpoint: Endpoint, body: dict[str, Any],
                   attempts: Attempts, *, pin: str | None = None) -> dict[str, Any]:
        """`pin`: try only the deployment with this label, with no fallbacks."""
        def once(slot: DeploymentSlot) -> Awaitable[dict[str, Any]]:
            return self.provider_for(slot.target).call(endpoint, body, slot.target)

        result, slot = await self._route(model, attempts, once, stream=False, pin=pin)
        if slot.capacity.tokens is not None:
            _note_usage(slot, result.get("usage"))
        return result

    async def open_stream(self, model: str, endpoint: Endpoint, body: dict[str, Any],
                          attempts: Attempts, *, pin: str | None = None
                          ) -> tuple[StreamItem, AsyncIterator[StreamItem], DeploymentSlot]:
        """Retry until a deployment yields its first chunk; nothing has reached the client yet.

        The iterator returned goes on with that deployment only; closing it (or cancelling the
        task reading it) closes the upstream connection.
        """
        async def once(slot: DeploymentSlot
                       ) -> tuple[StreamItem, AsyncIterator[StreamItem]]:
            iterator = self.provider_for(slot.target).stream(endpoint, body, slot.target)
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                raise ProviderError("upstream sent an empty stream", kind="protocol") from None
            except BaseException:
                await aclose_quietly(iterator)
                raise
            return first, iterator

        (first, iterator), slot = await self._route(model, attempts, once, stream=True,
                                                    pin=pin)
        return first, self._watch(slot, iterator), slot

    def stream_finished(self, slot: DeploymentSlot, ok: bool) -> None:
        """The stream from `slot` ended: completely (or the client left) when `ok`, else cut."""
        now = monotonic()
        if ok:
            slot.stats.successes += 1
            slot.on_success.inc()
            slot.breaker.success(now, probe=False)
        else:
            slot.stats.failures += 1
            slot.on_failure.inc()
            self._health_failure(slot, probe=False, now=now)

    # ------------------------------------------------------------------ routing

    async def _route(self, model: str, attempts: Attempts,
                     once: Callable[[DeploymentSlot], Awaitable[T]], *, stream: bool,
                     pin: str | None = None) -> tuple[T, DeploymentSlot]:
        rc = self.router_config
        deadline = monotonic() + rc.total_timeout_s
        chain = [model] if pin is not None else [model, *self.fallbacks.get(model, ())]
        per_model = 1 + rc.retries
        last: tuple[ProviderError, DeploymentSlot] | None = None
        only_rate_limits = True  # every failed attempt so far was a 429
        blocked = _Blocked()
        self.budget.request_started()
        try:
            i = 0
            while i < len(chain):
                name = chain[i]
                i += 1
                tried: dict[int, int] = {}
                last_slot: DeploymentSlot | None = None
                for k in range(per_model):
                    now = monotonic()
                    if now >= deadline:
                        raise self._final(last, blocked, chain, only_rate_limits,
                                          deadline_passed=True)
                    slot, wait = self._choose(name, tried, last_slot, now, deadline - now,
                                              stream, blocked, pin)
                    if slot is None:
                        break  # nothing (more) to try in this model
                    retry = k > 0
                    if retry and not self.budget.try_acquire():
                        break  # no retry budget: on to the fallbacks (another provider)
                    try:
                        attempts.count += 1
                        attempts.fallback_used = name != model
                        attempts.target = slot.target
                        tried[slot.index] = tried.get(slot.index, 0) + 1
                        last_slot = slot
                        outcome = await self._try(slot, once, wait, deadline, stream)
                    finally:
                        if retry:
                            self.budget.release()
                    if not isinstance(outcome, ProviderError):
                        return outcome, slot
                    exc = outcome
                    last = (exc, slot)
                    only_rate_limits = only_rate_limits and exc.status == 429
                    if exc.status in _CLIENT_ERRORS or is_context_error(exc):
                        if not is_context_error(exc):
                            raise InvalidRequest(_summary(exc, slot),
                                                 code="upstream_invalid_request") from None
                        j = larger_fallback(self._windows, chain[i:], name)
                        if j is None:
                            raise InvalidRequest(_summary(exc, slot),
                                                 code="context_length_exceeded") from None
                        i += j
                        break
                    if not exc.retryable:
                        tried[slot.index] = _NEVER_AGAIN
            raise self._final(last, blocked, chain, only_rate_limits, deadline_passed=False)
        finally:
            self.budget.request_ended()

    def _choose(self, name: str, tried: dict[int, int], last: DeploymentSlot | None,
                now: float, remaining: float, stream: bool, blocked: _Blocked,
                pin: str | None = None) -> tuple[DeploymentSlot | None, float]:
        """The next deployment of `name` to try and how long to wait first; None: none left."""
        usable: list[DeploymentSlot] = []
        for s in self.slots[name]:
            if tried.get(s.index, 0) >= _NEVER_AGAIN or (pin is not None and s.label != pin):
                continue
            if not s.breaker.usable(now):
                blocked.note(s.breaker.retry_in(now), "cooling down after failures")
            elif s.capacity.capped and not s.capacity.allows(now):
                blocked.note(s.capacity.free_in(now), "at its rpm/tpm cap")
            else:
                usable.append(s)
        if not usable:
            return None, 0.0
        ready = [s for s in usable if s.retry_after_until <= now]
        if ready:
            pool = [s for s in ready if s.index not in tried]
            if not pool:  # all tried once: another one than the last, unless it is the only one
                pool = [s for s in ready if s is not last] or ready
            slot = self._pickers[name](pool, self._rng, now, stream)
            wait = backoff_s(tried.get(slot.index, 0), self._rng)
            return (slot, wait) if wait < remaining else (None, 0.0)
        # every usable deployment asked for time: the first one free, if that is before the end
        slot = min(usable, key=lambda s: s.retry_after_until)
        wait = max(backoff_s(tried.get(slot.index, 0), self._rng), slot.retry_after_until - now)
        if wait >= remaining:  # waiting would pass the deadline: move on
            blocked.note(wait, "asked by the provider to wait (Retry-After)")
            blocked.rate_limited = blocked.rate_limited or any(
                s.paused_by_rate_limit for s in usable)
            return None, 0.0
        return slot, wait

    async def _try(self, slot: DeploymentSlot, once: Callable[[DeploymentSlot], Awaitable[T]],
                   wait: float, deadline: float, stream: bool) -> T | ProviderError:
        """One try, its bookkeeping included; a failure is returned, not raised."""
        probe = slot.breaker.begin(monotonic())
        slot.stats.in_flight += 1
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            started = monotonic()
            slot.capacity.note_request(started)
            try:
                # The provider's own time limit for this try ends it first when it is the
                # earlier of the two: then a second timer per request would be pure cost.
                own_limit = slot.target.first_token_timeout_s if stream \
                    else slot.target.timeout_s
                if slot.provider_times_out and deadline - started > own_limit:
                    result = await once(slot)
                else:
                    async with asyncio.timeout(deadline - started):
                        result = await once(slot)
            except TimeoutError:
                exc = ProviderError(f"no answer within the request deadline "
                                    f"({self.router_config.total_timeout_s:g} s)", kind="timeout")
            except ProviderError as err:
                exc = err
            else:
                now = monotonic()
                slot.breaker.success(now, probe)
                slot.stats.observe(now - started, now, stream=stream)
                if not stream:  # a stream stays in flight until it ends (`_watch`)
                    slot.stats.in_flight -= 1
                    slot.stats.successes += 1
                    slot.on_success.inc()
                return result
        except BaseException:  # cancelled (the client left) or a bug: no verdict on the upstream
            slot.breaker.abandon(probe)
            slot.stats.in_flight -= 1
            raise
        now = monotonic()
        slot.stats.in_flight -= 1
        if exc.status in _CLIENT_ERRORS or is_context_error(exc):
            slot.on_client_error.inc()
            slot.breaker.success(now, probe)  # the deployment is fine; the request is not
            return exc
        slot.stats.failures += 1
        slot.on_failure.inc()
        # for `lowest-latency`, a failure weighs like a try that ran into its time limit
        limit = slot.target.first_token_timeout_s if stream else slot.target.timeout_s
        slot.stats.observe(max(now - started, limit), now, stream=stream)
        rate_limit = exc.status == 429
        pause = exc.retry_after_s
        if rate_limit and pause is None:
            pause = DEFAULT_RATE_LIMIT_S
        if rate_limit:  # up but busy: its Retry-After is all the cooldown it gets
            slot.breaker.abandon(probe)
        else:
            self._health_failure(slot, probe=probe, now=now)
        if pause:
            self.pauses.apply(slot.pause_id, pause, rate_limit, now)
            if self.shared_pauses is not None:
                await self.shared_pauses.publish(slot.pause_id, pause, rate_limit)
        return exc

    def _health_failure(self, slot: DeploymentSlot, *, probe: bool, now: float) -> None:
        rc = self.router_config
        siblings = self.slots[slot.target.model]
        out = sum(1 for s in siblings if s.breaker.out())
        seconds = slot.breaker.failure(now, probe, threshold=rc.failures_to_cooldown,
                                       base_cooldown_s=rc.cooldown_s,
                                       may_trip=out < max(1, len(siblings) // 2))
        if seconds is not None:
            slot.stats.cooldowns += 1
            slot.on_cooldown.inc()
            log.warning("deployment cooling down", extra={
                "model": slot.target.model, "deployment": slot.label,
                "cooldown_s": round(seconds, 3), "trips": slot.breaker.trips})

    def _final(self, last: tuple[ProviderError, DeploymentSlot] | None, blocked: _Blocked,
               chain: list[str], only_rate_limits: bool, *, deadline_passed: bool
               ) -> GatewayError:
        rate_limited = only_rate_limits and (last is not None or blocked.rate_limited)
        if rate_limited:
            now = monotonic()
            free_in = min(paused_for(s, now) for name in chain for s in self.slots[name])
            retry = max(1, math.ceil(free_in))
            return RateLimited(f"the provider is rate limiting this model; retry after "
                               f"{retry} s", headers={"retry-after": str(retry)})
        if last is None:
            if deadline_passed:
                return UpstreamTimeout("no deployment answered within the request deadline")
            why = " or ".join(blocked.reasons) or "cooling down after failures"
            headers = None
            if math.isfinite(blocked.wait_s):
                headers = {"retry-after": str(max(1, math.ceil(blocked.wait_s)))}
            return NoHealthyDeployment(f"every deployment of this model is {why}",
                                       headers=headers)
        exc, slot = last
        if exc.kind == "timeout":
            return UpstreamTimeout(f"the model did not answer in time ({_summary(exc, slot)})")
        return UpstreamError(f"the model failed after retries ({_summary(exc, slot)})")

    async def _watch(self, slot: DeploymentSlot, iterator: AsyncIterator[StreamItem]
                     ) -> AsyncIterator[StreamItem]:
        """The rest of a stream: counts its tokens, keeps it in flight, scrubs its errors."""
        count_tokens = slot.capacity.tokens is not None
        try:
            async for chunk in iterator:
                if count_tokens and type(chunk) is dict and chunk.get("usage"):
                    _note_usage(slot, chunk["usage"])
                yield chunk
        except ProviderError as exc:
            raise ProviderError(_summary(exc, slot), status=exc.status, kind=exc.kind,
                                retry_after_s=exc.retry_after_s) from None
        finally:
            slot.stats.in_flight -= 1
            await aclose_quietly(iterator)


def _translated(target: Target) -> bool:
    """Served through litellm: neither the offline demo nor an OpenAI-compatible upstream."""
    return target.provider != "demo" and target.provider not in DIRECT_PROVIDERS


def _summary(exc: ProviderError, slot: DeploymentSlot) -> str:
    return scrub(exc.message, (slot.target.api_key, slot.target.api_base))


_ANTHROPIC_USAGE = ("input_tokens", "output_tokens", "cache_read_input_tokens",
                    "cache_creation_input_tokens")


def _note_usage(slot: DeploymentSlot, usage: Any) -> None:
    if isinstance(usage, dict):
        total = usage.get("total_tokens") or ((usage.get("prompt_tokens") or 0)
                                              + (usage.get("completion_tokens") or 0)) \
            or sum(v for k in _ANTHROPIC_USAGE  # Messages passthrough
                   if isinstance(v := usage.get(k), int))
        if isinstance(total, int):
            slot.capacity.note_tokens(total, monotonic())
