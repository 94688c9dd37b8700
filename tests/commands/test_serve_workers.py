"""`gateway serve --workers N`: N processes on one port, as exact as N replicas (issue 21).

One `gateway serve` with `GATEWAY_WORKERS=2` on a real SQLite file, with Redis (db 6, flushed
first) for the limits, in front of the fake upstream, driven with the official `openai`
client opening a new connection per request (so the kernel spreads them over the workers):

1. a key with `rpm: N` admits exactly N of 3N concurrent requests, and both workers served;
2. a key with `max_concurrent: 2` has exactly 2 of 6 slow requests in flight at once;
3. a budget holds across the workers, then each refuses with `insufficient_quota`;
4. a worker killed with SIGKILL is started again on its own spool: every answered request
   is in the audit store exactly once, its chain continues, `GET /audit/verify` is clean;
5. SIGTERM stops every worker after its audit drain, and the supervisor ends by SIGTERM.
Without Redis, more than one worker is refused at start (exit 2), since each worker would
count its own limits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy.engine import make_url

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GATEWAY_BIN, GatewayProcess

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
SKIP_REDIS = ("GATEWAY_TEST_REDIS_URL is not set: run the suite with `make test`, which starts "
              "Redis on loopback")
REDIS_DB = 6  # our own database on the shared server
WORKERS = 2
HI = [{"role": "user", "content": "hi"}]
# `priced`: 1,000,000 / 2,000,000 nano-dollars per input / output token; the fake upstream
# counts "hi" as 2 prompt and 2 completion tokens; the gateway reserves its own estimate
# (8 prompt tokens) plus max_tokens before the call and settles to the real usage after.
HI_COST = 2 * 1_000_000 + 2 * 2_000_000
HI_RESERVE = 8 * 1_000_000 + 2 * 2_000_000


def config(upstream: str) -> str:
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: priced
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    pricing: {{input_per_million: 1000, output_per_million: 2000}}
router: {{retries: 0, total_timeout_s: 30}}
"""


def redis_db_url(base: str, db: int) -> str:
    return make_url(base).set(database=str(db)).render_as_string(hide_password=False)


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return sorted(out)


def wait_until(check: Any, timeout_s: float = 30, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def wait_ready(gw: GatewayProcess, times: int = 1) -> None:
    """Until the supervisor said all workers answer (`times` such lines in the log)."""
    assert wait_until(lambda: gw.log().count('"gateway workers ready"') >= times, 60), gw.log()


# The audit shipper runs every 2 s instead of every 50 ms: a worker killed right after a
# burst certainly holds answered events in its spool only (test 4).
FLUSH_MS = 2000


def workers_gateway(workdir: Path, up: FakeUpstream, redis_url: str) -> GatewayProcess:
    proc = GatewayProcess(workdir, config(up.url),
                          env={"GATEWAY_WORKERS": str(WORKERS), "GATEWAY_REDIS_URL": redis_url,
                               "GATEWAY_AUDIT_HMAC_KEY": "workers-audit-hmac-key",
                               "GATEWAY_AUDIT_FLUSH_INTERVAL_MS": str(FLUSH_MS),
                               "GATEWAY_REPLICA_ID": "wk"})
    proc.start(timeout_s=60)
    wait_ready(proc)
    return proc


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if not REDIS_URL:
        print(f"\nskipped: {SKIP_REDIS}")
        pytest.skip(SKIP_REDIS)
    url = redis_db_url(REDIS_URL, REDIS_DB)
    flush_redis(url)
    yield url
    flush_redis(url)


@pytest.fixture(scope="module")
def upstream_w() -> Iterator[FakeUpstream]:
    up = FakeUpstream(name="workers-up").start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream_w: FakeUpstream, redis_url: str
       ) -> Iterator[GatewayProcess]:
    proc = workers_gateway(tmp_path_factory.mktemp("workers"), upstream_w, redis_url)
    try:
        yield proc
    finally:
        proc.stop()


# --- clients: a new TCP connection per request --------------------------------------------
def sync_client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, http_client=http)


async def _call(client: openai.AsyncOpenAI, model: str, request_id: str, **kw: Any
                ) -> int | Exception:
    try:
        await client.chat.completions.create(model=model, messages=HI,
                                             extra_headers={"x-request-id": request_id}, **kw)
        return 200
    except openai.APIError as exc:
        return exc


def burst(gw: GatewayProcess, key: str, count: int, model: str = "demo", **kw: Any
          ) -> dict[str, int | Exception]:
    """`count` concurrent requests, each on its own connection: request id -> 200 or error."""
    tag = uuid.uuid4().hex[:8]
    ids = [f"burst-{tag}-{i}" for i in range(count)]

    async def run() -> list[int | Exception]:
        http = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0,
                                                     max_connections=500), timeout=60)
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0,
                                    http_client=http)
        try:
            return await asyncio.gather(*(_call(client, model, rid, **kw) for rid in ids))
        finally:
            await client.close()

    return dict(zip(ids, asyncio.run(run()), strict=True))


def status(result: int | Exception) -> int | None:
    return result if isinstance(result, int) else getattr(result, "status_code", None)


def rows_for(gw: GatewayProcess, ids: list[str]) -> list[dict[str, Any]]:
    params = {f"r{i}": rid for i, rid in enumerate(ids)}
    where = "request_id IN (" + ", ".join(f":{name}" for name in params) + ")"
    return gw.audit_rows(where, params)


def recorded(gw: GatewayProcess, ids: list[str], count: int | None = None
             ) -> list[dict[str, Any]]:
    """The audit rows of `ids` once `count` (default: all) of them are in SQL."""
    want = len(ids) if count is None else count
    rows = wait_until(lambda: (r := rows_for(gw, ids)) and len(r) >= want and r)
    assert rows, f"only {len(rows_for(gw, ids))} of {want} requests reached the audit store"
    return rows


# --- the refusal without Redis ------------------------------------------------------------
@pytest.mark.parametrize(("args", "env", "message"), [
    (["--workers", "2"], {}, "--workers 2 needs GATEWAY_REDIS_URL"),
    ([], {"GATEWAY_WORKERS": "3"}, "--workers 3 needs GATEWAY_REDIS_URL"),
    (["--workers", "0"], {}, "--workers must be between 1 and 256"),
    (["--workers", "257"], {"GATEWAY_REDIS_URL": "redis://127.0.0.1:1/0"},
     "--workers must be between 1 and 256"),
])
def test_serve_refuses_workers_it_cannot_keep_exact(tmp_path: Path, args: list[str],
                                                    env: dict[str, str], message: str) -> None:
    proc = GatewayProcess(tmp_path, config("http://127.0.0.1:9"), env=env)
    run = subprocess.run([str(GATEWAY_BIN), "serve", *args], env=proc.env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run
    assert message in run.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


# --- 1. rpm -------------------------------------------------------------------------------
def test_rpm_admits_exactly_n_across_workers(gw: GatewayProcess) -> None:
    n = 12
    key = gw.create_key(name="workers-rpm", rpm=n)
    results = burst(gw, key["key"], 3 * n)
    codes = Counter(status(r) for r in results.values())
    assert codes == Counter({200: n, 429: 2 * n}), codes
    refused = [r for r in results.values() if r != 200]
    assert all(isinstance(r, openai.RateLimitError) and r.code == "rate_limit_exceeded"
               for r in refused), refused[:3]
    rows = recorded(gw, list(results))
    assert sorted(r["request_id"] for r in rows) == sorted(results)  # each one once
    by_worker = Counter(r["replica"].split("-")[1] for r in rows)
    assert set(by_worker) == {"w0", "w1"}, by_worker  # both workers took requests
    print(f"\nrpm: requests per worker {dict(by_worker)}")


# --- 2. max_concurrent --------------------------------------------------------------------
def test_max_concurrent_counts_in_flight_requests_of_every_worker(
        gw: GatewayProcess, upstream_w: FakeUpstream) -> None:
    # The kernel spreads 8 connections over 2 workers by their addresses: all 8 on one
    # worker would prove nothing, so a burst like that is sent again (with a new key).
    workers_seen: set[str] = set()
    for attempt in range(5):
        key = gw.create_key(name=f"workers-conc-{attempt}", max_concurrent=2)
        upstream_w.set_fault("delay:800")
        try:
            results = burst(gw, key["key"], 8, model="priced", max_tokens=2)
        finally:
            upstream_w.set_fault(None)
        codes = Counter(status(r) for r in results.values())
        assert codes == Counter({200: 2, 429: 6}), codes
        workers_seen = {r["replica"] for r in recorded(gw, list(results))}
        if len(workers_seen) == WORKERS:
            break
    assert len(workers_seen) == WORKERS  # the refusals came from both


# --- 3. budget ----------------------------------------------------------------------------
def test_budget_holds_across_workers(gw: GatewayProcess) -> None:
    budget_nanos = 40_000_000
    key = gw.create_key(name="workers-budget", budget_usd=budget_nanos / 1e9,
                        budget_period="month")
    client = sync_client(gw, key["key"])
    sent: dict[str, int] = {}
    refusals_in_a_row = 0
    while len(sent) < 40 and refusals_in_a_row < 6:
        rid = f"budget-{uuid.uuid4().hex[:10]}"
        try:
            client.chat.completions.create(model="priced", messages=HI, max_tokens=2,
                                           extra_headers={"x-request-id": rid})
            sent[rid] = 200
            refusals_in_a_row = 0
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota", exc
            sent[rid] = 429
            refusals_in_a_row += 1
            time.sleep(0.3)  # a settlement of the other worker could still be landing
    assert refusals_in_a_row == 6, "the budget never ran out"
    rows = recorded(gw, list(sent))
    ok = [r for r in rows if r["status_code"] == 200]
    assert len({r["replica"] for r in rows}) == WORKERS
    spent = sum(r["cost_nanos"] for r in ok)
    # one process would admit while what is left covers a reservation: the same here
    assert budget_nanos - HI_RESERVE < spent + HI_COST, (spent, len(ok))
    assert spent <= budget_nanos, (spent, len(ok))
    print(f"\nbudget: {len(ok)} admitted, spent {spent} of {budget_nanos} nano-dollars")


# --- 4. a worker killed -------------------------------------------------------------------
def spool_chains(gw: GatewayProcess) -> list[str]:
    return sorted(p.read_text().strip()
                  for p in (gw.workdir / "data" / "spool").glob("**/replica"))


def test_a_killed_worker_restarts_on_its_spool_and_loses_no_event(gw: GatewayProcess
                                                                  ) -> None:
    assert gw.proc is not None
    supervisor = gw.proc.pid
    before = children(supervisor)
    assert len(before) == WORKERS, before
    chains = spool_chains(gw)
    assert len(chains) == WORKERS
    key = gw.create_key(name="workers-kill")
    time.sleep(FLUSH_MS / 1000 + 0.5)  # the key's admin event is shipped: a clean slate
    first = burst(gw, key["key"], 30)
    assert list(first.values()) == [200] * 30
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    in_sql = {r["request_id"] for r in rows_for(gw, list(first))}
    only_in_spool = [rid for rid in first if rid not in in_sql]
    assert only_in_spool, "every answered request was already in SQL: the kill proved nothing"
    assert wait_until(lambda: len(c := children(supervisor)) == WORKERS and victim not in c)
    assert wait_until(lambda: gw.log().count("gateway worker exited") == 1), gw.log()
    second = burst(gw, key["key"], 30)
    assert list(second.values()) == [200] * 30  # the port kept answering
    ids = [*first, *second]
    rows = recorded(gw, ids)
    time.sleep(FLUSH_MS / 1000 + 0.5)  # a late duplicate would have landed by now
    rows = rows_for(gw, ids)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)  # each exactly once
    assert spool_chains(gw) == chains  # the restarted worker continues its own chain
    verdict = gw.admin("GET", "/audit/verify").json()
    assert verdict["ok"] is True and verdict["first_bad_id"] is None, verdict
    assert {r["replica"] for r in gw.audit_rows()} == set(chains)
    print(f"\nkill: {len(only_in_spool)} answered events were only in spools at the kill; "
          "all arrived once")


# --- 5. SIGTERM ---------------------------------------------------------------------------
def test_sigterm_drains_every_worker_then_the_supervisor_ends(
        tmp_path: Path, upstream_w: FakeUpstream, redis_url: str) -> None:
    gw = workers_gateway(tmp_path, upstream_w, redis_url)
    assert gw.proc is not None
    workers = children(gw.proc.pid)
    assert len(workers) == WORKERS
    key = gw.create_key(name="workers-stop")
    results = burst(gw, key["key"], 20)
    assert list(results.values()) == [200] * 20
    code = gw.stop()  # within FLUSH_MS: the events are in the spools, not yet in SQL
    assert code == -signal.SIGTERM  # as a single `gateway serve` ends after SIGTERM
    assert all(not Path(f"/proc/{w}").exists() for w in workers)
    assert len(rows_for(gw, list(results))) == 20  # each worker shipped before it ended
    levels = Counter(line.split('"level":"')[1].split('"')[0]
                     for line in gw.log().splitlines() if '"level":"' in line)
    assert levels["error"] == 0, gw.log()
