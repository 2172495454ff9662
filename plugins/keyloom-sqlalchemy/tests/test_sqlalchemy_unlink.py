"""The atomic unlink on an app's own SQLite engine (set up without the adapter's ``BEGIN
IMMEDIATE``): the conditional ``DELETE`` alone keeps the user's last account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from keyloom_sqlalchemy import SQLAlchemyAdapter, create_tables
from sqlalchemy.ext.asyncio import create_async_engine

from keyloom_core.testing.adapter import AdapterContract


class TestAppSQLiteEngine(AdapterContract):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[SQLAlchemyAdapter]:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", connect_args={"timeout": 30}
        )
        await create_tables(engine)
        yield SQLAlchemyAdapter(engine)
        await engine.dispose()
