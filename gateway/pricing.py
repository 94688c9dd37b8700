"""Prices as data: integer pico-dollars per token, loaded once; cost in integer nano-dollars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.config import LoadedConfig

PICO_PER_USD = 10**12
NANOS_PER_USD = 10**9


@dataclass(frozen=True, slots=True)
class Price:
    input_pico_per_token: int
    output_pico_per_token: int


FREE = Price(0, 0)


def cost_nanos(input_tokens: int, output_tokens: int, price: Price) -> int:
    """Usage x price, rounded to the nearest nano-dollar."""
    pico = input_tokens * price.input_pico_per_token + output_tokens * price.output_pico_per_token
    return (pico + 500) // 1000


def usd(nanos: int | None) -> float | None:
    return None if nanos is None else nanos / NANOS_PER_USD


def _per_token(usd_per_token: float) -> int:
    return round(usd_per_token * PICO_PER_USD)


def _lookup(table: dict, model: str, upstream: str) -> Price | None:
    for candidate in (model, upstream):
        entry = table.get(candidate)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return Price(_per_token(float(entry.get("input_cost_per_token") or 0)),
                         _per_token(float(entry.get("output_cost_per_token") or 0)))
    return None


class PriceBook:
    """The price of each (public model, deployment model string); `None` when unknown."""

    def __init__(self, prices: dict[tuple[str, str], Price | None]) -> None:
        self._prices = prices

    def price(self, model: str, deployment_model: str) -> Price | None:
        return self._prices.get((model, deployment_model))

    @classmethod
    def build(cls, config: LoadedConfig, price_map: Path | None) -> PriceBook:
        prices: dict[tuple[str, str], Price | None] = {}
        table: dict | None = None
        for model in config.models.values():
            for dep in model.deployments:
                if model.pricing is not None:
                    p = model.pricing
                    prices[(model.name, dep.model)] = Price(round(p.input_per_million * 10**6),
                                              round(p.output_per_million * 10**6))
                elif dep.provider == "demo":
                    prices[(model.name, dep.model)] = FREE
                else:
                    if table is None:
                        table = orjson.loads(price_map.read_bytes()) if price_map else {}
                    prices[(model.name, dep.model)] = _lookup(table, dep.model, dep.upstream_model)
        return cls(prices)
