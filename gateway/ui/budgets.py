"""Budget progress as the pages show it: spend in the budget's own period (today, this month
or in total), how close to the cap (warning colours), and the requests it refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from gateway.ui.inprocess import ApiError, api

PERIOD_WORDS = {"day": "today", "month": "this month", "total": "in total"}
WARN_AT, CRITICAL_AT = 0.8, 0.95  # share of the budget: amber from here, red from there
REFUSAL_SAMPLE = 1000  # refusals read per page (the count says "1000+" beyond)


def budget_level(spent: float, budget: float | None, refused: int) -> str:
    """`ok`, `warn` (from 80% of the budget) or `critical` (from 95%, or as soon as the
    budget refused a request in this period: the limiter reserves a request's largest
    possible cost, so it refuses before the sum of what was spent reaches the cap)."""
    if budget is None:
        return "ok"
    if refused or budget == 0 or spent >= budget * CRITICAL_AT:
        return "critical"
    return "warn" if spent >= budget * WARN_AT else "ok"


def period_start(period: str, now: datetime | None = None) -> str | None:
    """The start of the budget period now (ISO UTC), or None for `total`."""
    now = now or datetime.now(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        return None
    return start.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _spend(request: Request, group_by: str, since: str | None) -> dict[str, float]:
    query = {"group_by": group_by, **({"since": since} if since else {})}
    rows = (await api(request, "GET", "/admin/spend", query=query))["data"]
    return {str(r["group"]): float(r["cost_usd"] or 0) for r in rows}


async def _refusals(request: Request, since: str | None) -> list[dict[str, Any]]:
    query = {"error_code": "insufficient_quota", "limit": str(REFUSAL_SAMPLE)}
    if since:
        query["since"] = since
    try:
        return (await api(request, "GET", "/audit/events", query=query))["data"]
    except ApiError as exc:
        if exc.status == 403:  # the key may not read the audit log: no counts
            return []
        raise


async def budget_states(request: Request, items: list[dict[str, Any]], group_by: str
                        ) -> dict[str, dict[str, Any]]:
    """For each key (`group_by="key"`, by id) or team (`"team"`, by name): `{"spent",
    "budget", "period", "words", "share", "level", "refused", "refused_more"}`, where
    `level` is `ok`, `warn` or `critical`, and spend and refusals count from the period start."""
    ident = "id" if group_by == "key" else "name"
    periods = {item.get("budget_period") or "month" for item in items} or {"month"}
    starts = {p: period_start(p) for p in periods}
    spends = {p: await _spend(request, group_by, starts[p]) for p in periods}
    bounded = [s for s in starts.values() if s is not None]
    earliest = min(bounded) if len(bounded) == len(starts) else None
    refused = await _refusals(request, earliest) if any(i.get("budget_usd") is not None
                                                         for i in items) else []
    field = "key_id" if group_by == "key" else "team"
    states: dict[str, dict[str, Any]] = {}
    for item in items:
        period = item.get("budget_period") or "month"
        start = starts[period]
        spent = spends[period].get(str(item[ident]), 0.0)
        budget = item.get("budget_usd")
        share = (spent / budget) if budget else None
        count = sum(1 for e in refused if e.get(field) == item[ident]
                    and (start is None or str(e["received_at"]) >= start.replace("Z", "")))
        level = budget_level(spent, budget, count)
        states[str(item[ident])] = {
            "spent": spent, "budget": budget, "period": period,
            "words": PERIOD_WORDS.get(period, period), "share": share, "level": level,
            "refused": count, "refused_more": len(refused) >= REFUSAL_SAMPLE,
            "warn_at": (budget or 0) * WARN_AT, "critical_at": (budget or 0) * CRITICAL_AT}
    return states
