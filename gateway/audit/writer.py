"""The one place audit events are written: a durable local spool, then batched SQL inserts.

`submit(event)` never blocks or awaits, so it is safe in a `finally` of a cancelled stream. The
committer thread group-commits events to the spool (`gateway/audit/committer.py`); inside an
HTTP request the durability middleware holds the response until its event is on disk. The
shipper task moves committed events to SQL in order (`gateway/audit/shipper.py`). `stop` drains
both: what the database cannot take at shutdown stays in the spool and is sent at next start.

`unavailable()` says why a new request must be refused with 503 `audit_unavailable` (the spool
cannot be written or is full; with `on_store_error: closed`, the database is down). A request
refused that way is not stored: `submit` counts it in `metrics.audit_unavailable` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.bodies import DEFAULT_LIMIT
from gateway.audit.chain import Hasher
from gateway.audit.committer import Committer, current_tickets
from gateway.audit.shipper import Shipper
from gateway.audit.spool import Spool

log = logging.getLogger("gateway.audit")

AUDIT_UNAVAILABLE = "audit_unavailable"
_STALL_S = 2.0
_CLOSED_PROBE_S = 1.0


class AuditWriter:
    def __init__(self, engine: AsyncEngine, *, batch_size: int = 500,
                 flush_interval_s: float = 0.05, spool_dir: Path | str = "data/spool",
                 spool_max_bytes: int = 1024 * 1024 * 1024, on_store_error: str = "spool",
                 fsync: bool = True, hmac_key: bytes | None = None,
                 replica_hint: str | None = None, body_limit: int = DEFAULT_LIMIT,
                 metrics: Any = None) -> None:
        self.engine = engine
        self.on_store_error = on_store_error
        self.metrics = metrics
        self.spool = Spool(Path(spool_dir), max_bytes=spool_max_bytes, fsync=fsync)
        self.hasher = Hasher(hmac_key)
        # Refuse new requests this far before the hard limit, so the ones already in flight
        # still fit (their events are at most two bodies and a row).
        self.headroom = min(spool_max_bytes // 8, 2 * body_limit + 16 * 1024)
        self.committer = Committer(self.spool, self.hasher, replica_hint=replica_hint,
                                   body_limit=body_limit, on_drop=self._dropped,
                                   on_commit=self._committed)
        self.shipper = Shipper(engine, self.spool, batch_size=batch_size,
                               flush_interval_s=flush_interval_s,
                               probe_interval_s=_CLOSED_PROBE_S
                               if on_store_error == "closed" else None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.refused = 0
        if metrics is not None:
            metrics.audit_queue_depth.set_function(lambda: self.depth)
            metrics.audit_spool_bytes.set_function(lambda: self.spool.bytes)

    # --- what the request path uses ----------------------------------------------------
    @property
    def depth(self) -> int:
        """Events accepted but not yet in SQL (queued for the spool, or spooled)."""
        return self.committer.queued + max(0, self.spool.pending)

    @property
    def written(self) -> int:
        return self.shipper.shipped

    @property
    def replica(self) -> str:
        return self.spool.replica

    def unavailable(self) -> str | None:
        """Why a new request must be refused (503 `audit_unavailable`), or None."""
        if self.committer.error is not None:
            return "the audit record cannot be made durable: the audit spool cannot be written"
        if self.spool.room() < self.headroom:
            return "the audit record cannot be made durable: the audit spool is full"
        since = self.committer.writing_since
        if since is not None and time.monotonic() - since > _STALL_S:
            return "the audit record cannot be made durable: the audit spool is not answering"
        if self.on_store_error == "closed" and not self.shipper.db_ok:
            return "the audit record cannot be stored: the audit database is unavailable"
        return None

    def count_refused(self, n: int = 1) -> None:
        self.refused += n
        if self.metrics is not None:
            self.metrics.audit_unavailable.inc(n)

    def submit(self, event: dict[str, Any]) -> None:
        if event.get("error_code") == AUDIT_UNAVAILABLE:
            self.count_refused()  # refused because nothing could be stored: counted instead
            return
        future = None
        tickets = current_tickets.get()
        if tickets is not None and self._loop is not None:
            future = self._loop.create_future()
            tickets.append(future)
        self.committer.submit(event, future)

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.committer.open_spool)
        self.committer.start(self._loop)
        self.shipper.start()

    async def stop(self, timeout_s: float = 25) -> None:
        """Commit everything to the spool, ship what the database takes, then stop."""
        deadline = time.monotonic() + timeout_s
        await asyncio.to_thread(self.committer.stop, max(1.0, timeout_s / 2))
        await self.shipper.stop(max(1.0, deadline - time.monotonic()))
        await asyncio.to_thread(self.spool.close)
        if self.spool.pending > 0:
            log.warning("audit events left in the spool for the next start",
                        extra={"pending": self.spool.pending})

    async def flush(self, timeout_s: float = 30) -> bool:
        """Commit and ship everything submitted so far (tests, shutdown); True when done."""
        await self.committer.barrier()
        return await self.shipper.drain(timeout_s)

    # --- callbacks from the committer thread -------------------------------------------
    def _dropped(self, n: int, reason: str) -> None:
        log.error("audit events could not be made durable", extra={"events": n,
                                                                     "reason": reason})
        self.refused += n
        if self.metrics is not None:
            self.metrics.audit_unavailable.inc(n)  # prometheus counters are thread-safe

    def _committed(self) -> None:
        loop = self._loop
        if loop is not None and self.spool.pending >= self.shipper.batch_size:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(self.shipper.poke)
