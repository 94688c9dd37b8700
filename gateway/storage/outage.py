"""Which exceptions mean "the database cannot be reached", as opposed to a bug.

A stopped PostgreSQL surfaces as a bare `ConnectionRefusedError` from asyncpg's connect (not
wrapped by SQLAlchemy), a dropped connection mid-query as SQLAlchemy's `InterfaceError` or
`OperationalError`, a server still starting as asyncpg's `CannotConnectNowError`, a full
pool as SQLAlchemy's `TimeoutError`. Callers turn these into a 503 (`auth_unavailable`,
`store_unavailable`): during a store outage no answer is a 500.
"""

from __future__ import annotations

import logging

from sqlalchemy import exc as sa

from gateway.errors import GatewayError, InternalError, StoreUnavailable

try:  # asyncpg is a dependency, but keep this module importable without it
    from asyncpg import exceptions as pg
except ImportError:  # pragma: no cover
    _PG: tuple[type[BaseException], ...] = ()
else:
    _PG = (pg.PostgresConnectionError, pg.InterfaceError, pg.CannotConnectNowError,
           pg.TooManyConnectionsError, pg.AdminShutdownError, pg.CrashShutdownError)

STORE_OUTAGES: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, sa.OperationalError, sa.InterfaceError, sa.DisconnectionError,
    sa.TimeoutError, *_PG)


def is_store_outage(exc: BaseException) -> bool:
    """True when `exc` says the database is unreachable, down or overloaded."""
    if isinstance(exc, STORE_OUTAGES):
        return True
    return isinstance(exc, sa.DBAPIError) and bool(exc.connection_invalidated)


def unexpected_error(exc: Exception, log: logging.Logger, what: str) -> GatewayError:
    """The answer to an exception no handler expected: 503 `store_unavailable` when the
    database cannot be reached (logged as one line: an outage is not a bug), else 500
    (logged with its trace)."""
    if is_store_outage(exc):
        log.error("database unreachable", extra={"reason": type(exc).__name__})
        return StoreUnavailable("the database cannot be reached; retry shortly")
    log.error(what, exc_info=exc)
    return InternalError("the gateway failed to handle this request")
