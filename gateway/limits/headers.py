"""The `x-ratelimit-*` headers: from a limiter decision, and for answers that made none.

A request refused before the limits stage (a bad body, an unknown model, a forbidden one)
still gets the headers when its key has a limit in any scope (DESIGN's exact rule). They
describe the room the last decision for that key on this replica reported, moved on by the
time since (a window that has passed is whole again), or, for a key this replica has not
decided for yet, its own and its team's limits untouched.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import replace

from gateway.context import Principal
from gateway.limits.model import WINDOW_S, Decision, Room

_REMEMBERED_KEYS = 50_000


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `12.5s`, `1m0s`."""
    seconds = max(0.0, seconds)
    if seconds >= 60:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}m{rest:.0f}s"
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _room_headers(kind: str, room: Room) -> dict[str, str]:
    return {f"x-ratelimit-limit-{kind}": str(room.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, room.remaining)),
            f"x-ratelimit-reset-{kind}": duration(room.reset_s)}


def ratelimit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    if decision.requests is not None:
        headers.update(_room_headers("requests", decision.requests))
    if decision.tokens is not None:
        headers.update(_room_headers("tokens", decision.tokens))
    return headers


def _aged(room: Room | None, elapsed: float) -> Room | None:
    if room is None:
        return None
    if elapsed >= room.reset_s:
        return Room(room.limit, room.limit, 0.0)
    return replace(room, reset_s=room.reset_s - elapsed)


def _static(limit: int | None) -> Room | None:
    return None if limit is None else Room(limit, limit, 0.0)


def _tightest(*limits: int | None) -> int | None:
    present = [x for x in limits if x is not None]
    return min(present) if present else None


class RoomMemory:
    """The last rooms reported per key on this replica (bounded, oldest forgotten first)."""

    def __init__(self, max_keys: int = _REMEMBERED_KEYS) -> None:
        self.max_keys = max_keys
        self._rooms: OrderedDict[str, tuple[Room | None, Room | None, float]] = OrderedDict()

    def remember(self, key_id: str, decision: Decision) -> None:
        if decision.requests is None and decision.tokens is None:
            return
        self._rooms[key_id] = (decision.requests, decision.tokens, time.monotonic())
        self._rooms.move_to_end(key_id)
        if len(self._rooms) > self.max_keys:
            self._rooms.popitem(last=False)

    def headers(self, principal: Principal) -> dict[str, str]:
        """Headers for an answer the limits stage did not decide (empty: no limit)."""
        known = self._rooms.get(principal.key_id)
        if known is not None:
            requests, tokens, at = known
            elapsed = time.monotonic() - at
            if elapsed < WINDOW_S * 10:
                return ratelimit_headers(Decision(True, requests=_aged(requests, elapsed),
                                                  tokens=_aged(tokens, elapsed)))
        team = principal.team_record
        rpm = _tightest(principal.rpm, team.rpm if team else None)
        tpm = _tightest(principal.tpm, team.tpm if team else None)
        return ratelimit_headers(Decision(True, requests=_static(rpm), tokens=_static(tpm)))
