"""Spend: sums per key, team, model, template and day over a range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.ui.inprocess import api
from gateway.ui.web import (
    render,
)


def _day(raw: str, default: datetime) -> datetime:
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return default


def _chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of cost; of tokens when nothing in the range cost anything (free models)."""
    by_cost = any(r["cost_usd"] for r in rows)

    def value(r: dict[str, Any]) -> float:
        return r["cost_usd"] if by_cost else r["input_tokens"] + r["output_tokens"]

    top = max((value(r) for r in rows), default=0) or 1
    bars = [{"label": "(none)" if r["group"] is None else str(r["group"]),
             "value": f"{value(r):.4f}" if by_cost else str(value(r)), "y": i * 24,
             "width": round(300 * value(r) / top, 1)} for i, r in enumerate(rows)]
    return {"bars": bars, "height": max(24, 24 * len(bars)),
            "metric": "cost (USD)" if by_cost else "tokens"}


async def spend(request: Request) -> Response:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = _day(request.query_params.get("since", ""), today - timedelta(days=29))
    until = _day(request.query_params.get("until", ""), today)
    query = {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "until": (until + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    groups = []
    for group_by, title in (("day", "By day"), ("model", "By model"), ("team", "By team"),
                            ("template", "By template")):
        rows = (await api(request, "GET", "/admin/spend",
                          query={**query, "group_by": group_by}))["data"]
        if group_by == "day":
            rows.sort(key=lambda r: str(r["group"]))
        else:
            rows.sort(key=lambda r: -r["cost_usd"])
        groups.append({"key": group_by, "title": title, "rows": rows, "chart": _chart(rows)})
    return render(request, "spend.html", groups=groups, since=since.strftime("%Y-%m-%d"),
                  until=until.strftime("%Y-%m-%d"))
