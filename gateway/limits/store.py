"""The store interface, and the in-process store (one replica, or a replica's local share).

Reserve checks every scope and budget first and applies to all of them only when all have
room, so a reservation is all or nothing. Everything runs without an `await` between the
check and the update: on one event loop that is atomic.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.limits.model import (
    ALLOW,
    WINDOW_S,
    BudgetLimit,
    Decision,
    Reservation,
    Room,
    ScopeLimit,
    budget_share,
    share,
    tighter,
)

LEASE_TTL_S = 60.0  # an open lease nobody renews is dropped after this long


class LimitStore(Protocol):
    async def reserve(self, r: Reservation) -> Decision: ...

    async def settle(self, r: Reservation, tokens: int, cost_nanos: int) -> None: ...


@dataclass(slots=True)
class Carry:
    """A store's counts, as `MemoryStore.window_state` hands them to another store."""

    windows: dict[str, list[tuple[str, float, int]]] = field(default_factory=dict)
    active: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    holds: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.windows or self.active or self.holds)


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
        decision = self._admit(r, budgets=True)
        if decision.allowed:
            r.store = self
        return decision

    def count(self, r: Reservation, *, check: bool) -> Decision:
        """Count, in this store's windows and concurrency (not its budgets), a reservation
        another store decides: once granted there (`check=False`), or before asking it
        (`check=True`: refused here, counting nothing, when over this store's share)."""
        if check:
            return self._admit(r, budgets=False)
        now = self.clock()
        expiry = now + self.lease_ttl_s
        for s in r.scopes:
            scope = self._scopes.get(s.id)
            if scope is None:
                scope = self._scopes[s.id] = _Scope()
            self._record(scope, s, r, now, expiry)
        return ALLOW

    def _admit(self, r: Reservation, *, budgets: bool) -> Decision:
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
        held = []
        for b in r.budgets if budgets else ():
            budget = self._budget(b, now)
            held.append(budget)
            limit = budget_share(b, d)
            if budget.spent + budget.reserved + r.cost_nanos > limit:
                budget.drop_expired(now)
                if budget.spent + budget.reserved + r.cost_nanos > limit:
                    return Decision(False, "budget", b.kind, None, requests=requests,
                                    tokens=tokens)
        expiry = now + self.lease_ttl_s
        for s, scope in zip(r.scopes, scopes, strict=True):
            self._record(scope, s, r, now, expiry)
        for budget in held:
            budget.reserved += r.cost_nanos
            budget.held[r.lease_id] = (r.cost_nanos, expiry)
        if requests is None and tokens is None:
            return ALLOW
        return Decision(True, requests=requests, tokens=tokens)

    @staticmethod
    def _record(scope: _Scope, s: ScopeLimit, r: Reservation, now: float, expiry: float
                ) -> None:
        if s.rpm is not None or s.tpm is not None:
            entry = [now, r.tokens, r.lease_id]
            scope.log.append(entry)
            scope.entries[r.lease_id] = entry
            scope.tokens += r.tokens
        if s.max_concurrent is not None:
            scope.active[r.lease_id] = expiry

    def uncount(self, r: Reservation) -> None:
        """Undo `count`: the other store refused the reservation, or could not be asked."""
        for s in r.scopes:
            scope = self._scopes.get(s.id)
            if scope is None:
                continue
            entry = scope.entries.pop(r.lease_id, None)
            if entry is not None:
                scope.tokens -= entry[1]
                if scope.log and scope.log[-1] is entry:
                    scope.log.pop()  # nearly always: the newest entry
                else:
                    with contextlib.suppress(ValueError):
                        scope.log.remove(entry)
            scope.active.pop(r.lease_id, None)

    def release(self, r: Reservation, tokens: int) -> None:
        """A counted reservation ended elsewhere: its tokens as used, its concurrency slot
        free (its budgets are not this store's)."""
        for s in r.scopes:
            scope = self._scopes.get(s.id)
            if scope is None:
                continue
            entry = scope.entries.get(r.lease_id)
            if entry is not None:
                scope.tokens += tokens - entry[1]
                entry[1] = tokens
            scope.active.pop(r.lease_id, None)

    def unhold(self, r: Reservation) -> None:
        """Drop what `r` holds of this store's budgets (another store holds it now)."""
        for b in r.budgets:
            budget = self._budgets.get(b.counter)
            held = budget.held.pop(r.lease_id, None) if budget is not None else None
            if budget is not None and held is not None:
                budget.reserved -= held[0]

    def window_state(self) -> Carry:
        """What this store counts now, with ages rather than clock times (for another store
        with another clock): per scope its window entries (lease, age s, tokens) and open
        leases (lease, lease time left s), per budget its holds (lease, cost, time left s)."""
        now = self.clock()
        cutoff = now - WINDOW_S
        carry = Carry()
        for key, scope in self._scopes.items():
            scope.prune(cutoff)
            if scope.log:
                carry.windows[key] = [(e[2], now - e[0], e[1]) for e in scope.log]
            _drop_expired(scope.active, now)
            if scope.active:
                carry.active[key] = [(lease, exp - now) for lease, exp in scope.active.items()]
        for counter, budget in self._budgets.items():
            budget.drop_expired(now)
            if budget.held:
                carry.holds[counter] = [(lease, cost, exp - now)
                                        for lease, (cost, exp) in budget.held.items()]
        return carry

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
