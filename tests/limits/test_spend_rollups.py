"""Spend rollups on real SQLite and PostgreSQL: summed in memory, written in one multi-row
INSERT per flush (never an UPDATE of a counter row), compacted safely by several replicas at
once, and read back per group, per calendar window (the budget baselines) and per day."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from gateway.limits.spend import SpendLog
from gateway.storage.engine import create_engine
from gateway.storage.spend import SpendRows
from gateway.storage.tables_spend import spend_rollups
from tests.support.gateway_proc import GATEWAY_BIN
from tests.support.postgres import fresh_database

NOW = datetime(2026, 11, 26, 15, 30)


def _migrate(url: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE_URL"] = url
    out = subprocess.run([str(GATEWAY_BIN), "migrate"], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/spend.db"
        _migrate(url, tmp_path)
        yield url
        return
    for url in fresh_database():
        _migrate(url, tmp_path)
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[object]:
    eng = create_engine(db_url, pool_size=4)
    yield eng
    await eng.dispose()


async def _rows(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(spend_rollups))).scalar()


async def test_a_flush_is_one_insert_and_no_update(engine) -> None:
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute",
                 lambda conn, cur, stmt, *a: statements.append(stmt.split()[0].upper()))
    log = SpendLog(engine)
    for i in range(500):
        log.record(NOW, f"key_{i % 3}", "red", "m", None, 10, 20, 1_000)
    await log.flush()
    writes = [s for s in statements if s in ("INSERT", "UPDATE", "DELETE")]
    assert writes == ["INSERT"]
    assert await _rows(engine) == 3  # one row per group, 500 requests summed
    data = await log.query("key")
    assert sum(r["requests"] for r in data) == 500
    assert {r["group"]: r["cost_nanos"] for r in data} == {
        "key_0": 167_000, "key_1": 167_000, "key_2": 166_000}


async def test_compaction_merges_closed_hours_even_when_replicas_race(engine) -> None:
    replicas = [SpendLog(engine) for _ in range(3)]
    old = NOW - timedelta(hours=5)
    for _ in range(4):
        for log in replicas:
            log.record(old, "key_a", "red", "m", "tpl", 1, 2, 300)
            log.record(NOW, "key_a", "red", "m", "tpl", 1, 2, 300)  # the open hour stays
            await log.flush()
    assert await _rows(engine) == 24
    merged = await asyncio.gather(*(log.compact(NOW) for log in replicas),
                                  return_exceptions=True)
    assert any(m == 1 for m in merged), merged
    assert await _rows(engine) == 13  # 12 rows of the open hour + 1 merged row
    totals = await replicas[0].query("template")
    assert totals == [{"group": "tpl", "requests": 24, "input_tokens": 24, "output_tokens": 48,
                       "cost_nanos": 7_200}]


async def test_budget_baselines_per_window_and_spend_per_day(engine) -> None:
    log = SpendLog(engine)
    log.record(NOW, "key_a", "red", "m", None, 1, 1, 100)  # today
    log.record(NOW.replace(day=2), "key_a", "red", "m", None, 1, 1, 20)  # this month
    log.record(NOW.replace(month=10), "key_a", None, "m", None, 1, 1, 3)  # before
    log.record(NOW, "key_b", "blue", "m", None, 1, 1, 7)
    await log.flush()
    spent = await log.period_spend(NOW)
    assert spent["k:key_a:d2026-11-26"] == 100
    assert spent["k:key_a:m2026-11"] == 120
    assert spent["k:key_a:t"] == 123
    assert spent["t:red:m2026-11"] == 120 and spent["t:blue:d2026-11-26"] == 7
    assert "t:red:d2026-11-02" not in spent
    days = await log.query("day", team="red")
    assert [(d["group"], d["cost_nanos"]) for d in days] == [("2026-11-02", 20),
                                                             ("2026-11-26", 100)]
    since = await log.query("key", since=NOW.replace(minute=59), until=NOW + timedelta(hours=1))
    assert {d["group"]: d["cost_nanos"] for d in since} == {"key_a": 100, "key_b": 7}
    assert await log.query("model", since=NOW + timedelta(hours=1)) == []


async def test_a_failed_flush_keeps_the_sums(engine, tmp_path: Path) -> None:
    broken = create_engine(f"sqlite:///{tmp_path}/missing-dir/none.db", pool_size=1)
    log = SpendLog(broken)
    log.record(NOW, "k", None, "m", None, 1, 1, 5)
    with pytest.raises(Exception):  # noqa: B017 - no table there
        await log.flush()
    await broken.dispose()
    log.rows = SpendRows(engine)
    log.record(NOW, "k", None, "m", None, 1, 1, 5)
    await log.flush()
    assert (await log.query("key"))[0]["cost_nanos"] == 10
