"""What the SQL store adds to the contract: races on one database, purge, failures, setup.

Each test runs on SQLAlchemy + SQLite (a real file; the quick suite) and on PostgreSQL (a
real server on 127.0.0.1; ``nox -s postgres``). "Processes" are separate engines (their
own connection pools) on one database.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from keyloom_sqlalchemy import (
    SQLAlchemyStore,
    StoreCounterRow,
    StoreSessionRow,
    StoreStateRow,
    create_tables,
    metadata,
)
from keyloom_sqlalchemy.testing import SPEC, postgres_process, postgres_server, reset_store_tables
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from keyloom_core import configure_provider, define_keyloom
from keyloom_core.store import SessionRegistry, Store, StoreUnavailableError

pytestmark = pytest.mark.anyio
ENGINES = 8


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the postgresql extra)")
    with postgres_server() as url:
        if url is None:
            pytest.skip(
                "PostgreSQL is not installed here (initdb/pg_ctl): apt-get install postgresql"
            )
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with SQLAlchemyStore(url) as setup:
        await create_tables(setup.engine)
        await reset_store_tables(setup.engine)
    return url


@pytest.fixture
async def stores(database: str) -> AsyncIterator[list[SQLAlchemyStore]]:
    # 8 pools of 4: within PostgreSQL's 100 connections
    options = {"pool_size": 4, "max_overflow": 0}
    made = [SQLAlchemyStore(database, engine_options=options) for _ in range(ENGINES)]
    yield made
    for store in made:
        await store.aclose()


def test_the_store_implements_the_protocol() -> None:
    store = SQLAlchemyStore("sqlite+aiosqlite:///unused.db")
    assert isinstance(store, Store)
    assert repr(store) == "SQLAlchemyStore(sqlite, namespace='app')"


@pytest.mark.parametrize("run", range(5))
async def test_many_tasks_on_many_engines_consume_one_state_exactly_once(
    stores: list[SQLAlchemyStore], run: int
) -> None:
    results: list[bool] = []

    async def use(index: int) -> None:
        results.append(await stores[index % ENGINES].use_once(f"race-{run}", time.time() + 60))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for index in range(48):
                tasks.start_soon(use, index)
    assert len(results) == 48
    assert results.count(True) == 1


async def test_concurrent_hits_are_all_counted(stores: list[SQLAlchemyStore]) -> None:
    counts: list[int] = []

    async def hit(index: int) -> None:
        counts.append((await stores[index % ENGINES].hit("start:192.0.2.1", 60))[0])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for index in range(160):
                tasks.start_soon(hit, index)
    assert sorted(counts) == list(range(1, 161))  # every hit saw its own count: none lost
    assert (await stores[0].hit("start:192.0.2.1", 60, 0))[0] == 160


async def test_revoke_all_wins_over_concurrent_renewals(stores: list[SQLAlchemyStore]) -> None:
    registries = [
        SessionRegistry(s, absolute_ttl=3600, idle_ttl=600, touch_interval=0) for s in stores
    ]
    created = [
        await registries[0].create(
            user={"id": "victim"}, provider_id="p", provider_account_id="a", scopes=[]
        )
        for _ in range(6)
    ]

    async def renew(index: int) -> None:
        for _ in range(5):  # touch_interval=0: every read writes the last use back
            await registries[index % ENGINES].get(created[index % len(created)].id)

    revoked: list[int] = []

    async def revoke() -> None:
        await anyio.sleep(0.01)
        revoked.append(await registries[1].revoke_all("victim"))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            for index in range(24):
                tasks.start_soon(renew, index)
            tasks.start_soon(revoke)
    assert revoked == [6]
    for record in created:  # no renewal brought a session back, on any engine
        for registry in registries:
            assert await registry.get(record.id) is None
        assert not await stores[2].touch_session(record.id, time.time())
    assert await registries[3].list("victim") == []


async def test_expired_rows_are_purged_in_bounded_batches(database: str) -> None:
    now = time.time()
    async with SQLAlchemyStore(database, purge_batch=3) as store:
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(StoreStateRow),
                [{"ns": "app", "key": f"old-{i}", "expires_at": now - 1} for i in range(7)]
                + [{"ns": "app", "key": "live", "expires_at": now + 60}],
            )
            await conn.execute(
                insert(StoreCounterRow),
                [{"ns": "x", "key": f"c{i}", "hits": 1, "reset_at": now - 1} for i in range(2)],
            )

        async def left(table: type[StoreStateRow]) -> int:
            async with store.engine.connect() as conn:
                return int(await conn.scalar(select(func.count()).select_from(table)) or 0)

        assert await store.purge() == 3 + 2  # at most 3 rows of each table
        assert await left(StoreStateRow) == 5
        assert await store.purge() == 3
        assert await store.purge() == 1
        assert await store.purge() == 0
        assert await left(StoreStateRow) == 1
        assert not await store.use_once("live", now + 60)  # the live one was kept


async def test_the_store_purges_by_itself_as_it_is_used(database: str) -> None:
    async with SQLAlchemyStore(database, purge_every=0.0) as store:
        registry = SessionRegistry(store, absolute_ttl=3600, idle_ttl=1, touch_interval=60)
        old = await registry.create(
            user={"id": "u"},
            provider_id="p",
            provider_account_id="a",
            scopes=[],
            now=time.time() - 10,
        )
        assert await store.get_session(old.id) is None  # ended: never read as live
        await store.use_once("nonce", time.time() + 60)  # a write: the purge runs
        async with store.engine.connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(StoreSessionRow))
        assert rows == 0


async def test_define_keyloom_takes_the_store(database: str) -> None:
    store = SQLAlchemyStore(database)
    keyloom = define_keyloom(
        providers=[configure_provider(SPEC, client_id="id", client_secret="secret")],
        secret="s" * 40,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        store=store,
    )
    try:
        assert keyloom.settings.store is store
        assert keyloom.settings.state_guard is store
        assert keyloom.sessions.server_side
        record = await keyloom.sessions.create(
            user={"id": "u1"}, provider_id="p", provider_account_id="a", scopes=["s"]
        )
        assert [r.id for r in await keyloom.sessions.list("u1")] == [record.id]
        assert await keyloom.sessions.revoke_all("u1") == 1
    finally:
        await keyloom.sessions.aclose()


async def test_a_store_url_names_the_sql_store(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``postgresql+asyncpg://`` and ``sqlite+aiosqlite://`` URLs (``define_keyloom(store=)``,
    ``KEYLOOM_STORE``) open this store through the ``keyloom.stores`` entry points."""
    from keyloom_core.cli.doctor import check_store

    monkeypatch.setenv("KEYLOOM_STORE", database)
    keyloom = define_keyloom(
        providers=[configure_provider(SPEC, client_id="id", client_secret="secret")],
        secret="s" * 40,
        base_url="http://127.0.0.1:8000",
        autoload=False,
    )
    store = keyloom.settings.store
    try:
        assert isinstance(store, SQLAlchemyStore)
        assert store.namespace == "app"
        expires = time.time() + 60
        assert [await store.use_once("state-1", expires) for _ in range(2)] == [True, False]
    finally:
        await keyloom.sessions.aclose()
    [finding] = check_store({"KEYLOOM_STORE": database})
    assert finding.level == "ok"
    assert "keyloom_sqlalchemy" in finding.message


def test_an_sql_url_without_an_async_driver_gets_a_hint() -> None:
    from keyloom_core import ConfigurationError
    from keyloom_core.store import open_store

    with pytest.raises(ConfigurationError) as caught:
        open_store("postgresql://keyloom@127.0.0.1/app")
    assert "postgresql+asyncpg://" in (caught.value.hint or "")


# -- failures -------------------------------------------------------------------------------


async def test_missing_tables_are_store_unavailable(tmp_path: Path) -> None:
    async with SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}") as store:
        for call in (
            store.use_once("n", time.time() + 60),
            store.hit("k", 60),
            store.get_session("x.y"),
        ):
            with pytest.raises(StoreUnavailableError) as caught:
                await call
            assert caught.value.status == 503
            assert "empty.db" not in str(caught.value)


@pytest.mark.postgres
async def test_postgres_down_is_store_unavailable_and_names_no_secret() -> None:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the postgresql extra)")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql+asyncpg://keyloom:hunter2-password@127.0.0.1:{port}/app"
    async with SQLAlchemyStore(url) as store:
        with anyio.fail_after(30):
            for call in (
                store.use_once("n", time.time() + 60),
                store.get_session("0123456789abcdef.secret-session-id"),
                store.hit("k", 60),
            ):
                with pytest.raises(StoreUnavailableError) as caught:
                    await call
                text = f"{caught.value} {caught.value.hint}"
                assert caught.value.status == 503
                assert "hunter2" not in text
                assert "secret-session-id" not in text


def test_db_init_creates_the_store_tables(tmp_path: Path) -> None:
    store_tables = {name for name in metadata.tables if name.startswith("keyloom_store_")}
    assert store_tables == {
        "keyloom_store_states",
        "keyloom_store_sessions",
        "keyloom_store_counters",
        "keyloom_store_tokens",
        "keyloom_store_token_locks",
    }
    from keyloom_core.cli import main as keyloom_main

    path = tmp_path / "init.db"
    assert keyloom_main(["db", "init", f"sqlite+aiosqlite:///{path}"]) == 0

    async def tables() -> set[str]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
        finally:
            await engine.dispose()

    assert store_tables <= anyio.run(tables)


@pytest.mark.postgres
async def test_postgres_restarted_gives_typed_503_then_recovers_without_a_new_store() -> None:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the postgresql extra)")
    with postgres_process() as server:
        if server is None:
            pytest.skip("PostgreSQL is not installed here (initdb/pg_ctl)")
        async with SQLAlchemyStore(server.url) as store:
            await create_tables(store.engine)
            registry = SessionRegistry(store, absolute_ttl=3600, idle_ttl=600, touch_interval=60)
            record = await registry.create(
                user={"id": "u1"}, provider_id="p", provider_account_id="a", scopes=[]
            )
            assert await store.use_once("before", time.time() + 60)
            server.stop()  # the pooled connections die with it
            with anyio.fail_after(60):
                for call in (
                    registry.get(record.id),
                    store.use_once("during", time.time() + 60),
                    store.hit("k", 60),
                ):
                    with pytest.raises(StoreUnavailableError) as caught:
                        await call
                    assert caught.value.status == 503
            server.start()
            # Back: the first calls may meet connections of the old server (each one is a
            # typed 503 and drops the pool); then everything works, state intact.
            recovered = None
            with anyio.fail_after(60):
                for _ in range(20):  # bounded
                    try:
                        recovered = await registry.get(record.id)
                        break
                    except StoreUnavailableError:
                        await anyio.sleep(0.1)
            assert recovered is not None
            assert recovered.id == record.id
            assert not await store.use_once("before", time.time() + 60)  # still used
            assert await store.use_once("after", time.time() + 60)
