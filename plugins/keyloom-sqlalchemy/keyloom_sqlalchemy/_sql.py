"""What the store and the token store share: their engine, upserts per dialect, failures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from keyloom_core.errors import ConfigurationError

__all__ = ["DIALECTS", "FAILURES", "autocommit", "insert", "store_engine"]

#: The databases whose upsert (``INSERT … ON CONFLICT … DO UPDATE … WHERE … RETURNING``)
#: the store relies on: PostgreSQL (9.5+) and SQLite (3.35+).
DIALECTS: Final = frozenset({"postgresql", "sqlite"})

#: What a database that cannot answer raises (down, unreachable, a missing table, its pool
#: exhausted, a statement timeout): a typed 503, never a 500 or a driver's traceback.
FAILURES: Final = (SQLAlchemyError, OSError, TimeoutError)


def store_engine(
    url: str, options: Mapping[str, Any] | None = None, *, busy_timeout: float = 10.0
) -> AsyncEngine:
    """An engine for the store from a URL (``postgresql+asyncpg://…``, ``sqlite+aiosqlite://…``).

    PostgreSQL: connections time out after 5 s, statements after 10 s, and a request waits
    at most 5 s for a pooled connection. SQLite: WAL, and a write waits up to
    *busy_timeout* seconds for another process's. *options* go to ``create_async_engine``
    (``pool_size``, ``max_overflow``…) over these defaults.
    """
    extra = dict(options or {})
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **{"connect_args": {"timeout": busy_timeout}, **extra})

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection: Any, _record: object) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    defaults: dict[str, Any] = {"pool_timeout": 5.0, "pool_recycle": 1800}
    if url.startswith("postgresql+asyncpg"):
        defaults["connect_args"] = {"timeout": 5.0, "command_timeout": 10.0}
    return create_async_engine(url, **{**defaults, **extra})


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """*engine* (same pool) with every statement its own transaction.

    Every store operation is one statement, atomic by itself, so no transaction is held
    open across a round trip (and none is begun: one round trip per operation).

    :raises ConfigurationError: a database other than PostgreSQL or SQLite.
    """
    if engine.dialect.name not in DIALECTS:
        msg = f"the SQL store runs on PostgreSQL or SQLite, not {engine.dialect.name}"
        raise ConfigurationError(msg)
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def insert(engine: AsyncEngine, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into *table* with the dialect's ``ON CONFLICT`` clauses."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
