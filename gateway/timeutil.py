"""UTC times: stored naive in SQL, shown as ISO 8601 with `Z` (`2026-11-26T10:00:00.123Z`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (the form stored in SQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def parse_iso(text: str) -> datetime:
    """Parse `2026-11-26T10:00:00Z` (or with an offset) into naive UTC; ValueError if not.

    The one rule for every time a client sends (audit and spend `since`/`until`, key
    `expires_at`): any instant from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z is
    accepted as it is, nothing is clamped; one outside that range (an offset that moves
    0001-01-01 or 9999-12-31 past the end) is a ValueError, which callers answer with a 400
    naming the parameter. Code that does arithmetic on these times must not overflow at the
    ends of the range (see `epoch_ms`)."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError("expected an ISO 8601 time such as 2026-11-26T10:00:00Z")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("the time needs a zone: end it with Z")
    try:
        return dt.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("the time is outside 0001-01-01T00:00:00Z to "
                         "9999-12-31T23:59:59.999999Z") from None


_EPOCH = datetime(1970, 1, 1)


def epoch_ms(dt: datetime) -> int:
    """Whole milliseconds since 1970 of a naive UTC time (negative before), for integer
    arithmetic that cannot overflow the way `datetime ± timedelta` does at the range ends."""
    return (dt - _EPOCH) // timedelta(milliseconds=1)
