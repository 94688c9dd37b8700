"""A deployment's circuit breaker: closed -> open (cooling down) -> half-open (one probe).

`failures_to_cooldown` failures in a row open it for `cooldown_s`; each further trip while it
is still on probation doubles that, up to `MAX_COOLDOWN_S`. When the time is up, exactly one
request may probe it (half-open): success closes it, failure opens it again for twice as long.
Whether a trip is allowed at all (never more than half of a model's deployments out) is the
router's call, passed in as `may_trip`.
"""

from __future__ import annotations

MAX_COOLDOWN_S = 300.0
# A deployment that trips again within this time of recovering gets double the last cooldown.
PROBATION_S = MAX_COOLDOWN_S


class Breaker:
    __slots__ = (
        "consecutive_failures",
        "last_cooldown_s",
        "open_until",
        "probing",
        "recovered_at",
        "trips",
    )

    def __init__(self) -> None:
        self.consecutive_failures = 0
        self.open_until = 0.0  # 0: closed; else open until then, half-open after
        self.probing = False  # half-open and its one trial request is under way
        self.trips = 0  # trips in a row (reset after PROBATION_S without one)
        self.last_cooldown_s = 0.0
        self.recovered_at = float("-inf")

    @property
    def closed(self) -> bool:
        return self.open_until == 0.0

    def out(self) -> bool:
        """Out of normal rotation: cooling down, or half-open and not yet proven."""
        return self.open_until != 0.0

    def usable(self, now: float) -> bool:
        """May a request be sent now? Closed, or half-open with no probe under way."""
        return self.open_until == 0.0 or (now >= self.open_until and not self.probing)

    def retry_in(self, now: float) -> float:
        """Seconds until this deployment may be tried again (0 when usable)."""
        if self.usable(now):
            return 0.0
        return max(self.open_until - now, 0.0) if not self.probing else 1.0

    def begin(self, now: float) -> bool:
        """A request is about to use this deployment; True when it is the half-open probe."""
        if self.open_until != 0.0 and now >= self.open_until and not self.probing:
            self.probing = True
            return True
        return False

    def abandon(self, probe: bool) -> None:
        """The try ended without a verdict (the caller went away): free the probe slot."""
        if probe:
            self.probing = False

    def success(self, now: float, probe: bool) -> None:
        self.consecutive_failures = 0
        if probe or (self.open_until != 0.0 and now >= self.open_until):
            self.open_until = 0.0
            self.probing = False
            self.recovered_at = now

    def failure(self, now: float, probe: bool, *, threshold: int, base_cooldown_s: float,
                may_trip: bool) -> float | None:
        """Count a failed try; the cooldown length when this failure (re)opened the breaker."""
        self.consecutive_failures += 1
        if base_cooldown_s <= 0:
            return None
        if probe:
            self.probing = False
            return self._open(now, base_cooldown_s, again=True)
        if self.open_until != 0.0:
            return None  # already out (a try started before the trip)
        if self.consecutive_failures < threshold or not may_trip:
            return None
        return self._open(now, base_cooldown_s,
                          again=now - self.recovered_at < PROBATION_S and self.trips > 0)

    def _open(self, now: float, base_cooldown_s: float, *, again: bool) -> float:
        self.trips = self.trips + 1 if again else 1
        seconds = min(base_cooldown_s * 2 ** (self.trips - 1), max(MAX_COOLDOWN_S,
                                                                    base_cooldown_s))
        self.open_until = now + seconds
        self.last_cooldown_s = seconds
        self.consecutive_failures = 0
        return seconds
