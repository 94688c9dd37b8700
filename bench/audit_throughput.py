"""Audit trail benchmark: write throughput, added request latency, query latency at 1M events.

1. Sustained audit events per second into SQLite and PostgreSQL: the real `AuditWriter`
   (spool with fsync'd group commits, then batched inserts) fed as fast as it takes them for
   `--seconds`; the rate is rows landed in SQL per second after a warm-up. Events carry small
   request and response bodies (as with the default `audit.bodies: redacted`).
2. Added request latency with the durable spool on: a real `gateway serve` (SQLite, offline
   `demo` model) under `bench/load.py` at 1 and 16 clients, with the spool fsync'ing (the
   default) and with `GATEWAY_AUDIT_SPOOL_FSYNC=false`; plus the gateway's own histogram of
   how long responses were held for their event (`gateway_audit_durable_wait_seconds`).
3. `GET /audit/events` latency with filters over `--rows` events (default a million,
   bulk-inserted straight into SQL with a realistic spread of keys, teams, models, statuses,
   PII), through a real `gateway serve`; and a streamed CSV export of every row with the
   gateway's resident memory sampled throughout.

    .venv/bin/python bench/audit_throughput.py                       # SQLite
    bash scripts/test-services.sh -- .venv/bin/python bench/audit_throughput.py   # + PostgreSQL
    .venv/bin/python bench/audit_throughput.py --rows 200000 --seconds 5 --skip latency

Results: a Markdown table on stdout and in `--out` (default bench/results/audit.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

GATEWAY = Path(sys.executable).parent / "gateway"
ADMIN = "bench-admin-key"
CONFIG = """models:
  - name: demo
    deployments: [{model: demo/demo-1}]
audit: {spool_dir: spool}
"""


def log(*parts: object) -> None:
    print(f"[audit-bench {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ databases
def pg_database(base: str) -> str:
    """A fresh database on the server of `base` (dropped by `drop_pg`)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    name = "audit_bench_" + uuid.uuid4().hex[:8]
    admin = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_pg(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False)

    async def drop() -> None:
        try:
            conn = await asyncpg.connect(admin)
        except Exception:  # no access to `postgres`: try the test database
            conn = await asyncpg.connect(parsed.set(drivername="postgresql", database=(
                make_url(os.environ["GATEWAY_TEST_POSTGRES_URL"]).database)).render_as_string(
                hide_password=False))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def migrate(url: str) -> None:
    from gateway.migrate import upgrade

    upgrade(url)


# ------------------------------------------------------------------ 1. sustained writes
def _event(i: int) -> dict[str, Any]:
    from gateway.core.audit_event import AuditEvent

    opened = AuditEvent(uuid.uuid4().hex, "/v1/chat/completions")
    event = opened.fields
    event.update(key_id=f"key_{i % 50:016x}", key_name=f"app-{i % 50}", team=f"team-{i % 8}",
                 user=f"user-{i % 997}", model_requested="gpt-4o-mini",
                 model_served="gpt-4o-mini", deployment="openai/gpt-4o-mini", attempts=1,
                 input_tokens=212, output_tokens=48, total_tokens=260, cost_nanos=60600,
                 usage_source="provider",
                 request_body={"model": "gpt-4o-mini", "messages": [
                     {"role": "user", "content": "Summarise the quarterly report " * 8}]},
                 response_body={"id": "chatcmpl-x", "object": "chat.completion", "choices": [
                     {"index": 0, "message": {"role": "assistant", "content": "ok " * 60},
                      "finish_reason": "stop"}]})
    opened.close(200)
    return event


async def _sustained(url: str, seconds: float, warmup: float, work: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from gateway.audit.writer import AuditWriter
    from gateway.storage.engine import create_engine
    from gateway.storage.tables import audit_events

    engine = create_engine(url)
    writer = AuditWriter(engine, spool_dir=work / "spool", batch_size=500,
                         flush_interval_s=0.05, fsync=True)
    await writer.start()

    async def rows() -> int:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(audit_events))
                    ).scalar_one()

    from gateway.ids import time_ordered_id

    # The producer only copies a template (a request's own cost is not what is measured).
    templates = [_event(i) for i in range(64)]
    submitted = 0
    start = time.perf_counter()
    mark: tuple[float, int, int] | None = None
    end = start + warmup + seconds
    while time.perf_counter() < end:
        if writer.depth > 20_000:  # the writer is the bottleneck: let it catch up
            await asyncio.sleep(0.005)
            continue
        for _ in range(100):
            event = dict(templates[submitted % 64], id=time_ordered_id(),
                         request_id=f"bench-{submitted}")
            writer.submit(event)
            submitted += 1
        await asyncio.sleep(0)
        if mark is None and time.perf_counter() - start >= warmup:
            mark = (time.perf_counter(), await rows(), writer.committer.committed)
    assert mark is not None
    now, landed, committed = time.perf_counter(), await rows(), writer.committer.committed
    window = now - mark[0]
    backlog = writer.depth
    await writer.stop()
    await engine.dispose()
    return {"sql_per_s": (landed - mark[1]) / window,
            "spool_per_s": (committed - mark[2]) / window,
            "submitted": submitted, "backlog_at_end": backlog}


def sustained(url: str, label: str, seconds: float) -> dict[str, Any]:
    log(f"sustained writes into {label} for {seconds:.0f} s")
    migrate(url)
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        return asyncio.run(_sustained(url, seconds, 2.0, Path(tmp)))


# ------------------------------------------------------------------ gateway processes
class Gateway:
    def __init__(self, workdir: Path, database_url: str, env: dict[str, str] | None = None,
                 cpu: int | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "gateway.yaml").write_text(CONFIG)
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env.update({"GATEWAY_CONFIG": str(workdir / "gateway.yaml"),
                         "GATEWAY_DATABASE_URL": database_url, "GATEWAY_ADMIN_KEY": ADMIN,
                         "GATEWAY_PORT": str(self.port), "GATEWAY_LOG_LEVEL": "warning",
                         "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})})
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        import httpx

        subprocess.run([str(GATEWAY), "migrate"], env=self.env, cwd=self.workdir, check=True,
                       capture_output=True)
        argv = [str(GATEWAY), "serve"]
        if self.cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(self.cpu), *argv]
        log_file = open(self.workdir / "gateway.log", "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(argv, env=self.env, cwd=self.workdir, stdout=log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not start")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc is None:
            return
        with_group = os.getpgid(self.proc.pid)
        os.killpg(with_group, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(with_group, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------ 2. request latency
def _histogram_quantile(text: str, name: str, q: float) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name + "_bucket":
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((target - prev_count) / span if span else 0)
        prev_le, prev_count = le, count
    return None


def latency(seconds: float) -> dict[str, Any]:
    import httpx

    body = json.dumps({"model": "demo", "messages": [
        {"role": "user", "content": "How long does the audit trail add? " * 4}]})
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="audit-bench-lat-") as tmp:
        body_file = Path(tmp) / "body.json"
        body_file.write_text(body)
        for label, env in (("fsync", {}), ("no_fsync", {"GATEWAY_AUDIT_SPOOL_FSYNC": "false"})):
            work = Path(tmp) / label
            gw = Gateway(work, f"sqlite:///{work}/gw.db", env=env, cpu=1).start()
            try:
                for clients in (1, 16):
                    log(f"request latency, spool {label}, {clients} client(s)")
                    argv = [sys.executable, str(BENCH / "load.py"),
                            gw.url + "/v1/chat/completions", "--body-file", str(body_file),
                            "-c", str(clients), "-d", str(seconds), "--warmup", "1",
                            "--header", f"authorization: Bearer {ADMIN}"]
                    if shutil.which("taskset"):
                        argv = ["taskset", "-c", "0", *argv]
                    result = json.loads(subprocess.run(argv, capture_output=True, text=True,
                                                       check=True).stdout)
                    out[(label, clients)] = result
                text = httpx.get(gw.url + "/metrics", timeout=10).text
                out[(label, "wait")] = {
                    q: _histogram_quantile(text, "gateway_audit_durable_wait_seconds", q)
                    for q in (0.5, 0.9, 0.99)}
            finally:
                gw.stop()
    return out


# ------------------------------------------------------------------ 3. queries at scale
TEAMS = [f"team-{i}" for i in range(10)]
KEYS = [f"key_{i:016x}" for i in range(100)]
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-haiku", "llama3", "embed-small"]
DEPLOYMENTS = {m: [f"{m}-dep-{j}" for j in range(2)] for m in MODELS}
ERRORS = [(429, "rate_limit_exceeded"), (502, "upstream_error"), (504, "upstream_timeout"),
          (404, "model_not_found"), (401, "invalid_api_key"), (400, "invalid_value")]
PII = ["email", "phone", "credit_card"]


def _rows(n: int, seed: int = 7) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """n audit rows over the last 30 days (ids match their times) and their PII kinds."""
    from gateway.audit.chain import GENESIS, HASHED_COLUMNS, Hasher

    hasher = Hasher()
    prev = GENESIS
    rng = random.Random(seed)
    now = datetime.utcnow()
    start = now - timedelta(days=30)
    span_ms = 30 * 86400 * 1000
    offsets = sorted(rng.randrange(span_ms) for _ in range(n))
    rows, kinds = [], []
    for seq, off in enumerate(offsets, start=1):
        received = start + timedelta(milliseconds=off)
        ms = int((received - datetime(1970, 1, 1)) / timedelta(milliseconds=1))
        event_id = f"{ms:012x}{rng.getrandbits(48):012x}"
        k = rng.randrange(len(KEYS))
        model = MODELS[rng.randrange(len(MODELS))]
        status, code = (200, None)
        if rng.random() < 0.04:
            status, code = ERRORS[rng.randrange(len(ERRORS))]
        pii = None
        if rng.random() < 0.01:
            kind = PII[rng.randrange(len(PII))]
            pii = json.dumps({kind: {"count": 1, "action": "redact"}})
            kinds.append((event_id, kind))
        latency_ms = round(rng.uniform(80, 4000), 3)
        done = received + timedelta(milliseconds=latency_ms)
        values = (event_id, uuid.UUID(int=rng.getrandbits(128)).hex, received,
                  received + timedelta(microseconds=int(latency_ms * 333)), done, KEYS[k],
                  f"app-{k}", TEAMS[k % len(TEAMS)], f"user-{rng.randrange(5000)}",
                  "/v1/chat/completions", model, model if status == 200 else None,
                  DEPLOYMENTS[model][rng.randrange(2)] if status == 200 else None,
                  1, False, None, None, 200, 50, 250, 60000, latency_ms, status, code,
                  pii, rng.random() < 0.3, False, False, "provider", False, "bench", seq, prev)
        content = dict(zip(HASHED_COLUMNS, values, strict=True))
        if pii is not None:
            content["pii"] = json.loads(pii)
        prev = hasher.row_hash(content, None, None)  # a real chain: verify can walk it
        rows.append((*values, prev))
    return rows, kinds


def fill(url: str, n: int) -> None:
    from gateway.storage.tables import audit_events

    log(f"generating {n:,} events")
    rows, kinds = _rows(n)
    columns = [c.name for c in audit_events.columns]
    started = time.perf_counter()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        marks = ", ".join("?" for _ in columns)
        quoted = ", ".join(f'"{c}"' for c in columns)
        for i in range(0, len(rows), 50_000):
            chunk = [tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime)
                           else v for v in row) for row in rows[i:i + 50_000]]
            with conn:
                conn.executemany(f"INSERT INTO audit_events ({quoted}) VALUES ({marks})", chunk)
        with conn:
            conn.executemany("INSERT INTO audit_pii (event_id, kind) VALUES (?, ?)", kinds)
            conn.execute("ANALYZE")
        conn.close()
    else:
        import asyncpg
        from sqlalchemy.engine import make_url

        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

        async def copy() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.copy_records_to_table("audit_events", records=rows, columns=columns)
                await conn.copy_records_to_table("audit_pii", records=kinds,
                                                 columns=["event_id", "kind"])
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

        asyncio.run(copy())
    log(f"  inserted in {time.perf_counter() - started:.0f} s")


def queries(url: str, label: str, rows: int, repeat: int, export: bool) -> dict[str, Any]:
    import httpx

    migrate(url)
    fill(url, rows)
    rng = random.Random(11)
    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="audit-bench-q-") as tmp:
        gw = Gateway(Path(tmp) / "gw", url).start()
        headers = {"authorization": f"Bearer {ADMIN}"}
        try:
            client = httpx.Client(base_url=gw.url, headers=headers, timeout=120)
            now = datetime.utcnow()

            def t(moment: datetime) -> str:
                return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

            def some_request_id() -> str:
                day = now - timedelta(days=rng.uniform(0, 29))
                page = client.get("/audit/events", params={"until": t(day), "limit": 1}).json()
                return page["data"][0]["request_id"]

            def window(hours: float) -> dict[str, str]:
                end = now - timedelta(hours=rng.uniform(hours, 24 * 29))
                return {"since": t(end - timedelta(hours=hours)), "until": t(end)}

            cases: dict[str, Any] = {
                "newest 100 (no filter)": lambda: {},
                "team": lambda: {"team": rng.choice(TEAMS)},
                "key_id": lambda: {"key_id": rng.choice(KEYS)},
                "user": lambda: {"user": f"user-{rng.randrange(5000)}"},
                "model_requested": lambda: {"model_requested": rng.choice(MODELS)},
                "model_served + deployment": lambda: (lambda m: {
                    "model_served": m, "deployment": rng.choice(DEPLOYMENTS[m])})(
                    rng.choice(MODELS)),
                "status_code=504 (rare)": lambda: {"status_code": 504},
                "error_code (rare)": lambda: {"error_code": rng.choice(ERRORS)[1]},
                "stream=true": lambda: {"stream": "true"},
                "pii_kind (1%)": lambda: {"pii_kind": rng.choice(PII)},
                "since/until, 1 hour": lambda: window(1),
                "team + 1 day": lambda: {"team": rng.choice(TEAMS), **window(24)},
                "request_id": lambda: {"request_id": some_request_id()},
                "limit=1000": lambda: {"limit": 1000, "team": rng.choice(TEAMS)},
            }
            for name, make in cases.items():
                log(f"  query: {name}")
                times = []
                for _ in range(repeat):
                    params = make()
                    started = time.perf_counter()
                    r = client.get("/audit/events", params=params)
                    times.append((time.perf_counter() - started) * 1000)
                    assert r.status_code == 200, r.text
                out[name] = times
            log("  query: next page by cursor")
            times = []
            for _ in range(repeat):
                first = client.get("/audit/events", params={"team": rng.choice(TEAMS)}).json()
                started = time.perf_counter()
                r = client.get("/audit/events", params={"team": first["data"][0]["team"],
                                                        "cursor": first["next_cursor"]})
                times.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200
            out["second page (cursor)"] = times
            log(f"  verify: every chain, {label}")
            started = time.perf_counter()
            result = client.get("/audit/verify", timeout=3600).json()
            out["verify"] = {"seconds": time.perf_counter() - started, **result}
            if export:
                log(f"  export: every row as CSV, {label}")
                rss = [gw.rss_mb()]
                started = time.perf_counter()
                count, size = 0, 0
                last_sample = started
                with client.stream("GET", "/audit/export", params={"format": "csv"}) as r:
                    for chunk in r.iter_bytes():
                        size += len(chunk)
                        count += chunk.count(b"\n")
                        if time.perf_counter() - last_sample > 0.5:
                            rss.append(gw.rss_mb())
                            last_sample = time.perf_counter()
                rss.append(gw.rss_mb())
                out["export"] = {"rows": count - 1, "mb": size / 1e6,
                                 "seconds": time.perf_counter() - started,
                                 "rss_start_mb": rss[0], "rss_max_mb": max(rss),
                                 "rss_end_mb": rss[-1]}
        finally:
            gw.stop()
    return out


# ------------------------------------------------------------------ report
def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    lines = [f"# Audit trail benchmark ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})",
             "", f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`", "",
             f"Machine: nproc {os.cpu_count()}, python {sys.version.split()[0]}", ""]
    if "sustained" in results:
        lines += ["## Sustained audit events per second (target: at least 5,000/s)", "",
                  "| store | into SQL (events/s) | into the spool (events/s) | "
                  "backlog at the end |", "|---|---:|---:|---:|"]
        for label, r in results["sustained"].items():
            lines.append(f"| {label} | {r['sql_per_s']:,.0f} | {r['spool_per_s']:,.0f} | "
                         f"{r['backlog_at_end']:,} |")
        lines.append("")
    if "latency" in results:
        lat = results["latency"]
        lines += ["## Request latency with the durable spool (SQLite, `demo` model, gateway "
                  "on one CPU)", "",
                  "| clients | spool fsync on: p50 / p99 (ms) | fsync off: p50 / p99 (ms) | "
                  "req/s on / off |", "|---:|---:|---:|---:|"]
        for clients in (1, 16):
            on, off = lat[("fsync", clients)], lat[("no_fsync", clients)]
            lines.append(f"| {clients} | {on['p50_ms']:.2f} / {on['p99_ms']:.2f} | "
                         f"{off['p50_ms']:.2f} / {off['p99_ms']:.2f} | "
                         f"{on['rps']:,.0f} / {off['rps']:,.0f} |")
        wait = lat[("fsync", "wait")]
        nof = lat[("no_fsync", "wait")]
        fmt = lambda v: "-" if v is None else f"{v * 1000:.2f}"  # noqa: E731
        lines += ["", "Time a response is held for its event "
                  "(`gateway_audit_durable_wait_seconds`, from histogram buckets): "
                  f"fsync on p50 {fmt(wait[0.5])} ms, p90 {fmt(wait[0.9])} ms, "
                  f"p99 {fmt(wait[0.99])} ms; fsync off p50 {fmt(nof[0.5])} ms, "
                  f"p99 {fmt(nof[0.99])} ms.", ""]
    for label, q in results.get("queries", {}).items():
        lines += [f"## `GET /audit/events` over {q['rows']:,} events ({label}, limit 100, "
                  f"{args.repeat} runs each, sequential)", "",
                  "| filter | p50 (ms) | p95 (ms) | max (ms) |", "|---|---:|---:|---:|"]
        every = []
        for name, times in q.items():
            if name in ("rows", "export", "verify"):
                continue
            every.extend(times)
            lines.append(f"| {name} | {pct(times, 0.5):.1f} | {pct(times, 0.95):.1f} | "
                         f"{max(times):.1f} |")
        lines.append(f"| **all of the above** | {pct(every, 0.5):.1f} | "
                     f"**{pct(every, 0.95):.1f}** | {max(every):.1f} |")
        if "verify" in q:
            v = q["verify"]
            lines += ["", f"`GET /audit/verify` over the whole chain: ok={v['ok']}, "
                      f"{v['events_checked']:,} events in {v['seconds']:.1f} s."]
        if "export" in q:
            e = q["export"]
            lines += ["", f"Export of every row as CSV: {e['rows']:,} rows, {e['mb']:,.0f} MB "
                      f"in {e['seconds']:.0f} s; gateway RSS {e['rss_start_mb']:.0f} MB "
                      f"before, at most {e['rss_max_mb']:.0f} MB during, "
                      f"{e['rss_end_mb']:.0f} MB after."]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10, help="measured seconds per step")
    ap.add_argument("--rows", type=int, default=1_000_000, help="events for the query test")
    ap.add_argument("--repeat", type=int, default=40, help="runs per query filter")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["sustained", "latency", "queries", "export", "postgres"])
    ap.add_argument("--pg-url", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    ap.add_argument("--out", default=str(BENCH / "results" / "audit.md"))
    args = ap.parse_args()
    use_pg = bool(args.pg_url) and "postgres" not in args.skip
    if not use_pg:
        log("PostgreSQL skipped (no --pg-url / GATEWAY_TEST_POSTGRES_URL)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="audit-bench-db-") as tmp:
        if "sustained" not in args.skip:
            results["sustained"] = {
                "SQLite": sustained(f"sqlite:///{tmp}/sustained.db", "SQLite", args.seconds)}
            if use_pg:
                url = pg_database(args.pg_url)
                try:
                    results["sustained"]["PostgreSQL"] = sustained(url, "PostgreSQL",
                                                                   args.seconds)
                finally:
                    drop_pg(url)
        if "latency" not in args.skip:
            results["latency"] = latency(args.seconds)
        if "queries" not in args.skip:
            results["queries"] = {"SQLite": queries(f"sqlite:///{tmp}/million.db", "SQLite",
                                                    args.rows, args.repeat,
                                                    "export" not in args.skip)}
            if use_pg:
                url = pg_database(args.pg_url)
                try:
                    results["queries"]["PostgreSQL"] = queries(url, "PostgreSQL", args.rows,
                                                               args.repeat, False)
                finally:
                    drop_pg(url)
    text = report(args, results)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
