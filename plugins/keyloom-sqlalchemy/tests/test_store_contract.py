"""The core's store contract (``tests/store/test_stores.py``), run on :class:`SQLAlchemyStore`.

Every contract test that the core runs on memory, SQLite and Redis (those parametrised by
``store_kind``) runs here on SQLAlchemy + SQLite (aiosqlite, a real file; the quick suite)
and on SQLAlchemy + PostgreSQL (a real server on 127.0.0.1; ``nox -s postgres``). Two
stores made in one test are two engines on one database, as two processes would be.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from keyloom_sqlalchemy import SQLAlchemyStore, create_tables
from keyloom_sqlalchemy.testing import postgres_server, reset_store_tables

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[3]


def _load(relative: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_contract = _load("tests/store/test_stores.py", "keyloom_store_contract")
CONTRACT = sorted(
    name
    for name, test in vars(_contract).items()
    if name.startswith("test_") and "store_kind" in inspect.signature(test).parameters
)
globals().update({name: getattr(_contract, name) for name in CONTRACT})


def test_the_contract_was_found() -> None:
    assert len(CONTRACT) >= 12, CONTRACT


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
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., SQLAlchemyStore]]:
    if store_kind == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'keyloom.db'}"
    setup = SQLAlchemyStore(url)
    await create_tables(setup.engine)
    await reset_store_tables(setup.engine)
    await setup.aclose()
    made: list[SQLAlchemyStore] = []

    def make(kind: str, **options: Any) -> SQLAlchemyStore:
        assert kind == store_kind
        store = SQLAlchemyStore(url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()
