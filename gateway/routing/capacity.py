"""Per-deployment `rpm` / `tpm` caps, counted in this process over a sliding minute.

Sixty one-second buckets per counter with a running total: O(1) amortised, no allocation.
Requests count when a try starts; tokens count when the answer's usage is known (so a burst of
long answers can overshoot `tpm` by what was in flight). With several replicas each one counts
its own traffic: the caps are per replica.
"""

from __future__ import annotations

import math

WINDOW_S = 60


class MinuteWindow:
    """A count over the last 60 whole seconds, with a running total (O(1) amortised)."""

    __slots__ = ("_counts", "_second", "_total")

    def __init__(self) -> None:
        self._counts = [0] * WINDOW_S  # bucket i holds the second s with s % 60 == i
        self._second: int | None = None  # the newest second the buckets describe
        self._total = 0

    def _advance(self, second: int) -> None:
        if self._second is None:
            self._second = second
            return
        gap = second - self._second
        if gap <= 0:
            return
        if gap >= WINDOW_S:
            self._counts = [0] * WINDOW_S
            self._total = 0
        else:
            counts = self._counts
            for s in range(self._second + 1, second + 1):
                i = s % WINDOW_S
                self._total -= counts[i]
                counts[i] = 0
        self._second = second

    def add(self, amount: int, now: float) -> None:
        second = math.floor(now)
        self._advance(second)
        assert self._second is not None
        if second > self._second - WINDOW_S:  # an old timestamp outside the window: ignore
            self._counts[second % WINDOW_S] += amount
            self._total += amount

    def total(self, now: float) -> int:
        self._advance(math.floor(now))
        return self._total

    def free_in(self, now: float, limit: int) -> float:
        """Seconds until the total drops below `limit` (0 when it already is)."""
        total = self.total(now)
        if total < limit or self._second is None:
            return 0.0
        for s in range(self._second - WINDOW_S + 1, self._second + 1):
            total -= self._counts[s % WINDOW_S]
            if total < limit:
                return max(s + WINDOW_S - now, 0.0)
        return float(WINDOW_S)


class Capacity:
    """The caps of one deployment; `None` where the config sets none (then nothing is counted)."""

    __slots__ = ("requests", "rpm", "tokens", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.requests = MinuteWindow() if rpm else None
        self.tokens = MinuteWindow() if tpm else None

    @property
    def capped(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def allows(self, now: float) -> bool:
        if self.requests is not None and self.rpm is not None \
                and self.requests.total(now) >= self.rpm:
            return False
        return not (self.tokens is not None and self.tpm is not None
                    and self.tokens.total(now) >= self.tpm)

    def free_in(self, now: float) -> float:
        wait = 0.0
        if self.requests is not None and self.rpm is not None:
            wait = max(wait, self.requests.free_in(now, self.rpm))
        if self.tokens is not None and self.tpm is not None:
            wait = max(wait, self.tokens.free_in(now, self.tpm))
        return wait

    def note_request(self, now: float) -> None:
        if self.requests is not None:
            self.requests.add(1, now)

    def note_tokens(self, tokens: int, now: float) -> None:
        if self.tokens is not None and tokens > 0:
            self.tokens.add(tokens, now)
