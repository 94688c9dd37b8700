"""How one deployment is chosen among the usable ones (`router.strategy`, or a model's own).

- `weighted` (default): at random, in proportion to `weight`.
- `least-busy`: the fewest tries in flight (streams count until they end); ties by weight.
- `lowest-latency`: the lowest moving average of latency (non-stream) or time to first chunk
  (streams); unmeasured or stale deployments count as 0 so they get measured; within 10 % of
  the best, by weight.
- `ordered`: the first in config order (a priority list).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.routing.deployments import DeploymentSlot

STRATEGIES = ("weighted", "least-busy", "lowest-latency", "ordered")
LATENCY_SLACK = 1.10  # within 10 % of the fastest counts as "as fast"
LATENCY_FLOOR_S = 0.002  # differences under 2 ms are noise


def weighted(slots: Sequence[DeploymentSlot], rng: random.Random) -> DeploymentSlot:
    if len(slots) == 1:
        return slots[0]
    total = 0.0
    for s in slots:
        total += s.weight
    pick = rng.random() * total
    for s in slots:
        pick -= s.weight
        if pick < 0:
            return s
    return slots[-1]


def least_busy(slots: Sequence[DeploymentSlot], rng: random.Random) -> DeploymentSlot:
    fewest = min(s.stats.in_flight for s in slots)
    return weighted([s for s in slots if s.stats.in_flight == fewest], rng)


def ordered(slots: Sequence[DeploymentSlot], rng: random.Random) -> DeploymentSlot:
    return min(slots, key=lambda s: s.index)


def lowest_latency(slots: Sequence[DeploymentSlot], rng: random.Random, now: float,
                   stream: bool) -> DeploymentSlot:
    expected = [(s.stats.expected(now, stream=stream), s) for s in slots]
    best = min(e for e, _ in expected)
    bar = max(best * LATENCY_SLACK, best + LATENCY_FLOOR_S)
    return weighted([s for e, s in expected if e <= bar], rng)


Picker = Callable[[Sequence[DeploymentSlot], random.Random, float, bool], DeploymentSlot]


def picker(strategy: str) -> Picker:
    if strategy == "lowest-latency":
        return lowest_latency
    simple = {"weighted": weighted, "least-busy": least_busy, "ordered": ordered}[strategy]
    return lambda slots, rng, now, stream: simple(slots, rng)
