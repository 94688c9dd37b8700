"""Spend rollup rows in SQL: inserts, compaction of closed hours, and the sums read back.

`gateway.limits.spend.SpendLog` sums requests in memory and writes them here in batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ids import time_ordered_id
from gateway.storage.tables_spend import spend_rollups as t
from gateway.timeutil import utcnow

GROUPS = {"key": t.c.key_id, "team": t.c.team, "model": t.c.model, "template": t.c.template}
GROUP_BY = ("key", "team", "model", "template", "day", "hour")
_TIME_FORMATS = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H:00Z"}
COMPACT_LOOKBACK = timedelta(days=7)

# (hour bucket, key id, team, model, template)
Group = tuple[datetime, str | None, str | None, str | None, str | None]


def hour(dt: datetime) -> datetime:
    return dt.replace(minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class Sums:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0

    def add(self, other: Sums) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_nanos += other.cost_nanos


def _row(bucket: datetime, key: tuple[Any, ...], s: Sums) -> dict[str, Any]:
    return {"id": time_ordered_id(), "bucket": bucket, "key_id": key[0], "team": key[1],
            "model": key[2], "template": key[3], "requests": s.requests,
            "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
            "cost_nanos": s.cost_nanos}


class SpendRows:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def insert(self, batch: Mapping[Group, Sums]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(t), [_row(g[0], g[1:], s) for g, s in batch.items()])

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
                merged: dict[tuple[Any, ...], Sums] = {}
                for key_id, team, model, template, req, inp, out, cost in gone:
                    merged.setdefault((key_id, team, model, template), Sums()).add(
                        Sums(req, inp, out, cost))
                if merged:
                    await conn.execute(insert(t), [_row(bucket, g, s)
                                                   for g, s in merged.items()])
        return len(buckets)

    async def cost_since(self, starts: Mapping[str, datetime | None]
                         ) -> list[tuple[str, str, dict[str, int]]]:
        """Cost per key and per team since each start (None: all time):
        `[("k" | "t", key id or team, {period: nanos})]`."""
        out: list[tuple[str, str, dict[str, int]]] = []
        periods = list(starts)
        for prefix, column in (("k", t.c.key_id), ("t", t.c.team)):
            sums = []
            for period in periods:
                start = starts[period]
                value = t.c.cost_nanos if start is None else case(
                    (t.c.bucket >= start, t.c.cost_nanos), else_=0)
                sums.append(func.coalesce(func.sum(value), 0))
            query = select(column, *sums).where(column.is_not(None)).group_by(column)
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                out.append((prefix, row[0], {p: int(v) for p, v in zip(periods, row[1:],
                                                                       strict=True)}))
        return out

    async def query(self, group_by: str, *, since: datetime | None = None,
                    until: datetime | None = None, team: str | None = None,
                    key_id: str | None = None, model: str | None = None,
                    template: str | None = None) -> list[dict[str, Any]]:
        """Sums per group; `since`/`until` at hour resolution (a bucket counts when its
        hour starts at or after the hour of `since`, and before `until`)."""
        cond = []
        if since is not None:
            cond.append(t.c.bucket >= hour(since))
        if until is not None:
            cond.append(t.c.bucket < until)
        for column, value in ((t.c.team, team), (t.c.key_id, key_id), (t.c.model, model),
                              (t.c.template, template)):
            if value is not None:
                cond.append(column == value)
        column = t.c.bucket if group_by in _TIME_FORMATS else GROUPS[group_by]
        query = select(column, func.sum(t.c.requests), func.sum(t.c.input_tokens),
                       func.sum(t.c.output_tokens), func.sum(t.c.cost_nanos)).group_by(column)
        if cond:
            query = query.where(and_(*cond))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _rows(rows, time_format=_TIME_FORMATS.get(group_by))


def _rows(rows: Iterable[Any], *, time_format: str | None) -> list[dict[str, Any]]:
    """Sums per group; time groups (`day`: `YYYY-MM-DD`, `hour`: `YYYY-MM-DDTHH:00Z`) in
    time order, other groups by cost."""
    by_day = time_format is not None
    sums: dict[Any, Sums] = {}
    for group, req, inp, out, cost in rows:
        if time_format is not None:
            group = group.strftime(time_format)
        sums.setdefault(group, Sums()).add(Sums(int(req or 0), int(inp or 0), int(out or 0),
                                                int(cost or 0)))
    data = [{"group": g, "requests": s.requests, "input_tokens": s.input_tokens,
             "output_tokens": s.output_tokens, "cost_nanos": s.cost_nanos}
            for g, s in sums.items()]
    if by_day:
        data.sort(key=lambda d: d["group"])
    else:
        data.sort(key=lambda d: (-d["cost_nanos"], str(d["group"])))
    return data
