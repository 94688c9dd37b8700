"""503 `audit_unavailable` before anything goes upstream when no audit record can be made
durable (spool unwritable or full; with `on_store_error: closed`, the database down)."""

from __future__ import annotations

from typing import Any

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import AuditUnavailable


class AuditGate:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        reason = self.writer.unavailable()
        if reason is not None:
            raise AuditUnavailable(reason)
        return await call_next(ctx)
