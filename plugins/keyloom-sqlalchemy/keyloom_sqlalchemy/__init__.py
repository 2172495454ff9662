"""Keyloom's users and linked accounts in SQL, on SQLAlchemy 2.0's asyncio engine.

::

    from keyloom_core import define_keyloom
    from keyloom_sqlalchemy import SQLAlchemyAdapter

    keyloom = define_keyloom(
        providers=["tiktok", "github"],
        adapter=SQLAlchemyAdapter("postgresql+asyncpg://app@db/app"),  # or sqlite+aiosqlite:///
    )

:class:`SQLAlchemyStore` is Keyloom's shared store (used login states, server-side sessions,
rate limits, encrypted tokens) in the same database, so an app on PostgreSQL runs on many
machines without Redis: ``define_keyloom(store=SQLAlchemyStore(url), ...)``.

The models (:class:`UserRow`, :class:`AccountRow` and the store's ``Store*Row``, in their own
:data:`metadata`) are plain declarative models: add :data:`metadata` to the app's Alembic
``target_metadata``, or run ``keyloom db init URL`` once for an app without migrations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .adapter import SQLAlchemyAdapter, create_tables
from .models import (
    AccountRow,
    KeyloomBase,
    StoreCounterRow,
    StoreSessionRow,
    StoreStateRow,
    StoreTokenLockRow,
    StoreTokenRow,
    UserRow,
    UTCDateTime,
    metadata,
)
from .store import SQLAlchemyStore

if TYPE_CHECKING:
    from .tokens import SQLAlchemyTokenStore

__all__ = [
    "AccountRow",
    "KeyloomBase",
    "SQLAlchemyAdapter",
    "SQLAlchemyStore",
    "SQLAlchemyTokenStore",
    "StoreCounterRow",
    "StoreSessionRow",
    "StoreStateRow",
    "StoreTokenLockRow",
    "StoreTokenRow",
    "UTCDateTime",
    "UserRow",
    "create_tables",
    "metadata",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the token store needs 'cryptography' (keyloom-core[tokens]).
    if name == "SQLAlchemyTokenStore":
        from .tokens import SQLAlchemyTokenStore  # noqa: PLC0415

        return SQLAlchemyTokenStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
