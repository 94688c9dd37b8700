"""Check every replica's hash chain: edited, deleted, inserted or reordered events show.

Each replica numbers its events 1, 2, 3, … (`seq`); event n carries the hash of event n-1 as
`prev_hash` and its own `hash` over its canonical encoding (bodies included). Walking a chain
in `seq` order, an event is bad when its `seq` is not the next number (one was deleted before
it, or it was inserted or moved), when its `prev_hash` is not the previous event's `hash`, or
when its `hash` is not what its content hashes to now (it was edited). A chain whose start was
purged starts from the purge checkpoint (the last purged event's seq and hash; HMAC-signed
when a key is set). Events without a chain position are bad too. `first_bad_id` is the
earliest (by id) of the first bad event of each chain.

Limits, as for any hash chain kept in the same database: without an HMAC key, someone who can
write the table can recompute a whole consistent chain; and a chain's newest events or a whole
replica's chain can be deleted without a trace in the table itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import GENESIS, HASHED_COLUMNS, LATE_COLUMNS, Hasher
from gateway.storage.tables import audit_bodies, audit_checkpoints, audit_events
from gateway.timeutil import iso

_PAGE = 500  # rows per read; bodies (up to 2 x 64 K each) bound the memory


@dataclass
class ChainReport:
    replica: str | None
    events_checked: int = 0
    first_bad_id: str | None = None
    reason: str | None = None


@dataclass
class VerifyResult:
    ok: bool
    events_checked: int
    first_bad_id: str | None
    chains: list[ChainReport] = field(default_factory=list)

    def as_api(self) -> dict[str, Any]:
        return {"ok": self.ok, "events_checked": self.events_checked,
                "first_bad_id": self.first_bad_id}


def checkpoint_mac(hasher: Hasher, row: dict[str, Any]) -> str | None:
    return hasher.mac(row["id"], row["replica"], row["seq"], row["hash"], row["events_purged"],
                      iso(row["cutoff"]), iso(row["created_at"]))


async def _checkpoints(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    async with engine.connect() as conn:
        result = await conn.execute(select(audit_checkpoints))
        for row in result.mappings():
            current = latest.get(row["replica"])
            if current is None or row["seq"] > current["seq"]:
                latest[row["replica"]] = dict(row)
    return latest


async def verify_chains(engine: AsyncEngine, hasher: Hasher,
                        progress: Callable[[int], None] | None = None) -> VerifyResult:
    e = audit_events
    async with engine.connect() as conn:
        replicas = [r[0] for r in await conn.execute(select(e.c.replica).distinct())]
    checkpoints = await _checkpoints(engine)
    reports: list[ChainReport] = []
    checked = 0
    for replica in sorted(replicas, key=lambda r: (r is None, r or "")):
        if replica is None:
            report = await _unchained(engine)
        else:
            report = await _verify_chain(engine, hasher, replica, checkpoints.get(replica))
        reports.append(report)
        checked += report.events_checked
        if progress is not None:
            progress(checked)
    bad = sorted(r.first_bad_id for r in reports if r.first_bad_id is not None)
    return VerifyResult(ok=not bad, events_checked=checked,
                        first_bad_id=bad[0] if bad else None, chains=reports)


async def _unchained(engine: AsyncEngine) -> ChainReport:
    e = audit_events
    async with engine.connect() as conn:
        rows = (await conn.execute(select(e.c.id).where(e.c.replica.is_(None))
                                   .order_by(e.c.id).limit(1))).all()
    report = ChainReport(replica=None, events_checked=len(rows))
    if rows:
        report.first_bad_id = rows[0][0]
        report.reason = "event outside any hash chain"
    return report


async def _verify_chain(engine: AsyncEngine, hasher: Hasher, replica: str,
                        checkpoint: dict[str, Any] | None) -> ChainReport:
    e = audit_events
    report = ChainReport(replica=replica)
    expected_seq, expected_prev = 1, GENESIS
    checkpoint_ok = True
    if checkpoint is not None:
        expected_seq, expected_prev = checkpoint["seq"] + 1, checkpoint["hash"]
        if hasher.key is not None and checkpoint.get("mac") != checkpoint_mac(hasher, checkpoint):
            checkpoint_ok = False
    columns = [e.c[name] for name in (*HASHED_COLUMNS, *LATE_COLUMNS)] + [
        e.c.hash, audit_bodies.c.request_body, audit_bodies.c.response_body]
    source = e.outerjoin(audit_bodies, audit_bodies.c.event_id == e.c.id)
    names = [*HASHED_COLUMNS, *LATE_COLUMNS, "hash", "request_body", "response_body"]
    state: dict[str, Any] = {"seq": expected_seq, "prev": expected_prev}

    def check_page(rows: list[dict[str, Any]]) -> bool:
        """Walk one page (in a worker thread: hashing is the slow part); False at a break."""
        for row in rows:
            report.events_checked += 1
            reason = _check(hasher, row, state["seq"], state["prev"])
            if reason is None and not checkpoint_ok:
                reason = "the purge checkpoint this chain starts from is not authentic"
            if reason is not None:
                report.first_bad_id, report.reason = row["id"], reason
                return False
            state["seq"], state["prev"] = state["seq"] + 1, row["hash"]
        return True

    last: tuple[int, str] | None = None
    stuck = False
    while True:
        stmt = select(*columns).select_from(source).where(e.c.replica == replica)
        if last is None:
            stmt = stmt.where(e.c.seq.is_not(None))
        elif stuck:  # a whole page shared one seq (forged rows): step past it exactly
            stmt = stmt.where(or_(e.c.seq > last[0], and_(e.c.seq == last[0],
                                                         e.c.id > last[1])))
        else:  # a plain range on (replica, seq); rows of the last seq already seen are skipped
            stmt = stmt.where(e.c.seq >= last[0])
        stmt = stmt.order_by(e.c.seq, e.c.id).limit(_PAGE)
        async with engine.connect() as conn:
            rows = [dict(zip(names, r, strict=True))
                    for r in await conn.execute(stmt)]
        fresh = rows if last is None else [
            r for r in rows if r["seq"] > last[0] or (r["seq"] == last[0] and r["id"] > last[1])]
        if not await asyncio.to_thread(check_page, fresh):
            return report
        if len(rows) < _PAGE:
            break
        stuck = not fresh
        last = (rows[-1]["seq"], rows[-1]["id"])
    async with engine.connect() as conn:  # rows of this replica with no place in its chain
        stray = (await conn.execute(select(e.c.id).where(e.c.replica == replica,
                                                          e.c.seq.is_(None))
                                    .order_by(e.c.id).limit(1))).first()
    if stray is not None:
        report.events_checked += 1
        report.first_bad_id, report.reason = stray[0], "event without a chain position"
    return report


def _check(hasher: Hasher, row: dict[str, Any], expected_seq: int, expected_prev: str
           ) -> str | None:
    if row["seq"] != expected_seq:
        return f"expected event {expected_seq} of the chain, found {row['seq']}"
    if row["prev_hash"] != expected_prev:
        return "prev_hash does not match the previous event's hash"
    content = {name: row[name] for name in (*HASHED_COLUMNS, *LATE_COLUMNS)}
    if hasher.row_hash(content, row["request_body"], row["response_body"]) != row["hash"]:
        return "the event's content does not match its hash"
    return None
