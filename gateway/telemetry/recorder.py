"""Each finished request as Prometheus samples (called by the telemetry stage).

Labels stay bounded: `model` is the served model, else the requested one only when it is a
configured model name (an unknown name a client made up is `unknown`); `deployment` is the
deployment's audit label or empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from gateway.telemetry.metrics import Metrics


class MetricsRecorder:
    def __init__(self, metrics: Metrics, models: Iterable[str]) -> None:
        self.metrics = metrics
        self.models = frozenset(models)
        # `labels(...)` takes a lock and builds a key each time: keep each child once.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def _model(self, event: dict[str, Any]) -> str:
        served = event.get("model_served")
        if served:
            return str(served)
        asked = event.get("model_requested")
        if not asked:
            return ""
        return asked if asked in self.models else "unknown"

    def __call__(self, ctx: Any) -> None:
        event = ctx.event.fields
        m = self.metrics
        endpoint = str(ctx.endpoint)
        model = self._model(event)
        deployment = str(event.get("deployment") or "")
        status = str(event.get("status_code") or 0)
        child: Callable[..., Any] = self._child
        child(m.requests, endpoint, model, deployment, status).inc()
        latency = event.get("latency_ms")
        if latency is not None:
            child(m.latency, endpoint, model, deployment).observe(latency / 1000)
        code = event.get("error_code")
        if code:
            child(m.errors, endpoint, model, str(code)).inc()
        for direction, key in (("input", "input_tokens"), ("output", "output_tokens")):
            count = event.get(key)
            if count:
                child(m.tokens, model, deployment, direction).inc(count)
        nanos = event.get("cost_nanos")
        if nanos:
            child(m.cost, model, deployment).inc(nanos / 1e9)
