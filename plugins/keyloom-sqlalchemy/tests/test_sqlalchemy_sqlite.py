"""The SQLAlchemy adapter on SQLite (a real file): the contract, the rules, ``keyloom db``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from keyloom_sqlalchemy import SQLAlchemyAdapter, create_tables, metadata
from keyloom_sqlalchemy.testing import count_users, race_first_logins
from sqlalchemy.ext.asyncio import create_async_engine

from keyloom_core.cli import main as keyloom_main
from keyloom_core.store import StoreUnavailableError
from keyloom_core.testing.adapter import AdapterContract
from keyloom_core.users import Account, User


class TestSQLiteAdapter(AdapterContract):
    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[SQLAlchemyAdapter]:
        adapter = SQLAlchemyAdapter(f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")
        await create_tables(adapter.engine)
        yield adapter
        await adapter.aclose()


@pytest.mark.anyio
async def test_two_adapters_on_one_file_share_users(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    one, two = SQLAlchemyAdapter(url), SQLAlchemyAdapter(url)
    try:
        await create_tables(one.engine)
        user = await one.create_user(User(id="u1", name="Ada"))
        await one.link_account(Account("u1", "github", "42"))
        assert await two.get_user_by_account("github", "42") == user
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.anyio
async def test_an_app_engine_is_not_disposed(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    try:
        adapter = SQLAlchemyAdapter(engine)
        await create_tables(engine)
        await adapter.aclose()
        await adapter.create_user(User(id="still-works"))
        assert await adapter.get_user("still-works") is not None
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_a_missing_table_is_store_unavailable(tmp_path: Path) -> None:
    adapter = SQLAlchemyAdapter(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await adapter.get_user("x")
        assert caught.value.status == 503
        assert "empty.db" not in str(caught.value)
    finally:
        await adapter.aclose()


def test_keyloom_db_init_creates_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "init.db"
    assert keyloom_main(["db", "init", f"sqlite+aiosqlite:///{path}"]) == 0
    assert "keyloom_users" in capsys.readouterr().out
    assert keyloom_main(["db", "init", f"sqlite+aiosqlite:///{path}"]) == 0  # idempotent

    async def tables() -> set[str]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with engine.connect() as connection:
                names = await connection.run_sync(
                    lambda sync: set(sync.dialect.get_table_names(sync))
                )
        finally:
            await engine.dispose()
        return names

    assert set(metadata.tables) <= anyio.run(tables)


def test_keyloom_db_init_failure_names_no_url(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "keyloom_core.cli", "db", "init", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "could not create the tables" in done.stderr
    assert "Traceback" not in done.stderr
    assert "dir.db" not in done.stderr


@pytest.fixture(scope="module")
async def race_adapter(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SQLAlchemyAdapter]:
    path = tmp_path_factory.mktemp("race") / "race.db"
    adapter = SQLAlchemyAdapter(f"sqlite+aiosqlite:///{path}")
    await create_tables(adapter.engine)
    yield adapter
    await adapter.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("run", range(100))
async def test_two_first_logins_at_once_create_one_user(
    race_adapter: SQLAlchemyAdapter, run: int
) -> None:
    before = await count_users(race_adapter)
    ids = await race_first_logins(race_adapter, f"account-{run}")
    assert len(ids) == 1
    assert await count_users(race_adapter) == before + 1
