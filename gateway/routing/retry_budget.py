"""A bound on retries, so that a failing provider is not hammered.

A retry (any try after the first within a model) needs a token; at most a fifth of the
requests in flight may hold one, and never fewer than `FLOOR` are allowed, so a quiet gateway
still retries. A request refused a token stops retrying that model and moves on to its
fallbacks (a different provider, not a retry of the failing one) or fails.
"""

from __future__ import annotations

RATIO = 0.2
FLOOR = 3


class RetryBudget:
    __slots__ = ("denied", "floor", "ratio", "requests", "retries")

    def __init__(self, ratio: float = RATIO, floor: int = FLOOR) -> None:
        self.ratio = ratio
        self.floor = floor
        self.requests = 0  # requests being routed right now
        self.retries = 0  # of which this many are on a retry
        self.denied = 0  # retries refused so far (for tests and logs)

    def request_started(self) -> None:
        self.requests += 1

    def request_ended(self) -> None:
        self.requests -= 1

    def try_acquire(self) -> bool:
        if self.retries < max(self.floor, self.ratio * self.requests):
            self.retries += 1
            return True
        self.denied += 1
        return False

    def release(self) -> None:
        self.retries -= 1
