"""Reading the audit log: strict filters, signed cursors, newest first, streamed exports.

Filters are the query parameters of DESIGN.md (`key_id`, `team`, `user`, `model_requested`,
`model_served`, `deployment`, `template_name`, `status_code`, `error_code`, `request_id`,
`stream`, `pii_kind`, `since`, `until`; for admin changes `action`, `actor_key_id`,
`target_type`, `target_id`) plus `limit` and `cursor`; anything else, a value of the
wrong type, a backwards time range or `limit` over 1000 is a 400. The time range is half-open:
`since <= received_at < until`.

Events are ordered by `id`, which starts with the millisecond the request was received, so
"newest first" is a backwards range scan of the `(filter, id)` index of whichever filter is
given, and `since`/`until` also bound `id`. The cursor is the last id of a page, bound to the
filters and team scope it was made for and HMAC-signed: an edited or foreign cursor is a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.csv_cells import csv_cell, csv_writer
from gateway.errors import Forbidden, excerpt, invalid_value
from gateway.policies.model import PII_KINDS
from gateway.storage.tables import audit_bodies, audit_events, audit_pii
from gateway.timeutil import epoch_ms, iso, parse_iso

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
EXPORT_PAGE = 500  # rows per read: memory stays flat even with large bodies

TEXT_FILTERS = ("key_id", "team", "user", "model_requested", "model_served", "deployment",
                "template_name", "error_code", "request_id", "action", "actor_key_id",
                "target_type", "target_id", "session_id")
FILTERS = (*TEXT_FILTERS, "status_code", "stream", "pii_kind", "since", "until")
PAGING = ("limit", "cursor")

# The event as the API shows it (DESIGN.md "Audit event"), in this order.
EVENT_FIELDS = ("id", "request_id", "received_at", "first_byte_at", "completed_at", "key_id",
                "key_name", "team", "user", "endpoint", "model_requested", "model_served",
                "deployment", "attempts", "fallback_used", "template_name", "template_version",
                "input_tokens", "output_tokens", "total_tokens", "cost_usd", "latency_ms",
                "status_code", "error_code", "pii", "stream", "cancelled", "partial",
                "usage_source", "cost_estimated", "request_body", "response_body",
                "prev_hash", "hash", "action", "actor_key_id", "target_type", "target_id",
                "target_name", "before", "after", "session_id")
_TIMES = ("received_at", "first_byte_at", "completed_at")
_ROW_COLUMNS = (*(c for c in EVENT_FIELDS
                  if c not in ("cost_usd", "request_body", "response_body")), "cost_nanos")
_ID = re.compile(r"^[0-9a-z_]{1,32}$")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
_MAX_TEXT = 256
_MAX_ID_MS = 16**12 - 1  # the largest 12-hex-digit millisecond (year 10889)


@dataclass(frozen=True)
class AuditQuery:
    filters: dict[str, Any] = field(default_factory=dict)
    limit: int | None = DEFAULT_LIMIT
    after_id: str | None = None  # from the cursor: only ids below this one

    def fingerprint(self) -> str:
        """What a cursor is bound to: the filters (team scope included), not the page size."""
        canon = {k: (iso(v) if isinstance(v, datetime) else v)
                 for k, v in sorted(self.filters.items())}
        return hashlib.sha256(orjson.dumps(canon)).hexdigest()[:16]


class CursorSigner:
    def __init__(self, key: bytes) -> None:
        self.key = hashlib.sha256(b"gateway-audit-cursor\0" + key).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:16]

    def make(self, last_id: str, fingerprint: str) -> str:
        payload = orjson.dumps({"id": last_id, "f": fingerprint})
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, cursor: str, fingerprint: str) -> str:
        """The id in a cursor this gateway made for these filters; InvalidRequest otherwise."""
        problem = invalid_value("cursor", "invalid cursor: pass back next_cursor unchanged, "
                                "with the same filters")
        try:
            body, _, sig = cursor.partition(".")
            payload = _unb64(body)
            if not hmac.compare_digest(_unb64(sig), self._mac(payload)):
                raise problem
            data = orjson.loads(payload)
        except (ValueError, orjson.JSONDecodeError):
            raise problem from None
        if not isinstance(data, dict) or data.get("f") != fingerprint \
                or not isinstance(data.get("id"), str) or not _ID.match(data["id"]):
            raise problem
        return data["id"]


def signer_from_settings(settings: Any) -> CursorSigner:
    """Cursors must be valid on every replica: signed with a secret they all share (the audit
    HMAC key, else one derived from the database URL and the admin key)."""
    if settings.audit_hmac_key is not None:
        return CursorSigner(settings.audit_hmac_key.get_secret_value().encode())
    admin = settings.admin_key.get_secret_value() if settings.admin_key else ""
    return CursorSigner(hashlib.sha256(f"{settings.database_url}\0{admin}".encode()).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # only the canonical spelling: no edits hiding in unused bits
        raise ValueError("not canonical base64url")
    return raw


def parse_params(items: Iterable[tuple[str, str]], *, signer: CursorSigner,
                 scope_team: str | None = None, max_limit: int | None = MAX_LIMIT,
                 default_limit: int | None = DEFAULT_LIMIT) -> AuditQuery:
    """Query parameters -> AuditQuery; every problem is a 400 naming the parameter."""
    raw: dict[str, str] = {}
    for name, value in items:
        if name not in FILTERS and name not in PAGING:
            raise invalid_value(name, f"unknown parameter {excerpt(name)}; filters are: "
                                f"{', '.join(FILTERS)}, limit, cursor", "unknown_parameter")
        if name in raw:
            raise invalid_value(name, f"{excerpt(name)} given more than once")
        raw[name] = value
    filters: dict[str, Any] = {}
    for name in TEXT_FILTERS:
        if name in raw:
            value = raw[name]
            if not value or len(value) > _MAX_TEXT:
                raise invalid_value(name, f"{name} must be 1 to {_MAX_TEXT} characters")
            filters[name] = value
    if "status_code" in raw:
        try:
            status = int(raw["status_code"])
        except ValueError:
            raise invalid_value("status_code", "status_code must be an integer") from None
        if not 100 <= status <= 599:
            raise invalid_value("status_code", "status_code must be between 100 and 599")
        filters["status_code"] = status
    if "stream" in raw:
        flag = raw["stream"].lower()
        if flag not in _TRUE | _FALSE:
            raise invalid_value("stream", "stream must be true or false")
        filters["stream"] = flag in _TRUE
    if "pii_kind" in raw:
        if raw["pii_kind"] not in PII_KINDS:
            raise invalid_value("pii_kind", f"pii_kind must be one of: {', '.join(PII_KINDS)}")
        filters["pii_kind"] = raw["pii_kind"]
    for name in ("since", "until"):
        if name in raw:
            try:
                filters[name] = parse_iso(raw[name])
            except ValueError:
                raise invalid_value(name, f"{name} must be an ISO 8601 UTC time such as "
                                    "2026-11-26T10:00:00Z") from None
    if "since" in filters and "until" in filters and filters["since"] > filters["until"]:
        raise invalid_value("since", "the time range is backwards: since is after until")
    if scope_team is not None:
        if filters.get("team", scope_team) != scope_team:
            raise Forbidden("this key may only read its own team's events", param="team")
        filters["team"] = scope_team
    limit = default_limit
    if "limit" in raw:
        try:
            limit = int(raw["limit"])
        except ValueError:
            raise invalid_value("limit", "limit must be an integer") from None
        if limit < 1 or (max_limit is not None and limit > max_limit):
            raise invalid_value("limit", f"limit must be between 1 and {max_limit}" if max_limit
                                else "limit must be at least 1")
    query = AuditQuery(filters=filters, limit=limit)
    if "cursor" in raw:
        after = signer.read(raw["cursor"], query.fingerprint())
        query = AuditQuery(filters=filters, limit=limit, after_id=after)
    return query


def _id_at(ms: int) -> str:
    """The smallest event id for a millisecond since 1970 (ids start with 12 hex digits of
    epoch ms); clamped to the ids that exist, so any `since`/`until` makes a valid bound."""
    return f"{min(max(0, ms), _MAX_ID_MS):012x}"


def build_select(query: AuditQuery, *, limit: int | None, after_id: str | None,
                 with_bodies: bool = True) -> Select[Any]:
    e = audit_events
    f = query.filters
    columns: list[Any] = [e.c[name] for name in _ROW_COLUMNS]
    if "pii_kind" in f:  # drive from the small PII index: newest events with that kind
        source: Any = audit_pii.join(e, audit_pii.c.event_id == e.c.id)
        order = audit_pii.c.event_id
        conds = [audit_pii.c.kind == f["pii_kind"]]
    else:
        source = e
        order = e.c.id
        conds = []
    if with_bodies:
        source = source.outerjoin(audit_bodies, audit_bodies.c.event_id == e.c.id)
        columns += [audit_bodies.c.request_body, audit_bodies.c.response_body]
    for name in (*TEXT_FILTERS, "status_code", "stream"):
        if name in f:
            conds.append(e.c[name] == f[name])
    if "since" in f:
        conds.append(e.c.received_at >= f["since"])
        conds.append(order >= _id_at(epoch_ms(f["since"]) - 1))
    if "until" in f:
        conds.append(e.c.received_at < f["until"])
        conds.append(order < _id_at(epoch_ms(f["until"]) + 1))
    if after_id is not None:
        conds.append(order < after_id)
    stmt = select(*columns).select_from(source)
    if conds:
        stmt = stmt.where(and_(*conds))
    stmt = stmt.order_by(order.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def _parse_body(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row (with or without bodies) as the API's event object, fields in contract order."""
    out: dict[str, Any] = {}
    for name in EVENT_FIELDS:
        if name == "cost_usd":
            nanos = row["cost_nanos"]
            out[name] = None if nanos is None else round(nanos / 1e9, 9)
        elif name in ("request_body", "response_body"):
            out[name] = _parse_body(row.get(name))
        elif name in _TIMES:
            out[name] = iso(row[name])
        else:
            out[name] = row[name]
    return out


async def fetch_page(engine: AsyncEngine, query: AuditQuery, signer: CursorSigner
                     ) -> dict[str, Any]:
    """`{"data": [...], "next_cursor"}`: one page, newest first."""
    assert query.limit is not None
    stmt = build_select(query, limit=query.limit + 1, after_id=query.after_id)
    async with engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(stmt)).mappings()]
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    cursor = signer.make(rows[-1]["id"], query.fingerprint()) if more and rows else None
    return {"data": [event_json(r) for r in rows], "next_cursor": cursor}


async def fetch_page_plain(engine: AsyncEngine, query: AuditQuery) -> list[dict[str, Any]]:
    """One page of events, newest first, without a cursor (for the gateway's own reads)."""
    stmt = build_select(query, limit=query.limit, after_id=query.after_id)
    async with engine.connect() as conn:
        return [event_json(dict(r)) for r in (await conn.execute(stmt)).mappings()]


COUNT_CAP = 100_000  # counting stops here: "more than 100,000" is enough for a person


async def count_events(engine: AsyncEngine, query: AuditQuery) -> int:
    """How many events match (at most `COUNT_CAP + 1`: beyond the cap the count stops)."""
    inner = build_select(query, limit=COUNT_CAP + 1, after_id=None, with_bodies=False)
    stmt = select(func.count()).select_from(inner.subquery())
    async with engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def fetch_one(engine: AsyncEngine, event_id: str, scope_team: str | None = None
                    ) -> dict[str, Any] | None:
    query = AuditQuery(filters={"team": scope_team} if scope_team is not None else {})
    stmt = build_select(query, limit=1, after_id=None).where(audit_events.c.id == event_id)
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).mappings().first()
    return None if row is None else event_json(dict(row))


async def iter_events(engine: AsyncEngine, query: AuditQuery) -> AsyncIterator[dict[str, Any]]:
    """Every matching event, newest first, a page at a time (flat memory, no long transaction)."""
    after = query.after_id
    left = query.limit
    while left is None or left > 0:
        page = EXPORT_PAGE if left is None else min(EXPORT_PAGE, left)
        stmt = build_select(query, limit=page, after_id=after)
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(stmt)).mappings()]
        for row in rows:
            yield event_json(row)
        if len(rows) < page:
            return
        after = rows[-1]["id"]
        if left is not None:
            left -= len(rows)


async def export_lines(engine: AsyncEngine, query: AuditQuery, fmt: str
                       ) -> AsyncIterator[bytes]:
    """The export body, chunk by chunk: CSV with a header row, or one JSON object a line."""
    async for chunk, _ in export_events(engine, query, fmt):
        yield chunk


async def export_events(engine: AsyncEngine, query: AuditQuery, fmt: str
                        ) -> AsyncIterator[tuple[bytes, int]]:
    """`export_lines`' chunks, each with the number of events written so far."""
    count = 0
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv_writer(buf)  # formula-safe cells: see gateway/audit/csv_cells.py
        writer.writerow(EVENT_FIELDS)
        async for event in iter_events(engine, query):
            writer.writerow([csv_cell(event[name]) for name in EVENT_FIELDS])
            count += 1
            if count % 200 == 0:
                yield buf.getvalue().encode(), count
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue().encode(), count
        return
    chunk: list[bytes] = []
    async for event in iter_events(engine, query):
        chunk.append(orjson.dumps(event) + b"\n")
        count += 1
        if len(chunk) >= 200:
            yield b"".join(chunk), count
            chunk.clear()
    if chunk:
        yield b"".join(chunk), count
