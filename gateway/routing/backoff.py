"""How long to wait before trying a deployment again within one request.

Exponential with "equal jitter": the n-th retry of the same deployment waits between half and
all of `BASE_S * 2**(n-1)` (capped at `CAP_S`). A deployment not yet tried in this request is
tried at once. An upstream's `Retry-After` raises the wait; the router never waits past the
request's deadline (it moves on instead).
"""

from __future__ import annotations

import random

BASE_S = 0.2
CAP_S = 5.0


def backoff_s(previous_tries: int, rng: random.Random) -> float:
    """The wait before another try of a deployment already tried `previous_tries` times."""
    if previous_tries <= 0:
        return 0.0
    ceiling = min(CAP_S, BASE_S * 2 ** (previous_tries - 1))
    return ceiling / 2 + rng.random() * ceiling / 2
