"""The limiter's plain types: scopes with their limits, budgets, a reservation, a decision.

A request is checked in every scope at once: the key, its team, the end user (the request's
`user`) and key x model. rpm and tpm count over a sliding 60-second window (a request counts
from the moment it was admitted, its tokens as reserved until it settles, then as used);
`max_concurrent` counts leases that are still open. Budgets count nano-dollars per calendar
window (UTC day, UTC month, or all time): spent plus what open leases reserved.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

WINDOW_S = 60.0
Period = Literal["day", "month", "total"]
SCOPE_KINDS = ("key", "team", "user", "key_model")
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class ScopeLimit:
    """One scope a request needs room in; `None` means no such limit in this scope."""

    id: str  # "k:<key id>", "t:<team>", "u:<key id>:<user>", "m:<key id>:<model>"
    kind: str  # one of SCOPE_KINDS
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    @property
    def windowed(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """A spend counter for one scope and calendar window, and its limit."""

    counter: str  # "k:<key id>:m2026-11", "t:<team>:d2026-11-26", "k:<key id>:t"
    kind: str  # key | team
    limit_nanos: int
    baseline_nanos: int = 0  # spend SQL knew of for this window (seeds a missing counter)
    ttl_s: int = 0  # how long the counter outlives its window; 0 = kept for good


@dataclass(slots=True, eq=False)
class Reservation:
    """What one request holds from reserve until it settles (exactly once)."""

    lease_id: str
    scopes: tuple[ScopeLimit, ...]
    budgets: tuple[BudgetLimit, ...]
    tokens: int
    cost_nanos: int
    store: Any = None  # the store that holds it, set when granted
    settled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Room:
    """What the `x-ratelimit-*` headers report for the scope with the least room left."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str | None = None  # rpm | tpm | concurrency | budget | unavailable
    scope: str | None = None  # the kind of the scope that refused
    retry_after_s: float | None = None
    too_large: bool = False  # the request alone is over the limit: waiting will not help
    requests: Room | None = None
    tokens: Room | None = None


ALLOW = Decision(True)


def tighter(a: Room | None, b: Room | None) -> Room | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.remaining <= b.remaining else b


def share(limit: int | None, divisor: int) -> int | None:
    """A replica's share of a limit (local fallback): at least 1 when there is a limit."""
    if limit is None or divisor <= 1:
        return limit
    return max(1, limit // divisor)


def budget_share(b: BudgetLimit, divisor: int) -> int:
    """A replica's share of what is left of a budget: baseline + (limit - baseline) / n."""
    if divisor <= 1 or b.limit_nanos <= b.baseline_nanos:
        return b.limit_nanos
    return b.baseline_nanos + (b.limit_nanos - b.baseline_nanos) // divisor


def window_name(period: str, now: datetime) -> str:
    """The calendar window a budget counts in at `now` (naive UTC)."""
    if period == "day":
        return f"d{now:%Y-%m-%d}"
    if period == "month":
        return f"m{now:%Y-%m}"
    return "t"


def window_start(period: str, now: datetime) -> datetime | None:
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def window_ttl_s(period: str, now: datetime) -> int:
    """Seconds a window's counter is worth keeping: to the window's end plus a day."""
    if period == "total":
        return 0
    start = window_start(period, now)
    assert start is not None
    days = 1 if period == "day" else calendar.monthrange(now.year, now.month)[1]
    length = days * _DAY_S
    left = length - (now - start).total_seconds()
    return int(left) + _DAY_S
