"""Metrics and trace attributes of each request's outcome, after its audit event is closed."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler

log = logging.getLogger("gateway.telemetry")


class Telemetry:
    """Runs each recorder (metrics, trace attributes) once the request has ended."""

    def __init__(self, recorders: list[Callable[[RequestContext], None]]) -> None:
        self.recorders = recorders

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        try:
            return await call_next(ctx)
        finally:
            for record in self.recorders:
                try:
                    record(ctx)
                except Exception:  # telemetry never fails a request
                    log.exception("telemetry recorder failed")
