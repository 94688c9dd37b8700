"""The limiter's stores, directly: the in-process store, and the Redis store on a real
redis-server (this module starts its own on a free port; skipped with a reason without one).

Both must give the same answers: exact sliding-window rpm/tpm, all-or-nothing reservations
across scopes, settle exactly once, leases that expire, budgets never overrun by concurrency.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.limits.model import BudgetLimit, Reservation, ScopeLimit, budget_share, share
from gateway.limits.redis_store import RedisStore, connect
from gateway.limits.store import MemoryStore
from tests.support.redis_server import REDIS_SERVER, RedisServer

N = 0


def lease() -> str:
    global N
    N += 1
    return f"lease-{os.getpid()}-{time.monotonic_ns()}-{N}"


def res(scopes: list[ScopeLimit], budgets: list[BudgetLimit] | None = None, tokens: int = 10,
        cost: int = 0) -> Reservation:
    return Reservation(lease(), tuple(scopes), tuple(budgets or ()), tokens, cost)


def uniq(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns()}"


# --- a real redis-server for this module --------------------------------------------------
@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if REDIS_SERVER is None:
        url = os.environ.get("GATEWAY_TEST_REDIS_URL")
        if not url:
            pytest.skip("no redis-server binary and GATEWAY_TEST_REDIS_URL is not set "
                        "(apt-get install redis-server, or run `make test`)")
        yield url
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    rs = RedisStore(connect(url, timeout_s=5))
    yield rs
    await rs.close()


# --- both stores ----------------------------------------------------------------------------
async def test_rpm_burst_admits_exactly_the_limit(store) -> None:
    scope = ScopeLimit(uniq("k:"), "key", rpm=7)
    decisions = await asyncio.gather(*(store.reserve(res([scope])) for _ in range(21)))
    assert sum(d.allowed for d in decisions) == 7
    refused = [d for d in decisions if not d.allowed]
    assert {d.reason for d in refused} == {"rpm"}
    assert all(d.scope == "key" and 0 < d.retry_after_s <= 60 for d in refused)
    assert all(d.requests.limit == 7 and d.requests.remaining == 0 for d in refused)
    remaining = sorted(d.requests.remaining for d in decisions if d.allowed)
    assert remaining == list(range(7))


async def test_all_or_nothing_across_scopes(store) -> None:
    key = ScopeLimit(uniq("k:"), "key", rpm=100)
    team = ScopeLimit(uniq("t:"), "team", rpm=1)
    assert (await store.reserve(res([key, team]))).allowed
    refused = await store.reserve(res([key, team]))
    assert not refused.allowed and refused.scope == "team"
    # the refused request took nothing from the key: 99 more fit in the key alone
    alone = await asyncio.gather(*(store.reserve(res([key])) for _ in range(100)))
    assert sum(d.allowed for d in alone) == 99


async def test_tpm_counts_reserved_then_settled_tokens(store) -> None:
    scope = ScopeLimit(uniq("k:"), "key", tpm=100)
    first = res([scope], tokens=60)
    assert (await store.reserve(first)).allowed
    second = await store.reserve(res([scope], tokens=60))
    assert not second.allowed and second.reason == "tpm" and not second.too_large
    assert second.tokens.limit == 100
    await store.settle(first, 10, 0)  # it used 10 of the 60 it reserved
    third = await store.reserve(res([scope], tokens=60))
    assert third.allowed and third.tokens.remaining == 30
    too_big = await store.reserve(res([scope], tokens=101))
    assert not too_big.allowed and too_big.too_large


async def test_concurrency_is_released_by_settle_exactly_once(store) -> None:
    scope = ScopeLimit(uniq("k:"), "key", max_concurrent=2)
    budget = BudgetLimit(uniq("k:b:"), "key", limit_nanos=10**9)
    a, b = res([scope], [budget], cost=100), res([scope], [budget], cost=100)
    assert (await store.reserve(a)).allowed and (await store.reserve(b)).allowed
    c = res([scope], [budget], cost=100)
    d = await store.reserve(c)
    assert not d.allowed and d.reason == "concurrency"
    await store.settle(a, 5, 40)
    await store.settle(a, 5, 40)  # a retried settle counts once
    assert (await store.reserve(c)).allowed
    spent = store.spent(budget.counter)
    spent = await spent if asyncio.iscoroutine(spent) else spent
    assert spent == 40


async def test_budget_never_overrun_by_a_concurrent_burst(store) -> None:
    budget = BudgetLimit(uniq("k:x:"), "key", limit_nanos=1_000, baseline_nanos=100)
    burst = [res([], [budget], cost=70) for _ in range(40)]
    decisions = await asyncio.gather(*(store.reserve(r) for r in burst))
    admitted = [r for r, d in zip(burst, decisions, strict=True) if d.allowed]
    assert len(admitted) == 12  # 100 already spent + 12 x 70 = 940 <= 1000 < 1010
    assert {d.reason for d in decisions if not d.allowed} == {"budget"}
    await asyncio.gather(*(store.settle(r, 1, 70) for r in admitted))
    spent = store.spent(budget.counter)
    spent = await spent if asyncio.iscoroutine(spent) else spent
    assert spent == 940
    assert not (await store.reserve(res([], [budget], cost=61))).allowed
    assert (await store.reserve(res([], [budget], cost=60))).allowed


async def test_settle_refunds_unused_reservation(store) -> None:
    budget = BudgetLimit(uniq("t:y:"), "team", limit_nanos=1_000)
    first = res([], [budget], cost=900)
    assert (await store.reserve(first)).allowed
    assert not (await store.reserve(res([], [budget], cost=200))).allowed
    await store.settle(first, 0, 300)
    assert (await store.reserve(res([], [budget], cost=700))).allowed


# --- in-process only ------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_window_slides_and_leases_expire() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, lease_ttl_s=60)
    scope = ScopeLimit("k:slide", "key", rpm=2, max_concurrent=1)
    first = res([scope])
    assert store.reserve_now(first).allowed
    clock.now += 30
    d = store.reserve_now(res([scope]))
    assert not d.allowed and d.reason == "concurrency"
    store.settle_now(first, 1, 0)
    second = res([scope])
    assert store.reserve_now(second).allowed
    store.settle_now(second, 1, 0)
    d = store.reserve_now(res([scope]))
    assert not d.allowed and d.reason == "rpm" and d.retry_after_s == pytest.approx(30)
    clock.now += 30.001  # the first request left the window
    crashed = res([scope])
    assert store.reserve_now(crashed).allowed  # never settled: its lease expires
    clock.now += 61
    assert store.reserve_now(res([scope])).allowed
    store.sweep()


def test_local_share_divides_limits_and_remaining_budget() -> None:
    assert share(10, 3) == 3 and share(2, 3) == 1 and share(None, 3) is None
    b = BudgetLimit("k:z:t", "key", limit_nanos=1_000, baseline_nanos=400)
    assert budget_share(b, 3) == 600
    store = MemoryStore(divisor=3)
    scope = ScopeLimit("k:share", "key", rpm=9)
    assert sum(store.reserve_now(res([scope])).allowed for _ in range(9)) == 3


# --- Redis only -----------------------------------------------------------------------------
async def test_redis_lease_of_a_crashed_replica_expires(redis_url: str) -> None:
    crashed = RedisStore(connect(redis_url, timeout_s=5), lease_ttl_s=0.3)
    alive = RedisStore(connect(redis_url, timeout_s=5), lease_ttl_s=0.3)
    try:
        scope = ScopeLimit(uniq("k:"), "key", max_concurrent=1)
        budget = BudgetLimit(uniq("k:b:"), "key", limit_nanos=100)
        held = res([scope], [budget], cost=100)
        assert (await crashed.reserve(held)).allowed  # its replica dies: no settle, no renew
        renewed = res([ScopeLimit(uniq("k:"), "key", max_concurrent=1)])
        assert (await alive.reserve(renewed)).allowed
        assert not (await alive.reserve(res([scope], [budget], cost=1))).allowed
        for _ in range(3):
            await asyncio.sleep(0.2)
            assert await alive.renew([renewed]) == 1
        assert (await alive.reserve(res([scope], [budget], cost=100))).allowed
        assert not (await alive.reserve(res(list(renewed.scopes)))).allowed  # still held
    finally:
        await crashed.close()
        await alive.close()


async def test_redis_reserve_and_settle_are_idempotent(redis_url: str) -> None:
    rs = RedisStore(connect(redis_url, timeout_s=5))
    try:
        scope = ScopeLimit(uniq("k:"), "key", rpm=5, tpm=1000)
        budget = BudgetLimit(uniq("k:c:"), "key", limit_nanos=10_000, baseline_nanos=1_000)
        r = res([scope], [budget], tokens=100, cost=500)
        assert (await rs.reserve(r)).allowed
        again = await rs.reserve(r)  # a retried reserve (same lease) holds nothing more
        assert again.allowed
        await rs.settle(r, 40, 200)
        r.settled = False
        await rs.settle(r, 40, 200)
        assert await rs.spent(budget.counter) == 1_200  # seeded from the baseline, once
        d = await rs.reserve(res([scope], tokens=1))
        assert d.requests.remaining == 3 and d.tokens.remaining == 1000 - 40 - 1
        await rs.add_spend([(budget, 300)])
        assert await rs.spent(budget.counter) == 1_500
    finally:
        await rs.close()


async def test_redis_shared_by_several_clients_is_exact(redis_url: str) -> None:
    """Three stores (as three replicas) on one Redis: the burst still admits exactly N."""
    stores = [RedisStore(connect(redis_url, timeout_s=5)) for _ in range(3)]
    try:
        scope = ScopeLimit(uniq("k:"), "key", rpm=10)
        team = ScopeLimit(uniq("t:"), "team", tpm=10_000)
        decisions = await asyncio.gather(*(stores[i % 3].reserve(res([scope, team], tokens=5))
                                           for i in range(30)))
        assert sum(d.allowed for d in decisions) == 10
    finally:
        for s in stores:
            await s.close()
