#!/usr/bin/env python3
"""CPU per audit event shipped into SQLite: the shipper's insert (`store_records`), alone.

A fresh SQLite database is migrated to the current schema, `--prefill` events are inserted
(the cost of an index insert grows with the table where the index takes inserts at random
places), then `--batches` batches of `--batch` events are shipped and timed with the process's
CPU clock (all threads: aiosqlite runs the statements in its own). Events look like the bench's
chat requests: ~1 KB of request body, a short answer, no end user, template or error.
Request ids are time-ordered (what the gateway makes now) or random (`uuid4`, what it made
before, and what a client may send); `--schema old` turns the partial indexes of migration 0021
back into full ones, to compare.

    .venv/bin/python bench/ship_cost.py                     # both id kinds, both schemas
    .venv/bin/python bench/ship_cost.py --prefill 300000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.api.middleware import new_request_id
from gateway.audit.shipper import _EVENT_NAMES, store_records
from gateway.ids import time_ordered_id
from gateway.migrate import upgrade
from gateway.storage.engine import create_engine

PARTIAL = ("user", "template_name", "error_code", "action", "actor_key_id", "target_type",
           "target_id", "session_id")


def event(ids: str, seq: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_EVENT_NAMES)
    row.update(
        id=time_ordered_id(), request_id=uuid.uuid4().hex if ids == "random" else new_request_id(),
        received_at="2026-12-08T01:00:00.000000", first_byte_at="2026-12-08T01:00:00.000100",
        completed_at="2026-12-08T01:00:00.000200", key_id="key_0123456789abcdef",
        key_name="bench", endpoint="/v1/chat/completions", model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini", deployment="gpt-4o-mini#0", attempts=1,
        fallback_used=False, input_tokens=200, output_tokens=20, total_tokens=220,
        cost_nanos=12345, latency_ms=0.8, status_code=200, stream=False, cancelled=False,
        partial=False, usage_source="provider", cost_estimated=False, replica="bench-abc123",
        seq=seq, prev_hash="a" * 64, hash="b" * 64)
    return {"e": row,
            "rb": '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
                  + "x" * 800 + '"}]}',
            "sb": '{"choices":[{"message":{"content":"' + "y" * 100 + '"}}]}'}


def full_indexes(path: Path) -> None:
    con = sqlite3.connect(path)
    for column in PARTIAL:
        name = f"ix_audit_events_{column}_id"
        con.execute(f"DROP INDEX IF EXISTS {name}")
        con.execute(f'CREATE INDEX {name} ON audit_events ("{column}", id)')
    con.commit()
    con.close()


async def run(tmp: Path, schema: str, ids: str, opts: argparse.Namespace) -> float:
    path = tmp / f"{schema}-{ids}.db"
    url = f"sqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    if schema == "old":
        full_indexes(path)
    engine = create_engine(url, pool_size=1)
    seq = 0
    try:
        for _ in range(opts.prefill // 1000):
            await store_records(engine, [event(ids, seq + k) for k in range(1000)])
            seq += 1000
        cpu: list[float] = []
        for _ in range(opts.batches):
            records = [event(ids, seq + k) for k in range(opts.batch)]
            seq += opts.batch
            start = time.process_time()
            await store_records(engine, records)
            cpu.append((time.process_time() - start) / opts.batch)
    finally:
        await engine.dispose()
    return statistics.median(cpu) * 1e6


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefill", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch", type=int, default=75, help="events per transaction (75)")
    opts = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gw-ship-") as tmp:
        print(f"| schema | request ids | CPU per event, {opts.prefill:,} rows before |")
        print("|---|---|---:|")
        for schema in ("old", "new"):
            for ids in ("random", "ordered"):
                us = await run(Path(tmp), schema, ids, opts)
                print(f"| {schema} | {ids} | {us:.0f} us |", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    raise SystemExit(asyncio.run(main()))
