"""Audit rows: sanitized to fit their columns, encoded canonically, and hash-chained.

An event dict from the pipeline becomes a row whose every value fits its column (strings cut
to the column length, no NUL characters, integers clamped, times naive UTC), so a batch insert
can never be refused for its data. The canonical encoding is a JSON array of the row's values
in column order (times with microseconds, JSON sorted by key), plus the SHA-256 of the request
and response bodies; `hash` is SHA-256 over it, or HMAC-SHA-256 when an audit HMAC key is set.
The same encoding is computed again from what the database returns when verifying.

Columns added after the chain began (`LATE_COLUMNS`: the admin-change columns, `session_id`
and the cache columns) are hashed only when set: a trailing JSON object of the set ones, after
the body digests. A row without them encodes exactly as before they existed, so chains written
by older versions still verify, and a row with them has them covered (changing or clearing one
breaks its hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String

from gateway.storage.tables import audit_events
from gateway.timeutil import utcnow

GENESIS = "0" * 64
# Columns added after the chain began: in the encoding only when set (see the docstring).
LATE_COLUMNS: tuple[str, ...] = ("action", "actor_key_id", "target_type", "target_id",
                                 "target_name", "before", "after", "session_id", "cache_status",
                                 "cache_source_request_id", "saved_cost_nanos")
# Columns covered by `hash` (everything but the hash itself), in table order.
HASHED_COLUMNS: tuple[str, ...] = tuple(str(c.name) for c in audit_events.columns
                                        if c.name != "hash" and c.name not in LATE_COLUMNS)
CHAIN_COLUMNS = ("replica", "seq", "prev_hash", "hash")
# Row columns filled from the event (the chain columns are set by the committer).
EVENT_COLUMNS: tuple[str, ...] = tuple(str(c.name) for c in audit_events.columns
                                       if c.name not in CHAIN_COLUMNS)
DATETIME_COLUMNS = frozenset(str(c.name) for c in audit_events.columns
                             if isinstance(c.type, DateTime))
BODY_FIELDS = ("request_body", "response_body")

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_MAX_JSON_DEPTH = 8


def clean_text(value: str, limit: int | None = None) -> str:
    """A string any database accepts: no NUL, valid UTF-8, at most `limit` characters."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        value = value.encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def clean_json(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, int) and not isinstance(value, bool):
            return max(_INT64[0], min(_INT64[1], value))
        return clean_text(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_JSON_DEPTH:
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, depth + 1) for v in value]
    return clean_text(str(value))


def _naive_utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return None


def _sanitizer(column: Any) -> Callable[[Any], Any]:
    kind = column.type
    if isinstance(kind, Boolean):
        return lambda v: None if v is None else bool(v)
    if isinstance(kind, (BigInteger, Integer)):
        lo, hi = _INT64 if isinstance(kind, BigInteger) else _INT32

        def integer(v: Any) -> int | None:
            if v is None or isinstance(v, bool):
                return None if v is None else int(v)
            try:
                number = int(v)
            except (TypeError, ValueError, OverflowError):
                return None
            return max(lo, min(hi, number))

        return integer
    if isinstance(kind, Float):
        def real(v: Any) -> float | None:
            try:
                number = float(v)
            except (TypeError, ValueError, OverflowError):
                return None
            return number if math.isfinite(number) else None

        return lambda v: None if v is None else real(v)
    if isinstance(kind, DateTime):
        return _naive_utc
    if isinstance(kind, JSON):
        return lambda v: None if v is None else clean_json(v)
    if isinstance(kind, String):
        limit = kind.length

        def text(v: Any) -> str | None:
            if v is None:
                return None
            if not isinstance(v, str):
                v = (orjson.dumps(clean_json(v)).decode() if isinstance(v, (dict, list))
                     else str(v))
            return clean_text(v, limit)

        return text
    return lambda v: v


_SANITIZERS = {str(c.name): _sanitizer(c) for c in audit_events.columns}
# What a NOT NULL column holds when the event left it out.
_REQUIRED: dict[str, Any] = {"attempts": 0, "fallback_used": False, "stream": False,
                             "cancelled": False, "partial": False, "cost_estimated": False,
                             "status_code": 0, "endpoint": "", "request_id": ""}


def _kind(column: Any) -> tuple[int, Any, Any]:
    kind = column.type
    if isinstance(kind, String):
        return 0, kind.length or 1 << 62, None
    if isinstance(kind, Boolean):
        return 1, None, None
    if isinstance(kind, Integer):
        return 2, *(_INT64 if isinstance(kind, BigInteger) else _INT32)
    if isinstance(kind, Float):
        return 3, None, None
    if isinstance(kind, DateTime):
        return 4, None, None
    return 5, None, None  # JSON: always sanitized


_PLAN = tuple((name, *_kind(audit_events.c[name]), _SANITIZERS[name], _REQUIRED.get(name))
              for name in EVENT_COLUMNS)


def row_from_event(event: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """The `audit_events` values of one event (without the chain columns), each fitting.

    Values that already fit are kept as they are; `strict` runs every value through its
    sanitizer (also checking strings for lone surrogates)."""
    row: dict[str, Any] = {}
    get = event.get
    for name, kind, a, b, sanitize, required in _PLAN:
        value = get(name)
        if value is None:
            pass
        elif strict:
            value = sanitize(value)
        else:
            t = type(value)
            if kind == 0:
                fits = t is str and len(value) <= a and "\x00" not in value
            elif kind == 1:
                fits = t is bool
            elif kind == 2:
                fits = t is int and a <= value <= b
            elif kind == 3:
                fits = t is float and math.isfinite(value)
            elif kind == 4:
                fits = t is datetime and value.tzinfo is None
            else:
                fits = False
            if not fits:
                value = sanitize(value)
        if value is None:
            value = utcnow() if name == "received_at" else required
        row[name] = value
    return row


def to_wire(row: dict[str, Any]) -> dict[str, Any]:
    """The row for the spool: times as `YYYY-MM-DD HH:MM:SS.ffffff` text (what SQLite stores
    for a DateTime column, so the SQLite path inserts them as they are)."""
    wire = dict(row)
    for name in DATETIME_COLUMNS:
        value = wire.get(name)
        if isinstance(value, datetime):
            wire[name] = value.isoformat(sep=" ", timespec="microseconds")
    return wire


def from_wire(wire: dict[str, Any]) -> dict[str, Any]:
    """A spooled row with its times as datetimes again."""
    row = dict(wire)
    for name in DATETIME_COLUMNS:
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    return row


_TIME_AT = tuple(i for i, name in enumerate(HASHED_COLUMNS) if name in DATETIME_COLUMNS)
_PII_AT = HASHED_COLUMNS.index("pii")


def _time_text(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffff` (isoformat gives exactly that, at a third of strftime's
    cost, for naive times from year 1000 on)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if value.year < 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return value.isoformat(timespec="microseconds")


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical(row: dict[str, Any], request_body: str | None, response_body: str | None
              ) -> bytes:
    """The bytes `hash` is computed over: a JSON array of every hashed column in table order
    (times as `YYYY-MM-DDTHH:MM:SS.ffffff`, objects with sorted keys), then the SHA-256 hex
    of the stored request and response bodies (or null), then an object of the late columns
    that are set, if any."""
    values: list[Any] = [row.get(name) for name in HASHED_COLUMNS]
    for i in _TIME_AT:
        if isinstance(values[i], datetime):
            values[i] = _time_text(values[i])
    if isinstance(values[_PII_AT], str):  # a driver that returned the JSON text unparsed
        with contextlib.suppress(orjson.JSONDecodeError):
            values[_PII_AT] = orjson.loads(values[_PII_AT])
    values.append(_digest(request_body))
    values.append(_digest(response_body))
    late = {name: row[name] for name in LATE_COLUMNS if row.get(name) is not None}
    if late:
        values.append(late)
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


class Hasher:
    """SHA-256, or HMAC-SHA-256 with the audit key (then rows cannot be re-forged without it)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or None

    def hash(self, data: bytes) -> str:
        if self.key is not None:
            return hmac.new(self.key, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    def row_hash(self, row: dict[str, Any], request_body: str | None,
                 response_body: str | None) -> str:
        return self.hash(canonical(row, request_body, response_body))

    def mac(self, *parts: Any) -> str | None:
        """An HMAC over small records (purge checkpoints); None without a key."""
        if self.key is None:
            return None
        return hmac.new(self.key, orjson.dumps(list(parts), default=str),
                        hashlib.sha256).hexdigest()


def hasher_from_settings(settings: Any) -> Hasher:
    """The hasher for `GATEWAY_AUDIT_HMAC_KEY` (plain SHA-256 when it is not set)."""
    key = settings.audit_hmac_key
    return Hasher(key.get_secret_value().encode() if key is not None else None)
