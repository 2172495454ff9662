"""Plain declarative models of Keyloom's users and accounts, for an app's own migrations.

The tables live in their own :data:`metadata` (``keyloom_users``, ``keyloom_accounts``);
include it in Alembic's ``target_metadata`` (a list is accepted) to have them migrated with
the app's tables, or run ``keyloom db init`` for an app without migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["AccountRow", "KeyloomBase", "UTCDateTime", "UserRow", "metadata"]


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
