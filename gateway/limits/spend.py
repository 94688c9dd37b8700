"""Spend rollups: summed in memory per (hour, key, team, model, template), written in batches.

`record` is sync and never awaits (it runs in a stage's `finally`). A background task writes
what was summed about once a second (one multi-row INSERT, `gateway.storage.spend`), and
every few minutes compacts closed hours so the table stays about one row per group and
hour. Reads: `/admin/spend` and, at start, the spend of each key and team in the current
day, month and in total (the budget baselines).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.background import cancel_and_wait
from gateway.limits.model import window_name, window_start
from gateway.storage.spend import GROUP_BY, Group, SpendRows, Sums, hour
from gateway.timeutil import utcnow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("gateway.spend")

__all__ = ["GROUP_BY", "SpendLog"]

COMPACT_EVERY_S = 300.0
_MAX_BUFFERED_GROUPS = 200_000
_PERIODS = ("day", "month", "total")


class SpendLog:
    def __init__(self, engine: AsyncEngine, *, flush_interval_s: float = 1.0) -> None:
        self.engine = engine
        self.rows = SpendRows(engine)
        self.flush_interval_s = flush_interval_s
        self._buffer: dict[Group, Sums] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._last_compact = 0.0
        self.failures = 0

    def record(self, received_at: datetime, key_id: str | None, team: str | None,
               model: str | None, template: str | None, input_tokens: int,
               output_tokens: int, cost_nanos: int) -> None:
        group = (hour(received_at), key_id, team, model, template)
        sums = self._buffer.get(group)
        if sums is None:
            if len(self._buffer) >= _MAX_BUFFERED_GROUPS:
                log.error("spend buffer full (database down?): dropping a rollup group")
                return
            sums = self._buffer[group] = Sums()
        sums.requests += 1
        sums.input_tokens += input_tokens
        sums.output_tokens += output_tokens
        sums.cost_nanos += cost_nanos

    # --- writing ---------------------------------------------------------------------------
    async def flush(self) -> None:
        """Insert everything summed so far (kept for the next try if the database refuses)."""
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer = self._buffer, {}
            try:
                await self.rows.insert(batch)
            except BaseException:
                for group, sums in batch.items():  # put it back, merged with what came since
                    self._buffer.setdefault(group, Sums()).add(sums)
                raise

    async def compact(self, now: datetime | None = None, max_buckets: int = 48) -> int:
        return await self.rows.compact(now, max_buckets)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spend-rollups")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("final spend flush failed",
                          extra={"groups": len(self._buffer)})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.flush_interval_s
        while True:
            await asyncio.sleep(backoff)
            try:
                await self.flush()
                if loop.time() - self._last_compact > COMPACT_EVERY_S:
                    self._last_compact = loop.time()
                    await self.compact()
                backoff = self.flush_interval_s
            except Exception:
                self.failures += 1
                log.exception("spend rollup write failed; will retry")
                backoff = min(max(backoff * 2, 0.5), 30.0)

    # --- reading ---------------------------------------------------------------------------
    async def period_spend(self, now: datetime | None = None) -> dict[str, int]:
        """Spend per budget counter (`k:<key id>:<window>`, `t:<team>:<window>`) for the
        current day, month and all time: the budget baselines loaded at start."""
        now = now or utcnow()
        totals = await self.rows.cost_since({p: window_start(p, now) for p in _PERIODS})
        return {f"{prefix}:{name}:{window_name(period, now)}": total
                for prefix, name, by_period in totals
                for period, total in by_period.items() if total}

    async def query(self, group_by: str, **filters: Any) -> list[dict[str, Any]]:
        """Sums per group (`gateway.storage.spend.SpendRows.query`)."""
        return await self.rows.query(group_by, **filters)
