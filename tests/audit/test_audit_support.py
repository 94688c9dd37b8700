"""Helpers shared by the audit tests (no tests here): SQL on a gateway's database, tampering,
events counting, Prometheus parsing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway_proc import GatewayProcess, run_in_thread

# DESIGN.md "Audit event": the exact field list of an event in the API, then the fields later
# sections added ("More protocols": `session_id`, the X-Claude-Code-Session-Id header).
EVENT_FIELDS = ["id", "request_id", "received_at", "first_byte_at", "completed_at", "key_id",
                "key_name", "team", "user", "endpoint", "model_requested", "model_served",
                "deployment", "attempts", "fallback_used", "template_name", "template_version",
                "input_tokens", "output_tokens", "total_tokens", "cost_usd", "latency_ms",
                "status_code", "error_code", "pii", "stream", "cancelled", "partial",
                "usage_source", "cost_estimated", "request_body", "response_body", "prev_hash",
                "hash",
                # DESIGN.md "Admin-change events"
                "action", "actor_key_id", "target_type", "target_id", "target_name", "before",
                "after",
                # DESIGN.md "More protocols"
                "session_id"]


def sql(url: str, statement: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run one statement on a database (rows for a SELECT), committed."""
    from sqlalchemy import text

    from gateway.storage.engine import create_engine

    async def run() -> list[dict[str, Any]]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params or {})
                return [dict(r) for r in result.mappings()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return run_in_thread(run)


def chain_rows(url: str, replica: str | None = None) -> list[dict[str, Any]]:
    """Events of one chain (or all chained events) in chain order."""
    where = "WHERE replica = :r" if replica else "WHERE replica IS NOT NULL"
    return sql(url, f"SELECT * FROM audit_events {where} ORDER BY replica, seq, id",
               {"r": replica})


def wait_rows(gw: GatewayProcess, where: str, params: dict[str, Any] | None = None, *,
              count: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Poll until at least `count` rows match, then return them (callers check ==)."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = gw.audit_rows(where, params)
        if len(rows) >= count:
            time.sleep(0.3)
            return gw.audit_rows(where, params)
        time.sleep(0.1)
    return rows


def verify_api(gw: GatewayProcess, key: str | None = None) -> dict[str, Any]:
    r = gw.admin("GET", "/audit/verify", key=key)
    assert r.status_code == 200, r.text
    return r.json()


def verify_cli(gw: GatewayProcess, env: dict[str, str] | None = None) -> tuple[int, dict]:
    import json
    import subprocess

    from tests.support.gateway_proc import GATEWAY_BIN

    out = subprocess.run([str(GATEWAY_BIN), "audit", "verify"], env={**gw.env, **(env or {})},
                         cwd=gw.workdir, capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def metrics(gw: GatewayProcess) -> dict[str, list[Any]]:
    """`/metrics` parsed with prometheus_client's parser: family name -> samples."""
    r = httpx.get(gw.url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: list(f.samples) for f in text_string_to_metric_families(r.text)}


def sample(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for samples in families.values():
        for s in samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


# --- tampering ---------------------------------------------------------------------------
Tamper = Callable[[str, list[dict[str, Any]]], tuple[str, Callable[[], None]]]


def tamper_edit(url: str, rows: list[dict[str, Any]]) -> tuple[str, Callable[[], None]]:
    """Change one event's cost: that event is the first bad one."""
    victim = rows[len(rows) // 2]
    old = victim["cost_nanos"]
    sql(url, "UPDATE audit_events SET cost_nanos = :c WHERE id = :i",
        {"c": (old or 0) + 1_000_000, "i": victim["id"]})
    return victim["id"], lambda: sql(url, "UPDATE audit_events SET cost_nanos = :c WHERE id = :i",
                                     {"c": old, "i": victim["id"]})


def tamper_delete(url: str, rows: list[dict[str, Any]]) -> tuple[str, Callable[[], None]]:
    """Delete one event: the one after it in its chain is the first bad one."""
    k = len(rows) // 2
    victim, after = rows[k], rows[k + 1]
    body = sql(url, "SELECT * FROM audit_bodies WHERE event_id = :i", {"i": victim["id"]})
    sql(url, "DELETE FROM audit_bodies WHERE event_id = :i", {"i": victim["id"]})
    sql(url, "DELETE FROM audit_events WHERE id = :i", {"i": victim["id"]})

    def undo() -> None:
        _insert_row(url, "audit_events", victim)
        for b in body:
            _insert_row(url, "audit_bodies", b)

    return after["id"], undo


def tamper_insert(url: str, rows: list[dict[str, Any]]) -> tuple[str, Callable[[], None]]:
    """Insert a forged copy of an event (new id, bigger cost) right behind it."""
    source = rows[len(rows) // 2]
    forged = dict(source, id=source["id"][:-4] + "ffff", cost_nanos=(source["cost_nanos"] or 0)
                  + 5, request_id="forged-" + source["request_id"][:100])
    _insert_row(url, "audit_events", forged)
    return forged["id"], lambda: sql(url, "DELETE FROM audit_events WHERE id = :i",
                                     {"i": forged["id"]})


def tamper_reorder(url: str, rows: list[dict[str, Any]]) -> tuple[str, Callable[[], None]]:
    """Swap the chain positions of two neighbours: the one moved forward is the first bad."""
    k = len(rows) // 2
    a, b = rows[k], rows[k + 1]
    _set_seq(url, a["id"], b["seq"])
    _set_seq(url, b["id"], a["seq"])

    def undo() -> None:
        _set_seq(url, a["id"], a["seq"])
        _set_seq(url, b["id"], b["seq"])

    return b["id"], undo


def _set_seq(url: str, event_id: str, seq: int) -> None:
    sql(url, "UPDATE audit_events SET seq = :s WHERE id = :i", {"s": seq, "i": event_id})


def _insert_row(url: str, table: str, row: dict[str, Any]) -> None:
    import json

    values = dict(row)
    if table == "audit_events" and not isinstance(values.get("pii"), str | None):
        values["pii"] = json.dumps(values["pii"])  # SQLite hands back the text already
    names = ", ".join(f'"{k}"' for k in values)
    binds = ", ".join(f":{k}" for k in values)
    sql(url, f"INSERT INTO {table} ({names}) VALUES ({binds})", values)


TAMPERS: dict[str, Tamper] = {"edit": tamper_edit, "delete": tamper_delete,
                              "insert": tamper_insert, "reorder": tamper_reorder}


def spool_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
