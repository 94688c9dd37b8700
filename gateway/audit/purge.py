"""Retention: delete expired events in bounded batches, keeping every chain verifiable.

For each replica's chain, events are deleted from its start (in `seq` order) while they are
older than the cutoff, `batch_size` at a time, each batch in its own transaction together with
the chain's checkpoint for this purge (the seq and hash of the last event deleted, HMAC-signed
when a key is set): verify then starts the chain from there. An old event behind a newer one in
its chain (a long stream that ended after later requests) waits for the next purge.

The purge itself is recorded: one checkpoint row per chain, and an admin-change event (action
`audit.purge`, endpoint `gateway audit purge`, its own one-event chain) with the log's size
before and after, whose response body sums up what was removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import Hasher
from gateway.audit.direct import CLI_KEY_ID, cli_actor_name, write_chain
from gateway.audit.verify import checkpoint_mac
from gateway.core.audit_event import AuditEvent
from gateway.ids import time_ordered_id
from gateway.storage.tables import audit_bodies, audit_checkpoints, audit_events, audit_pii
from gateway.timeutil import iso, utcnow

PURGE_ENDPOINT = "gateway audit purge"


async def count_expired(engine: AsyncEngine, cutoff: datetime) -> int:
    e = audit_events
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(e)
                                       .where(e.c.received_at < cutoff))).scalar_one())


async def purge(engine: AsyncEngine, hasher: Hasher, cutoff: datetime, *,
                batch_size: int = 5000, record: bool = True,
                progress: Callable[[int], None] | None = None,
                also: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Delete expired events; returns {"cutoff", "deleted", "chains": {replica: n}} and
    `also` (what the same job removed elsewhere, recorded with it); `progress(deleted so
    far)` after each chain."""
    e = audit_events
    before = await log_stats(engine) if record else None
    async with engine.connect() as conn:
        replicas = [r[0] for r in await conn.execute(select(e.c.replica).distinct())]
    chains: dict[str, int] = {}
    deleted = 0
    for replica in sorted(r for r in replicas if r is not None):
        n = await _purge_chain(engine, hasher, replica, cutoff, batch_size)
        if n:
            chains[replica] = n
            deleted += n
        if progress is not None:
            progress(deleted)
    if None in replicas:  # events outside any chain (before the chain existed): plain delete
        n = await _purge_unchained(engine, cutoff, batch_size)
        if n:
            chains[""] = n
            deleted += n
    summary = {"cutoff": iso(cutoff), "deleted": deleted, "chains": chains, **(also or {})}
    if record:
        await _record(engine, hasher, summary, before)
    return summary


async def _delete_ids(conn: Any, ids: list[str]) -> None:
    await conn.execute(delete(audit_bodies).where(audit_bodies.c.event_id.in_(ids)))
    await conn.execute(delete(audit_pii).where(audit_pii.c.event_id.in_(ids)))
    await conn.execute(delete(audit_events).where(audit_events.c.id.in_(ids)))


async def _purge_chain(engine: AsyncEngine, hasher: Hasher, replica: str, cutoff: datetime,
                       batch_size: int) -> int:
    e = audit_events
    checkpoint: dict[str, Any] | None = None
    total = 0
    while True:
        async with engine.begin() as conn:
            rows = (await conn.execute(
                select(e.c.id, e.c.seq, e.c.hash, e.c.received_at)
                .where(e.c.replica == replica, e.c.seq.is_not(None))
                .order_by(e.c.seq, e.c.id).limit(batch_size))).all()
            expired = []
            for row in rows:
                if row.received_at >= cutoff:
                    break
                expired.append(row)
            if not expired:
                return total
            await _delete_ids(conn, [r.id for r in expired])
            total += len(expired)
            last = expired[-1]
            values = {"replica": replica, "seq": last.seq, "hash": last.hash,
                      "events_purged": total, "cutoff": cutoff}
            if checkpoint is None:
                checkpoint = {"id": time_ordered_id(), "created_at": utcnow(), **values}
                checkpoint["mac"] = checkpoint_mac(hasher, checkpoint)
                await conn.execute(audit_checkpoints.insert().values(**checkpoint))
            else:
                checkpoint.update(values)
                checkpoint["mac"] = checkpoint_mac(hasher, checkpoint)
                await conn.execute(update(audit_checkpoints)
                                   .where(audit_checkpoints.c.id == checkpoint["id"])
                                   .values(**{k: checkpoint[k] for k in (*values, "mac")}))
        if len(expired) < len(rows) or len(rows) < batch_size:
            return total


async def _purge_unchained(engine: AsyncEngine, cutoff: datetime, batch_size: int) -> int:
    e = audit_events
    total = 0
    while True:
        async with engine.begin() as conn:
            ids = [r[0] for r in await conn.execute(
                select(e.c.id).where(e.c.replica.is_(None), e.c.received_at < cutoff)
                .limit(batch_size))]
            if not ids:
                return total
            await _delete_ids(conn, ids)
            total += len(ids)


async def log_stats(engine: AsyncEngine) -> dict[str, Any]:
    """How many events the log holds and when the oldest was received."""
    e = audit_events
    async with engine.connect() as conn:
        count, oldest = (await conn.execute(select(func.count(), func.min(e.c.received_at))
                                            .select_from(e))).one()
    return {"events": int(count or 0), "oldest_received_at": iso(oldest)}


async def _record(engine: AsyncEngine, hasher: Hasher, summary: dict[str, Any],
                  before: dict[str, Any] | None) -> None:
    """The purge's own audit event (action `audit.purge`): a one-event chain named after this
    run, the log's size before and after, and the summary as its response body."""
    event = AuditEvent(f"purge-{time_ordered_id()}", PURGE_ENDPOINT)
    event.fields.update(key_id=CLI_KEY_ID, key_name=cli_actor_name())
    event.change("audit.purge", "audit", target_name="audit log")
    event.changed(before, {**await log_stats(engine), "deleted": summary["deleted"],
                           "cutoff": summary["cutoff"]})
    event.close(200)
    await write_chain(engine, hasher, [event.fields], prefix="purge",
                      response_bodies=[summary])
