"""Retention: delete expired events in bounded batches, keeping every chain verifiable.

For each replica's chain, events are deleted from its start (in `seq` order) while they are
older than the cutoff, `batch_size` at a time, each batch in its own transaction together with
the chain's checkpoint for this purge (the seq and hash of the last event deleted, HMAC-signed
when a key is set): verify then starts the chain from there. An old event behind a newer one in
its chain (a long stream that ended after later requests) waits for the next purge.

The purge itself is recorded: one checkpoint row per chain, and an audit event (endpoint
`gateway audit purge`, its own one-event chain) whose response body sums up what was removed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.bodies import body_text
from gateway.audit.chain import GENESIS, Hasher, row_from_event, to_wire
from gateway.audit.shipper import store_records
from gateway.audit.verify import checkpoint_mac
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
                also: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Delete expired events; returns {"cutoff", "deleted", "chains": {replica: n}} and
    `also` (what the same job removed elsewhere, recorded with it)."""
    e = audit_events
    async with engine.connect() as conn:
        replicas = [r[0] for r in await conn.execute(select(e.c.replica).distinct())]
    chains: dict[str, int] = {}
    deleted = 0
    for replica in sorted(r for r in replicas if r is not None):
        n = await _purge_chain(engine, hasher, replica, cutoff, batch_size)
        if n:
            chains[replica] = n
            deleted += n
    if None in replicas:  # events outside any chain (before the chain existed): plain delete
        n = await _purge_unchained(engine, cutoff, batch_size)
        if n:
            chains[""] = n
            deleted += n
    summary = {"cutoff": iso(cutoff), "deleted": deleted, "chains": chains, **(also or {})}
    if record:
        await _record(engine, hasher, summary)
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


async def _record(engine: AsyncEngine, hasher: Hasher, summary: dict[str, Any]) -> None:
    """The purge's own audit event: a one-event chain named after this run."""
    now = utcnow()
    started = time.perf_counter()
    event = {"id": time_ordered_id(), "request_id": f"purge-{time_ordered_id()}",
             "received_at": now, "completed_at": now, "key_name": "cli",
             "endpoint": PURGE_ENDPOINT, "status_code": 200,
             "latency_ms": round((time.perf_counter() - started) * 1000, 3)}
    row = row_from_event(event)
    row.update(replica=f"purge-{socket.gethostname()[:40]}-{time_ordered_id()[-6:]}", seq=1,
               prev_hash=GENESIS)
    response = body_text(summary)
    row["hash"] = hasher.row_hash(row, None, response)
    await store_records(engine, [{"e": to_wire(row), "rb": None, "sb": response}])
