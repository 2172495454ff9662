"""Keyloom's shared store in SQL: PostgreSQL for many machines without Redis (or SQLite)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import ColumnElement, Float, Table, bindparam, case, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyloom_core.store import SessionRecord, StoreUnavailableError

from ._sql import FAILURES, autocommit, insert, store_engine
from .models import (
    StoreCounterRow,
    StoreSessionRow,
    StoreStateRow,
    StoreTokenLockRow,
    StoreTokenRow,
)

if TYPE_CHECKING:
    from keyloom_core.tokens import TokenStore

__all__ = ["SQLAlchemyStore"]

log = logging.getLogger("keyloom.sqlalchemy")

T = TypeVar("T")

_STATES: Final[Table] = StoreStateRow.__table__  # type: ignore[assignment]
_SESSIONS: Final[Table] = StoreSessionRow.__table__  # type: ignore[assignment]
_COUNTERS: Final[Table] = StoreCounterRow.__table__  # type: ignore[assignment]
_TOKENS: Final[Table] = StoreTokenRow.__table__  # type: ignore[assignment]
_LOCKS: Final[Table] = StoreTokenLockRow.__table__  # type: ignore[assignment]


def _ends(expires_at: Any, last_seen_at: Any, idle_ttl: Any) -> ColumnElement[float]:
    """The earlier of the absolute and the idle end, in SQL (``LEAST`` is not in SQLite)."""
    idle_end = last_seen_at + idle_ttl
    return case((expires_at < idle_end, expires_at), else_=idle_end)


class _Statements:
    """The store's statements, built once: SQLAlchemy compiles each once, calls bind values."""

    def __init__(self, engine: AsyncEngine) -> None:
        p = bindparam
        states = insert(engine, _STATES).values(ns=p("p_ns"), key=p("p_key"), expires_at=p("p_at"))
        self.use_once = states.on_conflict_do_update(
            index_elements=[_STATES.c.ns, _STATES.c.key],
            set_={"expires_at": states.excluded.expires_at},
            where=_STATES.c.expires_at <= p("p_now", type_=Float()),
        ).returning(_STATES.c.key)

        columns = [c.name for c in _SESSIONS.columns]
        sessions = insert(engine, _SESSIONS).values({name: p(f"p_{name}") for name in columns})
        self.create_session = sessions.on_conflict_do_update(
            index_elements=[_SESSIONS.c.ns, _SESSIONS.c.id],
            set_={n: sessions.excluded[n] for n in columns if n not in {"ns", "id"}},
        )
        one = (_SESSIONS.c.ns == p("p_ns")) & (_SESSIONS.c.id == p("p_id"))
        live = (_SESSIONS.c.expires_at > p("p_now", type_=Float())) & (
            _SESSIONS.c.last_seen_at + _SESSIONS.c.idle_ttl > p("p_now", type_=Float())
        )
        self.get_session = select(_SESSIONS.c.record, _SESSIONS.c.last_seen_at).where(one, live)
        seen = p("p_seen", type_=Float())
        self.touch_session = (
            update(_SESSIONS)
            .where(one)
            .values(
                last_seen_at=seen,
                ends_at=_ends(_SESSIONS.c.expires_at, seen, _SESSIONS.c.idle_ttl),
            )
            .returning(_SESSIONS.c.id)
        )
        self.delete_session = delete(_SESSIONS).where(one).returning(_SESSIONS.c.id)
        users = (_SESSIONS.c.ns == p("p_ns")) & (_SESSIONS.c.user_id == p("p_user_id"))
        self.list_sessions = (
            select(_SESSIONS.c.record, _SESSIONS.c.last_seen_at)
            .where(users, live)
            .order_by(_SESSIONS.c.created_at, _SESSIONS.c.id)
        )
        self.delete_user_sessions = delete(_SESSIONS).where(users).returning(_SESSIONS.c.id)

        counters = insert(engine, _COUNTERS).values(
            ns=p("p_ns"), key=p("p_key"), hits=p("p_n"), reset_at=p("p_reset")
        )
        over = _COUNTERS.c.reset_at <= p("p_now", type_=Float())
        added = _COUNTERS.c.hits + counters.excluded.hits
        self.hit = counters.on_conflict_do_update(
            index_elements=[_COUNTERS.c.ns, _COUNTERS.c.key],
            set_={
                "hits": case((over, counters.excluded.hits), else_=added),
                "reset_at": case((over, counters.excluded.reset_at), else_=_COUNTERS.c.reset_at),
            },
        ).returning(_COUNTERS.c.hits, _COUNTERS.c.reset_at)


class SQLAlchemyStore:
    """A :class:`~keyloom_core.store.Store` in PostgreSQL (or SQLite), on SQLAlchemy's asyncio.

    Every process and every machine of an app that reaches the database shares its used
    login states, server-side sessions, rate-limit counters and (:meth:`token_store`)
    encrypted tokens: a deployment with PostgreSQL and no Redis runs on many machines::

        from keyloom_sqlalchemy import SQLAlchemyStore

        keyloom = define_keyloom(
            providers=["tiktok"],
            store=SQLAlchemyStore("postgresql+asyncpg://app@db/app"),
        )

    The tables (``keyloom_store_*``, in :data:`keyloom_sqlalchemy.metadata`) must exist:
    ``keyloom db init URL``, :func:`~keyloom_sqlalchemy.create_tables`, or the app's own
    migrations. Every operation is one statement, atomic by itself, run outside any
    transaction (one round trip):

    - a login state is recorded by ``INSERT … ON CONFLICT DO UPDATE … WHERE expired
      RETURNING``: of any number of concurrent uses, on any machines, exactly one gets a
      row back;
    - a rate-limit hit is one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (the row lock
      serialises concurrent hits; none is lost);
    - renewing a session is an ``UPDATE`` of an existing row: it never recreates a session
      that a logout or ``revoke_all`` deleted, on whichever machine;
    - reads filter out what has ended, so expiry needs no clean-up to be correct; once a
      minute per process, the next write also deletes up to *purge_batch* ended rows of each
      table, by index (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so processes purging at
      once neither wait for nor deadlock with each other).

    Expiry uses each process's clock, as every Keyloom store does: keep the machines' clocks
    synchronised (NTP). Database failures raise
    :class:`~keyloom_core.store.StoreUnavailableError` (``503``); nothing secret (no URL,
    no key, no session id) is in its message.

    :param database: a URL (``postgresql+asyncpg://user:password@host/db``,
        ``sqlite+aiosqlite:///keyloom.db``; the store owns that engine and :meth:`aclose`
        disposes of it) or an app's ``AsyncEngine`` (shared pool; the app disposes of it).
    :param namespace: the app's namespace, so several apps may share one database.
    :param clock: the time source.
    :param purge_every: seconds between two purges by this process.
    :param purge_batch: the most rows of each table one purge deletes.
    :param engine_options: for a URL, options of ``create_async_engine`` over the store's
        defaults, e.g. ``{"pool_size": 5, "max_overflow": 5}``: each process holds up to
        ``pool_size + max_overflow`` connections (5 + 10 by default), and all of them
        together must stay under the server's ``max_connections``.
    """

    def __init__(
        self,
        database: str | AsyncEngine,
        *,
        namespace: str = "app",
        clock: Callable[[], float] = time.time,
        purge_every: float = 60.0,
        purge_batch: int = 1000,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._owned = isinstance(database, str)
        self.engine = (
            store_engine(database, engine_options) if isinstance(database, str) else database
        )
        self._auto = autocommit(self.engine)
        self._sql = _Statements(self.engine)
        self.namespace = namespace
        self._clock = clock
        self._purge_every = purge_every
        self._purge_batch = purge_batch
        self._next_purge = 0.0

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self.engine.dialect.name}, namespace={self.namespace!r})"

    async def __aenter__(self) -> SQLAlchemyStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def dialect(self) -> str:
        """The database's dialect name (``"postgresql"`` or ``"sqlite"``)."""
        return str(self.engine.dialect.name)

    # -- running one statement --------------------------------------------------------------

    async def _run(
        self,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        purge: bool = False,
        commit: bool = True,
    ) -> T:
        try:
            async with self._auto.connect() as conn:
                if purge:
                    await self._maybe_purge(conn)
                result = await fn(conn)
                if commit:  # a no-op in autocommit, unless a listener began a transaction
                    await conn.commit()
                return result
        except FAILURES as exc:
            log.warning("keyloom-sqlalchemy: the store failed: %s", type(exc).__name__)
            msg = f"the SQL store failed: {type(exc).__name__}"
            raise StoreUnavailableError(msg) from None

    async def _maybe_purge(self, conn: AsyncConnection) -> None:
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + self._purge_every
        try:
            await self._purge(conn, now)
        except FAILURES as exc:  # housekeeping never fails a request; the next one retries
            log.warning("keyloom-sqlalchemy: the purge failed: %s", type(exc).__name__)

    async def purge(self, now: float | None = None) -> int:
        """Delete up to *purge_batch* ended rows of each table; how many were deleted.

        The store calls it itself once per *purge_every* seconds of use; a periodic job may
        call it too. Ended rows are never read as live in between.
        """
        when = self._clock() if now is None else now
        return await self._run(lambda conn: self._purge(conn, when))

    async def _purge(self, conn: AsyncConnection, now: float) -> int:
        ended: list[tuple[Table, ColumnElement[bool]]] = [
            (_STATES, _STATES.c.expires_at <= now),
            (_COUNTERS, _COUNTERS.c.reset_at <= now),
            (_SESSIONS, _SESSIONS.c.ends_at <= now),
            (_LOCKS, _LOCKS.c.expires_at <= now),
            # as Redis does: an account's tokens go a minute after its refresh token ends
            (_TOKENS, _TOKENS.c.refresh_expires_at <= now - 60.0),
        ]
        deleted = 0
        for table, condition in ended:
            key = tuple_(*table.primary_key.columns)
            batch = (
                select(*table.primary_key.columns)
                .where(condition)
                .limit(self._purge_batch)
                .with_for_update(skip_locked=True)
            )
            result = await conn.execute(delete(table).where(key.in_(batch)))
            deleted += max(0, result.rowcount)
        return deleted

    # -- login states ------------------------------------------------------------------------

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key*; ``False`` if it was used and has not expired (exactly one wins)."""
        params = {"p_ns": self.namespace, "p_key": key, "p_at": expires_at, "p_now": self._clock()}

        async def use(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.use_once, params)).first() is not None

        return await self._run(use, purge=True)

    # -- sessions ----------------------------------------------------------------------------

    async def create_session(self, record: SessionRecord) -> None:
        """Write *record* (one statement)."""
        params = {
            "p_ns": self.namespace,
            "p_id": record.id,
            "p_user_id": record.user_id,
            "p_record": record.to_json(),
            "p_created_at": record.created_at,
            "p_expires_at": record.expires_at,
            "p_last_seen_at": record.last_seen_at,
            "p_idle_ttl": record.idle_ttl,
            "p_ends_at": record.valid_until,
        }

        async def create(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.create_session, params)

        await self._run(create, purge=True)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The live record, or ``None`` (one read by primary key)."""
        params = {"p_ns": self.namespace, "p_id": session_id, "p_now": self._clock()}

        async def get(conn: AsyncConnection) -> tuple[str, float] | None:
            row = (await conn.execute(self._sql.get_session, params)).first()
            return None if row is None else (str(row[0]), float(row[1]))

        found = await self._run(get, commit=False)
        return None if found is None else SessionRecord.from_json(found[0], last_seen_at=found[1])

    async def touch_session(self, session_id: str, last_seen_at: float) -> bool:
        """Move the last use; ``False`` if the session is gone (never recreates it)."""
        params = {"p_ns": self.namespace, "p_id": session_id, "p_seen": last_seen_at}

        async def touch(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.touch_session, params)).first() is not None

        return await self._run(touch)

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session; ``True`` if one was deleted."""
        params = {"p_ns": self.namespace, "p_id": session_id}

        async def remove(conn: AsyncConnection) -> bool:
            return (await conn.execute(self._sql.delete_session, params)).first() is not None

        return await self._run(remove)

    async def list_sessions(self, user_id: str) -> Sequence[SessionRecord]:
        """The user's live sessions, oldest first."""
        params = {"p_ns": self.namespace, "p_user_id": user_id, "p_now": self._clock()}

        async def rows(conn: AsyncConnection) -> list[tuple[str, float]]:
            found = await conn.execute(self._sql.list_sessions, params)
            return [(str(r[0]), float(r[1])) for r in found]

        listed = await self._run(rows, commit=False)
        return [SessionRecord.from_json(t, last_seen_at=s) for t, s in listed]

    async def delete_user_sessions(self, user_id: str) -> int:
        """Delete every session of the user (one statement); how many were deleted."""
        params = {"p_ns": self.namespace, "p_user_id": user_id}

        async def remove(conn: AsyncConnection) -> int:
            return len((await conn.execute(self._sql.delete_user_sessions, params)).all())

        return await self._run(remove)

    # -- rate limits -------------------------------------------------------------------------

    async def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count *amount* events in *key*'s fixed window (one atomic upsert)."""
        now = self._clock()
        params = {
            "p_ns": self.namespace,
            "p_key": key,
            "p_n": amount,
            "p_reset": now + window,
            "p_now": now,
        }

        async def count(conn: AsyncConnection) -> tuple[int, float]:
            row = (await conn.execute(self._sql.hit, params)).one()
            return int(row[0]), float(row[1])

        return await self._run(count, purge=True)

    # -- tokens, and the end -----------------------------------------------------------------

    def token_store(self, *, secret: str, old_secrets: Sequence[str] = ()) -> TokenStore:
        """A :class:`~keyloom_sqlalchemy.SQLAlchemyTokenStore` on this engine and namespace."""
        from .tokens import SQLAlchemyTokenStore  # noqa: PLC0415 - needs 'cryptography'

        return SQLAlchemyTokenStore(
            self.engine, secret=secret, old_secrets=old_secrets, namespace=self.namespace
        )

    async def aclose(self) -> None:
        """Dispose of the engine's connections if the store made it (it reconnects if used)."""
        if self._owned:
            await self.engine.dispose()
