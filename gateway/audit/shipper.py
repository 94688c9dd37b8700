"""The shipper: committed spool records -> SQL, in order, in batched idempotent inserts.

Every `flush_interval` (sooner once `batch_size` events are waiting) it reads the spool from
its ack position and inserts up to `batch_size` events per transaction (full batches back to
back; a part batch ends the round), skipping ids already
stored, so a replay after a crash or an outage writes nothing twice (PostgreSQL: one
multi-row `INSERT … SELECT FROM unnest(…)` per table; SQLite: one prepared INSERT over the
batch). Only after the commit does the ack position move. While the database is down the same
batch is retried with backoff (at most 2 s apart); the spool keeps growing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import JSON, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import from_wire
from gateway.audit.spool import Position, Spool
from gateway.storage.tables import audit_bodies, audit_events, audit_pii

log = logging.getLogger("gateway.audit")

_MAX_BACKOFF_S = 2.0
_STATEMENT_TIMEOUT_S = 30.0
_PROBE_TIMEOUT_S = 3.0
_LOG_EVERY_S = 30.0


def _pg_unnest_insert(table: Any) -> tuple[str, tuple[str, ...], frozenset[str]]:
    """`INSERT … SELECT * FROM unnest($1::type[], …) ON CONFLICT DO NOTHING`: one statement
    for a whole batch, one array parameter per column."""
    cached = _PG_STATEMENTS.get(table.name)
    if cached is not None:
        return cached
    dialect = postgresql.dialect()
    names = tuple(str(c.name) for c in table.columns)
    casts = ", ".join(f"${i}::{c.type.compile(dialect=dialect)}[]"
                      for i, c in enumerate(table.columns, start=1))
    columns = ", ".join(f'"{name}"' for name in names)
    sql = (f"INSERT INTO {table.name} ({columns}) SELECT * FROM unnest({casts}) "
           "ON CONFLICT DO NOTHING")
    json_columns = frozenset(str(c.name) for c in table.columns if isinstance(c.type, JSON))
    _PG_STATEMENTS[table.name] = cached = (sql, names, json_columns)
    return cached


_PG_STATEMENTS: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {}
_EVENT_NAMES = tuple(str(c.name) for c in audit_events.columns)
_EVENT_WIDTH = len(_EVENT_NAMES)


def split_records(records: list[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Spool records -> (event rows as spooled, body rows, PII-kind rows)."""
    events: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    kinds: list[dict[str, Any]] = []
    for record in records:
        row = record["e"]
        if len(row) < _EVENT_WIDTH:  # spooled by an older version: its columns were fewer
            for name in _EVENT_NAMES:
                row.setdefault(name, None)
        events.append(row)
        if "rb" in record or "sb" in record:
            bodies.append({"event_id": row["id"], "request_body": record.get("rb"),
                           "response_body": record.get("sb")})
        pii = row.get("pii")
        if isinstance(pii, dict):
            kinds.extend({"event_id": row["id"], "kind": str(kind)[:32]} for kind in pii)
    return events, bodies, kinds


def _sqlite_insert(table: Any) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """`INSERT … VALUES (?, …) ON CONFLICT DO NOTHING`, and what makes a row's values tuple
    in its column order (an `itemgetter`: one C call per row)."""
    cached = _SQLITE_STATEMENTS.get(table.name)
    if cached is None:
        names = tuple(str(c.name) for c in table.columns)
        columns = ", ".join(f'"{n}"' for n in names)
        marks = ", ".join("?" for _ in names)
        cached = (f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) "
                  "ON CONFLICT DO NOTHING", itemgetter(*names))
        _SQLITE_STATEMENTS[table.name] = cached
    return cached


_SQLITE_STATEMENTS: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]] = {}


async def store_records(engine: AsyncEngine, records: list[dict[str, Any]]) -> None:
    """Insert a batch in one transaction, skipping events already stored (by id).

    PostgreSQL: one multi-row `INSERT … SELECT FROM unnest(…)` per table. SQLite: one
    prepared INSERT run over the whole batch (in-process: no round trips to save). Both go
    to the driver directly: the spooled values need no per-value processing."""
    events, bodies, kinds = split_records(records)
    if engine.dialect.name == "postgresql":
        events = [from_wire(row) for row in events]
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            async with driver.transaction():
                for table, rows in ((audit_events, events), (audit_bodies, bodies),
                                    (audit_pii, kinds)):
                    if not rows:
                        continue
                    sql, names, json_columns = _pg_unnest_insert(table)
                    arrays = [[_json_text(r[n]) for r in rows] if n in json_columns
                              else [r[n] for r in rows] for n in names]
                    await driver.execute(sql, *arrays)
        return
    for row in events:  # the rows are this batch's own (parsed from the spool): edit in place
        if row["pii"] is not None:
            row["pii"] = _json_text(row["pii"])
        if row["before"] is not None or row["after"] is not None:  # an admin change's values
            row["before"], row["after"] = _json_text(row["before"]), _json_text(row["after"])
    async with engine.begin() as conn:  # commits (or rolls back) the driver's transaction
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        for table, rows in ((audit_events, events), (audit_bodies, bodies),
                            (audit_pii, kinds)):
            if rows:
                sql, values = _sqlite_insert(table)
                await driver.executemany(sql, list(map(values, rows)))


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class Shipper:
    def __init__(self, engine: AsyncEngine, spool: Spool, *, batch_size: int = 500,
                 flush_interval_s: float = 0.05, probe_interval_s: float | None = None) -> None:
        self.engine = engine
        self.spool = spool
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self.probe_interval_s = probe_interval_s
        self.db_ok = True
        self.shipped = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._urgent = False
        self._stop_deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._pos: Position | None = None
        self._last_probe = 0.0
        self._last_log = 0.0

    def poke(self) -> None:
        """Called on the loop after each commit: ship now when a full batch is waiting."""
        if self.spool.pending >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-shipper")

    async def drain(self, timeout_s: float) -> bool:
        """Ship everything committed now; True when nothing is left (False: the DB is down)."""
        deadline = time.monotonic() + timeout_s
        while self.spool.pending > 0 and time.monotonic() < deadline:
            if self._task is None or self._task.done():
                if not await self._ship_pending():
                    await asyncio.sleep(0.1)
                continue
            self._urgent = True
            self._wake.set()
            await asyncio.sleep(0.01)
        self._urgent = False
        return self.spool.pending <= 0

    async def stop(self, timeout_s: float) -> None:
        """Ship what is left (while the database answers, at most `timeout_s`), then end."""
        self._stop_deadline = time.monotonic() + timeout_s
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s + 1)
            except TimeoutError:
                log.error("audit shipper did not finish in time; the rest stays in the spool",
                          extra={"pending": self.spool.pending})

    # --- the task ----------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while True:
            ok = await self._ship_pending()
            stopping = self._stop_deadline is not None
            if ok:
                backoff = 0.1
                if stopping:
                    return
                if not (self._urgent and self.spool.pending > 0):
                    await self._wait(self.flush_interval_s)
                await self._maybe_probe()
            else:
                if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                    log.error("audit database unavailable at shutdown; events stay in the "
                              "spool and are sent at the next start",
                              extra={"pending": self.spool.pending})
                    return
                await self._wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _maybe_probe(self) -> None:
        """With `on_store_error: closed`, notice an outage even when no event is waiting."""
        if self.probe_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_probe < self.probe_interval_s or self.spool.pending > 0:
            return
        self._last_probe = now
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            self.db_ok = True
        except Exception as exc:  # any failure means the database cannot take events now
            self._failed(exc)

    async def _ship_pending(self) -> bool:
        """Ship batches until the spool is empty; False when the database refused one."""
        spool = self.spool
        while spool.pending > 0:
            pos = self._pos or spool.ack_position
            try:
                records, after = await asyncio.to_thread(spool.read, pos, self.batch_size)
            except OSError as exc:
                log.error("audit spool read failed", extra={"reason": str(exc)})
                return False
            if not records:
                await asyncio.to_thread(spool.ack, after, spool.head_seq)
                self._pos = after
                return True
            try:
                async with asyncio.timeout(_STATEMENT_TIMEOUT_S):
                    await store_records(self.engine, records)
            except Exception as exc:  # the database is down or refused: keep, retry later
                self._failed(exc)
                return False
            if not self.db_ok:
                log.info("audit database reachable again", extra={"pending": spool.pending})
            self.db_ok = True
            self.shipped += len(records)
            self._pos = after
            try:
                await asyncio.to_thread(spool.ack, after, records[-1]["e"]["seq"])
            except OSError as exc:  # only the bookkeeping failed: a restart re-sends, harmless
                log.error("audit spool ack failed", extra={"reason": str(exc)})
            if len(records) < self.batch_size and not self._urgent \
                    and self._stop_deadline is None:
                # Under steady load something is always pending: shipping each trickle at
                # once would pay a transaction per few events. Wait for the next tick.
                return True
        return True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        was_ok, self.db_ok = self.db_ok, False
        now = time.monotonic()
        if was_ok or now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.error("audit database unavailable; events stay in the spool",
                      extra={"reason": type(exc).__name__, "pending": self.spool.pending})
