"""The Redis store behind `limits.on_redis_error`: what a replica does while Redis is away.

- `local_share`: an in-process store enforces each limit / `limits.replicas` (and each
  budget's remaining / `replicas`), so the replicas together stay within the limit.
- `closed`: every limited request gets 429 until Redis answers again.
- `open`: requests pass unlimited.

A failed call marks Redis down; requests then go straight to the fallback (no per-request
timeout) while `maintain()` (called every second by the limiter) pings it. Every request
decided by the fallback is counted in the `gateway_limiter_store_errors` metric.

No window around an outage admits more than the limit (+ the share rounding), because:
- while Redis is up, the local store also counts what Redis granted this replica (its rpm
  and tpm windows and open requests, not budgets): when Redis goes away, the replica's
  share is what is left of it after its own admissions of the last minute;
- when Redis answers again, before the replica uses it, it carries its local windows into
  Redis (each entry at its age, so it leaves Redis's window when it would have left the
  local one; idempotent: an entry Redis has is not added twice, and a Redis that restarted
  empty gets this replica's minute back), hands its open local requests to Redis, and
  replays the settlements and spend it owes; it carries once more right after switching,
  for what it admitted while the first carry was on its way;
- for `RECOVERY_S` after that, a replica admits only what both Redis and its local share
  allow: another replica that has not noticed Redis yet (each pings once a second) is still
  deciding alone within its share, so the two cannot add up to more than the limit.
With traffic spread unevenly over the replicas before an outage, a replica that admitted
little may use the rest of its share at once: the bound is then the limit plus the unused
shares.
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
RECOVERY_S = 5.0  # a few maintain ticks: every replica has seen Redis back by then
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
        self._local_open: dict[str, Reservation] = {}  # granted by `local`, not settled
        self._settled_in_carry: dict[str, int] | None = None  # lease -> tokens
        self.recovering_until = 0.0  # monotonic: until then the local share applies too
        self._counts_locally = mode == "local_share"  # the other modes need no local count

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
            cautious = self._counts_locally and self.recovering_until > time.monotonic()
            if cautious:
                mine = self.local.count(r, check=True)
                if not mine.allowed:
                    return mine
            try:
                decision = await self.redis.reserve(r)
            except STORE_ERRORS as exc:
                self._mark_down(exc)
                if cautious:
                    self.local.uncount(r)
            else:
                if not decision.allowed:
                    if cautious:
                        self.local.uncount(r)
                elif self._counts_locally and not cautious:
                    self.local.count(r, check=False)
                return decision
        self._count_fallback()
        if self.mode == "closed":
            return Decision(False, "unavailable", None, 1.0)
        if self.mode == "open":
            r.store = OPEN
            return Decision(True)
        decision = self.local.reserve_now(r)
        if decision.allowed:
            self._local_open[r.lease_id] = r
        return decision

    def _owe_spend(self, r: Reservation, cost_nanos: int) -> None:
        if cost_nanos <= 0:
            return
        for b in r.budgets:
            held = self._pending_spend.get(b.counter)
            self._pending_spend[b.counter] = (b, cost_nanos + (held[1] if held else 0))

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        if r.store is self.redis:
            self.local.release(r, tokens)
            if self.down_since is None:
                try:
                    await self.redis.settle(r, tokens, cost_nanos)
                    return
                except STORE_ERRORS as exc:
                    self._mark_down(exc)
            self._owe_settle(r, tokens, cost_nanos)
            return
        if r.store is self.local:
            self._local_open.pop(r.lease_id, None)
            if self._settled_in_carry is not None:
                self._settled_in_carry[r.lease_id] = tokens
            self.local.settle_now(r, tokens, cost_nanos)
        r.settled = True
        self._owe_spend(r, cost_nanos)

    def _owe_settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        if len(self._pending_settles) >= _MAX_PENDING:
            log.error("too many settlements waiting for redis; dropping the oldest")
            self._pending_settles.popleft()
        self._pending_settles.append((r, tokens, cost_nanos))

    async def maintain(self, active: list[Reservation]) -> None:
        """Ping while down; carry over and replay what is owed before using Redis again;
        renew open leases (the local ones, and the local count of Redis ones)."""
        self.local.renew(active)
        try:
            if self.down_since is not None:
                await self.redis.ping()
                await self._carry_over()
                await self._replay()
                log.info("redis reachable again",
                         extra={"down_s": round(time.monotonic() - self.down_since, 1)})
                self.down_since = None
                if self._counts_locally:
                    self.recovering_until = time.monotonic() + RECOVERY_S
                await self._carry_over()  # what was admitted while the first was on its way
            await self._replay()
            mine = [r for r in active if r.store is self.redis]
            for i in range(0, len(mine), 500):
                await self.redis.renew(mine[i:i + 500])
        except STORE_ERRORS as exc:
            self._mark_down(exc)
        self.local.sweep()

    async def _carry_over(self) -> None:
        """Put what this replica counted into Redis; its open local requests become Redis
        leases (settled there from now on)."""
        carry = self.local.window_state()
        opened = list(self._local_open.values())
        self._settled_in_carry = {}
        try:
            await self.redis.carry(carry, [r.lease_id for r in opened])
            for r in opened:
                if self._local_open.pop(r.lease_id, None) is not None:
                    r.store = self.redis
                    self.local.unhold(r)
                else:  # settled here while the carry was on its way: Redis lets it go
                    tokens = self._settled_in_carry.get(r.lease_id, r.tokens)
                    self._owe_settle(r, tokens, 0)  # its spend is owed separately
        finally:
            self._settled_in_carry = None

    async def _replay(self) -> None:
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

    def status(self) -> dict[str, Any]:
        state = "unreachable" if not self.up else \
            "recovering" if self.recovering_until > time.monotonic() else "ok"
        return {"store": "redis", "redis": state, "on_redis_error": self.mode,
                "fallback_requests": self.fallback_requests,
                **({"reason": self.last_error} if not self.up and self.last_error else {})}

    async def close(self) -> None:
        await self.redis.close()
