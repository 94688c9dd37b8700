"""The database, as the CLI commands open it: usable, or one clear line and exit code 3.

`run_on_database(settings, work)` checks `GATEWAY_DATABASE_URL` before anything is opened: a
URL that is not a database URL, an SQLite file that does not exist (nothing is created: only
`gateway migrate` creates the database), a server that cannot be reached, or a schema that is
not at the latest migration each print one line on stderr and exit with `EXIT_DATABASE`, so a
script can tell "the database is not there" from "the audit chain is broken" (exit 1).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

from gateway.settings import Settings

EXIT_DATABASE = 3


class DatabaseUnusable(Exception):
    """Why a command cannot use the database (one line, no secret)."""


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say nothing of what it holds
        return "(not a database URL)"


def check_url(url: str, *, must_exist: bool = True) -> None:
    """Refuse a URL the gateway cannot use, and (`must_exist`) an SQLite file that does not
    exist: only `gateway migrate` creates the database."""
    from sqlalchemy.engine import make_url

    from gateway.storage.engine import async_url, is_sqlite

    try:
        async_url(url)
    except Exception:
        raise DatabaseUnusable("GATEWAY_DATABASE_URL is not a usable database URL: use "
                               "sqlite:///path/to/gateway.db or "
                               "postgresql://user:password@host/db") from None
    if is_sqlite(url):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise DatabaseUnusable("an in-memory SQLite database holds nothing to work on: "
                                   "set GATEWAY_DATABASE_URL to a file")
        if must_exist and not Path(database).is_file():
            raise DatabaseUnusable(
                f"no database at {Path(database).resolve()} (GATEWAY_DATABASE_URL is "
                f"{shown(url)}): run `gateway migrate` to create it, or point "
                "GATEWAY_DATABASE_URL at the gateway's database")


async def check_schema(engine: Any, url: str) -> None:
    """The schema must be at the latest migration (the gateway's own tables present)."""
    from sqlalchemy import inspect, text

    from gateway.migrate import head_revisions

    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            current: set[str] = set()
            if "alembic_version" in tables:
                rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
                current = {row[0] for row in rows}
    except (TimeoutError, OSError) as exc:
        raise DatabaseUnusable(f"cannot reach the database at {shown(url)} "
                               f"({type(exc).__name__})") from None
    except Exception as exc:
        if _is_connection_error(exc):
            raise DatabaseUnusable(f"cannot reach the database at {shown(url)} "
                                   f"({_reason(exc)})") from None
        raise
    heads = head_revisions()
    if not current:
        raise DatabaseUnusable(f"the database at {shown(url)} has no gateway schema: "
                               "run `gateway migrate`")
    if current != heads:
        raise DatabaseUnusable(f"the database at {shown(url)} is not at the latest schema "
                               f"({', '.join(sorted(current))}; the latest is "
                               f"{', '.join(sorted(heads))}): run `gateway migrate`")


def _is_connection_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    name = type(exc).__name__
    return "Connect" in name or "Connection" in name or "InvalidPassword" in name \
        or "InvalidCatalogName" in name or isinstance(exc, OSError)


def _reason(exc: BaseException) -> str:
    """A short reason without the server's own text (it can echo the URL or a user name)."""
    inner = getattr(exc, "orig", None) or exc
    return type(inner).__name__


def fail(message: str) -> NoReturn:
    print(f"gateway: {message}", file=sys.stderr)
    raise SystemExit(EXIT_DATABASE)


def run_on_database(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `work(engine)` on the checked database; exit `EXIT_DATABASE` with one line if the
    database is missing, unreachable or not migrated (before or while the work runs)."""
    from gateway.storage.engine import create_engine

    url = settings.database_url

    async def main() -> Any:
        engine = create_engine(url, pool_size=1)
        try:
            await check_schema(engine, url)
            try:
                return await work(engine)
            except Exception as exc:
                if _is_connection_error(exc):
                    raise DatabaseUnusable(f"the database at {shown(url)} failed "
                                           f"({_reason(exc)})") from None
                raise
        finally:
            await engine.dispose()

    try:
        check_url(url)
        return asyncio.run(main())
    except DatabaseUnusable as exc:
        fail(str(exc))
