"""Keyloom's users and linked accounts in SQL, on SQLAlchemy 2.0's asyncio engine.

::

    from keyloom_core import define_keyloom
    from keyloom_sqlalchemy import SQLAlchemyAdapter

    keyloom = define_keyloom(
        providers=["tiktok", "github"],
        adapter=SQLAlchemyAdapter("postgresql+asyncpg://app@db/app"),  # or sqlite+aiosqlite:///
    )

The models (:class:`UserRow`, :class:`AccountRow`, in their own :data:`metadata`) are plain
declarative models: add :data:`metadata` to the app's Alembic ``target_metadata``, or run
``keyloom db init URL`` once for an app without migrations.
"""

from __future__ import annotations

from .adapter import SQLAlchemyAdapter, create_tables
from .models import AccountRow, KeyloomBase, UserRow, UTCDateTime, metadata

__all__ = [
    "AccountRow",
    "KeyloomBase",
    "SQLAlchemyAdapter",
    "UTCDateTime",
    "UserRow",
    "create_tables",
    "metadata",
]
