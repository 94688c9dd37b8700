"""Fresh PostgreSQL databases on the server `make test` started (skip with a reason elsewhere)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.support.gateway_proc import run_in_thread

PG_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
SKIP_REASON = ("GATEWAY_TEST_POSTGRES_URL is not set: run the suite with `make test`, which "
               "starts PostgreSQL on loopback")


def require_postgres() -> str:
    if not PG_URL:
        pytest.skip(SKIP_REASON)
    return PG_URL


def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def fresh_database() -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    import asyncpg

    base = require_postgres()
    name = "gw_" + uuid.uuid4().hex[:12]
    dsn = _admin_dsn(base)

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run_in_thread(create)
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        run_in_thread(drop)
