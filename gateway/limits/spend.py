"""Spend rollups: summed in memory per (hour, key, team, model, template), written in batches.

`record` is sync and never awaits (it runs in request finishers). A background task inserts
what was summed about once a second (one multi-row INSERT), and every few minutes compacts
closed hours so the table stays about one row per group and hour. Reads: `/admin/spend`
and, at start, the spend of each key and team in the current day, month and in total (the
budget baselines).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.background import cancel_and_wait
from gateway.ids import time_ordered_id
from gateway.limits.model import window_name, window_start
from gateway.storage.tables_spend import spend_rollups as t
from gateway.timeutil import utcnow

log = logging.getLogger("gateway.spend")

GROUPS = {"key": t.c.key_id, "team": t.c.team, "model": t.c.model, "template": t.c.template}
GROUP_BY = ("key", "team", "model", "template", "day")
COMPACT_EVERY_S = 300.0
COMPACT_LOOKBACK = timedelta(days=7)
_MAX_BUFFERED_GROUPS = 200_000

Group = tuple[datetime, str | None, str | None, str | None, str | None]


def hour(dt: datetime) -> datetime:
    return dt.replace(minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class _Sums:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0


class SpendLog:
    def __init__(self, engine: AsyncEngine, *, flush_interval_s: float = 1.0) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self._buffer: dict[Group, _Sums] = {}
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
            sums = self._buffer[group] = _Sums()
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
            rows = [{"id": time_ordered_id(), "bucket": g[0], "key_id": g[1], "team": g[2],
                     "model": g[3], "template": g[4], "requests": s.requests,
                     "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
                     "cost_nanos": s.cost_nanos} for g, s in batch.items()]
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(insert(t), rows)
            except BaseException:
                for group, sums in batch.items():  # put it back, merged with what came since
                    now = self._buffer.setdefault(group, _Sums())
                    now.requests += sums.requests
                    now.input_tokens += sums.input_tokens
                    now.output_tokens += sums.output_tokens
                    now.cost_nanos += sums.cost_nanos
                raise

    async def compact(self, now: datetime | None = None, max_buckets: int = 48) -> int:
        """Merge each closed hour's rows into one row per group; safe on several replicas.

        DELETE ... RETURNING hands each row to exactly one transaction, which inserts the
        sums of what it deleted: two replicas compacting the same hour cannot count twice.
        """
        now = now or utcnow()
        upper = hour(now) - timedelta(hours=1)
        lower = upper - COMPACT_LOOKBACK
        dup = (select(t.c.bucket)
               .where(t.c.bucket >= lower, t.c.bucket < upper)
               .group_by(t.c.bucket, t.c.key_id, t.c.team, t.c.model, t.c.template)
               .having(func.count() > 1))
        async with self.engine.connect() as conn:
            buckets = sorted({r[0] for r in (await conn.execute(dup)).all()})[:max_buckets]
        for bucket in buckets:
            async with self.engine.begin() as conn:
                gone = (await conn.execute(
                    delete(t).where(t.c.bucket == bucket).returning(
                        t.c.key_id, t.c.team, t.c.model, t.c.template, t.c.requests,
                        t.c.input_tokens, t.c.output_tokens, t.c.cost_nanos))).all()
                merged: dict[tuple, _Sums] = {}
                for key_id, team, model, template, req, inp, out, cost in gone:
                    s = merged.setdefault((key_id, team, model, template), _Sums())
                    s.requests += req
                    s.input_tokens += inp
                    s.output_tokens += out
                    s.cost_nanos += cost
                if merged:
                    await conn.execute(insert(t), [
                        {"id": time_ordered_id(), "bucket": bucket, "key_id": g[0],
                         "team": g[1], "model": g[2], "template": g[3], "requests": s.requests,
                         "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
                         "cost_nanos": s.cost_nanos} for g, s in merged.items()])
        return len(buckets)

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
        out: dict[str, int] = {}
        periods = ("day", "month", "total")
        for prefix, column in (("k", t.c.key_id), ("t", t.c.team)):
            sums = []
            for period in periods:
                start = window_start(period, now)
                value = t.c.cost_nanos if start is None else case(
                    (t.c.bucket >= start, t.c.cost_nanos), else_=0)
                sums.append(func.coalesce(func.sum(value), 0))
            query = select(column, *sums).where(column.is_not(None)).group_by(column)
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                for period, total in zip(periods, row[1:], strict=True):
                    if total:
                        out[f"{prefix}:{row[0]}:{window_name(period, now)}"] = int(total)
        return out

    async def query(self, group_by: str, *, since: datetime | None = None,
                    until: datetime | None = None, team: str | None = None,
                    key_id: str | None = None, model: str | None = None
                    ) -> list[dict[str, Any]]:
        """Sums per group; `since`/`until` at hour resolution (a bucket counts when its
        hour starts at or after the hour of `since`, and before `until`)."""
        cond = []
        if since is not None:
            cond.append(t.c.bucket >= hour(since))
        if until is not None:
            cond.append(t.c.bucket < until)
        for column, value in ((t.c.team, team), (t.c.key_id, key_id), (t.c.model, model)):
            if value is not None:
                cond.append(column == value)
        column = t.c.bucket if group_by == "day" else GROUPS[group_by]
        query = select(column, func.sum(t.c.requests), func.sum(t.c.input_tokens),
                       func.sum(t.c.output_tokens), func.sum(t.c.cost_nanos)).group_by(column)
        if cond:
            query = query.where(and_(*cond))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _rows(rows, by_day=group_by == "day")


def _rows(rows: Iterable[Any], *, by_day: bool) -> list[dict[str, Any]]:
    sums: dict[Any, _Sums] = {}
    for group, req, inp, out, cost in rows:
        if by_day:
            group = group.strftime("%Y-%m-%d")
        s = sums.setdefault(group, _Sums())
        s.requests += int(req or 0)
        s.input_tokens += int(inp or 0)
        s.output_tokens += int(out or 0)
        s.cost_nanos += int(cost or 0)
    data = [{"group": g, "requests": s.requests, "input_tokens": s.input_tokens,
             "output_tokens": s.output_tokens, "cost_nanos": s.cost_nanos}
            for g, s in sums.items()]
    if by_day:
        data.sort(key=lambda d: d["group"])
    else:
        data.sort(key=lambda d: (-d["cost_nanos"], str(d["group"])))
    return data
