"""Keyloom's encrypted token store in SQL, for a TokenManager on many machines.

Needs ``cryptography`` (``pip install 'keyloom-core[tokens]'``), as every encrypting token
store does.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import attrs
from sqlalchemy import ColumnElement, Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from keyloom_core.tokens import (
    StoredGrant,
    TokenCipher,
    TokenStoreError,
    hold_lease,
)

from ._sql import FAILURES, autocommit, insert, store_engine
from .models import StoreTokenLockRow, StoreTokenRow

if TYPE_CHECKING:
    from keyloom_core.models import TokenSet

__all__ = ["SQLAlchemyTokenStore"]

log = logging.getLogger("keyloom.sqlalchemy")

T = TypeVar("T")

_TOKENS: Final[Table] = StoreTokenRow.__table__  # type: ignore[assignment]
_LOCKS: Final[Table] = StoreTokenLockRow.__table__  # type: ignore[assignment]
_PUT_ATTEMPTS: Final = 32
_PUT_BACKOFF: Final = 0.002  # seconds, doubled per attempt up to 64 times


class SQLAlchemyTokenStore:
    """A :class:`~keyloom_core.tokens.TokenStore` in PostgreSQL (or SQLite).

    Usually made by :meth:`keyloom_sqlalchemy.SQLAlchemyStore.token_store`,
    on the store's engine and namespace. Tokens are encrypted (AES-256-GCM, see
    :class:`~keyloom_core.tokens.TokenCipher`), bound to the provider, the account and the
    version they are stored under, so a value written back over a newer one does not
    decrypt. The provider id, account id, version and refresh-token expiry are in clear.

    Every write is one statement: a compare-and-swap is an ``UPDATE … WHERE version = n``,
    a new entry an ``INSERT … ON CONFLICT DO NOTHING``; an unconditional write reads the
    version and swaps over it, retrying (with jittered back-off) while another process
    wins. The refresh lock is a lease row taken by one
    ``INSERT … ON CONFLICT DO UPDATE … WHERE expired RETURNING``, polled while taken and
    deleted only by its owner; no transaction is held across the provider call, and a
    crashed holder's lease ends after its ``ttl``.

    :param database: a URL (the store owns and disposes of that engine) or an
        ``AsyncEngine`` (borrowed).
    :param secret: the current encryption secret (at least 32 characters).
    :param old_secrets: previous secrets, still accepted for reading.
    :param namespace: the app's namespace.
    :param clock: the time source of ``updated_at`` and of lock leases.
    :param engine_options: for a URL, options of ``create_async_engine``.
    """

    def __init__(
        self,
        database: str | AsyncEngine,
        *,
        secret: str,
        old_secrets: Sequence[str] = (),
        namespace: str = "app",
        clock: Callable[[], float] = time.time,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._owned = isinstance(database, str)
        self.engine = (
            store_engine(database, engine_options) if isinstance(database, str) else database
        )
        self._auto = autocommit(self.engine)
        self._cipher = TokenCipher(secret, old_secrets)
        self.namespace = namespace
        self._clock = clock

    def __repr__(self) -> str:
        return f"SQLAlchemyTokenStore({self.engine.dialect.name}, namespace={self.namespace!r})"

    async def __aenter__(self) -> SQLAlchemyTokenStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _run(
        self,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        provider_id: str | None,
        account_id: str | None,
        *,
        locked: bool = False,
    ) -> T:
        """Run *fn* on a connection: autocommit, or in one transaction when *locked*."""
        try:
            async with (self.engine if locked else self._auto).connect() as conn:
                result = await fn(conn)
                await conn.commit()  # in autocommit a no-op, unless a listener began one
                return result
        except FAILURES as exc:
            log.warning("keyloom-sqlalchemy: the token store failed: %r", exc.__cause__ or exc)
            msg = f"the SQL token store failed: {type(exc).__name__}"
            raise TokenStoreError(msg, provider_id=provider_id, account_id=account_id) from None

    def _row(self, table: Table, provider_id: str, account_id: str) -> ColumnElement[bool]:
        return (
            (table.c.ns == self.namespace)
            & (table.c.provider == provider_id)
            & (table.c.account == account_id)
        )

    async def get(self, provider_id: str, account_id: str) -> StoredGrant | None:
        """The stored grant, or ``None``.

        :raises TokenDecryptionError: written with a secret no longer configured.
        """
        stmt = select(_TOKENS.c.version, _TOKENS.c.payload).where(
            self._row(_TOKENS, provider_id, account_id)
        )

        async def read(conn: AsyncConnection) -> tuple[int, bytes] | None:
            row = (await conn.execute(stmt)).first()
            return None if row is None else (int(row[0]), bytes(row[1]))

        found = await self._run(read, provider_id, account_id)
        if found is None:
            return None
        version, blob = found
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
        """Write the next version; with *if_version*, only over exactly that version.

        :raises TokenStoreError: an unconditional write kept losing to other writers.
        """
        grant = StoredGrant.new(provider_id, account_id, tokens, scopes, 0, now=self._clock())
        if if_version is not None:
            return await self._write(grant, if_version) if if_version >= 1 else None
        for attempt in range(_PUT_ATTEMPTS):
            locked = self.engine.dialect.name != "sqlite"  # SQLite: BEGIN IMMEDIATE, below
            written = await self._run(
                lambda conn: self._replace(conn, grant), provider_id, account_id, locked=locked
            )
            if written is not None:
                return written
            # another first write of this account won the insert: back off (jitter), retry
            await anyio.sleep(random.uniform(0, _PUT_BACKOFF * 2 ** min(attempt, 6)))
        msg = "the token entry kept changing while it was being written"
        raise TokenStoreError(msg, provider_id=provider_id, account_id=account_id)

    async def _replace(self, conn: AsyncConnection, grant: StoredGrant) -> StoredGrant | None:
        """Write *grant* over whatever version is stored, holding the row meanwhile.

        One short transaction: the version is read with the row locked (``SELECT … FOR
        UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so concurrent writers of
        one account queue instead of retrying. ``None`` when another first write inserted
        the row meanwhile (the caller retries, then over that row).
        """
        row = self._row(_TOKENS, grant.provider_id, grant.account_id)
        read = select(_TOKENS.c.version).where(row).with_for_update()
        if self.engine.dialect.name != "sqlite":  # in a transaction already (see put)
            return await self._write_on(conn, grant, int(await conn.scalar(read) or 0))
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            written = await self._write_on(conn, grant, int(await conn.scalar(read) or 0))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.exec_driver_sql("ROLLBACK")
            raise
        await conn.exec_driver_sql("COMMIT")
        return written

    async def _write(self, grant: StoredGrant, expected: int) -> StoredGrant | None:
        """Write *grant* as version ``expected + 1`` over version *expected* (``0``: none)."""
        return await self._run(
            lambda conn: self._write_on(conn, grant, expected),
            grant.provider_id,
            grant.account_id,
        )

    async def _write_on(
        self, conn: AsyncConnection, grant: StoredGrant, expected: int
    ) -> StoredGrant | None:
        """One statement: *grant* as version ``expected + 1`` over *expected* (``0``: none)."""
        written = attrs.evolve(grant, version=expected + 1)
        provider_id, account_id = grant.provider_id, grant.account_id
        values = {
            "version": written.version,
            "payload": self._cipher.seal(written),
            "refresh_expires_at": grant.tokens.refresh_expires_at,
        }
        stmt: ReturningInsert[tuple[int]] | ReturningUpdate[tuple[int]]
        if expected == 0:
            stmt = (
                insert(self.engine, _TOKENS)
                .values(ns=self.namespace, provider=provider_id, account=account_id, **values)
                .on_conflict_do_nothing(index_elements=list(_TOKENS.primary_key.columns))
                .returning(_TOKENS.c.version)
            )
        else:
            stmt = (
                update(_TOKENS)
                .where(self._row(_TOKENS, provider_id, account_id), _TOKENS.c.version == expected)
                .values(**values)
                .returning(_TOKENS.c.version)
            )

        return written if (await conn.execute(stmt)).first() is not None else None

    async def delete(
        self, provider_id: str, account_id: str, *, if_version: int | None = None
    ) -> bool:
        """Remove the entry (only version *if_version*, when given)."""
        doomed = delete(_TOKENS).where(self._row(_TOKENS, provider_id, account_id))
        if if_version is not None:
            doomed = doomed.where(_TOKENS.c.version == if_version)
        stmt = doomed.returning(_TOKENS.c.version)

        async def remove(conn: AsyncConnection) -> bool:
            return (await conn.execute(stmt)).first() is not None

        return await self._run(remove, provider_id, account_id)

    def lock(
        self, provider_id: str, account_id: str, *, ttl: float, wait: float
    ) -> AbstractAsyncContextManager[None]:
        """The account's refresh lock: a lease row shared by every process using the database."""
        owner = secrets.token_hex(16)

        async def take(conn: AsyncConnection) -> bool:
            now = self._clock()
            row = insert(self.engine, _LOCKS).values(
                ns=self.namespace,
                provider=provider_id,
                account=account_id,
                owner=owner,
                expires_at=now + ttl,
            )
            stmt = row.on_conflict_do_update(
                index_elements=list(_LOCKS.primary_key.columns),
                set_={"owner": row.excluded.owner, "expires_at": row.excluded.expires_at},
                where=_LOCKS.c.expires_at <= now,
            ).returning(_LOCKS.c.owner)
            return (await conn.execute(stmt)).first() is not None

        async def release(conn: AsyncConnection) -> None:
            mine = self._row(_LOCKS, provider_id, account_id) & (_LOCKS.c.owner == owner)
            await conn.execute(delete(_LOCKS).where(mine))

        return hold_lease(
            lambda: self._run(take, provider_id, account_id),
            lambda: self._run(release, provider_id, account_id),
            provider_id=provider_id,
            account_id=account_id,
            wait=wait,
        )

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete entries whose refresh token has expired; how many."""
        when = self._clock() if now is None else now
        stmt = delete(_TOKENS).where(
            _TOKENS.c.ns == self.namespace,
            _TOKENS.c.refresh_expires_at.is_not(None),
            _TOKENS.c.refresh_expires_at <= when,
        )

        async def purge(conn: AsyncConnection) -> int:
            return max(0, (await conn.execute(stmt)).rowcount)

        return await self._run(purge, None, None)

    async def aclose(self) -> None:
        """Dispose of the engine's connections if this store made the engine."""
        if self._owned:
            await self.engine.dispose()
