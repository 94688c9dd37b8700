"""Prices as data: integer pico-dollars per token, loaded once; cost in integer nano-dollars.

Prices come from litellm's bundled price map (read as a file, litellm is not imported) or
from a model's `pricing:` override in `gateway.yaml`. Cached-input (cache read), cache-write
and reasoning tokens get their own rates when the map has them and the provider reports them;
otherwise they cost what plain input / output tokens cost. A deployment with no price is
`None`, never a silent zero: what happens then is `limits.unpriced_models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.config import LoadedConfig

PICO_PER_USD = 10**12
NANOS_PER_USD = 10**9


@dataclass(frozen=True, slots=True)
class Price:
    input_pico_per_token: int
    output_pico_per_token: int
    # None: the same as plain input (cache) or plain output (reasoning)
    cached_input_pico_per_token: int | None = None
    cache_write_pico_per_token: int | None = None
    reasoning_pico_per_token: int | None = None
    # Anthropic's 1-hour cache writes (None: the same as other cache writes)
    cache_write_1h_pico_per_token: int | None = None

    @property
    def worst_input(self) -> int:
        """The dearest rate an input token can have (a cache write can cost more than input)."""
        return max(self.input_pico_per_token, self.cache_write_pico_per_token or 0,
                   self.cache_write_1h_pico_per_token or 0)

    @property
    def worst_output(self) -> int:
        return max(self.output_pico_per_token, self.reasoning_pico_per_token or 0)


FREE = Price(0, 0)
# Providers whose models count tokens as tiktoken does (the gateway's estimate is exact).
TIKTOKEN_PROVIDERS = frozenset({"openai", "text-completion-openai", "azure", "demo"})


@dataclass(frozen=True, slots=True)
class WorstCase:
    """What the dearest deployment a request may reach (the model and its fallbacks) costs."""

    input_pico_per_token: int
    output_pico_per_token: int
    max_output_tokens: int | None  # the largest max output of those deployments, if known
    unpriced: tuple[str, ...]  # deployments (model strings) with no price
    # every priced deployment counts prompt tokens as tiktoken does (OpenAI's own models):
    # otherwise a reservation pads the prompt estimate (see `reserve_input`)
    exact_tokenizer: bool = True

    def reserve_input(self, prompt_tokens: int) -> int:
        """Prompt tokens to reserve the cost of: other providers' tokenizers count the same
        text differently (often 10-20% more), so their estimate is padded by a quarter."""
        return prompt_tokens if self.exact_tokenizer else prompt_tokens + (prompt_tokens + 3) // 4

    def cost_nanos(self, input_tokens: int, output_tokens: int) -> int:
        pico = (input_tokens * self.input_pico_per_token
                + output_tokens * self.output_pico_per_token)
        return -(-pico // 1000)  # round up: a reservation must not be short


def cost_nanos(input_tokens: int, output_tokens: int, price: Price) -> int:
    """Usage x price, rounded to the nearest nano-dollar."""
    pico = input_tokens * price.input_pico_per_token + output_tokens * price.output_pico_per_token
    return (pico + 500) // 1000


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_cost_nanos(usage: Mapping[str, Any], price: Price) -> int:
    """The cost of an OpenAI-shaped `usage`, pricing the token kinds the provider reports.

    `prompt_tokens` includes cached and cache-written tokens
    (`prompt_tokens_details.cached_tokens`, `.cache_creation_tokens` or Anthropic's
    `cache_creation_input_tokens`, of which `cache_creation.ephemeral_1h_input_tokens` were
    written for an hour, at their own rate); `completion_tokens` includes
    `completion_tokens_details.reasoning_tokens`. Each part is clamped to its total, so a
    provider's odd numbers can never make a cost negative.
    """
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    pdet = usage.get("prompt_tokens_details")
    pdet = pdet if isinstance(pdet, Mapping) else {}
    cdet = usage.get("completion_tokens_details")
    cdet = cdet if isinstance(cdet, Mapping) else {}
    cached = min(_int(pdet.get("cached_tokens")), prompt)
    written = min(_int(pdet.get("cache_creation_tokens")
                       or usage.get("cache_creation_input_tokens")), prompt - cached)
    reasoning = min(_int(cdet.get("reasoning_tokens")), completion)
    split = usage.get("cache_creation")
    hour = min(_int(split.get("ephemeral_1h_input_tokens")), written) \
        if isinstance(split, Mapping) else 0
    p = price
    write = _or(p.cache_write_pico_per_token, p.input_pico_per_token)
    pico = ((prompt - cached - written) * p.input_pico_per_token
            + cached * _or(p.cached_input_pico_per_token, p.input_pico_per_token)
            + (written - hour) * write + hour * _or(p.cache_write_1h_pico_per_token, write)
            + (completion - reasoning) * p.output_pico_per_token
            + reasoning * _or(p.reasoning_pico_per_token, p.output_pico_per_token))
    return (pico + 500) // 1000


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def usd(nanos: int | None) -> float | None:
    return None if nanos is None else nanos / NANOS_PER_USD


def _per_token(usd_per_token: Any) -> int | None:
    if isinstance(usd_per_token, (int, float)) and not isinstance(usd_per_token, bool) \
            and usd_per_token >= 0:
        return round(usd_per_token * PICO_PER_USD)
    return None


def _entry(table: Mapping[str, Any], model: str, upstream: str) -> Mapping[str, Any] | None:
    for candidate in (model, upstream):
        entry = table.get(candidate)
        if isinstance(entry, dict):
            return entry
    return None


def _price_from_entry(entry: Mapping[str, Any] | None) -> Price | None:
    if entry is None or "input_cost_per_token" not in entry:
        return None
    return Price(_per_token(entry.get("input_cost_per_token")) or 0,
                 _per_token(entry.get("output_cost_per_token")) or 0,
                 cached_input_pico_per_token=_per_token(entry.get("cache_read_input_token_cost")),
                 cache_write_pico_per_token=_per_token(
                     entry.get("cache_creation_input_token_cost")),
                 reasoning_pico_per_token=_per_token(
                     entry.get("output_cost_per_reasoning_token")),
                 cache_write_1h_pico_per_token=_per_token(
                     entry.get("cache_creation_input_token_cost_above_1hr")))


def _max_output(entry: Mapping[str, Any] | None) -> int | None:
    if entry is None:
        return None
    value = entry.get("max_output_tokens") or entry.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class PriceBook:
    """The price of each (public model, deployment model string); `None` when unknown."""

    def __init__(self, prices: dict[tuple[str, str], Price | None],
                 max_output: dict[tuple[str, str], int | None] | None = None,
                 fallbacks: dict[str, list[str]] | None = None,
                 tiktoken_providers: dict[tuple[str, str], bool] | None = None) -> None:
        self._prices = prices
        self._exact = tiktoken_providers or {}
        self._max_output = max_output or {}
        self._fallbacks = fallbacks or {}
        self._deployments: dict[str, list[str]] = {}
        for model, dep in prices:
            self._deployments.setdefault(model, []).append(dep)
        self._worst: dict[str, WorstCase] = {}

    def price(self, model: str, deployment_model: str) -> Price | None:
        return self._prices.get((model, deployment_model))

    def cost(self, model: str, deployment_model: str, usage: Mapping[str, Any]) -> int | None:
        """The cost of `usage` on that deployment; `None` when the deployment has no price."""
        price = self._prices.get((model, deployment_model))
        return None if price is None else usage_cost_nanos(usage, price)

    def reachable(self, model: str) -> list[str]:
        """The model and every model its fallback chain may reach, in order."""
        out, todo = [], [model]
        while todo:
            name = todo.pop(0)
            if name in out:
                continue
            out.append(name)
            todo.extend(self._fallbacks.get(name, ()))
        return out

    def worst_case(self, model: str) -> WorstCase:
        """The dearest rates (and largest max output) over every deployment `model` may reach."""
        found = self._worst.get(model)
        if found is not None:
            return found
        worst_in = worst_out = 0
        max_out: int | None = None
        unpriced: list[str] = []
        exact = True
        for name in self.reachable(model):
            for dep in self._deployments.get(name, ()):
                price = self._prices.get((name, dep))
                if price is None:
                    unpriced.append(dep)
                else:
                    worst_in = max(worst_in, price.worst_input)
                    worst_out = max(worst_out, price.worst_output)
                    exact = exact and self._exact.get((name, dep), False)
                limit = self._max_output.get((name, dep))
                if limit is not None:
                    max_out = limit if max_out is None else max(max_out, limit)
        found = WorstCase(worst_in, worst_out, max_out, tuple(unpriced), exact)
        self._worst[model] = found
        return found

    @classmethod
    def build(cls, config: LoadedConfig, price_map: Path | None) -> PriceBook:
        prices: dict[tuple[str, str], Price | None] = {}
        max_output: dict[tuple[str, str], int | None] = {}
        exact: dict[tuple[str, str], bool] = {}
        table: dict | None = None
        for model in config.models.values():
            for dep in model.deployments:
                key = (model.name, dep.model)
                exact[key] = dep.provider in TIKTOKEN_PROVIDERS
                entry = None
                if dep.provider != "demo":
                    if table is None:
                        table = orjson.loads(price_map.read_bytes()) if price_map else {}
                    entry = _entry(table, dep.model, dep.upstream_model)
                max_output[key] = _max_output(entry)
                if model.pricing is not None:
                    p = model.pricing
                    prices[key] = Price(round(p.input_per_million * 10**6),
                                        round(p.output_per_million * 10**6))
                elif dep.provider == "demo":
                    prices[key] = FREE
                else:
                    prices[key] = _price_from_entry(entry)
        fallbacks = {name: list(m.fallbacks) for name, m in config.models.items()}
        return cls(prices, max_output, fallbacks, exact)
