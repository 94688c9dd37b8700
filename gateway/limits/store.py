"""The store interface, and the in-process store (one replica, or a replica's local share).

Reserve checks every scope and budget first and applies to all of them only when all have
room, so a reservation is all or nothing. Everything runs without an `await` between the
check and the update: on one event loop that is atomic.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from gateway.limits.model import (
    ALLOW,
    WINDOW_S,
    BudgetLimit,
    Decision,
    Reservation,
    Room,
    budget_share,
    share,
    tighter,
)

LEASE_TTL_S = 60.0  # an open lease nobody renews is dropped after this long


class LimitStore(Protocol):
    async def reserve(self, r: Reservation) -> Decision: ...

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None: ...


class _Scope:
    __slots__ = ("active", "entries", "log", "tokens")

    def __init__(self) -> None:
        self.log: deque[list] = deque()  # [admitted_at, tokens, lease_id], oldest first
        self.entries: dict[str, list] = {}
        self.tokens = 0
        self.active: dict[str, float] = {}  # lease -> expiry

    def prune(self, cutoff: float) -> None:
        log = self.log
        while log and log[0][0] <= cutoff:
            entry = log.popleft()
            self.tokens -= entry[1]
            self.entries.pop(entry[2], None)


class _Budget:
    __slots__ = ("expires", "held", "reserved", "spent")

    def __init__(self, spent: int, expires: float | None) -> None:
        self.spent = spent
        self.reserved = 0
        self.held: dict[str, tuple[int, float]] = {}  # lease -> (cost, expiry)
        self.expires = expires

    def drop_expired(self, now: float) -> None:
        for lease, (cost, expiry) in list(self.held.items()):
            if expiry <= now:
                del self.held[lease]
                self.reserved -= cost


def _drop_expired(active: dict[str, float], now: float) -> None:
    for lease, expiry in list(active.items()):
        if expiry <= now:
            del active[lease]


def _tpm_retry(scope: _Scope, tokens: int, tpm: int, now: float) -> float:
    """When enough of the window's tokens will have left it for `tokens` more to fit."""
    excess = scope.tokens + tokens - tpm
    for admitted_at, used, _ in scope.log:
        excess -= used
        if excess <= 0:
            return admitted_at + WINDOW_S - now
    return WINDOW_S


class MemoryStore:
    """Counters in this process. `divisor` > 1 makes it enforce a per-replica share."""

    def __init__(self, *, divisor: int = 1, lease_ttl_s: float = LEASE_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.divisor = divisor
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self._scopes: dict[str, _Scope] = {}
        self._budgets: dict[str, _Budget] = {}

    # --- the interface -------------------------------------------------------------------
    async def reserve(self, r: Reservation) -> Decision:
        return self.reserve_now(r)

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        self.settle_now(r, tokens, cost_nanos)

    # --- synchronous core ----------------------------------------------------------------
    def _budget(self, b: BudgetLimit, now: float) -> _Budget:
        found = self._budgets.get(b.counter)
        if found is None:
            found = self._budgets[b.counter] = _Budget(
                b.baseline_nanos, now + b.ttl_s if b.ttl_s else None)
        return found

    def reserve_now(self, r: Reservation) -> Decision:
        now = self.clock()
        cutoff = now - WINDOW_S
        d = self.divisor
        requests: Room | None = None
        tokens: Room | None = None
        scopes = []
        for s in r.scopes:
            scope = self._scopes.get(s.id)
            if scope is None:
                scope = self._scopes[s.id] = _Scope()
            scopes.append(scope)
            if s.rpm is not None or s.tpm is not None:
                scope.prune(cutoff)
                log = scope.log
                reset = (log[0][0] if log else now) + WINDOW_S - now
                rpm = share(s.rpm, d)
                if rpm is not None:
                    count = len(log)
                    if count + 1 > rpm:
                        retry = log[count - rpm][0] + WINDOW_S - now
                        return Decision(False, "rpm", s.kind, retry,
                                        requests=Room(rpm, 0, reset), tokens=tokens)
                    requests = tighter(requests, Room(rpm, rpm - count - 1, reset))
                tpm = share(s.tpm, d)
                if tpm is not None:
                    room = Room(tpm, max(0, tpm - scope.tokens - r.tokens), reset)
                    if r.tokens > tpm:
                        return Decision(False, "tpm", s.kind, WINDOW_S, too_large=True,
                                        requests=requests, tokens=Room(tpm, room.remaining,
                                                                       reset))
                    if scope.tokens + r.tokens > tpm:
                        return Decision(False, "tpm", s.kind,
                                        _tpm_retry(scope, r.tokens, tpm, now),
                                        requests=requests, tokens=room)
                    tokens = tighter(tokens, room)
            maxc = share(s.max_concurrent, d)
            if maxc is not None and len(scope.active) >= maxc:
                _drop_expired(scope.active, now)
                if len(scope.active) >= maxc:
                    return Decision(False, "concurrency", s.kind, 1.0, requests=requests,
                                    tokens=tokens)
        budgets = []
        for b in r.budgets:
            budget = self._budget(b, now)
            budgets.append(budget)
            limit = budget_share(b, d)
            if budget.spent + budget.reserved + r.cost_nanos > limit:
                budget.drop_expired(now)
                if budget.spent + budget.reserved + r.cost_nanos > limit:
                    return Decision(False, "budget", b.kind, None, requests=requests,
                                    tokens=tokens)
        lease = r.lease_id
        expiry = now + self.lease_ttl_s
        for s, scope in zip(r.scopes, scopes, strict=True):
            if s.rpm is not None or s.tpm is not None:
                entry = [now, r.tokens, lease]
                scope.log.append(entry)
                scope.entries[lease] = entry
                scope.tokens += r.tokens
            if s.max_concurrent is not None:
                scope.active[lease] = expiry
        for budget in budgets:
            budget.reserved += r.cost_nanos
            budget.held[lease] = (r.cost_nanos, expiry)
        r.store = self
        if requests is None and tokens is None:
            return ALLOW
        return Decision(True, requests=requests, tokens=tokens)

    def settle_now(self, r: Reservation, tokens: int, cost_nanos: int) -> None:
        if r.settled:
            return
        r.settled = True
        lease = r.lease_id
        for s in r.scopes:
            scope = self._scopes.get(s.id)
            if scope is None:
                continue
            entry = scope.entries.get(lease)
            if entry is not None:
                scope.tokens += tokens - entry[1]
                entry[1] = tokens
            scope.active.pop(lease, None)
        now = self.clock()
        for b in r.budgets:
            budget = self._budget(b, now)
            held = budget.held.pop(lease, None)
            if held is not None:
                budget.reserved -= held[0]
            budget.spent += cost_nanos

    def add_spend(self, b: BudgetLimit, cost_nanos: int) -> None:
        """Spend recorded elsewhere (another store, a replay) that this store must count."""
        self._budget(b, self.clock()).spent += cost_nanos

    def renew(self, reservations: list[Reservation]) -> None:
        expiry = self.clock() + self.lease_ttl_s
        for r in reservations:
            for s in r.scopes:
                scope = self._scopes.get(s.id)
                if scope is not None and r.lease_id in scope.active:
                    scope.active[r.lease_id] = expiry
            for b in r.budgets:
                budget = self._budgets.get(b.counter)
                held = budget.held.get(r.lease_id) if budget else None
                if budget is not None and held is not None:
                    budget.held[r.lease_id] = (held[0], expiry)

    def sweep(self) -> None:
        """Forget idle scopes and windows that ended (called now and then, off the hot path)."""
        now = self.clock()
        cutoff = now - WINDOW_S
        for key, scope in list(self._scopes.items()):
            scope.prune(cutoff)
            _drop_expired(scope.active, now)
            if not scope.log and not scope.active:
                del self._scopes[key]
        for key, budget in list(self._budgets.items()):
            budget.drop_expired(now)
            if budget.expires is not None and budget.expires <= now and not budget.held:
                del self._budgets[key]

    def spent(self, counter: str) -> int | None:
        budget = self._budgets.get(counter)
        return None if budget is None else budget.spent
