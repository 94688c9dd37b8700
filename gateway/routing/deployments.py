"""Deployments as resolved targets, plus the small state the router keeps for each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway.config import LoadedConfig
from gateway.providers.base import Target
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


def build_slots(config: LoadedConfig) -> dict[str, list[DeploymentSlot]]:
    """Every public model name -> its deployments, secrets resolved, labels unique per model."""
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
                first_token_timeout_s=dep.first_token_timeout_s,
                idle_timeout_s=dep.idle_timeout_s,
                native=frozenset({"messages"}) if dep.speaks_messages else frozenset(),
                anthropic_betas=None if dep.anthropic_beta_allowlist is None
                else frozenset(dep.anthropic_beta_allowlist))
            slots.append(DeploymentSlot(target=target, weight=dep.weight, index=j,
                                        capacity=Capacity(dep.rpm, dep.tpm)))
        out[model.name] = slots
    return out


monotonic = time.monotonic  # the routing clock (tests replace `router.monotonic`)
