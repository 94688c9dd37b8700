"""UTC times: stored naive in SQL, shown as ISO 8601 with `Z` (`2026-11-26T10:00:00.123Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


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
    """Parse `2026-11-26T10:00:00Z` (or with an offset) into naive UTC; ValueError if not."""
    if not isinstance(text, str) or "T" not in text:
        raise ValueError("expected an ISO 8601 time such as 2026-11-26T10:00:00Z")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("the time needs a zone: end it with Z")
    return dt.astimezone(UTC).replace(tzinfo=None)
