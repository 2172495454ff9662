"""Added cost per login of a users adapter: the sign-in and linking rules on each store.

With an adapter, ``complete_login`` runs ``Users.sign_in`` once (rules 1-8 of
``keyloom_core/users/_rules.py``); this is all an adapter adds to a login. Measured here,
per login, for a returning account (one lookup, the account's scope/expiry written) and for
a first login (the user and the account created), on:

- the memory adapter;
- keyloom-sqlalchemy on SQLite (a file in a temporary folder, WAL);
- keyloom-sqlalchemy on PostgreSQL: a server started here on a free 127.0.0.1 port from
  PostgreSQL's binaries (``initdb``/``pg_ctl``), or ``--postgres-url``; skipped, saying
  so, when neither is available.

Run standalone: ``python benchmarks/bench_users.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from keyloom_core import (  # noqa: E402
    Profile,
    ProviderSpec,
    TokenSet,
    configure_provider,
    define_keyloom,
)
from keyloom_core.users import Adapter, MemoryAdapter, Users  # noqa: E402

SPEC = ProviderSpec(
    id="bench",
    name="Bench",
    authorize_url="https://bench.invalid/authorize",
    token_url="https://bench.invalid/token",
    profile_url="https://bench.invalid/userinfo",
    known_scopes={"profile"},
    default_scopes={"profile"},
)


def _users(adapter: Adapter) -> Users:
    keyloom = define_keyloom(
        providers=[configure_provider(SPEC, client_id="id", client_secret="secret")],
        secret="b" * 40,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        adapter=adapter,
    )
    assert keyloom.users is not None
    return keyloom.users


async def _measure(adapter: Adapter, logins: int) -> tuple[list[float], list[float]]:
    users = _users(adapter)
    tokens = TokenSet(access_token="at", expires_at=2_000_000_000.0)
    granted = frozenset({"profile"})
    first: list[float] = []
    for i in range(logins):
        profile = Profile(provider_id="bench", id=f"acct-{i}", name="Ada")
        started = time.perf_counter()
        await users.sign_in("bench", profile, tokens, granted)
        first.append((time.perf_counter() - started) * 1000)
    returning: list[float] = []
    for i in range(logins):
        profile = Profile(provider_id="bench", id=f"acct-{i}", name="Ada")
        started = time.perf_counter()
        await users.sign_in("bench", profile, tokens, granted)
        returning.append((time.perf_counter() - started) * 1000)
    return first, returning


@contextlib.asynccontextmanager
async def _sql(url: str) -> AsyncIterator[Adapter]:
    from keyloom_sqlalchemy import SQLAlchemyAdapter, create_tables, metadata

    adapter = SQLAlchemyAdapter(url)
    async with adapter.engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)
    await create_tables(adapter.engine)
    try:
        yield adapter
    finally:
        await adapter.aclose()


def _row(label: str, first: list[float], returning: list[float]) -> None:
    def fmt(values: list[float]) -> str:
        ordered = sorted(values)
        p95 = ordered[int(len(ordered) * 0.95) - 1]
        return f"median {statistics.median(values):7.3f} ms  p95 {p95:7.3f} ms"

    print(f"{label:<28} returning: {fmt(returning)}   first login: {fmt(first)}")


async def _main(args: argparse.Namespace) -> int:
    logins = 100 if args.quick else args.logins
    print(f"Added cost per login of the users adapter ({logins} accounts; ms per login)")
    first, returning = await _measure(MemoryAdapter(), logins)
    _row("memory", first, returning)
    try:
        import keyloom_sqlalchemy  # noqa: F401
    except ImportError:
        print("SQL adapters: skipped (keyloom-sqlalchemy is not installed)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        async with _sql(f"sqlite+aiosqlite:///{Path(folder) / 'users.db'}") as adapter:
            first, returning = await _measure(adapter, logins)
        _row("sqlalchemy + SQLite (file)", first, returning)
    with contextlib.ExitStack() as stack:
        from keyloom_sqlalchemy.testing import postgres_server

        url = args.postgres_url or stack.enter_context(postgres_server())
        if url is None:
            print("sqlalchemy + PostgreSQL: skipped (no initdb/pg_ctl, no --postgres-url)")
            return 0
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            print("sqlalchemy + PostgreSQL: skipped (asyncpg is not installed)")
            return 0
        async with _sql(url) as adapter:
            first, returning = await _measure(adapter, logins)
        _row("sqlalchemy + PostgreSQL", first, returning)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=500, help="accounts (default 500)")
    parser.add_argument("--quick", action="store_true", help="100 accounts")
    parser.add_argument("--postgres-url", help="an existing PostgreSQL (postgresql+asyncpg://…)")
    args = parser.parse_args(argv)
    return anyio.run(_main, args)


if __name__ == "__main__":
    raise SystemExit(main())
