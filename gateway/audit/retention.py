"""What retention means for the log right now: the period, the oldest event, what the next
purge (`gateway audit purge`) will remove, and the last purge (itself an audit event)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.purge import count_expired, log_stats
from gateway.audit.query import AuditQuery, fetch_page_plain
from gateway.timeutil import iso, utcnow


async def retention_report(engine: AsyncEngine, retention_days: int) -> dict[str, Any]:
    """`{"retention_days", "events", "oldest_received_at", "next_purge": {"cutoff",
    "events"}, "last_purge": event | None}` (`last_purge.after` has what it removed)."""
    cutoff = utcnow() - timedelta(days=retention_days)
    stats = await log_stats(engine)
    purges = await fetch_page_plain(engine, AuditQuery(filters={"action": "audit.purge"},
                                                       limit=1))
    return {"retention_days": retention_days, **stats,
            "next_purge": {"cutoff": iso(cutoff),
                           "events": await count_expired(engine, cutoff)},
            "last_purge": purges[0] if purges else None}
