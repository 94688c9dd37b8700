"""How long an upstream asked us to wait, from its `retry-after-ms` or `Retry-After` header.

`retry-after-ms` (OpenAI, Azure) wins over `Retry-After`, which may be seconds or an HTTP date.
A value that cannot be read counts as absent; a negative one as 0; none is kept above
`MAX_S`, so a broken or hostile upstream cannot keep a deployment out for longer (it is asked
again after that, and may say the same).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

MAX_S = 300.0


def retry_after_s(header: Callable[[str], str | None]) -> float | None:
    """Seconds to wait from an answer's headers (`header(name)`: its value or None)."""
    ms = _number(header("retry-after-ms"))
    if ms is not None:
        return _bounded(ms / 1000)
    value = header("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        seconds = _until_date(value)
    return None if seconds is None else _bounded(seconds)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _until_date(value: str) -> float | None:
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp() - time.time()


def _bounded(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_S)
