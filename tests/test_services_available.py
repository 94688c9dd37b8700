"""In CI, `make test` (scripts/test-services.sh) must provide a real PostgreSQL and Redis.

Outside CI this file skips: a developer running plain `pytest` may have neither.
"""

import os

import pytest

pytestmark = pytest.mark.skipif(
    not os.environ.get("CI"),
    reason="CI is not set: service availability is only enforced in CI (make test)",
)


async def test_postgres_answers() -> None:
    import asyncpg

    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    assert url, (
        "GATEWAY_TEST_POSTGRES_URL is not set: scripts/test-services.sh did not start PostgreSQL"
    )
    conn = await asyncpg.connect(url, timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_redis_answers() -> None:
    import redis

    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    assert url, "GATEWAY_TEST_REDIS_URL is not set: scripts/test-services.sh did not start Redis"
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()
