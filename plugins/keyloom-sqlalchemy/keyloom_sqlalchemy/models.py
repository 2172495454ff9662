"""Plain declarative models of Keyloom's tables, for an app's own migrations.

The tables live in their own :data:`metadata`: users and accounts (``keyloom_users``,
``keyloom_accounts``) and the shared store (``keyloom_store_*``: used login states,
sessions, rate-limit counters, encrypted tokens and refresh locks; see
:class:`~keyloom_sqlalchemy.SQLAlchemyStore`). Include it in Alembic's
``target_metadata`` (a list is accepted) to have them migrated with the app's tables, or
run ``keyloom db init`` for an app without migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AccountRow",
    "KeyloomBase",
    "StoreCounterRow",
    "StoreSessionRow",
    "StoreStateRow",
    "StoreTokenLockRow",
    "StoreTokenRow",
    "UTCDateTime",
    "UserRow",
    "metadata",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A time kept in UTC, read back aware (SQLite keeps no time zone; PostgreSQL does)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store *value* in UTC (without a zone where the database has none)."""
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read *value* back as an aware UTC time."""
        del dialect
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class KeyloomBase(DeclarativeBase):
    """The declarative base of Keyloom's tables (their own :class:`MetaData`)."""

    metadata = MetaData()


metadata = KeyloomBase.metadata
"""Keyloom's tables, for ``create_all`` or Alembic's ``target_metadata``."""


class UserRow(KeyloomBase):
    """A user (:class:`keyloom_core.users.User`)."""

    __tablename__ = "keyloom_users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[datetime | None] = mapped_column(UTCDateTime())
    name: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


Index("ix_keyloom_users_email_lower", func.lower(UserRow.email))


class AccountRow(KeyloomBase):
    """A provider account linked to a user (:class:`keyloom_core.users.Account`).

    The unique constraint on ``(provider, provider_account_id)`` is what keeps an account
    with one user, even when two first sign-ins race.
    """

    __tablename__ = "keyloom_accounts"
    __table_args__ = (
        UniqueConstraint("provider", "provider_account_id", name="uq_keyloom_accounts_account"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("keyloom_users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(64))
    provider_account_id: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[float | None] = mapped_column(Float)


# -- the shared store (SQLAlchemyStore): every row carries the app's namespace --------------
# Times are epoch seconds (double precision), as the other stores keep them; every table has
# an index on the time its rows end at, so the periodic purge deletes a bounded batch by index.


class StoreStateRow(KeyloomBase):
    """A login state's nonce, recorded as used until its state expires."""

    __tablename__ = "keyloom_store_states"

    ns: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class StoreSessionRow(KeyloomBase):
    """A server-side session (:class:`keyloom_core.store.SessionRecord`).

    ``record`` is the record as JSON; the times beside it are what reads filter on.
    ``ends_at`` is the earlier of the absolute and the idle end (kept by every touch),
    for the purge.
    """

    __tablename__ = "keyloom_store_sessions"
    __table_args__ = (Index("ix_keyloom_store_sessions_user", "ns", "user_id"),)

    ns: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    record: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float)
    idle_ttl: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float, index=True)


class StoreCounterRow(KeyloomBase):
    """A rate-limit counter: *hits* in the fixed window that ends at *reset_at*."""

    __tablename__ = "keyloom_store_counters"

    ns: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    reset_at: Mapped[float] = mapped_column(Float, index=True)


class StoreTokenRow(KeyloomBase):
    """One account's tokens: AES-256-GCM encrypted, bound to provider, account and version."""

    __tablename__ = "keyloom_store_tokens"

    ns: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    account: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    refresh_expires_at: Mapped[float | None] = mapped_column(Float, index=True)


class StoreTokenLockRow(KeyloomBase):
    """One account's refresh lock: a lease held by *owner* until *expires_at*."""

    __tablename__ = "keyloom_store_token_locks"

    ns: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    account: Mapped[str] = mapped_column(Text, primary_key=True)
    owner: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
