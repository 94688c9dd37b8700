"""Proof on one machine that several replicas behave as one gateway (issue 8).

Three `gateway serve` processes share one PostgreSQL (a fresh database) and one Redis (db 5,
flushed first), each with its own workdir (so its own audit spool and hash chain), the same
admin key and the same audit HMAC key, behind a loopback round-robin TCP proxy of the test's
own (tests/support/rr_proxy.py). Clients open a new connection per request, so consecutive
requests land on consecutive replicas. Driven with the official `openai` client:

1. a key with `rpm: N` admits exactly N of 3N concurrent requests across the three;
2. a budget holds across them, then every replica answers 429 `insufficient_quota`;
3. a replica killed with SIGKILL mid-load and restarted on the same workdir replays its spool:
   every request the client got a response for is in the audit store exactly once, and no
   request id is recorded twice (requests cut by the kill may or may not be recorded);
4. a key revoked through replica A is refused by B and C within a few seconds;
5. `GET /audit/verify` is clean with the events of all three replicas' chains checked.

Needs `make test` (GATEWAY_TEST_POSTGRES_URL, GATEWAY_TEST_REDIS_URL); skipped with the reason
elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy.engine import make_url

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess
from tests.support.postgres import SKIP_REASON as SKIP_POSTGRES
from tests.support.postgres import fresh_database
from tests.support.rr_proxy import RoundRobinProxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
SKIP_REDIS = ("GATEWAY_TEST_REDIS_URL is not set: run the suite with `make test`, which starts "
              "Redis on loopback")
REDIS_DB = 5  # our own database on the shared server: other tests use db 0
ADMIN_KEY = "scale-out-admin-key"
HMAC_KEY = "scale-out-audit-hmac-key-shared-by-all-replicas"
VICTIM = 1  # the replica killed in test 3
# The victim ships its spool to SQL every 3 s instead of every 50 ms, so at the kill its spool
# certainly holds answered requests that are not in SQL yet: they arrive only by replay.
VICTIM_FLUSH_MS = 3000

HI = [{"role": "user", "content": "hi"}]
# `priced`: 1,000,000 / 2,000,000 nano-dollars per input / output token; the fake upstream
# counts "hi" as 2 prompt and 2 completion tokens. The gateway reserves its own prompt
# estimate (8 tokens) plus max_tokens before the call and settles to the real usage after.
HI_COST = 2 * 1_000_000 + 2 * 2_000_000
HI_RESERVE = 8 * 1_000_000 + 2 * 2_000_000
SETTLE_DIFF = HI_RESERVE - HI_COST


def replica_config(upstream: str) -> str:
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: priced
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    pricing: {{input_per_million: 1000, output_per_million: 2000}}
router: {{retries: 0, total_timeout_s: 30}}
limits: {{replicas: 3}}
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


@dataclass
class Cluster:
    replicas: list[GatewayProcess]
    proxy: RoundRobinProxy
    up: FakeUpstream

    @property
    def base_url(self) -> str:
        return self.proxy.url + "/v1"

    def chain_names(self) -> list[str]:
        return [(p.workdir / "data" / "spool" / "replica").read_text().strip()
                for p in self.replicas]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not REDIS_URL:
        print(f"\nskipped: {SKIP_REDIS}")
        pytest.skip(SKIP_REDIS)
    if not os.environ.get("GATEWAY_TEST_POSTGRES_URL"):
        print(f"\nskipped: {SKIP_POSTGRES}")
        pytest.skip(SKIP_POSTGRES)
    redis_url = redis_db_url(REDIS_URL, REDIS_DB)
    flush_redis(redis_url)
    up = FakeUpstream(name="scale-out-up").start()
    try:
        for url in fresh_database():
            procs: list[GatewayProcess] = []
            proxy: RoundRobinProxy | None = None
            try:
                for i in range(3):
                    env = {"GATEWAY_REDIS_URL": redis_url, "GATEWAY_AUDIT_HMAC_KEY": HMAC_KEY,
                           "GATEWAY_REPLICA_ID": f"scale{i}"}
                    if i == VICTIM:
                        env["GATEWAY_AUDIT_FLUSH_INTERVAL_MS"] = str(VICTIM_FLUSH_MS)
                    proc = GatewayProcess(tmp_path_factory.mktemp(f"scale{i}"),
                                          replica_config(up.url), admin_key=ADMIN_KEY,
                                          database_url=url, env=env)
                    procs.append(proc.start(migrate=i == 0, timeout_s=60))
                proxy = RoundRobinProxy([("127.0.0.1", p.port) for p in procs]).start()
                yield Cluster(procs, proxy, up)
            finally:
                if proxy is not None:
                    proxy.stop()
                for proc in procs:
                    proc.stop()
    finally:
        up.stop()
        flush_redis(redis_url)


# --- clients: a new TCP connection per request, so the proxy spreads them ----------------
def sync_client(base_url: str, key: str) -> openai.OpenAI:
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http)


def async_client(base_url: str, key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0,
                                                 max_connections=500), timeout=60)
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, http_client=http)


async def _call(client: openai.AsyncOpenAI, model: str, request_id: str, **kw: Any
                ) -> int | Exception:
    """200, or the exception (APIStatusError with a status, APIConnectionError without)."""
    try:
        await client.chat.completions.create(model=model, messages=HI,
                                             extra_headers={"x-request-id": request_id}, **kw)
        return 200
    except openai.APIError as exc:
        return exc


def burst(base_url: str, key: str, count: int, model: str = "demo", **kw: Any
          ) -> dict[str, int | Exception]:
    """`count` concurrent requests through `base_url`: request id -> 200 or the error."""
    tag = uuid.uuid4().hex[:8]
    ids = [f"burst-{tag}-{i}" for i in range(count)]

    async def run() -> list[int | Exception]:
        client = async_client(base_url, key)
        try:
            return await asyncio.gather(*(_call(client, model, rid, **kw) for rid in ids))
        finally:
            await client.close()

    return dict(zip(ids, asyncio.run(run()), strict=True))


def status(result: int | Exception) -> int | None:
    if isinstance(result, int):
        return result
    return getattr(result, "status_code", None)


def wait_until(check: Any, timeout_s: float = 30, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def rows_for(gw: GatewayProcess, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    params = {f"r{i}": rid for i, rid in enumerate(ids)}
    where = "request_id IN (" + ", ".join(f":{name}" for name in params) + ")"
    return gw.audit_rows(where, params)


def spread_check(cluster: Cluster, before: Counter[int]) -> Counter[int]:
    return Counter({i: cluster.proxy.connections[i] - before[i] for i in range(3)})


# --- 1. rpm ------------------------------------------------------------------------------
def test_rpm_admits_exactly_n_across_three_replicas(cluster: Cluster) -> None:
    n = 12
    key = cluster.replicas[0].create_key(name="scale-rpm", rpm=n)
    before = Counter(cluster.proxy.connections)
    results = burst(cluster.base_url, key["key"], 3 * n)
    spread = spread_check(cluster, before)
    assert spread == Counter({0: n, 1: n, 2: n}), spread  # round-robin: n on each replica
    codes = Counter(status(r) for r in results.values())
    assert codes == Counter({200: n, 429: 2 * n}), codes
    refused = [r for r in results.values() if r != 200]
    assert all(isinstance(r, openai.RateLimitError) and r.code == "rate_limit_exceeded"
               for r in refused), refused[:3]
    # every one of the 3N is audited once, and the three replicas' chains all took part
    rows = wait_until(lambda: (r := rows_for(cluster.replicas[2], list(results)))
                      and len(r) >= 3 * n and r)
    assert sorted(r["request_id"] for r in rows) == sorted(results)
    assert len({r["replica"] for r in rows}) == 3
    assert sum(r["status_code"] == 200 for r in rows) == n


# --- 2. budget ---------------------------------------------------------------------------
def test_budget_holds_across_three_replicas(cluster: Cluster) -> None:
    budget_nanos = 50_000_000
    key = cluster.replicas[2].create_key(name="scale-budget", budget_usd=budget_nanos / 1e9,
                                         budget_period="month")
    results = burst(cluster.base_url, key["key"], 30, model="priced", max_tokens=2)
    admitted = [rid for rid, r in results.items() if r == 200]
    refused = [r for r in results.values() if r != 200]
    # reservations of HI_RESERVE each: at least budget // reserve fit in a cold burst
    assert len(admitted) >= budget_nanos // HI_RESERVE, Counter(map(status, results.values()))
    assert all(isinstance(r, openai.RateLimitError) and r.code == "insufficient_quota"
               for r in refused), refused[:3]
    time.sleep(1)  # the burst's settlements (tasks on their replicas) land in Redis
    # then one at a time, round-robin, until every replica refuses: at most budget // cost
    sent = dict(results)
    client = sync_client(cluster.base_url, key["key"])
    refusals_in_a_row = 0
    while len(sent) < 80 and refusals_in_a_row < 6:
        rid = f"budget-{uuid.uuid4().hex[:10]}"
        try:
            client.chat.completions.create(model="priced", messages=HI, max_tokens=2,
                                           extra_headers={"x-request-id": rid})
            sent[rid] = 200
            refusals_in_a_row = 0
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota", exc
            sent[rid] = exc
            refusals_in_a_row += 1
            if refusals_in_a_row == 3:
                time.sleep(1)  # once more after a late settlement could have landed
    assert refusals_in_a_row == 6, "the budget never ran out"
    rows = wait_until(lambda: (r := rows_for(cluster.replicas[0], list(sent)))
                      and len(r) >= len(sent) and r)
    assert sorted(r["request_id"] for r in rows) == sorted(sent)
    ok_rows = [r for r in rows if r["status_code"] == 200]
    assert len(ok_rows) == sum(1 for r in sent.values() if r == 200)
    assert all(r["cost_nanos"] == HI_COST for r in ok_rows)
    assert len({r["replica"] for r in rows}) == 3  # the requests went to all three
    spent = sum(r["cost_nanos"] for r in ok_rows)
    print(f"\nbudget: {len(ok_rows)} admitted, spent {spent} of {budget_nanos} nano-dollars")
    assert spent <= budget_nanos + SETTLE_DIFF
    assert spent > budget_nanos - 2 * HI_RESERVE  # and it was used, not refused early
    # and the refusals after it come from each replica directly too
    for gw in cluster.replicas:
        with pytest.raises(openai.RateLimitError) as exc:
            sync_client(gw.base_url, key["key"]).chat.completions.create(
                model="priced", messages=HI, max_tokens=2)
        assert exc.value.code == "insufficient_quota"


# --- 3. SIGKILL mid-load -----------------------------------------------------------------
def test_sigkill_mid_load_loses_no_audit_event(cluster: Cluster) -> None:
    victim = cluster.replicas[VICTIM]
    chains_before = cluster.chain_names()
    key = cluster.replicas[0].create_key(name="scale-kill")
    total, workers = 180, 9
    tag = uuid.uuid4().hex[:8]
    ids = [f"kill-{tag}-{i}" for i in range(total)]
    outcome: dict[str, int | Exception] = {}
    killed_at: list[int] = []
    cluster.up.set_fault("delay:100")  # requests are in flight on every replica at the kill

    async def run() -> None:
        client = async_client(cluster.base_url, key["key"])
        queue = list(reversed(ids))

        async def worker() -> None:
            while queue:
                rid = queue.pop()
                outcome[rid] = await _call(client, "priced", rid, max_tokens=2)
                if len(outcome) == total // 3 and not killed_at:
                    killed_at.append(len(outcome))
                    await asyncio.to_thread(victim.stop, signal.SIGKILL)

        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            await client.close()

    try:
        asyncio.run(run())
    finally:
        cluster.up.set_fault(None)
    assert killed_at, "the replica was never killed"
    answered = [rid for rid, r in outcome.items() if status(r) is not None]
    cut = [rid for rid, r in outcome.items() if status(r) is None]
    assert Counter(status(outcome[rid]) for rid in answered) == Counter({200: len(answered)})
    assert all(isinstance(outcome[rid], openai.APIConnectionError) for rid in cut)
    assert len(answered) >= total - 2 * workers  # only requests in flight at the kill fail
    # what the survivors served reaches SQL quickly; what the victim answered since its last
    # ship (every VICTIM_FLUSH_MS) is only in its spool
    time.sleep(1.5)
    before = {r["request_id"] for r in rows_for(cluster.replicas[0], ids)}
    only_in_spool = [rid for rid in answered if rid not in before]
    assert only_in_spool, "every answered request was already in SQL: the kill proved nothing"

    victim.start(migrate=False, timeout_s=60)  # same workdir and port: replays its spool
    assert cluster.chain_names() == chains_before  # the same chain continues

    def all_answered_recorded() -> list[dict[str, Any]] | None:
        rows = rows_for(cluster.replicas[2], ids)
        return rows if {r["request_id"] for r in rows} >= set(answered) else None

    rows = wait_until(all_answered_recorded, timeout_s=30)
    assert rows, f"answered requests missing from the audit store after the replay: " \
                 f"{sorted(set(answered) - {r['request_id'] for r in rows_for(victim, ids)})}"
    time.sleep(VICTIM_FLUSH_MS / 1000 + 0.5)  # a late duplicate would have landed by now
    rows = rows_for(cluster.replicas[2], ids)
    counts = Counter(r["request_id"] for r in rows)
    assert [rid for rid, c in counts.items() if c > 1] == []
    assert set(answered) <= set(counts) <= set(ids)
    replayed = [r for r in rows if r["request_id"] in only_in_spool]
    assert {r["replica"] for r in replayed} == {chains_before[VICTIM]}
    print(f"\nkill: {len(answered)} answered, {len(cut)} cut by the kill "
          f"({sum(rid in counts for rid in cut)} of those recorded), "
          f"{len(only_in_spool)} recorded only by the replay of the victim's spool")


# --- 4. revocation -----------------------------------------------------------------------
def test_revocation_through_one_replica_reaches_the_others(cluster: Cluster) -> None:
    a, b, c = cluster.replicas
    key = b.create_key(name="scale-revoke")
    for gw in (a, b, c):  # each replica has the key authenticated (and cached)
        sync_client(gw.base_url, key["key"]).chat.completions.create(model="demo", messages=HI)
    r = a.admin("DELETE", f"/admin/keys/{key['id']}")
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        sync_client(a.base_url, key["key"]).chat.completions.create(model="demo", messages=HI)
    seen: dict[int, float] = {}

    def refused_everywhere() -> bool:
        for i, gw in ((1, b), (2, c)):
            if i in seen:
                continue
            try:
                sync_client(gw.base_url, key["key"]).chat.completions.create(
                    model="demo", messages=HI)
            except openai.AuthenticationError:
                seen[i] = time.monotonic() - revoked_at
        return len(seen) == 2

    assert wait_until(refused_everywhere, timeout_s=10, interval_s=0.1), seen
    print(f"\nrevocation seen by B after {seen[1]:.2f} s, by C after {seen[2]:.2f} s")


# --- 5. /audit/verify ------------------------------------------------------------------
def test_audit_verify_is_clean_for_every_replicas_chain(cluster: Cluster) -> None:
    key = cluster.replicas[0].create_key(name="scale-verify")
    results = burst(cluster.base_url, key["key"], 6)
    assert list(results.values()) == [200] * 6

    def settled() -> list[dict[str, Any]] | None:  # every replica has shipped its spool
        rows = cluster.replicas[0].audit_rows()
        mine = [r for r in rows if r["request_id"] in results]
        return rows if len(mine) == 6 else None

    rows = wait_until(settled, timeout_s=30)
    assert rows
    time.sleep(VICTIM_FLUSH_MS / 1000 + 0.5)  # nothing still on its way (admin events too)
    rows = cluster.replicas[0].audit_rows()
    chains = Counter(r["replica"] for r in rows)
    assert set(chains) == set(cluster.chain_names()), chains  # three chains, all with events
    assert all(r["seq"] is not None and r["hash"] for r in rows)
    via_proxy = httpx.get(cluster.proxy.url + "/audit/verify", timeout=60,
                          headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert via_proxy.status_code == 200, via_proxy.text
    verdict = via_proxy.json()
    assert {k: verdict[k] for k in ("ok", "events_checked", "first_bad_id", "hmac")} == {
        "ok": True, "events_checked": len(rows), "first_bad_id": None, "hmac": True}
    for gw in cluster.replicas:  # the same answer from each (same HMAC key everywhere)
        assert gw.admin("GET", "/audit/verify").json()["ok"] is True
    print(f"\nverify: {len(rows)} events over chains {dict(chains)}")
