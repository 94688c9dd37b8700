"""Deployments as resolved targets, plus the small state the router keeps for each."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Deployment, LoadedConfig
from gateway.providers.base import Target
from gateway.providers.openai_compat import DIRECT_PROVIDERS
from gateway.routing.capacity import Capacity
from gateway.routing.health import Breaker

EWMA_ALPHA = 0.3
# A latency figure this old is forgotten, so a deployment that was slow once gets measured again.
STALE_AFTER_S = 60.0


@dataclass(slots=True)
class Stats:
    """What `least-busy` and `lowest-latency` read, and the counters `/metrics` reports."""

    in_flight: int = 0
    latency_s: float | None = None  # EWMA of whole non-stream tries
    ttft_s: float | None = None  # EWMA of time to the first stream chunk
    sampled_at: float = 0.0
    successes: int = 0
    failures: int = 0
    cooldowns: int = 0

    def observe(self, seconds: float, now: float, *, stream: bool) -> None:
        if stream:
            old = self.ttft_s
            self.ttft_s = seconds if old is None else old + EWMA_ALPHA * (seconds - old)
        else:
            old = self.latency_s
            self.latency_s = seconds if old is None else old + EWMA_ALPHA * (seconds - old)
        self.sampled_at = now

    def expected(self, now: float, *, stream: bool) -> float:
        """The latency to expect (0 when unknown or stale: worth measuring)."""
        if now - self.sampled_at > STALE_AFTER_S:
            return 0.0
        first, second = (self.ttft_s, self.latency_s) if stream else (self.latency_s, self.ttft_s)
        value = first if first is not None else second
        return 0.0 if value is None else value


class _NoCounter:
    def inc(self, amount: float = 1) -> None:
        return None


NO_COUNTER: Any = _NoCounter()


@dataclass(slots=True, eq=False)
class DeploymentSlot:
    target: Target
    weight: float
    index: int
    capacity: Capacity
    breaker: Breaker = field(default_factory=Breaker)
    stats: Stats = field(default_factory=Stats)
    retry_after_until: float = 0.0  # the upstream asked us (429/503 Retry-After) to wait
    paused_by_rate_limit: bool = False  # that wait comes from a 429 (else a 503's)
    pause_id: str = ""  # the upstream it reaches, shared by every slot that reaches it
    provider_times_out: bool = False  # its provider enforces the target's own time limits
    # prometheus counter children, bound once (no label lookup per request)
    on_success: Any = NO_COUNTER
    on_failure: Any = NO_COUNTER
    on_client_error: Any = NO_COUNTER
    on_cooldown: Any = NO_COUNTER

    @property
    def label(self) -> str:
        return self.target.deployment

    def bind_metrics(self, metrics: Any) -> None:
        model, dep = self.target.model, self.target.deployment
        results = metrics.deployment_results
        self.on_success = results.labels(model, dep, "success")
        self.on_failure = results.labels(model, dep, "failure")
        self.on_client_error = results.labels(model, dep, "client_error")
        self.on_cooldown = metrics.deployment_cooldowns.labels(model, dep)


def _label(model_deployments: list[str], index: int) -> str:
    name = model_deployments[index]
    return name if model_deployments.count(name) == 1 else f"{name}#{index}"


def upstream_id(target: Target) -> str:
    """Names what a provider's rate limit applies to (provider, base URL, model, key), without
    the key: slots with the same id share their `Retry-After` windows, across replicas too."""
    raw = "\0".join((target.provider, target.api_base or "", target.upstream_model,
                     target.api_key or ""))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def build_slots(config: LoadedConfig) -> dict[str, list[DeploymentSlot]]:
    """Every public model name -> its deployments, secrets resolved, labels unique per model.

    A stream waits for its first chunk no longer than a non-stream try waits for its whole
    answer (`first_token_timeout_s` at most `timeout_s`): before its first byte a stream has
    exactly the retries and fallbacks of a non-stream request, so it must not spend more of
    `router.total_timeout_s` on a deployment that does not answer.
    """
    out: dict[str, list[DeploymentSlot]] = {}
    for i, model in enumerate(config.raw.models):
        names = [d.model for d in model.deployments]
        slots = []
        for j, dep in enumerate(model.deployments):
            target = Target(
                model=model.name, deployment=_label(names, j), provider=dep.provider,
                litellm_model=dep.model, upstream_model=dep.upstream_model,
                api_base=config.api_base(i, j), api_key=config.api_key(i, j),
                timeout_s=dep.timeout_s, connect_timeout_s=dep.connect_timeout_s,
                first_token_timeout_s=min(dep.first_token_timeout_s, dep.timeout_s),
                idle_timeout_s=dep.idle_timeout_s, native=native_protocols(dep),
                anthropic_betas=None if dep.anthropic_beta_allowlist is None
                else frozenset(dep.anthropic_beta_allowlist))
            slots.append(DeploymentSlot(target=target, weight=dep.weight, index=j,
                                        capacity=Capacity(dep.rpm, dep.tpm),
                                        pause_id=upstream_id(target)))
        out[model.name] = slots
    return out


def native_protocols(dep: Deployment) -> frozenset[str]:
    """The client protocols beyond OpenAI's three that this deployment speaks itself."""
    native = set()
    if dep.native_responses:
        native.add("responses")
    if dep.speaks_messages:
        native.add("messages")
    return frozenset(native)


def native_problems(config: LoadedConfig) -> list[str]:
    """`FILE: key.path: reason` for native protocols on deployments that cannot serve them:
    `native_responses` is forwarded by the gateway's own OpenAI-compatible client, so it
    needs an OpenAI-compatible provider (litellm and the demo model are translated)."""
    out = []
    for i, model in enumerate(config.raw.models):
        for j, dep in enumerate(model.deployments):
            if dep.native_responses and dep.provider not in DIRECT_PROVIDERS:
                out.append(f"{config.source}: models[{i}].deployments[{j}].native_responses: "
                           f"needs an OpenAI-compatible provider ({dep.provider!r} is served "
                           "by translation)")
    return out


monotonic = time.monotonic  # the routing clock (tests replace `router.monotonic`)
