"""The core's token store contract (``tests/tokens/test_stores.py``) on SQLAlchemyTokenStore.

The contract tests the core runs on its SQLite and Redis token stores (versions and
compare-and-swap, locks across clients, leases of dead holders, reopening, secret
rotation) run here on SQLAlchemy + SQLite (quick suite) and on PostgreSQL
(``nox -s postgres``); then what is particular to SQL: nothing readable at rest, an older
value written back refused, and unconditional writes racing from several engines.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType

import anyio
import pytest

pytest.importorskip("cryptography", reason="the token store needs keyloom-core[tokens]")

from keyloom_sqlalchemy import SQLAlchemyStore, StoreTokenRow, create_tables
from keyloom_sqlalchemy.testing import postgres_server, reset_store_tables
from keyloom_sqlalchemy.tokens import SQLAlchemyTokenStore
from sqlalchemy import select, update

from keyloom_core import TokenSet
from keyloom_core.tokens import TokenDecryptionError, TokenStore, TokenStoreError

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[3]
SECRET = "token-store-test-secret-0123456789-abcdefghij"
ACCESS = "act.ACCESS-token-value-visible-if-plaintext-7f3a"
REFRESH = "rft.REFRESH-token-value-visible-if-plaintext-91bc"


def _load(relative: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_contract = _load("tests/tokens/test_stores.py", "keyloom_token_store_contract")
#: Every contract test on a backend factory, except the one that reads the backend's raw
#: bytes its own way (this module has its SQL version below).
CONTRACT = sorted(
    name
    for name, test in vars(_contract).items()
    if name.startswith("test_")
    and {"make_store", "make_durable"} & set(inspect.signature(test).parameters)
    and name != "test_nothing_readable_at_rest"
)
globals().update({name: getattr(_contract, name) for name in CONTRACT})


def test_the_contract_was_found() -> None:
    assert len(CONTRACT) >= 8, CONTRACT


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
        url = f"sqlite+aiosqlite:///{tmp_path / 'tokens.db'}"
    setup = SQLAlchemyStore(url)
    await create_tables(setup.engine)
    await reset_store_tables(setup.engine)
    await setup.aclose()
    return url


Factory = Callable[..., TokenStore]


@pytest.fixture
async def make_store(database: str) -> AsyncIterator[Factory]:
    made: list[SQLAlchemyTokenStore] = []

    def make(secret: str = SECRET, old_secrets: tuple[str, ...] = ()) -> TokenStore:
        store = SQLAlchemyTokenStore(database, secret=secret, old_secrets=old_secrets)
        made.append(store)
        return store

    make.kind = "sqlalchemy"  # type: ignore[attr-defined]
    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
def make_durable(make_store: Factory) -> Factory:
    return make_store


def tokens(n: int = 0) -> TokenSet:
    now = time.time()
    return TokenSet(
        access_token=f"{ACCESS}-{n}",
        refresh_token=f"{REFRESH}-{n}",
        expires_at=now + 3_600,
        refresh_expires_at=now + 86_400,
        account_id="open-id-1",
    )


async def test_nothing_readable_at_rest(database: str) -> None:
    async with SQLAlchemyTokenStore(database, secret=SECRET) as store:
        for n in range(3):
            await store.put("tiktok", f"acct-{n}", tokens(n), scopes={"video.list"})
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(StoreTokenRow.__table__))).all()
    raw = repr(rows).encode() + b"".join(bytes(row.payload) for row in rows)
    assert b"acct-1" in raw  # the rows really were read
    for needle in (ACCESS, REFRESH, "ACCESS-token", "REFRESH-token", "act.", "rft.", SECRET):
        assert needle.encode() not in raw, needle


async def test_an_older_value_written_back_does_not_decrypt(database: str) -> None:
    async with SQLAlchemyTokenStore(database, secret=SECRET) as store:
        first = await store.put("tiktok", "a", tokens(1), scopes=())
        assert first is not None
        table = StoreTokenRow.__table__
        async with store.engine.connect() as conn:
            old = (await conn.execute(select(table.c.payload))).scalar_one()
        assert await store.put("tiktok", "a", tokens(2), scopes=(), if_version=1) is not None
        async with store.engine.begin() as conn:  # an attacker restores the old ciphertext
            await conn.execute(update(StoreTokenRow).values(payload=old))
        with pytest.raises(TokenDecryptionError):
            await store.get("tiktok", "a")


async def test_namespaces_keep_tokens_apart(database: str) -> None:
    one = SQLAlchemyTokenStore(database, secret=SECRET, namespace="one")
    two = SQLAlchemyTokenStore(database, secret=SECRET, namespace="two")
    try:
        await one.put("tiktok", "a", tokens(1), scopes=())
        assert await two.get("tiktok", "a") is None
        assert (await two.put("tiktok", "a", tokens(2), scopes=())).version == 1  # type: ignore[union-attr]
        assert (await one.get("tiktok", "a")).tokens.access_token == f"{ACCESS}-1"  # type: ignore[union-attr]
    finally:
        await one.aclose()
        await two.aclose()


async def test_racing_unconditional_writes_each_get_a_version(database: str) -> None:
    stores = [SQLAlchemyTokenStore(database, secret=SECRET) for _ in range(4)]
    versions: list[int] = []

    async def write(index: int) -> None:
        grant = await stores[index % 4].put("tiktok", "race", tokens(index), scopes=())
        assert grant is not None
        versions.append(grant.version)

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                for index in range(24):
                    tasks.start_soon(write, index)
        assert sorted(versions) == list(range(1, 25))
        final = await stores[0].get("tiktok", "race")
        assert final is not None
        assert final.version == 24
    finally:
        for store in stores:
            await store.aclose()


async def test_purge_expired_and_failures_are_typed(database: str, tmp_path: Path) -> None:
    async with SQLAlchemyTokenStore(database, secret=SECRET) as store:
        dead = TokenSet(access_token="x", refresh_token="y", refresh_expires_at=time.time() - 1)
        await store.put("tiktok", "dead", dead, scopes=())
        await store.put("tiktok", "alive", tokens(), scopes=())
        assert await store.purge_expired() == 1
        assert await store.get("tiktok", "dead") is None
        assert await store.get("tiktok", "alive") is not None
    missing = SQLAlchemyTokenStore(f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", secret=SECRET)
    try:
        with pytest.raises(TokenStoreError) as info:  # no tables
            await missing.get("tiktok", "a")
        assert info.value.status == 503
        assert info.value.account_id == "a"
        assert "none.db" not in str(info.value)
    finally:
        await missing.aclose()
    assert SECRET not in repr(missing)
