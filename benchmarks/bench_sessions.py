"""Per-call time of ``current_session`` (the cookie check plus one store read).

Runs ``AuthHandler.load_session`` (what ``current_session`` of both adapters awaits) on a
valid session cookie for stateless cookies and for server-side sessions on memory,
SQLite (a file in a temporary folder), Redis (a ``redis-server`` on a free 127.0.0.1
port, or ``--redis-url``) and, with ``keyloom-sqlalchemy`` and asyncpg installed, PostgreSQL
through ``SQLAlchemyStore`` (a server started on 127.0.0.1 when PostgreSQL's ``initdb`` is
installed, or ``--postgres-url``; skipped, saying why, otherwise). The touch interval is longer than the run, so every call is
exactly one store read, as in steady state. Run standalone:
``python benchmarks/bench_sessions.py`` (add ``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_tokens import redis_server  # noqa: E402

from keyloom_core import (  # noqa: E402
    LoginResult,
    Profile,
    ProviderSpec,
    TokenSet,
    configure_provider,
    define_keyloom,
)
from keyloom_core.store import MemoryStore, Store  # noqa: E402
from keyloom_core.web import SESSION_COOKIE, AuthHandler  # noqa: E402
from keyloom_core.web._session_io import start_session  # noqa: E402
from keyloom_core.web.sessions import read_session  # noqa: E402

SECRET = "benchmark-secret-0123456789-abcdefghijklmnop"
CONCURRENCY = 50


def _provider() -> Any:
    spec = ProviderSpec(
        id="bench",
        name="Bench",
        authorize_url="https://127.0.0.1/authorize",
        token_url="https://127.0.0.1/token",
    )
    return configure_provider(spec, client_id="id", client_secret="secret", scopes=["profile"])


async def measure(store: Store | None, iterations: int) -> dict[str, float]:
    keyloom = define_keyloom(
        providers=[_provider()],
        secret=SECRET,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        store=store,
        sessions="server" if store is not None else "stateless",
        session_touch_interval=86_400.0,
        rate_limits=False,
    )
    handler = AuthHandler(keyloom)
    result = LoginResult(
        provider_id="bench",
        profile=Profile(provider_id="bench", id="user-1", name="Bench User"),
        tokens=TokenSet(access_token="at"),
        granted_scopes=frozenset({"profile"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )
    cookies = []
    for _ in range(100):
        _, value, _ = await start_session(keyloom, result)
        cookies.append({SESSION_COOKIE: value})
    for n in range(min(200, iterations)):  # warm-up
        assert await handler.load_session(cookies[n % 100]) is not None
    samples: list[int] = []
    for n in range(iterations):
        jar = cookies[n % 100]
        start = time.perf_counter_ns()
        await handler.load_session(jar)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    per_task = max(1, iterations // CONCURRENCY)

    async def worker(offset: int) -> None:
        for n in range(per_task):
            await handler.load_session(cookies[(offset + n) % 100])

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for offset in range(CONCURRENCY):
            tg.start_soon(worker, offset)
    elapsed = time.perf_counter() - start
    if store is not None:
        await store.aclose()
    return {
        "mean": statistics.fmean(samples) / 1000,
        "p50": samples[len(samples) // 2] / 1000,
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "concurrent": per_task * CONCURRENCY / elapsed,
    }


def _stats(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "mean": statistics.fmean(samples) / 1000,
        "p50": samples[len(samples) // 2] / 1000,
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "concurrent": float("nan"),
    }


async def first_reads(iterations: int) -> tuple[dict[str, float], dict[str, float]]:
    """A stateless cookie read for the first time (verified), and the floor for it.

    The floor is what any signed cookie costs: ``hmac.digest`` + ``compare_digest`` +
    base64 + ``json.loads`` of the same value.
    """
    keyloom = define_keyloom(
        providers=[_provider()],
        secret=SECRET,
        base_url="http://127.0.0.1:8000",
        autoload=False,
        sessions="stateless",
        rate_limits=False,
    )
    result = LoginResult(
        provider_id="bench",
        profile=Profile(provider_id="bench", id="user-1", name="Bench User"),
        tokens=TokenSet(access_token="at"),
        granted_scopes=frozenset({"profile"}),
        requested_scopes=frozenset({"profile"}),
        callback_url="/",
    )
    values = [(await start_session(keyloom, result))[1] for _ in range(iterations)]
    samples = []
    for value in values:  # each one unseen: verified, not remembered
        start = time.perf_counter_ns()
        read_session(keyloom, value)
        samples.append(time.perf_counter_ns() - start)
    key = hashlib.sha256(b"floor").digest()
    body, _, mac = values[0].partition(".")
    expected = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    floor = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        digest = hmac.digest(key, body.encode(), "sha256")
        hmac.compare_digest(digest, expected)
        json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        floor.append(time.perf_counter_ns() - start)
    return _stats(samples), _stats(floor)


async def postgres_row(url: str, iterations: int) -> dict[str, float]:
    """``current_session`` on a :class:`keyloom_sqlalchemy.SQLAlchemyStore` in PostgreSQL."""
    from keyloom_sqlalchemy import SQLAlchemyStore, create_tables

    store = SQLAlchemyStore(url)
    await create_tables(store.engine)
    return await measure(store, iterations)


def postgres_url(stack: contextlib.ExitStack, given: str | None) -> str | None:
    """A PostgreSQL for the SQL store's row, or ``None`` (saying why)."""
    try:
        import asyncpg  # noqa: F401
        from keyloom_sqlalchemy.testing import postgres_server
    except ImportError:
        print("sqlalchemy + PostgreSQL: skipped (keyloom-sqlalchemy or asyncpg not installed)")
        return None
    url = given or stack.enter_context(postgres_server())
    if url is None:
        print("sqlalchemy + PostgreSQL: skipped (no initdb/pg_ctl, no --postgres-url)")
    return url


async def run(
    iterations: int, redis_url: str | None, folder: Path, pg_url: str | None = None
) -> list[tuple[str, Any]]:
    from keyloom_core.store import SQLiteStore

    first, floor = await first_reads(iterations)
    rows: list[tuple[str, Any]] = [
        ("floor (hmac+b64+json)", floor),
        ("stateless, first read", first),
        ("stateless", await measure(None, iterations)),
        ("memory", await measure(MemoryStore(), iterations)),
        ("sqlite", await measure(SQLiteStore(folder / "keyloom.db"), iterations)),
    ]
    if redis_url is not None:
        try:
            from keyloom_core.store import RedisStore
        except ImportError:
            print("redis: skipped (pip install 'keyloom-core[redis]')")
        else:
            rows.append(("redis", await measure(RedisStore(redis_url), iterations)))
    if pg_url is not None:
        rows.append(("sqlalchemy + postgresql", await postgres_row(pg_url, iterations)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000, help="sequential calls per store")
    parser.add_argument("--quick", action="store_true", help="500 calls per store")
    parser.add_argument("--redis-url", help="use this Redis instead of starting redis-server")
    parser.add_argument("--postgres-url", help="an existing PostgreSQL (postgresql+asyncpg://…)")
    args = parser.parse_args()
    iterations = 500 if args.quick else max(10, min(args.iterations, 100_000))
    with tempfile.TemporaryDirectory(prefix="keyloom-bench-") as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = args.redis_url or stack.enter_context(redis_server(folder))
            pg_url = postgres_url(stack, args.postgres_url)
            rows = anyio.run(run, iterations, url, folder, pg_url)
    print(
        f"current_session() on a valid cookie: {iterations} sequential calls per store, "
        f"then {CONCURRENCY} concurrent tasks (one store read per call)"
    )
    print(
        f"{'sessions':<24} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9} {'calls/s (concurrent)':>22}"
    )
    for name, row in rows:
        print(
            f"{name:<24} {row['mean']:>9.1f} {row['p50']:>9.1f} {row['p99']:>9.1f} "
            + ("" if math.isnan(row["concurrent"]) else f"{row['concurrent']:>22,.0f}")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
