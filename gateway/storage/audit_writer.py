"""The one place audit events are written: a queue drained in batched multi-row inserts.

`submit` never blocks or awaits, so it is safe in a `finally` of a cancelled stream. A
background task flushes every `flush_interval` or `batch_size` events; `stop` drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.tables import audit_bodies, audit_events

log = logging.getLogger("gateway.audit")

_BODY_FIELDS = ("request_body", "response_body")
_EVENT_COLUMNS = tuple(c.name for c in audit_events.columns)
_DEFAULTS: dict[str, Any] = {"attempts": 0, "fallback_used": False, "stream": False,
                             "cancelled": False, "partial": False, "cost_estimated": False}


class AuditWriter:
    def __init__(self, engine: AsyncEngine, *, batch_size: int = 500,
                 flush_interval_s: float = 0.05) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._queue: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.failures = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, event: dict[str, Any]) -> None:
        self._queue.append(event)
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self, timeout_s: float = 30) -> None:
        """Drain what is queued (bounded by `timeout_s`), then stop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.error("audit writer did not drain in time",
                          extra={"pending": len(self._queue)})

    async def flush(self) -> None:
        """Write everything queued now (used by tests and at shutdown)."""
        while self._queue:
            await self._write_batch()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.flush_interval_s)
                continue
            try:
                await self._write_batch()
                backoff = 0.1
            except Exception:  # the database is down or refused the batch: keep and retry
                self.failures += 1
                log.exception("audit batch failed; will retry", extra={"pending": self.depth})
                if self._stopping and self.failures > 50:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _write_batch(self) -> None:
        batch = [self._queue[i] for i in range(min(self.batch_size, len(self._queue)))]
        events, bodies = [], []
        for event in batch:
            row = {k: event.get(k, _DEFAULTS.get(k)) for k in _EVENT_COLUMNS}
            for k, default in _DEFAULTS.items():
                if row[k] is None:
                    row[k] = default
            events.append(row)
            if event.get("request_body") is not None or event.get("response_body") is not None:
                bodies.append({"event_id": event["id"],
                               **{k: event.get(k) for k in _BODY_FIELDS}})
        async with self.engine.begin() as conn:
            await conn.execute(insert(audit_events), events)
            if bodies:
                await conn.execute(insert(audit_bodies), bodies)
        for _ in batch:
            self._queue.popleft()
        self.written += len(batch)
