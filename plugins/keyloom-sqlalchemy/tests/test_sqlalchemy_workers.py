"""Four app processes sharing one PostgreSQL through SQLAlchemyStore, and no Redis.

The app of the core's multi-worker harness (``tests/workers``) runs under
``uvicorn --workers 4`` with a :class:`SQLAlchemyStore` on a real PostgreSQL server, against
the TikTok emulator; everything on 127.0.0.1, started and stopped here (``nox -s postgres``).
The core's checks that need only the deployment run unchanged: a state used on one worker
is refused on every other, a cookie copied before logout is signed out on every worker,
and the rate limit is shared and atomic. Then logins under load, and ``revoke_all``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from keyloom_sqlalchemy import SQLAlchemyStore, create_tables
from keyloom_sqlalchemy.testing import postgres_server, reset_store_tables

from keyloom_core.store import SessionRegistry

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
WORKERS = ROOT / "tests" / "workers"

pytest.importorskip("uvicorn", reason="uvicorn is not installed (keyloom-core[test])")
pytest.importorskip("keyloom_tiktok.emulator", reason="the TikTok plugin is not installed")
pytest.importorskip("cryptography", reason="the token store needs keyloom-core[tokens]")
sys.path.insert(0, str(WORKERS))


def _load(relative: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness: Any = importlib.import_module("harness")  # tests/workers, as its own tests import it
_core = _load("tests/workers/test_workers.py", "keyloom_workers_contract")
CORE_CHECKS = [
    "test_a_state_used_on_one_worker_is_refused_on_every_other",
    "test_a_cookie_copied_before_logout_is_signed_out_on_every_worker",
    "test_a_client_over_the_rate_limit_gets_429_others_do_not",
]
globals().update({name: getattr(_core, name) for name in CORE_CHECKS})


class PostgresWorkers(harness.Workers):  # type: ignore[misc]
    """The harness's uvicorn deployment, serving :mod:`workers_app` instead of ``apps``."""

    def command(self) -> list[str]:
        command = list(super().command())
        command[command.index("apps:asgi_app")] = "workers_app:asgi_app"
        command[command.index(str(harness.HERE))] = str(HERE)
        return command


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (the postgresql extra)")
    with postgres_server() as url:
        if url is None:
            pytest.skip("PostgreSQL is not installed here (initdb/pg_ctl): apt-get install postgresql")
        yield url


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with harness.emulator() as url:
        yield str(url)


async def _fresh_tables(url: str) -> None:
    async with SQLAlchemyStore(url) as store:
        await create_tables(store.engine)
        await reset_store_tables(store.engine)


@pytest.fixture(scope="module")
def workers(postgres_url: str, emulator_url: str) -> Iterator[Any]:
    import anyio

    anyio.run(_fresh_tables, postgres_url)
    with PostgresWorkers("uvicorn", postgres_url, emulator_url) as deployment:
        yield deployment


async def test_logins_under_load_across_workers_all_succeed(workers: Any) -> None:
    outcomes, seconds = await harness.run_logins(workers.url, 400, 40, prefix="10.88")
    assert harness.tally(outcomes) == {"ok": 400}
    assert len({o.worker for o in outcomes}) >= 2, "the load reached one worker only"
    print(f"400 logins over 4 workers on PostgreSQL, concurrency 40: {400 / seconds:.0f}/s")


async def test_revoke_all_signs_out_every_browser_of_the_user(
    workers: Any, postgres_url: str
) -> None:
    cookies = []
    async with harness.client_session(4) as http:
        for index in range(3):
            outcome = await harness.login(http, workers.url, f"192.0.2.{130 + index}")
            assert outcome.result == "ok", outcome
            cookies.append(outcome.cookie)
        status, body, _ = await harness.me(http, workers.url, cookies[0])
    assert status == 200
    user_id = body["user"]["id"]
    async with SQLAlchemyStore(postgres_url, namespace="workers") as store:
        registry = SessionRegistry(store, absolute_ttl=3600, idle_ttl=3600, touch_interval=60)
        assert len(await registry.list(user_id)) >= 3
        assert await registry.revoke_all(user_id) >= 3
        assert await registry.list(user_id) == []
    for cookie in cookies:
        users, seen = await _core.me_everywhere(workers.url, cookie)
        assert users == [None] * len(users)
        assert len(seen) >= 2
