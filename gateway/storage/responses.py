"""Stored responses of `/v1/responses`: written before the client sees the answer, read only
by their owner, gone after `responses.retention_days`.

Every read takes the owner: a response of another key, or an expired one, reads exactly like
one that never existed (the routes answer 404 for all three). Writes are batched: requests
that finish together share one transaction (`_Batcher`), and each waits until its own row is
committed, so a client that chains on a response the moment it arrives finds it, on any
replica.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.storage.tables_responses import responses
from gateway.timeutil import utcnow

log = logging.getLogger("gateway.responses")
_MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner_key_id: str
    team: str | None
    root_id: str
    previous_id: str | None
    model: str
    deployment: str | None
    upstream_id: str | None
    status: str
    created_at: datetime
    input_items: list[Any]
    response: dict[str, Any]


def _row(r: Any) -> StoredResponse:
    return StoredResponse(r.id, r.owner_key_id, r.team, r.root_id, r.previous_id, r.model,
                          r.deployment, r.upstream_id, r.status, r.created_at,
                          orjson.loads(r.input_items), orjson.loads(r.response))


class ResponseStore:
    def __init__(self, engine: AsyncEngine, retention_days: int) -> None:
        self.engine = engine
        self.retention = timedelta(days=retention_days)
        self._batcher = _Batcher(engine)

    async def save(self, *, response_id: str, owner_key_id: str, team: str | None,
                   previous: StoredResponse | None, model: str, deployment: str | None,
                   upstream_id: str | None, status: str, input_items: list[Any],
                   response: dict[str, Any]) -> None:
        """Insert one response; returns once it is committed."""
        now = utcnow()
        await self._batcher.add({
            "id": response_id, "owner_key_id": owner_key_id, "team": team,
            "root_id": previous.root_id if previous is not None else response_id,
            "previous_id": previous.id if previous is not None else None,
            "model": model, "deployment": deployment, "upstream_id": upstream_id,
            "status": status, "created_at": now, "expires_at": now + self.retention,
            "input_items": orjson.dumps(input_items).decode(),
            "response": orjson.dumps(response).decode()})

    async def find(self, response_id: str, owner_key_id: str) -> StoredResponse | None:
        r = responses.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(responses).where(
                r.id == response_id, r.owner_key_id == owner_key_id,
                r.expires_at > utcnow()))).first()
        return _row(row) if row is not None else None

    async def chain(self, last: StoredResponse) -> list[StoredResponse]:
        """`last` and the responses before it, oldest first (stops at a missing link)."""
        if last.previous_id is None:
            return [last]
        r = responses.c
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(responses).where(
                r.root_id == last.root_id, r.owner_key_id == last.owner_key_id,
                r.expires_at > utcnow()))).all()
        by_id = {row.id: row for row in rows}
        out = [last]
        seen = {last.id}
        previous: str | None = last.previous_id
        while previous is not None and previous in by_id and previous not in seen:
            seen.add(previous)
            record = _row(by_id[previous])
            out.append(record)
            previous = record.previous_id
        out.reverse()
        return out

    async def delete(self, response_id: str, owner_key_id: str) -> bool:
        r = responses.c
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(responses).where(
                r.id == response_id, r.owner_key_id == owner_key_id,
                r.expires_at > utcnow()))
        return bool(result.rowcount)

    async def close(self) -> None:
        await self._batcher.drain()


async def purge_expired(engine: AsyncEngine, now: datetime | None = None, *,
                        batch_size: int = 5000) -> int:
    """Delete responses past their retention, `batch_size` per transaction."""
    now = now or utcnow()
    r = responses.c
    total = 0
    while True:
        async with engine.begin() as conn:
            ids = [row[0] for row in await conn.execute(
                select(r.id).where(r.expires_at <= now).limit(batch_size))]
            if not ids:
                return total
            await conn.execute(delete(responses).where(r.id.in_(ids)))
        total += len(ids)


async def count_expired(engine: AsyncEngine, now: datetime | None = None) -> int:
    r = responses.c
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(responses).where(
            r.expires_at <= (now or utcnow())))).scalar_one())


class _Batcher:
    """Group commit: rows that arrive while a transaction runs go in the next one together.
    `add` returns when its row is committed (or raises what the commit raised)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None

    async def add(self, row: dict[str, Any]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._commit_all())
        await asyncio.shield(future)

    async def _commit_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(insert(responses), [row for row, _ in batch])
            except Exception as exc:  # each waiter gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def drain(self) -> None:
        if self._running is not None and not self._running.done():
            await asyncio.shield(self._running)
