"""Spend over time: a range picker (24 hours to 90 days, or dates), a time series per key,
team, model or template, and the sums per group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.ui.inprocess import api
from gateway.ui.timeseries import SERIES_MAX, buckets, line_chart
from gateway.ui.web import render

# A day a page can step one day from either way (9999-12-31 + 1 day was a 500).
_FIRST_DAY, _LAST_DAY = datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)


def _day(raw: str, default: datetime) -> datetime:
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return default
    return min(max(day, _FIRST_DAY), _LAST_DAY)


def _chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of cost; of tokens when nothing in the range cost anything (free models)."""
    by_cost = any(r["cost_usd"] for r in rows)

    def value(r: dict[str, Any]) -> float:
        return r["cost_usd"] if by_cost else r["input_tokens"] + r["output_tokens"]

    top = max((value(r) for r in rows), default=0) or 1
    bars = [{"label": "(none)" if r["group"] is None else str(r.get("label") or r["group"]),
             "value": f"{value(r):.4f}" if by_cost else str(value(r)), "y": i * 24,
             "width": round(300 * value(r) / top, 1)} for i, r in enumerate(rows)]
    return {"bars": bars, "height": max(24, 24 * len(bars)),
            "metric": "cost (USD)" if by_cost else "tokens"}


RANGES = {"24h": ("Last 24 hours", 1), "7d": ("Last 7 days", 7), "30d": ("Last 30 days", 30),
          "90d": ("Last 90 days", 90)}
DIMENSIONS = {"model": "model", "key": "key", "team": "team", "template": "template"}
FILTER_OF = {"key": "key_id", "team": "team", "model": "model", "template": "template"}


def _window(request: Request) -> tuple[str, datetime, datetime, bool]:
    """(range name, since, until, hourly) from `range` or custom `since`/`until` dates."""
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    chosen = request.query_params.get("range", "")
    if chosen not in RANGES and (request.query_params.get("since")
                                 or request.query_params.get("until")):
        since = _day(request.query_params.get("since", ""), today - timedelta(days=29))
        until = _day(request.query_params.get("until", ""), today)
        if until < since:
            since, until = until, since
        return "custom", since, until + timedelta(days=1), False
    chosen = chosen if chosen in RANGES else "30d"
    if chosen == "24h":
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return chosen, end - timedelta(hours=24), end, True
    days = RANGES[chosen][1]
    return chosen, today - timedelta(days=days - 1), today + timedelta(days=1), False


async def _series(request: Request, base: dict[str, str], dimension: str,
                  totals: list[dict[str, Any]], names: dict[str, str], hourly: bool
                  ) -> list[tuple[str, list[dict[str, Any]]]]:
    """The whole range, then one line per top group (by cost) of `dimension`."""
    step = "hour" if hourly else "day"
    out = [("all", (await api(request, "GET", "/admin/spend",
                              query={**base, "group_by": step}))["data"])]
    for row in [r for r in totals if r["group"] is not None][:SERIES_MAX - 1]:
        rows = (await api(request, "GET", "/admin/spend", query={
            **base, "group_by": step, FILTER_OF[dimension]: str(row["group"])}))["data"]
        out.append((names.get(str(row["group"]), str(row["group"])), rows))
    return out


async def spend(request: Request) -> Response:
    chosen, since, until, hourly = _window(request)
    dimension = request.query_params.get("by", "model")
    dimension = dimension if dimension in DIMENSIONS else "model"
    base = {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "until": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    keys = (await api(request, "GET", "/audit/facets"))["keys"]
    names = {k["id"]: k["name"] for k in keys}
    groups = []
    for group_by, title in (("day", "By day"), ("model", "By model"), ("key", "By key"),
                            ("team", "By team"), ("template", "By template")):
        rows = (await api(request, "GET", "/admin/spend",
                          query={**base, "group_by": group_by}))["data"]
        if group_by == "day":
            rows.sort(key=lambda r: str(r["group"]))
        else:
            rows.sort(key=lambda r: -r["cost_usd"])
        if group_by == "key":
            for r in rows:
                r["label"] = names.get(str(r["group"]), r["group"])
        groups.append({"key": group_by, "title": title, "rows": rows, "chart": _chart(rows)})
    totals = next(g["rows"] for g in groups if g["key"] == dimension)
    by_cost = any(r["cost_usd"] for r in totals)
    series = await _series(request, base, dimension, totals, names, hourly)
    savings = await api(request, "GET", "/audit/cache-savings", query=base)
    chart = line_chart(buckets(since, until, hourly), series, by_cost)
    return render(request, "spend.html", groups=groups, chart=chart, ranges=RANGES,
                  chosen=chosen, dimension=dimension, dimensions=DIMENSIONS, hourly=hourly,
                  since=since.strftime("%Y-%m-%d"),
                  until=(until - timedelta(days=1)).strftime("%Y-%m-%d")
                  if not hourly else until.strftime("%Y-%m-%d"),
                  total=sum(r["cost_usd"] or 0 for r in totals),
                  requests=sum(r["requests"] for r in totals), savings=savings)
