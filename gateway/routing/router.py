"""Pick a deployment, try it, retry on another, then walk the fallback chain.

`router.retries` extra tries per model (another deployment first; the same one only when it is
the only one left), then each `fallbacks` model in order, all within `total_timeout_s` (for a
stream: until its first chunk). A try that times out counts as an attempt.

- Retried: connect errors, resets, timeouts, 408, 409, 429 and 5xx, with backoff and jitter
  before a deployment is tried again (`backoff.py`), honouring `Retry-After` but never past
  the deadline. 401/403/404 and other upstream 4xx say the deployment is misconfigured: the
  next deployment is tried, never that one again. The client's own errors (400, 413, 422)
  are not retried; a context-window error skips to the first fallback with a larger window.
- Retries need a token from the `RetryBudget`; fallbacks' first tries do not.
- Cooldown (`health.py`): `failures_to_cooldown` failures in a row take a deployment out, never
  more than half of a model's deployments at once (a model with one deployment can lose it).
- Final errors: 502 `upstream_error`, 504 `upstream_timeout` (the last failure was a timeout),
  503 `no_healthy_deployment` when nothing could be tried (all cooling down or at their caps).
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
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.providers.base import Endpoint, Provider, ProviderError, Target
from gateway.providers.openai_compat import DIRECT_PROVIDERS
from gateway.providers.summary import scrub
from gateway.routing.backoff import backoff_s
from gateway.routing.context_window import context_windows, is_context_error, larger_fallback
from gateway.routing.deployments import DeploymentSlot, build_slots, monotonic
from gateway.routing.retry_budget import RetryBudget
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

    __slots__ = ("reasons", "wait_s")

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.wait_s = math.inf

    def note(self, wait_s: float, reason: str) -> None:
        self.wait_s = min(self.wait_s, wait_s)
        if reason not in self.reasons:
            self.reasons.append(reason)


class Router:
    def __init__(self, config: LoadedConfig, providers: dict[str, Provider],
                 rng: random.Random | None = None, *, metrics: Any = None,
                 price_map: Path | None = None, budget: RetryBudget | None = None) -> None:
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
        if metrics is not None:
            for slots in self.slots.values():
                for slot in slots:
                    slot.bind_metrics(metrics)

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()

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
                   attempts: Attempts) -> dict[str, Any]:
        def once(slot: DeploymentSlot) -> Awaitable[dict[str, Any]]:
            return self.provider_for(slot.target).call(endpoint, body, slot.target)

        result, slot = await self._route(model, attempts, once, stream=False)
        if slot.capacity.tokens is not None:
            _note_usage(slot, result.get("usage"))
        return result

    async def open_stream(self, model: str, endpoint: Endpoint, body: dict[str, Any],
                          attempts: Attempts
                          ) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]], DeploymentSlot]:
        """Retry until a deployment yields its first chunk; nothing has reached the client yet.

        The iterator returned goes on with that deployment only; closing it (or cancelling the
        task reading it) closes the upstream connection.
        """
        async def once(slot: DeploymentSlot
                       ) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
            iterator = self.provider_for(slot.target).stream(endpoint, body, slot.target)
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                raise ProviderError("upstream sent an empty stream", kind="protocol") from None
            except BaseException:
                await aclose_quietly(iterator)
                raise
            return first, iterator

        (first, iterator), slot = await self._route(model, attempts, once, stream=True)
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
                     once: Callable[[DeploymentSlot], Awaitable[T]], *, stream: bool
                     ) -> tuple[T, DeploymentSlot]:
        rc = self.router_config
        deadline = monotonic() + rc.total_timeout_s
        chain = [model, *self.fallbacks.get(model, ())]
        per_model = 1 + rc.retries
        last: tuple[ProviderError, DeploymentSlot] | None = None
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
                        raise self._final(last, blocked, deadline_passed=True)
                    slot, wait = self._choose(name, tried, last_slot, now, deadline - now,
                                              stream, blocked)
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
            raise self._final(last, blocked, deadline_passed=False)
        finally:
            self.budget.request_ended()

    def _choose(self, name: str, tried: dict[int, int], last: DeploymentSlot | None,
                now: float, remaining: float, stream: bool, blocked: _Blocked
                ) -> tuple[DeploymentSlot | None, float]:
        """The next deployment of `name` to try and how long to wait first; None: none left."""
        usable: list[DeploymentSlot] = []
        for s in self.slots[name]:
            if tried.get(s.index, 0) >= _NEVER_AGAIN:
                continue
            if not s.breaker.usable(now):
                blocked.note(s.breaker.retry_in(now), "cooling down after failures")
            elif s.capacity.capped and not s.capacity.allows(now):
                blocked.note(s.capacity.free_in(now), "at its rpm/tpm cap")
            else:
                usable.append(s)
        if not usable:
            return None, 0.0
        pool = [s for s in usable if s.index not in tried]
        if not pool:  # all tried once: another one than the last, unless it is the only one
            pool = [s for s in usable if s is not last] or usable
        ready = [s for s in pool if s.retry_after_until <= now]
        slot = self._pickers[name](ready or pool, self._rng, now, stream)
        wait = max(backoff_s(tried.get(slot.index, 0), self._rng), slot.retry_after_until - now)
        if wait >= remaining:  # waiting would pass the deadline: move on
            blocked.note(wait, "asked by the provider to wait (Retry-After)")
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
        if exc.retry_after_s:
            slot.retry_after_until = max(slot.retry_after_until, now + exc.retry_after_s)
        self._health_failure(slot, probe=probe, now=now)
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

    def _final(self, last: tuple[ProviderError, DeploymentSlot] | None, blocked: _Blocked, *,
               deadline_passed: bool) -> GatewayError:
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

    async def _watch(self, slot: DeploymentSlot, iterator: AsyncIterator[dict[str, Any]]
                     ) -> AsyncIterator[dict[str, Any]]:
        """The rest of a stream: counts its tokens, keeps it in flight, scrubs its errors."""
        count_tokens = slot.capacity.tokens is not None
        try:
            async for chunk in iterator:
                if count_tokens and chunk.get("usage"):
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
