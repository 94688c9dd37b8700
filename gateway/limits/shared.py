"""The Redis store behind `limits.on_redis_error`: what a replica does while Redis is away.

- `local_share`: an in-process store enforces each limit / `limits.replicas` (and each
  budget's remaining / `replicas`), so the replicas together stay within the limit.
- `closed`: every limited request gets 429 until Redis answers again.
- `open`: requests pass unlimited.

A failed call marks Redis down; requests then go straight to the fallback (no per-request
timeout) while `maintain()` (called every second by the limiter) pings it. Settlements that
could not reach Redis, and spend counted while it was away, are replayed when it is back
(both replays are idempotent). Every request decided by the fallback is counted in the
`gateway_limiter_store_errors` metric.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from redis.exceptions import RedisError

from gateway.limits.model import BudgetLimit, Decision, Reservation
from gateway.limits.redis_store import RedisStore
from gateway.limits.store import MemoryStore

log = logging.getLogger("gateway.limits")

STORE_ERRORS = (RedisError, OSError, TimeoutError)
_MAX_PENDING = 100_000


class _Open:
    """The `open` fallback's marker store: holds nothing."""


OPEN = _Open()


class SharedStore:
    def __init__(self, redis: RedisStore, *, mode: str, replicas: int,
                 metrics: Any = None, lease_ttl_s: float = 60.0) -> None:
        self.redis = redis
        self.mode = mode
        self.local = MemoryStore(divisor=replicas, lease_ttl_s=lease_ttl_s)
        self.metrics = metrics
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.fallback_requests = 0
        self._pending_settles: deque[tuple[Reservation, int, int]] = deque()
        self._pending_spend: dict[str, tuple[BudgetLimit, int]] = {}

    @property
    def up(self) -> bool:
        return self.down_since is None

    def _mark_down(self, exc: BaseException) -> None:
        self.last_error = type(exc).__name__
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("redis unreachable: limits fall back",
                      extra={"fallback": self.mode, "reason": self.last_error})

    def _count_fallback(self) -> None:
        self.fallback_requests += 1
        if self.metrics is not None:
            self.metrics.limiter_store_errors.inc()

    async def reserve(self, r: Reservation) -> Decision:
        if self.down_since is None:
            try:
                return await self.redis.reserve(r)
            except STORE_ERRORS as exc:
                self._mark_down(exc)
        self._count_fallback()
        if self.mode == "closed":
            return Decision(False, "unavailable", None, 1.0)
        if self.mode == "open":
            r.store = OPEN
            return Decision(True)
        return self.local.reserve_now(r)

    def _owe_spend(self, r: Reservation, cost_nanos: int) -> None:
        if cost_nanos <= 0:
            return
        for b in r.budgets:
            held = self._pending_spend.get(b.counter)
            self._pending_spend[b.counter] = (b, cost_nanos + (held[1] if held else 0))

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        if r.store is self.redis:
            if self.down_since is None:
                try:
                    await self.redis.settle(r, tokens, cost_nanos)
                    return
                except STORE_ERRORS as exc:
                    self._mark_down(exc)
            if len(self._pending_settles) >= _MAX_PENDING:
                log.error("too many settlements waiting for redis; dropping the oldest")
                self._pending_settles.popleft()
            self._pending_settles.append((r, tokens, cost_nanos))
            return
        if r.store is self.local:
            self.local.settle_now(r, tokens, cost_nanos)
        r.settled = True
        self._owe_spend(r, cost_nanos)

    async def maintain(self, active: list[Reservation]) -> None:
        """Ping while down; replay what is owed once up; renew open leases."""
        self.local.renew([r for r in active if r.store is self.local])
        try:
            if self.down_since is not None:
                await self.redis.ping()
                log.info("redis reachable again",
                         extra={"down_s": round(time.monotonic() - self.down_since, 1)})
                self.down_since = None
            while self._pending_settles:
                r, tokens, cost = self._pending_settles[0]
                await self.redis.settle(r, tokens, cost)
                self._pending_settles.popleft()
            if self._pending_spend:
                owed = list(self._pending_spend.values())
                await self.redis.add_spend(owed)
                for b, amount in owed:
                    left = self._pending_spend[b.counter][1] - amount
                    if left > 0:
                        self._pending_spend[b.counter] = (b, left)
                    else:
                        del self._pending_spend[b.counter]
            mine = [r for r in active if r.store is self.redis]
            for i in range(0, len(mine), 500):
                await self.redis.renew(mine[i:i + 500])
        except STORE_ERRORS as exc:
            self._mark_down(exc)
        self.local.sweep()

    def status(self) -> dict[str, Any]:
        return {"store": "redis", "redis": "ok" if self.up else "unreachable",
                "on_redis_error": self.mode, "fallback_requests": self.fallback_requests,
                **({"reason": self.last_error} if not self.up and self.last_error else {})}

    async def close(self) -> None:
        await self.redis.close()
