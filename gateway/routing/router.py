"""Pick a deployment, try it, retry on another, then walk the fallback chain.

`router.retries` extra attempts per model (another deployment first; the same one only when
it is the only one), then each `fallbacks` model in order, all within `total_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.config import LoadedConfig
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.providers.base import Endpoint, Provider, ProviderError, Target
from gateway.providers.openai_compat import DIRECT_PROVIDERS
from gateway.routing.deployments import DeploymentSlot, build_slots, monotonic

_CLIENT_ERRORS = frozenset({400, 413, 422})


@dataclass(slots=True)
class Attempts:
    """What routing did for one request; read by the audit event."""

    count: int = 0
    fallback_used: bool = False
    target: Target | None = None


class Router:
    def __init__(self, config: LoadedConfig, providers: dict[str, Provider],
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.router_config = config.router
        self.slots = build_slots(config)
        self.fallbacks = {name: list(m.fallbacks) for name, m in config.models.items()}
        self._providers = providers
        self._rng = rng or random.Random()

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()

    def provider_for(self, target: Target) -> Provider:
        if target.provider == "demo":
            return self._providers["demo"]
        if target.provider in DIRECT_PROVIDERS:
            return self._providers["direct"]
        return self._providers["litellm"]

    def models(self) -> list[str]:
        return list(self.slots)

    def _order(self, model: str) -> list[DeploymentSlot]:
        """Deployments to try for one model: weighted order, cooled-down ones left out."""
        now = monotonic()
        slots = [s for s in self.slots[model] if s.health.available(now)]
        if len(slots) <= 1:
            return slots
        strategy = self.config.models[model].strategy or self.router_config.strategy
        if strategy == "ordered":
            return slots
        if strategy == "least-busy":
            return sorted(slots, key=lambda s: s.health.in_flight)
        # weighted: draw without replacement, by weight
        pool, out = list(slots), []
        while pool:
            total = sum(s.weight for s in pool)
            pick = self._rng.uniform(0, total)
            acc = 0.0
            for i, s in enumerate(pool):
                acc += s.weight
                if pick <= acc:
                    out.append(pool.pop(i))
                    break
            else:
                out.append(pool.pop())
        return out

    def _plan(self, model: str) -> list[tuple[str, DeploymentSlot]]:
        tries: list[tuple[str, DeploymentSlot]] = []
        per_model = 1 + self.router_config.retries
        for name in [model, *self.fallbacks.get(model, [])]:
            order = self._order(name)
            if not order:
                continue
            for k in range(per_model):
                tries.append((name, order[k % len(order)]))
        return tries

    def _record(self, slot: DeploymentSlot, ok: bool) -> None:
        h = slot.health
        if ok:
            h.consecutive_failures = 0
            h.successes += 1
            return
        h.failures += 1
        h.consecutive_failures += 1
        if h.consecutive_failures >= self.router_config.failures_to_cooldown:
            h.cooldown_until = monotonic() + self.router_config.cooldown_s
            h.consecutive_failures = 0
            h.cooldowns += 1

    @staticmethod
    def _final_error(last: ProviderError | None) -> GatewayError:
        if last is None:
            return NoHealthyDeployment("every deployment of this model is cooling down")
        if last.kind == "timeout":
            return UpstreamTimeout(f"the model did not answer in time ({last.message})")
        return UpstreamError(f"the model failed after retries ({last.message})")

    async def call(self, model: str, endpoint: Endpoint, body: dict[str, Any],
                   attempts: Attempts) -> dict[str, Any]:
        deadline = monotonic() + self.router_config.total_timeout_s
        last: ProviderError | None = None
        for name, slot in self._plan(model):
            remaining = deadline - monotonic()
            if remaining <= 0:
                break
            attempts.count += 1
            attempts.fallback_used = name != model
            attempts.target = slot.target
            slot.health.in_flight += 1
            try:
                async with asyncio.timeout(remaining):
                    result = await self.provider_for(slot.target).call(endpoint, body,
                                                                       slot.target)
            except TimeoutError:
                last = ProviderError("total deadline reached", kind="timeout")
                self._record(slot, ok=False)
                break
            except ProviderError as exc:
                last = exc
                if exc.status in _CLIENT_ERRORS:
                    raise InvalidRequest(exc.message, code="upstream_invalid_request") from None
                self._record(slot, ok=False)
                continue
            finally:
                slot.health.in_flight -= 1
            self._record(slot, ok=True)
            return result
        raise self._final_error(last)

    async def open_stream(self, model: str, endpoint: Endpoint, body: dict[str, Any],
                          attempts: Attempts
                          ) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]], DeploymentSlot]:
        """Retry until a deployment yields its first chunk; nothing has reached the client yet."""
        deadline = monotonic() + self.router_config.total_timeout_s
        last: ProviderError | None = None
        for name, slot in self._plan(model):
            remaining = deadline - monotonic()
            if remaining <= 0:
                break
            attempts.count += 1
            attempts.fallback_used = name != model
            attempts.target = slot.target
            iterator = self.provider_for(slot.target).stream(endpoint, body, slot.target)
            try:
                async with asyncio.timeout(remaining):
                    first = await iterator.__anext__()
            except StopAsyncIteration:
                last = ProviderError("upstream sent an empty stream", kind="protocol")
                self._record(slot, ok=False)
                continue
            except TimeoutError:
                await _aclose(iterator)
                last = ProviderError("total deadline reached", kind="timeout")
                self._record(slot, ok=False)
                break
            except ProviderError as exc:
                await _aclose(iterator)
                last = exc
                if exc.status in _CLIENT_ERRORS:
                    raise InvalidRequest(exc.message, code="upstream_invalid_request") from None
                self._record(slot, ok=False)
                continue
            return first, iterator, slot
        raise self._final_error(last)

    def stream_finished(self, slot: DeploymentSlot, ok: bool) -> None:
        self._record(slot, ok)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):  # must not mask the real error
            await close()
