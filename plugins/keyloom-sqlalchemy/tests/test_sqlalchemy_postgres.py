"""The SQLAlchemy adapter on a real PostgreSQL server (``nox -s postgres``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from keyloom_sqlalchemy import SQLAlchemyAdapter, create_tables, metadata
from keyloom_sqlalchemy.testing import count_users, postgres_server, race_first_logins
from sqlalchemy import text

from keyloom_core.testing.adapter import AdapterContract

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the postgresql extra)")
    with postgres_server() as url:
        if url is None:
            pytest.skip("PostgreSQL is not installed here (initdb/pg_ctl): apt-get install postgresql")
        yield url


class TestPostgresAdapter(AdapterContract):
    @pytest.fixture
    async def adapter(self, postgres_url: str) -> AsyncIterator[SQLAlchemyAdapter]:
        adapter = SQLAlchemyAdapter(postgres_url)
        async with adapter.engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)
        await create_tables(adapter.engine)
        yield adapter
        await adapter.aclose()


@pytest.mark.anyio
async def test_times_keep_their_zone_in_postgres(postgres_url: str) -> None:
    adapter = SQLAlchemyAdapter(postgres_url)
    try:
        await create_tables(adapter.engine)
        async with adapter.engine.connect() as connection:
            kind = await connection.scalar(
                text(
                    "select data_type from information_schema.columns "
                    "where table_name = 'keyloom_users' and column_name = 'created_at'"
                )
            )
        assert kind == "timestamp with time zone"
    finally:
        await adapter.aclose()


@pytest.fixture(scope="module")
async def race_adapter(postgres_url: str) -> AsyncIterator[SQLAlchemyAdapter]:
    adapter = SQLAlchemyAdapter(postgres_url)
    await create_tables(adapter.engine)
    yield adapter
    await adapter.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("run", range(100))
async def test_two_first_logins_at_once_create_one_user(
    race_adapter: SQLAlchemyAdapter, run: int
) -> None:
    before = await count_users(race_adapter)
    ids = await race_first_logins(race_adapter, f"pg-account-{run}")
    assert len(ids) == 1
    assert await count_users(race_adapter) == before + 1
