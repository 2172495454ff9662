"""A token store in an SQLite file: the embedded default for apps on one host."""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._sqlite import connect
from ._crypto import LegacyEntries, TokenCipher
from ._store import StoredGrant, TokenStoreError, hold_lease, rewrite_legacy

if TYPE_CHECKING:
    from ..models import TokenSet

__all__ = ["SQLiteTokenStore"]

log = logging.getLogger("keyloom.tokens")

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS keyloom_tokens (
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    refresh_expires_at REAL,
    PRIMARY KEY (provider, account)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keyloom_token_locks (
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (provider, account)
) WITHOUT ROWID;
"""
_GET: Final = "SELECT version, payload FROM keyloom_tokens WHERE provider = ? AND account = ?"
_VERSION: Final = "SELECT version FROM keyloom_tokens WHERE provider = ? AND account = ?"
_WRITE: Final = """
INSERT INTO keyloom_tokens (provider, account, version, payload, refresh_expires_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (provider, account) DO UPDATE SET
    version = excluded.version,
    payload = excluded.payload,
    refresh_expires_at = excluded.refresh_expires_at
"""
_DELETE: Final = "DELETE FROM keyloom_tokens WHERE provider = ? AND account = ?"
_DELETE_VERSION: Final = _DELETE + " AND version = ?"
_TAKE_LOCK: Final = """
INSERT INTO keyloom_token_locks (provider, account, owner, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (provider, account) DO UPDATE SET
    owner = excluded.owner, expires_at = excluded.expires_at
WHERE keyloom_token_locks.expires_at <= ?
"""
_RELEASE_LOCK: Final = (
    "DELETE FROM keyloom_token_locks WHERE provider = ? AND account = ? AND owner = ?"
)
_LEGACY: Final = "SELECT provider, account FROM keyloom_tokens WHERE substr(payload, 1, 1) = x'01'"
_PURGE: Final = (
    "DELETE FROM keyloom_tokens WHERE refresh_expires_at IS NOT NULL AND refresh_expires_at <= ?"
)


class SQLiteTokenStore:
    """A :class:`~keyloom_core.tokens.TokenStore` in an SQLite file, for the processes of a host.

    Tokens are encrypted (AES-256-GCM, see :class:`~keyloom_core.tokens.TokenCipher`); the
    provider id, account id, version and refresh-token expiry are stored in clear. The file
    is created with mode ``0600`` and opened on first use in WAL mode with
    ``synchronous=FULL`` (a committed rotated refresh token survives a power cut).

    The event loop never blocks: every SQLite call runs in a worker thread, one at a time,
    on this store's single connection. A write is one short ``BEGIN IMMEDIATE``
    transaction (read the version, encrypt bound to the next one, write), so the
    encrypted value always names the version it is stored under: an older value written
    back into the row does not decrypt.

    The refresh lock is a lease row in ``keyloom_token_locks``, taken by one atomic
    ``INSERT … ON CONFLICT DO UPDATE … WHERE expires_at <= now`` and polled while taken.
    SQLite's own write lock is held only for that statement, never across the provider
    call, so a slow refresh of one account does not stall writes for the others, and a
    crashed holder's lease expires after its ``ttl``.

    :param path: the database file (created if missing).
    :param secret: the current encryption secret (at least 32 characters); usually the app's
        Keyloom secret.
    :param old_secrets: previous secrets, still accepted for reading.
    :param busy_timeout: seconds an SQLite call waits for another process's write.
    :param clock: the time source of ``updated_at``.
    :param legacy_entries: entries in the earlier ``0x01`` format are ``"read"`` (the
        default), also ``"write"``-n, or ``"refuse"``-d; see
        :data:`~keyloom_core.tokens.LegacyEntries`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        secret: str,
        old_secrets: Sequence[str] = (),
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        legacy_entries: LegacyEntries = "read",
    ) -> None:
        self.path = Path(path)
        self._cipher = TokenCipher(secret, old_secrets, legacy_entries=legacy_entries)
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"SQLiteTokenStore({str(self.path)!r})"

    async def __aenter__(self) -> SQLiteTokenStore:
        await self._run(lambda _conn: None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the thread side -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return connect(
            self.path, busy_timeout=self._busy_timeout, schema=_SCHEMA, synchronous="FULL"
        )

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            msg = "the token store is closed"
            raise RuntimeError(msg)
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    async def _run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        provider_id: str | None = None,
        account_id: str | None = None,
    ) -> T:
        try:
            return await anyio.to_thread.run_sync(self._call, fn, limiter=self._limiter)
        except sqlite3.Error as exc:
            msg = f"the SQLite token store failed: {type(exc).__name__}: {exc}"
            raise TokenStoreError(msg, provider_id=provider_id, account_id=account_id) from exc

    # -- the store -------------------------------------------------------------------------

    async def get(self, provider_id: str, account_id: str) -> StoredGrant | None:
        """The stored grant, or ``None``.

        :raises TokenDecryptionError: written with a secret no longer configured.
        """

        def read(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = conn.execute(_GET, (provider_id, account_id)).fetchone()
            return None if row is None else (int(row[0]), bytes(row[1]))

        row = await self._run(read, provider_id, account_id)
        if row is None:
            return None
        version, blob = row
        return self._cipher.open_grant(blob, provider_id, account_id, version)

    async def put(
        self,
        provider_id: str,
        account_id: str,
        tokens: TokenSet,
        *,
        scopes: Iterable[str],
        if_version: int | None = None,
    ) -> StoredGrant | None:
        """Write the next version; with *if_version*, only over exactly that version."""
        grant = StoredGrant.new(provider_id, account_id, tokens, scopes, 0, now=self._clock())
        expiry = tokens.refresh_expires_at

        def write(conn: sqlite3.Connection) -> StoredGrant | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(_VERSION, (provider_id, account_id)).fetchone()
                current = None if row is None else int(row[0])
                if if_version is not None and current != if_version:
                    conn.execute("ROLLBACK")
                    return None
                written = attrs.evolve(grant, version=1 if current is None else current + 1)
                blob = self._cipher.seal(written)
                conn.execute(_WRITE, (provider_id, account_id, written.version, blob, expiry))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return written

        return await self._run(write, provider_id, account_id)

    async def delete(
        self, provider_id: str, account_id: str, *, if_version: int | None = None
    ) -> bool:
        """Remove the entry (only version *if_version*, when given)."""

        def remove(conn: sqlite3.Connection) -> bool:
            if if_version is None:
                cursor = conn.execute(_DELETE, (provider_id, account_id))
            else:
                cursor = conn.execute(_DELETE_VERSION, (provider_id, account_id, if_version))
            return cursor.rowcount > 0

        return await self._run(remove, provider_id, account_id)

    def lock(
        self, provider_id: str, account_id: str, *, ttl: float, wait: float
    ) -> AbstractAsyncContextManager[None]:
        """The account's refresh lock: a lease row shared by every process using the file."""
        owner = secrets.token_hex(16)

        def take(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(_TAKE_LOCK, (provider_id, account_id, owner, now + ttl, now))
            return cursor.rowcount > 0

        def release(conn: sqlite3.Connection) -> None:
            conn.execute(_RELEASE_LOCK, (provider_id, account_id, owner))

        return hold_lease(
            lambda: self._run(take, provider_id, account_id),
            lambda: self._run(release, provider_id, account_id),
            provider_id=provider_id,
            account_id=account_id,
            wait=wait,
        )

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete entries whose refresh token has expired; return how many."""
        when = time.time() if now is None else now

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute(_PURGE, (when,)).rowcount

        return await self._run(purge)

    async def legacy_accounts(self) -> list[tuple[str, str]]:
        """The ``(provider, account)`` of entries still in the earlier ``0x01`` format."""

        def scan(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return [(str(p), str(a)) for p, a in conn.execute(_LEGACY).fetchall()]

        return await self._run(scan)

    async def upgrade_legacy(self) -> int:
        """Rewrite every ``0x01`` entry in the current format; return how many.

        Run it once no worker of the earlier release is left, then switch to
        ``legacy_entries="refuse"``.

        :raises ConfigurationError: this store does not read and write with ``"read"``.
        """
        accounts = await self.legacy_accounts()
        return await rewrite_legacy(self, accounts, self._cipher.legacy_entries)

    async def aclose(self) -> None:
        """Close the connection (in its worker thread)."""

        def shut() -> None:
            conn, self._conn = self._conn, None
            self._closed = True
            if conn is not None:
                conn.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shut, limiter=self._limiter)
