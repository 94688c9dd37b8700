"""The one cost of a request: its usage (provider-reported, or estimated for a stream that
reported none) times the price of the deployment that served, in integer nano-dollars.

Runs in `finally`, so failed, cancelled and partial requests are priced too (and the limits
stage around it settles to this figure). A deployment without a price: `unpriced_models:
zero` says it is free; otherwise the cost is unknown (None in the audit event, never a silent
$0), counted in a metric and logged once per deployment.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.pricing import PriceBook

log = logging.getLogger("gateway.cost")
_WARNED_MAX = 10_000


class Cost:
    def __init__(self, prices: PriceBook, unpriced_models: str, metrics: Any = None) -> None:
        self.prices = prices
        self.unpriced_models = unpriced_models
        self.metrics = metrics
        self._warned: set[tuple[str, str]] = set()

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        try:
            return await call_next(ctx)
        finally:
            self.price(ctx)

    def price(self, ctx: RequestContext) -> None:
        event = ctx.event.fields
        usage, target = ctx.usage, ctx.target
        cost: int | None = 0
        if usage is not None:
            event["input_tokens"] = usage.input_tokens
            event["output_tokens"] = usage.output_tokens
            event["total_tokens"] = usage.total_tokens
            event["usage_source"] = usage.source
            event["cost_estimated"] = usage.source == "estimated"
            if target is not None:
                cost = self.prices.cost(target.model, target.litellm_model,
                                        usage.details or usage.as_openai())
                if cost is None:
                    cost = self._unpriced(target.model, target.litellm_model)
        ctx.cost_nanos = cost
        event["cost_nanos"] = cost

    def _unpriced(self, model: str, deployment: str) -> int | None:
        if self.unpriced_models == "zero":
            return 0
        if self.metrics is not None:
            self.metrics.unpriced.labels(model).inc()
        if (model, deployment) not in self._warned and len(self._warned) < _WARNED_MAX:
            self._warned.add((model, deployment))
            log.warning("no price for this deployment: its cost is recorded as unknown",
                        extra={"model": model, "deployment": deployment})
        return None
