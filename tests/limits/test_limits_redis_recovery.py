"""Redis stops and comes back (empty: no persistence) under two real replicas with
`on_redis_error: local_share`: no 60-second window around the outage admits more than the
key's rpm.

Two `gateway serve` processes share a fresh PostgreSQL database and a redis-server of this
test's own (stopped and restarted on the same port by its PID). Requests alternate between
the replicas through the official `openai` client. What each replica admitted through Redis
before the outage counts against its share during it; what each admitted during it is
carried into Redis when Redis is back, at its age, so it leaves the window when it would
have. Needs PostgreSQL (`make test`) and a redis-server binary; skipped with the reason
elsewhere. Takes about a minute: the window is the real 60 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway_proc import GatewayProcess
from tests.support.postgres import fresh_database
from tests.support.redis_server import RedisServer, running_redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

RPM = 60
CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
limits: {on_redis_error: local_share, replicas: 2}
"""
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    yield from running_redis()


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer) -> Iterator[list[GatewayProcess]]:
    for url in fresh_database():
        procs: list[GatewayProcess] = []
        try:
            for i in range(2):
                proc = GatewayProcess(tmp_path / f"r{i}", CONFIG, database_url=url,
                                      env={"GATEWAY_REDIS_URL": redis_server.url,
                                           "GATEWAY_REPLICA_ID": f"r{i}"})
                procs.append(proc.start(migrate=i == 0, timeout_s=60))
            yield procs
        finally:
            for proc in procs:
                proc.stop()


class Traffic:
    """Requests alternating between the replicas; the times of the admitted ones."""

    def __init__(self, replicas: list[GatewayProcess], key: str) -> None:
        self.clients = [openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0,
                                      timeout=30) for gw in replicas]
        self.admitted: list[float] = []
        self.sent = 0

    def send(self, count: int) -> int:
        """Send `count` requests; how many were admitted (the rest must be 429)."""
        admitted = 0
        for _ in range(count):
            client = self.clients[self.sent % len(self.clients)]
            self.sent += 1
            try:
                client.chat.completions.create(model="demo", messages=HI)
            except openai.RateLimitError:
                continue
            self.admitted.append(time.monotonic())
            admitted += 1
        return admitted

    def busiest_window(self, length_s: float) -> int:
        times = self.admitted
        return max((sum(1 for u in times if t <= u < t + length_s) for t in times), default=0)


def redis_state(gw: GatewayProcess) -> str:
    return httpx.get(gw.url + "/readyz", timeout=10).json()["checks"]["redis"]


def test_no_window_around_a_redis_outage_admits_more_than_the_limit(
        replicas: list[GatewayProcess], redis_server: RedisServer) -> None:
    key = replicas[0].create_key(name="recovery", rpm=RPM)["key"]
    traffic = Traffic(replicas, key)
    assert traffic.send(20) == 20  # through Redis: 10 on each replica

    redis_server.stop()
    time.sleep(5)  # the outage's admissions come well after the first 20 (see the end)
    # each replica's share is 30, of which it admitted 10 through Redis in this minute
    assert traffic.send(60) == 40

    redis_server.start()  # empty: what Redis knew of the first 20 is gone too
    deadline = time.monotonic() + 30
    while any(redis_state(gw) != "ok" for gw in replicas):
        assert time.monotonic() < deadline, [redis_state(gw) for gw in replicas]
        time.sleep(0.2)
    # the 60 admitted in this minute are in Redis again, from both replicas
    assert traffic.send(40) == 0
    assert traffic.busiest_window(59.5) == RPM

    # each entry leaves the window 60 s after it was admitted, not after it was carried:
    # a minute after the first 20, their room is free again, and only theirs
    assert traffic.admitted[20] - traffic.admitted[19] > 4
    time.sleep(max(0.0, traffic.admitted[19] + 60.5 - time.monotonic()))
    assert traffic.admitted[20] + 60 > time.monotonic() + 2, "the test ran too slowly"
    assert traffic.send(30) == 20
    assert traffic.busiest_window(59.5) <= RPM
