"""`SharedStore` around a Redis outage, directly, on a redis-server of this module's own that
is stopped and restarted (empty) by its PID: what a replica counted while Redis was away is
carried into Redis before Redis decides again (windows at their age, open requests as Redis
leases, budget holds), exactly once, and the replica's own Redis admissions count against
its share during the outage. The end-to-end version is tests/limits/test_limits_redis_recovery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.limits.model import BudgetLimit, ScopeLimit
from gateway.limits.redis_store import RedisStore, connect
from gateway.limits.shared import SharedStore
from tests.limits.test_limits_store import res, uniq
from tests.support.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    srv = await asyncio.to_thread(RedisServer().start)
    yield srv
    await asyncio.to_thread(srv.stop)


def shared(srv: RedisServer, replicas: int = 2) -> SharedStore:
    return SharedStore(RedisStore(connect(srv.url, timeout_s=0.5)), mode="local_share",
                       replicas=replicas)


async def outage(store: SharedStore, srv: RedisServer) -> None:
    await asyncio.to_thread(srv.stop)
    await store.reserve(res([ScopeLimit(uniq("k:"), "key", rpm=1)]))  # finds Redis gone
    assert not store.up


async def back(store: SharedStore, srv: RedisServer) -> None:
    await asyncio.to_thread(srv.start)  # the same port, empty
    await store.maintain([])
    assert store.up


async def test_own_redis_admissions_count_against_the_share_during_an_outage(
        server: RedisServer) -> None:
    store = shared(server)
    try:
        scope = ScopeLimit(uniq("k:"), "key", rpm=10)  # share: 5 on each of 2 replicas
        assert all([(await store.reserve(res([scope]))).allowed for _ in range(3)])
        await outage(store, server)
        local = [(await store.reserve(res([scope]))).allowed for _ in range(5)]
        assert local == [True, True, False, False, False]
    finally:
        await store.close()


async def test_windows_open_requests_and_holds_are_carried_once(server: RedisServer) -> None:
    store = shared(server, replicas=1)
    other = RedisStore(connect(server.url, timeout_s=5))  # another replica, on Redis only
    try:
        rpm = ScopeLimit(uniq("k:"), "key", rpm=4, max_concurrent=2)
        budget = BudgetLimit(uniq("k:b:"), "key", limit_nanos=1_000)
        await outage(store, server)
        opened = [res([rpm], [budget], cost=300) for _ in range(2)]
        for r in opened:
            assert (await store.reserve(r)).allowed and r.store is store.local
        done = res([ScopeLimit(rpm.id, "key", rpm=4)])
        assert (await store.reserve(done)).allowed
        await store.settle(done, 7, 0)

        await back(store, server)
        assert all(r.store is store.redis for r in opened)  # settled through Redis now
        await store.maintain([])  # an idle second carry adds nothing twice
        await store.redis.carry(store.local.window_state(), [r.lease_id for r in opened])
        d = await other.reserve(res([ScopeLimit(rpm.id, "key", rpm=4)]))
        assert d.allowed and d.requests.remaining == 0  # 3 carried + this one
        assert not (await other.reserve(res([ScopeLimit(rpm.id, "key", max_concurrent=2)]))
                    ).allowed  # both open requests hold their slots in Redis
        assert not (await other.reserve(res([], [budget], cost=401))).allowed  # 600 held

        await store.settle(opened[0], 5, 100)
        assert (await other.reserve(res([ScopeLimit(rpm.id, "key", max_concurrent=2)]))
                ).allowed
        assert await other.spent(budget.counter) == 100
        assert (await other.reserve(res([], [budget], cost=600))).allowed  # 100 + 300 + 600
    finally:
        await store.close()
        await other.close()


async def test_a_request_settled_while_the_carry_is_on_its_way_is_let_go_in_redis(
        server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store = shared(server, replicas=1)
    other = RedisStore(connect(server.url, timeout_s=5))
    try:
        scope = ScopeLimit(uniq("k:"), "key", max_concurrent=1)
        budget = BudgetLimit(uniq("k:b:"), "key", limit_nanos=1_000)
        await outage(store, server)
        r = res([scope], [budget], cost=500)
        assert (await store.reserve(r)).allowed
        carry = store.redis.carry
        calls = 0

        async def settle_midway(*args: Any) -> None:
            nonlocal calls
            calls += 1
            await carry(*args)
            if calls == 1:
                await store.settle(r, 3, 200)  # the client finished meanwhile

        monkeypatch.setattr(store.redis, "carry", settle_midway)
        await back(store, server)
        assert (await other.reserve(res([scope]))).allowed  # its slot was let go
        assert await other.spent(budget.counter) == 200  # its spend counted once
    finally:
        await store.close()
        await other.close()


async def test_for_a_few_seconds_after_redis_is_back_the_share_applies_too(
        server: RedisServer) -> None:
    store = shared(server)
    try:
        scope = ScopeLimit(uniq("k:"), "key", rpm=10)
        await outage(store, server)
        await back(store, server)
        assert store.status()["redis"] == "recovering"
        got = [(await store.reserve(res([scope]))).allowed for _ in range(7)]
        assert got == [True] * 5 + [False] * 2  # Redis has room for 10; the share is 5
        store.recovering_until = 0
        assert store.status()["redis"] == "ok"
        assert [(await store.reserve(res([scope]))).allowed for _ in range(6)] == \
            [True] * 5 + [False]  # Redis alone: 10 in all
    finally:
        await store.close()
