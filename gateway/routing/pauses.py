"""Retry-After windows: a deployment that asked for time gets no request before it is up.

An upstream's `Retry-After` (on a 429, a 503 or any failure; a 429 without one waits
`DEFAULT_RATE_LIMIT_S`) pauses every slot that reaches the same upstream (`upstream_id`:
provider, base URL, model and key, which is what a provider's limit applies to), in every
public model that uses it. With `GATEWAY_REDIS_URL` set, the router shares them with the other
replicas (`shared_pauses.py`): each replica still reads only its own slots on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.routing.deployments import DeploymentSlot

# A 429 that does not say how long: about what providers ask for (OpenAI's per-second
# limits, Anthropic's `retry-after: 1`), and short enough to cost little when wrong.
DEFAULT_RATE_LIMIT_S = 1.0


class Pauses:
    """Every slot by the upstream it reaches, to pause them together (in this process)."""

    def __init__(self, slots: Iterable[DeploymentSlot]) -> None:
        self._by_id: dict[str, list[DeploymentSlot]] = {}
        for slot in slots:
            self._by_id.setdefault(slot.pause_id, []).append(slot)

    def apply(self, pause_id: str, seconds: float, rate_limit: bool, now: float) -> None:
        """The upstream `pause_id` asked for `seconds` from `now` (`rate_limit`: on a 429); a
        longer pause already under way stays as it is."""
        until = now + seconds
        for slot in self._by_id.get(pause_id, ()):
            if until > slot.retry_after_until:
                slot.retry_after_until = until
                slot.paused_by_rate_limit = rate_limit


def paused_for(slot: DeploymentSlot, now: float) -> float:
    """Seconds until `slot` may be sent a request again, whatever keeps it out (0: now)."""
    wait = max(slot.retry_after_until - now, slot.breaker.retry_in(now), 0.0)
    if slot.capacity.capped:
        wait = max(wait, slot.capacity.free_in(now))
    return wait
