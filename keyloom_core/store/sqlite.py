"""A store in one SQLite file: the embedded default for the processes of one host."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.to_thread

from .._sqlite import connect
from ._base import SessionRecord, StoreUnavailableError

if TYPE_CHECKING:
    from ..tokens._store import TokenStore

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS keyloom_used_states (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keyloom_sessions (
    ns TEXT NOT NULL,
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    idle_ttl REAL NOT NULL,
    PRIMARY KEY (ns, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keyloom_sessions_user ON keyloom_sessions (ns, user_id);
CREATE TABLE IF NOT EXISTS keyloom_counters (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    count INTEGER NOT NULL,
    reset_at REAL NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
"""
# Accepted when new, or when the earlier use has expired (its state is refused anyway).
_USE_ONCE: Final = """
INSERT INTO keyloom_used_states (ns, key, expires_at) VALUES (?, ?, ?)
ON CONFLICT (ns, key) DO UPDATE SET expires_at = excluded.expires_at
WHERE keyloom_used_states.expires_at <= ?
"""
_CREATE: Final = """
INSERT OR REPLACE INTO keyloom_sessions
    (ns, id, user_id, record, created_at, expires_at, last_seen_at, idle_ttl)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_GET: Final = (
    "SELECT record, last_seen_at FROM keyloom_sessions WHERE ns = ? AND id = ? "
    "AND expires_at > ? AND last_seen_at + idle_ttl > ?"
)
_TOUCH: Final = "UPDATE keyloom_sessions SET last_seen_at = ? WHERE ns = ? AND id = ?"
_DELETE: Final = "DELETE FROM keyloom_sessions WHERE ns = ? AND id = ?"
_LIST: Final = (
    "SELECT record, last_seen_at FROM keyloom_sessions WHERE ns = ? AND user_id = ? "
    "AND expires_at > ? AND last_seen_at + idle_ttl > ? ORDER BY created_at"
)
_DELETE_USER: Final = "DELETE FROM keyloom_sessions WHERE ns = ? AND user_id = ?"
_HIT: Final = """
INSERT INTO keyloom_counters (ns, key, count, reset_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (ns, key) DO UPDATE SET
    count = CASE WHEN keyloom_counters.reset_at <= ?5 THEN ?3
                 ELSE keyloom_counters.count + ?3 END,
    reset_at = CASE WHEN keyloom_counters.reset_at <= ?5 THEN excluded.reset_at
                    ELSE keyloom_counters.reset_at END
RETURNING count, reset_at
"""
_PURGE: Final = (
    "DELETE FROM keyloom_used_states WHERE expires_at <= ?1",
    "DELETE FROM keyloom_counters WHERE reset_at <= ?1",
    "DELETE FROM keyloom_sessions WHERE expires_at <= ?1 OR last_seen_at + idle_ttl <= ?1",
)
_PURGE_EVERY: Final = 60.0


class SQLiteStore:
    """A :class:`~keyloom_core.store.Store` in an SQLite file, shared by a host's processes.

    The file is created with mode ``0600`` and opened in WAL mode (readers never wait for
    the writer). Every call runs in a worker thread, one at a time per process, on this
    store's one connection, so the event loop never blocks; every write is one atomic
    statement (``INSERT … ON CONFLICT … RETURNING``), never a transaction held open. A
    write that finds the file locked by another process waits up to *busy_timeout*
    seconds, then raises :class:`~keyloom_core.store.StoreUnavailableError` (a 503), never
    ``database is locked``. Ended sessions, expired states and counters are deleted once
    a minute by whichever process writes next.

    ``synchronous=NORMAL``: a committed write survives the process being killed; a power
    cut may lose the last moments of sessions (users sign in again), never corrupt the
    file. Tokens (:meth:`token_store`) go in the same file with ``synchronous=FULL``.

    :param path: the database file (created if missing, with its folder).
    :param namespace: the app's namespace, so several apps may share one file.
    :param busy_timeout: seconds to wait for another process's write.
    :param clock: the time source.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "app",
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.namespace = namespace
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._next_purge = 0.0

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, namespace={self.namespace!r})"

    async def __aenter__(self) -> SQLiteStore:
        await self._run(lambda _conn: None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the thread side -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return connect(
            self.path, busy_timeout=self._busy_timeout, schema=_SCHEMA, synchronous="NORMAL"
        )

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(self._call, fn, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:  # OSError: the file cannot be created
            msg = f"the SQLite store failed: {type(exc).__name__}"
            raise StoreUnavailableError(msg) from exc

    def _purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + _PURGE_EVERY
        for statement in _PURGE:
            conn.execute(statement, (now,))

    # -- the store -------------------------------------------------------------------------

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key*; ``False`` if it was used and has not expired."""
        now = self._clock()

        def use(conn: sqlite3.Connection) -> bool:
            self._purge(conn, now)
            return conn.execute(_USE_ONCE, (self.namespace, key, expires_at, now)).rowcount > 0

        return await self._run(use)

    async def create_session(self, record: SessionRecord) -> None:
        """Write *record* (one statement)."""
        now = self._clock()
        row = (
            self.namespace,
            record.id,
            record.user_id,
            record.to_json(),
            record.created_at,
            record.expires_at,
            record.last_seen_at,
            record.idle_ttl,
        )

        def create(conn: sqlite3.Connection) -> None:
            self._purge(conn, now)
            conn.execute(_CREATE, row)

        await self._run(create)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The live record, or ``None`` (one indexed read)."""
        now = self._clock()

        def get(conn: sqlite3.Connection) -> tuple[str, float] | None:
            row = conn.execute(_GET, (self.namespace, session_id, now, now)).fetchone()
            return None if row is None else (str(row[0]), float(row[1]))

        row = await self._run(get)
        return None if row is None else SessionRecord.from_json(row[0], last_seen_at=row[1])

    async def touch_session(self, session_id: str, last_seen_at: float) -> bool:
        """Move the last use; ``False`` if the session is gone."""

        def touch(conn: sqlite3.Connection) -> bool:
            return conn.execute(_TOUCH, (last_seen_at, self.namespace, session_id)).rowcount > 0

        return await self._run(touch)

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session."""

        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute(_DELETE, (self.namespace, session_id)).rowcount > 0

        return await self._run(delete)

    async def list_sessions(self, user_id: str) -> Sequence[SessionRecord]:
        """The user's live sessions, oldest first."""
        now = self._clock()

        def rows(conn: sqlite3.Connection) -> list[tuple[str, float]]:
            cursor = conn.execute(_LIST, (self.namespace, user_id, now, now))
            return [(str(r[0]), float(r[1])) for r in cursor.fetchall()]

        return [SessionRecord.from_json(t, last_seen_at=s) for t, s in await self._run(rows)]

    async def delete_user_sessions(self, user_id: str) -> int:
        """Delete every session of the user (one statement)."""

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(_DELETE_USER, (self.namespace, user_id)).rowcount

        return await self._run(delete)

    async def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count one event in *key*'s fixed window (one atomic upsert)."""
        now = self._clock()

        def hit(conn: sqlite3.Connection) -> tuple[int, float]:
            row = conn.execute(_HIT, (self.namespace, key, amount, now + window, now)).fetchone()
            return int(row[0]), float(row[1])

        return await self._run(hit)

    def token_store(self, *, secret: str, old_secrets: Sequence[str] = ()) -> TokenStore:
        """A :class:`~keyloom_core.tokens.SQLiteTokenStore` in the same file."""
        from ..tokens.sqlite import SQLiteTokenStore  # noqa: PLC0415

        return SQLiteTokenStore(
            self.path, secret=secret, old_secrets=old_secrets, busy_timeout=self._busy_timeout
        )

    async def aclose(self) -> None:
        """Close the connection (in its worker thread); the next call reopens it."""

        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shut, limiter=self._limiter)
