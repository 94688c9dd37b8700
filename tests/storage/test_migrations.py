"""`gateway migrate` on SQLite and PostgreSQL, and proof that tables.py and migrations agree."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from gateway.storage.engine import create_engine
from gateway.storage.schema import metadata
from tests.support.gateway_proc import GATEWAY_BIN, run_in_thread
from tests.support.postgres import fresh_database


def _migrate(url: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE_URL"] = url
    out = subprocess.run([str(GATEWAY_BIN), "migrate"], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def _schema_diff(url: str) -> tuple[list, set[str]]:
    async def check() -> tuple[list, set[str]]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                def inner(sync_conn):  # type: ignore[no-untyped-def]
                    ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                    return compare_metadata(ctx, metadata), set(inspect(sync_conn)
                                                                 .get_table_names())
                return await conn.run_sync(inner)
        finally:
            await engine.dispose()

    return run_in_thread(check)


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from fresh_database()


def test_sqlite_migrate_from_any_directory_matches_models(tmp_path: Path) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    url = f"sqlite:///{tmp_path}/db/gw.db"
    _migrate(url, elsewhere)
    _migrate(url, tmp_path)  # idempotent
    diff, tables = _schema_diff(url)
    assert diff == []
    assert {"api_keys", "teams", "audit_events", "audit_bodies", "alembic_version"} <= tables


@pytest.mark.postgres
def test_postgres_migrate_matches_models(pg_url: str, tmp_path: Path) -> None:
    _migrate(pg_url, tmp_path)
    diff, tables = _schema_diff(pg_url)
    assert diff == []
    assert {"api_keys", "teams", "audit_events", "audit_bodies"} <= tables
