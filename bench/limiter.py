"""Limiter cost: what reserve + settle add to a request, in-process and with Redis.

In-process (the targets: under 100 us per request):
  - store: `MemoryStore` reserve + settle of a typical reservation (key scope with rpm, tpm
    and max_concurrent, team scope with rpm, one key budget);
  - stage: the whole limits stage as a request sees it: `Limits.before` (scopes, budgets,
    the tiktoken count of a short chat prompt, the reservation, the x-ratelimit headers)
    plus its finisher (cost of the usage, settle, spend rollup sum).
Redis (target: one round trip per reserve and one per settle): the network round trips per
call, counted on the client's connections, and the latency of each script. Starts its own
redis-server on a free port unless `--redis-url` is given (skipped without one).

    .venv/bin/python bench/limiter.py [--n 20000] [--redis-url redis://127.0.0.1:6379/0]

It asserts nothing and prints a small table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import load_config
from gateway.context import Principal, TeamRecord
from gateway.core.request import Usage
from gateway.limits.headers import RoomMemory
from gateway.limits.limiter import Limiter
from gateway.limits.model import BudgetLimit, Reservation, ScopeLimit
from gateway.limits.redis_store import RedisStore, connect
from gateway.limits.spend import SpendLog
from gateway.limits.store import MemoryStore
from gateway.offline_data import price_map_path, use_offline_tiktoken
from gateway.pipeline.stages.limits import Limits
from gateway.pricing import PriceBook
from gateway.providers.base import Target
from tests.support.contexts import make_ctx

BIG = 10**9
SCOPES = (ScopeLimit("k:bench", "key", rpm=BIG, tpm=BIG, max_concurrent=BIG),
          ScopeLimit("t:bench", "team", rpm=BIG))
BUDGETS = (BudgetLimit("k:bench:m2026-11", "key", limit_nanos=10**18, ttl_s=86_400),)
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]


def _us(samples: list[float]) -> tuple[float, float, float]:
    samples = sorted(samples)
    return (statistics.fmean(samples) * 1e6, samples[len(samples) // 2] * 1e6,
            samples[int(len(samples) * 0.99)] * 1e6)


def bench_store(n: int) -> tuple[float, float, float]:
    store = MemoryStore()
    times = []
    for i in range(n):
        r = Reservation(f"l{i}", SCOPES, BUDGETS, 300, 5_000)
        t0 = time.perf_counter()
        store.reserve_now(r)
        store.settle_now(r, 120, 2_000)
        times.append(time.perf_counter() - t0)
    return _us(times)


def _config(tmp: Path) -> Any:
    path = tmp / "gateway.yaml"
    path.write_text("models:\n  - name: gpt-4o-mini\n    deployments:\n"
                    "      - {model: openai/gpt-4o-mini, api_base: 'http://127.0.0.1:9/v1'}\n")
    return load_config(path, environ={})


async def bench_stage(n: int, tmp: Path) -> tuple[float, float, float]:
    from sqlalchemy.ext.asyncio import create_async_engine

    use_offline_tiktoken()
    config = _config(tmp)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp}/b.db")
    limiter = Limiter(MemoryStore(), SpendLog(engine), PriceBook.build(config, price_map_path()))
    stage = Limits(limiter, RoomMemory())
    team = TeamRecord(id="t", name="bench", models=None, rpm=BIG, tpm=None, max_concurrent=None,
                      budget_nanos=None, budget_period="month", policy=None)
    principal = Principal(key_id="kbench", key_name="bench", role="app", team="bench",
                          rpm=BIG, tpm=BIG, max_concurrent=BIG, budget_nanos=10**15,
                          team_record=team)
    target = Target("gpt-4o-mini", "openai/gpt-4o-mini", "openai", "openai/gpt-4o-mini",
                    "gpt-4o-mini", None, None, 60, 5, 30, 30)
    usage = Usage(30, 60, 90)
    received = datetime(2026, 11, 26, 12)
    times = []
    for i in range(n):
        ctx = make_ctx("chat", {"model": "gpt-4o-mini", "messages": MESSAGES,
                                "max_tokens": 200}, principal=principal, model="gpt-4o-mini")
        ctx.event.fields.update(id=f"e{i}", received_at=received)
        t0 = time.perf_counter()
        reservation = await stage.reserve(ctx)
        ctx.target, ctx.usage, ctx.cost_nanos = target, usage, 0
        stage.settle(ctx, reservation)
        times.append(time.perf_counter() - t0)
    await engine.dispose()
    return _us(times)


class _Counter:
    round_trips = 0


def _count_round_trips() -> None:
    """Count what each connection sends: one packed command = one round trip."""
    from redis.asyncio.connection import Connection

    original = Connection.send_packed_command

    async def counted(self: Any, command: Any, check_health: bool = True) -> None:
        _Counter.round_trips += 1
        await original(self, command, check_health)

    Connection.send_packed_command = counted  # type: ignore[method-assign]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def bench_redis(url: str, n: int) -> dict[str, Any]:
    _count_round_trips()
    store = RedisStore(connect(url, timeout_s=5))
    await store.ping()
    await store.reserve(Reservation("warm", SCOPES, BUDGETS, 1, 1))  # loads the scripts
    await store.settle(Reservation("warm", SCOPES, BUDGETS, 1, 1), 1, 1)
    reserve_t, settle_t = [], []
    start = _Counter.round_trips
    for i in range(n):
        r = Reservation(f"r{i}-{time.monotonic_ns()}", SCOPES, BUDGETS, 300, 5_000)
        t0 = time.perf_counter()
        await store.reserve(r)
        t1 = time.perf_counter()
        await store.settle(r, 120, 2_000)
        settle_t.append(time.perf_counter() - t1)
        reserve_t.append(t1 - t0)
    trips = _Counter.round_trips - start
    await store.close()
    return {"round_trips_per_request": trips / n, "reserve": _us(reserve_t),
            "settle": _us(settle_t)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    gc.disable()  # measure the limiter, not the collector's pauses
    rows = []
    store = bench_store(args.n)
    rows.append(("in-process store: reserve + settle", store))
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench_stage(min(args.n, 2_000), Path(tmp)))  # warm tiktoken and caches
        stage = asyncio.run(bench_stage(args.n, Path(tmp)))
    rows.append(("limits stage: before + finisher (tiktoken count included)", stage))
    gc.enable()
    print(f"{'what':62} {'mean us':>9} {'p50 us':>9} {'p99 us':>9}")
    for name, (mean, p50, p99) in rows:
        print(f"{name:62} {mean:9.1f} {p50:9.1f} {p99:9.1f}")

    proc = None
    url = args.redis_url
    if url is None and shutil.which("redis-server"):
        port = _free_port()
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    if url is None:
        print("redis: skipped (no redis-server and no --redis-url)")
        return
    try:
        out = asyncio.run(bench_redis(url, min(args.n, 5_000)))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    print(f"redis: {out['round_trips_per_request']:.2f} round trips per request "
          "(reserve + settle; 1 each)")
    for name in ("reserve", "settle"):
        mean, p50, p99 = out[name]
        print(f"{'redis ' + name + ' (one EVALSHA)':62} {mean:9.1f} {p50:9.1f} {p99:9.1f}")


if __name__ == "__main__":
    main()
