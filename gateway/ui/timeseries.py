"""A spend time series as an SVG line chart (server-rendered: no script, CSP-safe): one
line per group, zero-filled buckets, axis ticks a person can read."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 12, 36
SERIES_MAX = 6  # lines drawn: the top groups by cost (the rest are in the tables)


def buckets(since: datetime, until: datetime, hourly: bool) -> list[str]:
    """Every bucket label from `since` (inclusive) to `until` (exclusive), as the spend API
    names them (`YYYY-MM-DD` or `YYYY-MM-DDTHH:00Z`)."""
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    fmt = "%Y-%m-%dT%H:00Z" if hourly else "%Y-%m-%d"
    out: list[str] = []
    at = since
    while at < until and len(out) < 24 * 400:
        out.append(at.strftime(fmt))
        at += step
    return out


def _value(row: dict[str, Any], by_cost: bool) -> float:
    return float(row["cost_usd"] or 0) if by_cost else float(
        row["input_tokens"] + row["output_tokens"])


def line_chart(labels: list[str], series: list[tuple[str, list[dict[str, Any]]]],
               by_cost: bool) -> dict[str, Any]:
    """`series`: (name, spend rows grouped by time). Returns what the template draws: lines
    (points), the y maximum, x ticks and a data table (one row per bucket)."""
    values = []
    for name, rows in series[:SERIES_MAX]:
        at = {str(r["group"]): _value(r, by_cost) for r in rows}
        values.append((name, [at.get(label, 0.0) for label in labels]))
    top = max((v for _, vs in values for v in vs), default=0.0) or 1.0
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM
    n = max(1, len(labels) - 1)

    def x(i: int) -> float:
        return round(LEFT + span_x * i / n, 1)

    def y(v: float) -> float:
        return round(TOP + span_y * (1 - v / top), 1)

    lines = [{"name": name, "index": i,
              "points": " ".join(f"{x(j)},{y(v)}" for j, v in enumerate(vs)),
              "total": sum(vs)} for i, (name, vs) in enumerate(values)]
    ticks = sorted({0, len(labels) // 2, len(labels) - 1}) if labels else []
    return {"width": WIDTH, "height": HEIGHT, "lines": lines, "top": top,
            "y_top": TOP, "y_zero": y(0), "left": LEFT, "right": WIDTH - RIGHT,
            "x_ticks": [{"x": x(i), "label": labels[i]} for i in ticks],
            "table": [{"bucket": label, "values": [vs[j] for _, vs in values]}
                      for j, label in enumerate(labels)],
            "metric": "cost (USD)" if by_cost else "tokens", "by_cost": by_cost}
