"""Redis goes away mid-test: each `limits.on_redis_error` mode does what it says.

`local_share`: requests keep flowing, each replica within limit / `limits.replicas`, counted
in the metric (and in `/readyz`, which reports Redis but stays ready). `closed`: 429 for
limited keys. `open`: no limits. This module starts its own redis-server on a free port
and stops it by its PID (skipped with a reason when redis-server is not installed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.limits.test_limits_http import HI
from tests.support.gateway_proc import GatewayProcess, free_port
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.redis

@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from running_redis()


def config(mode: str) -> str:
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
limits: {{on_redis_error: {mode}, replicas: 3}}
"""


def statuses(gw: GatewayProcess, key: str, count: int) -> list[int]:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)
    out = []
    for _ in range(count):
        try:
            client.chat.completions.create(model="demo", messages=HI)
            out.append(200)
        except openai.APIStatusError as exc:
            out.append(exc.status_code)
    return out


def metric(gw: GatewayProcess, name: str) -> float | None:
    r = httpx.get(gw.url + "/metrics", timeout=10)
    if r.status_code != 200:
        return None
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_redis_stopped_mid_test_falls_back_to_the_local_share(tmp_path: Path,
                                                              redis_server: RedisServer) -> None:
    gw = GatewayProcess(tmp_path, config("local_share"),
                        env={"GATEWAY_REDIS_URL": redis_server.url}).start()
    try:
        key = gw.create_key(name="share", rpm=9)
        assert statuses(gw, key["key"], 1) == [200]  # shared counters in Redis
        ready = httpx.get(gw.url + "/readyz", timeout=10).json()
        assert ready["checks"]["redis"] == "ok" and ready["limiter"]["fallback_requests"] == 0

        redis_server.stop()
        # the replica's share of rpm 9 over 3 replicas is 3, of which it used 1 through Redis
        # in this minute: requests keep flowing within the other 2
        got = statuses(gw, key["key"], 9)
        assert got == [200] * 2 + [429] * 7, got
        ready = httpx.get(gw.url + "/readyz", timeout=10)
        assert ready.status_code == 200  # reported, but the replica still serves
        body = ready.json()
        assert body["status"] == "ready"
        assert body["checks"]["redis"].startswith("unreachable")
        assert body["limiter"]["redis"] == "unreachable"
        assert body["limiter"]["fallback_requests"] == 9
        counted = metric(gw, "gateway_limiter_store_errors_total")
        assert counted is None or counted == 9
        unlimited = gw.create_key(name="no-limits")
        assert statuses(gw, unlimited["key"], 2) == [200, 200]  # needs no store at all

        redis_server.start()  # back on the same port: the replica notices within seconds
        deadline = time.monotonic() + 15
        while httpx.get(gw.url + "/readyz", timeout=10).json()["checks"]["redis"] != "ok":
            assert time.monotonic() < deadline, "redis not seen again"
            time.sleep(0.2)
        fresh = gw.create_key(name="after", rpm=4)
        assert statuses(gw, fresh["key"], 5) == [200] * 4 + [429]
    finally:
        gw.stop()


@pytest.mark.parametrize("mode,expected", [("closed", 429), ("open", 200)])
def test_closed_and_open_modes_without_redis(tmp_path: Path, mode: str, expected: int) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gw = GatewayProcess(tmp_path, config(mode), env={"GATEWAY_REDIS_URL": nowhere}).start()
    try:
        key = gw.create_key(name="limited", rpm=1)
        assert statuses(gw, key["key"], 3) == [expected] * 3
        if expected == 429:
            r = httpx.post(gw.base_url + "/chat/completions", timeout=30,
                           headers={"authorization": f"Bearer {key['key']}"},
                           json={"model": "demo", "messages": HI})
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            assert r.headers["retry-after"] == "1"
        unlimited = gw.create_key(name="free")
        assert statuses(gw, unlimited["key"], 1) == [200]
        assert httpx.get(gw.url + "/readyz", timeout=10).status_code == 200
    finally:
        gw.stop()
