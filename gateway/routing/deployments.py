"""Deployments as resolved targets, plus the small health state the router keeps for each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.config import LoadedConfig
from gateway.providers.base import Target


@dataclass(slots=True)
class Health:
    """Consecutive failures and the time until which a deployment sits out."""

    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    in_flight: int = 0
    successes: int = 0
    failures: int = 0
    cooldowns: int = 0

    def available(self, now: float) -> bool:
        return now >= self.cooldown_until


@dataclass(slots=True)
class DeploymentSlot:
    target: Target
    weight: float
    health: Health = field(default_factory=Health)


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
                idle_timeout_s=dep.idle_timeout_s)
            slots.append(DeploymentSlot(target=target, weight=dep.weight))
        out[model.name] = slots
    return out


def monotonic() -> float:
    return time.monotonic()
