"""The response cache on the Redis replicas already share for limits: two `gateway serve`
processes, one SQLite file, one redis-server of this module's own. One replica's answer is the
other's hit; a replica whose Redis is gone serves misses (never an error) while the other
still hits; what Redis holds is the redacted answer, never the caller's PII."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess
from tests.support.redis_server import RedisServer, running_redis
from tests.support.rr_proxy import RoundRobinProxy

pytestmark = pytest.mark.redis

RESTORE = """
name: restoring
applies_to: {teams: [restorers]}
pii:
  input: {email: redact}
  output: {}
  restore: true
"""


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from running_redis()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream,
             redis_server: RedisServer) -> Iterator[tuple[GatewayProcess, GatewayProcess,
                                                          RoundRobinProxy]]:
    """A talks to Redis directly; B through a proxy the test can cut."""
    root = tmp_path_factory.mktemp("cache-replicas")
    proxy = RoundRobinProxy([("127.0.0.1", redis_server.port)]).start()
    config = f"""
models:
  - name: cached
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream.url}/v1"}}]
    cache: {{enabled: true}}
policies_dir: {root / "policies"}
"""
    (root / "policies").mkdir()
    (root / "policies" / "restore.yaml").write_text(RESTORE)
    db = f"sqlite:///{root}/shared.db"
    urls = (redis_server.url, f"redis://127.0.0.1:{proxy.port}/0")
    procs = [GatewayProcess(Path(root / name), config, database_url=db,
                            env={"GATEWAY_REDIS_URL": url})
             for name, url in zip(("a", "b"), urls, strict=True)]
    procs[0].start()
    procs[1].start(migrate=False)
    procs[0].create_team(name="restorers")
    yield procs[0], procs[1], proxy
    for proc in procs:
        proc.stop()
    with contextlib.suppress(RuntimeError):  # the test stopped it already
        proxy.stop()


def chat(gw: GatewayProcess, key: str, text: str) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "cached", "temperature": 0,
                            "messages": [{"role": "user", "content": text}]})


def _wait_for_entries(server: RedisServer, timeout_s: float = 5) -> None:
    import redis

    client = redis.Redis(port=server.port)
    deadline = time.monotonic() + timeout_s
    try:
        while not any(True for _ in client.scan_iter(match="cache:v1:*")):
            assert time.monotonic() < deadline, "no cache entry reached Redis"
            time.sleep(0.02)
    finally:
        client.close()


def test_replicas_share_entries_and_a_replica_without_redis_serves_misses(
        replicas: tuple[GatewayProcess, GatewayProcess, RoundRobinProxy],
        redis_server: RedisServer) -> None:
    a, b, proxy = replicas
    key = a.create_key(name="replicated", team="restorers")["key"]
    text = f"mail ann.lee@example.com about {uuid.uuid4().hex}"
    first = chat(a, key, text)
    _wait_for_entries(redis_server)  # written in the background, after A's answer
    shared = chat(b, key, text)
    assert [first.headers["x-gateway-cache"], shared.headers["x-gateway-cache"]] == \
        ["MISS", "HIT"]
    assert shared.json()["choices"][0]["message"]["content"] == f"fake: {text}"

    import redis

    client = redis.Redis(port=redis_server.port)
    try:
        values = [client.get(k) for k in client.scan_iter(match="cache:v1:*")]
    finally:
        client.close()
    assert values and all(b"ann.lee@example.com" not in v for v in values if v)
    assert any(b"[EMAIL_1]" in v for v in values if v)

    proxy.stop()  # B's Redis is gone (limits and cache alike); A's is not
    down = [chat(b, key, text) for _ in range(3)]
    assert [r.status_code for r in down] == [200, 200, 200]
    assert {r.headers["x-gateway-cache"] for r in down} == {"MISS"}
    assert down[0].json()["choices"][0]["message"]["content"] == f"fake: {text}"
    hit = chat(a, key, text)
    assert hit.status_code == 200 and hit.headers["x-gateway-cache"] == "HIT"
