"""Three gateway processes sharing one Redis and one PostgreSQL behave as one gateway:
the same burst, tpm and budget tests as tests/limits/test_limits_http.py, with the requests spread
over the replicas. Needs `make test` (GATEWAY_TEST_REDIS_URL, GATEWAY_TEST_POSTGRES_URL);
skipped with the reason elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.limits.test_limits_http import HI, HI_COST
from tests.support.gateway_proc import GatewayProcess
from tests.support.postgres import fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
SKIP_REDIS = ("GATEWAY_TEST_REDIS_URL is not set: run the suite with `make test`, which starts "
              "Redis on loopback")


def replica_config(upstream: str) -> str:
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: priced
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    pricing: {{input_per_million: 1000, output_per_million: 2000}}
limits: {{on_redis_error: local_share, replicas: 3}}
"""


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    server = FakeUpstream(name="replicas-up").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, up: FakeUpstream
             ) -> Iterator[list[GatewayProcess]]:
    if not REDIS_URL:
        print(f"\nskipped: {SKIP_REDIS}")
        pytest.skip(SKIP_REDIS)
    for url in fresh_database():
        procs: list[GatewayProcess] = []
        try:
            for i in range(3):
                proc = GatewayProcess(tmp_path_factory.mktemp(f"replica{i}"),
                                      replica_config(up.url), database_url=url,
                                      env={"GATEWAY_REDIS_URL": REDIS_URL})
                procs.append(proc.start(migrate=i == 0))
            yield procs
        finally:
            for proc in procs:
                proc.stop()


def spread(procs: list[GatewayProcess], key: str, count: int, model: str = "demo",
           **kw: object) -> list[int | Exception]:
    """`count` concurrent requests, round-robin over the replicas: status codes / errors."""

    async def one(client: openai.AsyncOpenAI) -> int | Exception:
        try:
            await client.chat.completions.create(model=model, messages=HI, **kw)
            return 200
        except openai.APIStatusError as exc:
            return exc

    async def run() -> list[int | Exception]:
        clients = [openai.AsyncOpenAI(base_url=p.base_url, api_key=key, max_retries=0,
                                      timeout=30) for p in procs]
        try:
            return await asyncio.gather(*(one(clients[i % len(clients)])
                                          for i in range(count)))
        finally:
            for c in clients:
                await c.close()

    return asyncio.run(run())


def test_rpm_burst_over_three_replicas_admits_exactly_n(replicas: list[GatewayProcess]
                                                        ) -> None:
    n = 9
    key = replicas[0].create_key(name="shared-rpm", rpm=n)
    results = spread(replicas, key["key"], 3 * n)
    assert results.count(200) == n
    refused = [r for r in results if r != 200]
    assert all(isinstance(r, openai.RateLimitError) for r in refused)
    assert all(r.response.headers["x-ratelimit-remaining-requests"] == "0" for r in refused)


def test_tpm_over_three_replicas(replicas: list[GatewayProcess]) -> None:
    key = replicas[1].create_key(name="shared-tpm", tpm=100)
    clients = [openai.OpenAI(base_url=p.base_url, api_key=key["key"], max_retries=0,
                             timeout=30) for p in replicas]
    admitted = 0
    retried = False
    while admitted < 50:
        try:
            clients[admitted % 3].chat.completions.create(model="priced", messages=HI,
                                                          max_tokens=2)
        except openai.RateLimitError as exc:
            assert "tokens per minute" in exc.message
            if retried:
                break
            # a settlement is a task on its replica: give a late one time to land, once
            retried = True
            time.sleep(1)
            continue
        retried = False
        admitted += 1
    assert admitted == 23  # reserve 10, settle to 4: as on one replica


def test_budget_over_three_replicas_is_never_overrun(replicas: list[GatewayProcess]) -> None:
    budget_nanos = 50_000_000
    key = replicas[2].create_key(name="shared-budget", budget_usd=0.05, budget_period="month")
    results = spread(replicas, key["key"], 30, model="priced", max_tokens=2)
    sent = len(results)
    assert 4 <= results.count(200) <= 7
    i = 0
    retried = False
    time.sleep(1)  # the burst's settlements (tasks on their replicas) land in Redis
    while sent < 60:
        sent += 1
        i += 1
        try:
            openai.OpenAI(base_url=replicas[i % 3].base_url, api_key=key["key"], max_retries=0
                          ).chat.completions.create(model="priced", messages=HI, max_tokens=2)
            retried = False
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            if retried:
                break
            retried = True  # once more after a late settlement could have landed
            time.sleep(1)
    rows = [r for r in replicas[0].wait_for_audit("key_id = :k", {"k": key["id"]}, count=sent)
            if r["status_code"] == 200]
    assert all(r["cost_nanos"] == HI_COST for r in rows)
    spent = sum(r["cost_nanos"] for r in rows)
    assert budget_nanos - 12_000_000 < spent <= budget_nanos
    deadline = time.monotonic() + 10  # each replica writes its rollups about once a second
    while True:
        data = replicas[1].admin("GET", f"/admin/spend?group_by=key&key_id={key['id']}")
        got = data.json()["data"]
        if (got and got[0]["requests"] == len(rows)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == [{"group": key["id"], "requests": len(rows), "input_tokens": 2 * len(rows),
                    "output_tokens": 2 * len(rows), "cost_usd": spent / 1e9}]


def test_budget_survives_a_restart_of_every_replica(replicas: list[GatewayProcess]) -> None:
    key = replicas[0].create_key(name="restart-budget", budget_usd=0.03, budget_period="day")
    client = openai.OpenAI(base_url=replicas[0].base_url, api_key=key["key"], max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
    for proc in replicas:
        proc.stop()
    # and Redis lost the counters (a restart without persistence): SQL seeds them again
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    gone = r.keys(f"gw:b:k:{key['id']}:*")
    assert gone and r.delete(*gone) == len(gone)
    r.close()
    for proc in replicas:
        proc.start(migrate=False)
    client = openai.OpenAI(base_url=replicas[1].base_url, api_key=key["key"], max_retries=0)
    client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as spent:
        client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
    assert spent.value.code == "insufficient_quota"
