"""The SQLAlchemy adapter: Keyloom's users and accounts in SQLite or PostgreSQL (async)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, event, func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import aliased

from keyloom_core.store import StoreUnavailableError
from keyloom_core.users import (
    Account,
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    User,
    UserNotFoundError,
)

from .models import AccountRow, UserRow, metadata

__all__ = ["SQLAlchemyAdapter", "create_tables"]

log = logging.getLogger("keyloom.sqlalchemy")

#: What a database that cannot answer raises (down, unreachable, its pool exhausted): a
#: typed 503, never a 500 and never taken for "no such user".
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError, OSError)


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        email=row.email,
        email_verified=row.email_verified,
        name=row.name,
        image=row.image,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _account(row: AccountRow) -> Account:
    return Account(
        user_id=row.user_id,
        provider=row.provider,
        provider_account_id=row.provider_account_id,
        scope=frozenset(row.scope.split()),
        expires_at=row.expires_at,
    )


def _sqlite_writes_first(engine: AsyncEngine) -> None:
    """SQLite: foreign keys on, and every transaction takes the write lock at its start.

    ``BEGIN IMMEDIATE`` makes concurrent writers wait (the busy timeout) instead of failing
    when a reading transaction tries to write.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_writes_first(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


async def create_tables(engine: AsyncEngine) -> None:
    """Create Keyloom's tables if they do not exist (``keyloom db init``)."""
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)


class SQLAlchemyAdapter:
    """A :class:`keyloom_core.users.Adapter` on SQLAlchemy 2.0's asyncio engine.

    It has the optional atomic unlink (:class:`keyloom_core.users.AtomicUnlinkAdapter`):
    :meth:`unlink_account_unless_last`.

    :param database: a URL (``sqlite+aiosqlite:///app.db``,
        ``postgresql+asyncpg://user:password@host/db``) or an app's own ``AsyncEngine``
        (then the app disposes of it; a URL's engine is disposed by :meth:`aclose`).

    The tables must exist: ``keyloom db init URL``, :func:`create_tables`, or the app's own
    migrations with :data:`keyloom_sqlalchemy.metadata`. Database failures raise
    :class:`~keyloom_core.store.StoreUnavailableError` (503), never a raw driver error.
    """

    def __init__(self, database: str | AsyncEngine) -> None:
        self._owned = isinstance(database, str)
        self.engine = _engine(database) if isinstance(database, str) else database
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"<SQLAlchemyAdapter {self.engine.dialect.name}>"

    async def aclose(self) -> None:
        """Dispose of the engine's connections when the adapter made the engine."""
        if self._owned:
            await self.engine.dispose()

    def _session(self) -> AsyncSession:
        return self._sessions()

    @staticmethod
    def _unavailable(exc: Exception) -> StoreUnavailableError:
        log.warning("keyloom-sqlalchemy: the database failed: %s", type(exc).__name__)
        return StoreUnavailableError("the user database is unavailable")

    async def create_user(self, user: User) -> User:
        """Store a new *user*; :class:`ValueError` if the id is taken."""
        try:
            async with self._session() as session, session.begin():
                session.add(
                    UserRow(
                        id=user.id,
                        email=user.email,
                        email_verified=user.email_verified,
                        name=user.name,
                        image=user.image,
                        created_at=user.created_at,
                        updated_at=user.updated_at,
                    )
                )
        except IntegrityError:
            msg = "a user with this id exists"
            raise ValueError(msg) from None
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None
        return user

    async def _one_user(self, statement: Any) -> User | None:
        try:
            async with self._session() as session:
                row = (await session.execute(statement)).scalars().first()
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None
        return None if row is None else _user(row)

    async def get_user(self, user_id: str) -> User | None:
        """The user *user_id*, or ``None``."""
        return await self._one_user(select(UserRow).where(UserRow.id == user_id))

    async def get_user_by_email(self, email: str) -> User | None:
        """The oldest user with this e-mail address (any case), or ``None``."""
        return await self._one_user(
            select(UserRow)
            .where(func.lower(UserRow.email) == email.lower())
            .order_by(UserRow.created_at, UserRow.id)
            .limit(1)
        )

    async def get_user_by_account(self, provider: str, provider_account_id: str) -> User | None:
        """The user the account is linked to, or ``None``."""
        return await self._one_user(
            select(UserRow)
            .join(AccountRow, AccountRow.user_id == UserRow.id)
            .where(
                AccountRow.provider == provider,
                AccountRow.provider_account_id == provider_account_id,
            )
        )

    async def update_user(self, user: User) -> User:
        """Replace the stored user of the same id; :class:`UserNotFoundError` if none."""
        try:
            async with self._session() as session, session.begin():
                row = await session.get(UserRow, user.id)
                if row is None:
                    msg = "no such user"
                    raise UserNotFoundError(msg)
                row.email, row.email_verified = user.email, user.email_verified
                row.name, row.image = user.name, user.image
                row.created_at, row.updated_at = user.created_at, user.updated_at
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None
        return user

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user and its accounts; whether it existed."""
        try:
            async with self._session() as session, session.begin():
                await session.execute(delete(AccountRow).where(AccountRow.user_id == user_id))
                result = await session.execute(delete(UserRow).where(UserRow.id == user_id))
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None
        return bool(getattr(result, "rowcount", 0))

    async def link_account(self, account: Account) -> Account:
        """Link *account* (or update it for the same user); the unique constraint decides.

        :raises AccountConflictError: another user holds the account (nothing changes).
        :raises UserNotFoundError: no such user.
        """
        try:
            return await self._link(account)
        except IntegrityError:  # a concurrent link won the constraint (or the user went)
            holder = await self.get_user_by_account(account.provider, account.provider_account_id)
            if holder is not None and holder.id != account.user_id:
                msg = "this account is linked to another user"
                raise AccountConflictError(msg, provider_id=account.provider) from None
            if await self.get_user(account.user_id) is None:
                msg = "no such user"
                raise UserNotFoundError(msg) from None
            return await self._link(account)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None

    async def _link(self, account: Account) -> Account:
        async with self._session() as session, session.begin():
            if await session.get(UserRow, account.user_id) is None:
                msg = "no such user"
                raise UserNotFoundError(msg)
            row = (
                await session.execute(
                    select(AccountRow).where(
                        AccountRow.provider == account.provider,
                        AccountRow.provider_account_id == account.provider_account_id,
                    )
                )
            ).scalar_one_or_none()
            if row is not None and row.user_id != account.user_id:
                msg = "this account is linked to another user"
                raise AccountConflictError(msg, provider_id=account.provider)
            if row is None:
                row = AccountRow(
                    user_id=account.user_id,
                    provider=account.provider,
                    provider_account_id=account.provider_account_id,
                )
                session.add(row)
            row.scope = " ".join(sorted(account.scope))
            row.expires_at = account.expires_at
        return account

    async def unlink_account(self, provider: str, provider_account_id: str) -> bool:
        """Remove the account's link; whether it existed."""
        try:
            async with self._session() as session, session.begin():
                result = await session.execute(
                    delete(AccountRow).where(
                        AccountRow.provider == provider,
                        AccountRow.provider_account_id == provider_account_id,
                    )
                )
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None
        return bool(getattr(result, "rowcount", 0))

    async def unlink_account_unless_last(
        self, user_id: str, provider: str, provider_account_id: str
    ) -> Account:
        """Unlink the user's account unless it is the user's last one; return it.

        One transaction: it locks the user's row first (``SELECT … FOR NO KEY UPDATE`` on
        PostgreSQL, which concurrent inserts of the user's accounts do not wait for; on
        SQLite the adapter's transactions hold the write lock from ``BEGIN IMMEDIATE``),
        then reads the user's accounts and deletes the one. Two concurrent unlinks of a
        user's two accounts run one after the other: the second finds the last account.
        The ``DELETE`` itself keeps the condition (another account of the user exists),
        so that an app's own SQLite engine, which reads outside the transaction unless
        set up as the adapter's, still never removes the last account.

        :raises AccountNotFoundError: the user has no such account (nothing changes).
        :raises LastAccountError: it is the user's last account (nothing changes).
        """
        try:
            async with self._session() as session, session.begin():
                await session.execute(
                    select(UserRow.id).where(UserRow.id == user_id).with_for_update(key_share=True)
                )
                rows = (
                    await session.execute(select(AccountRow).where(AccountRow.user_id == user_id))
                ).scalars()
                held = list(rows)
                key = (provider, provider_account_id)
                found = next((r for r in held if (r.provider, r.provider_account_id) == key), None)
                if found is None:
                    msg = "no such account is linked to this user"
                    raise AccountNotFoundError(msg, provider_id=provider)
                if len(held) == 1:
                    msg = "this is the only account left to sign in with"
                    raise LastAccountError(msg, provider_id=provider)
                other = aliased(AccountRow)
                gone = await session.execute(
                    delete(AccountRow).where(
                        AccountRow.id == found.id,
                        select(other.id)
                        .where(other.user_id == user_id, other.id != found.id)
                        .exists(),
                    )
                )
                if not getattr(gone, "rowcount", 0):  # a concurrent unlink took the other
                    msg = "this is the only account left to sign in with"
                    raise LastAccountError(msg, provider_id=provider)
                return _account(found)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None

    async def list_accounts(self, user_id: str) -> Sequence[Account]:
        """The user's accounts, by provider then account id."""
        try:
            async with self._session() as session:
                rows = (
                    await session.execute(
                        select(AccountRow)
                        .where(AccountRow.user_id == user_id)
                        .order_by(AccountRow.provider, AccountRow.provider_account_id)
                    )
                ).scalars()
                return [_account(row) for row in rows]
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from None
