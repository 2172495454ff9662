"""Per-call time of ``TokenManager.access_token()`` for a fresh token (no refresh).

Stores: memory, SQLite (a file in a temporary folder) and Redis (a ``redis-server`` started
on a free 127.0.0.1 port in a temporary folder, or ``--redis-url``). Each call reads the
stored grant (SQLite: one worker-thread hop; Redis: one round trip), decrypts it and checks
expiry and scopes. Prints one table; run standalone: ``python benchmarks/bench_tokens.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keyloom_core import TokenSet  # noqa: E402
from keyloom_core.tokens import MemoryTokenStore, SQLiteTokenStore, TokenManager, TokenStore  # noqa: E402

SECRET = "benchmark-secret-0123456789-abcdefghijklmnop"
SCOPES = frozenset({"user.info.basic", "video.list"})
ACCOUNTS = 100
CONCURRENCY = 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str | None]:
    """A throw-away redis-server on loopback, or None (with the reason printed)."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        print("redis: skipped (no redis-server binary)")
        yield None
        return
    port = _free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder)]
    args += ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        if process.poll() is not None:
            print("redis: skipped (redis-server did not start)")
            yield None
        else:
            yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def measure(store: TokenStore, iterations: int) -> dict[str, float]:
    now = time.time()
    for n in range(ACCOUNTS):
        tokens = TokenSet(
            access_token=f"act.{n:04d}" + "x" * 60,
            refresh_token=f"rft.{n:04d}" + "y" * 60,
            expires_at=now + 86_400,
            refresh_expires_at=now + 365 * 86_400,
            scopes=SCOPES,
        )
        await store.put("tiktok", f"open-id-{n}", tokens, scopes=SCOPES)
    manager = TokenManager(store)  # no refresh is due: no Keyloom instance is needed
    needs = {"video.list"}
    for n in range(min(200, iterations)):  # warm-up
        await manager.access_token("tiktok", f"open-id-{n % ACCOUNTS}", needs=needs)
    samples: list[int] = []
    for n in range(iterations):
        start = time.perf_counter_ns()
        await manager.access_token("tiktok", f"open-id-{n % ACCOUNTS}", needs=needs)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()

    per_task = max(1, iterations // CONCURRENCY)

    async def worker(offset: int) -> None:
        for n in range(per_task):
            account = f"open-id-{(offset + n) % ACCOUNTS}"
            await manager.access_token("tiktok", account, needs=needs)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for offset in range(CONCURRENCY):
            tg.start_soon(worker, offset)
    elapsed = time.perf_counter() - start
    return {
        "mean": statistics.fmean(samples) / 1000,
        "p50": samples[len(samples) // 2] / 1000,
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "concurrent": per_task * CONCURRENCY / elapsed,
    }


async def run(
    iterations: int, redis_url: str | None, folder: Path
) -> list[tuple[str, dict[str, float]]]:
    rows: list[tuple[str, dict[str, float]]] = []
    memory = MemoryTokenStore()
    rows.append(("memory", await measure(memory, iterations)))
    async with SQLiteTokenStore(folder / "tokens.db", secret=SECRET) as sqlite_store:
        rows.append(("sqlite", await measure(sqlite_store, iterations)))
    if redis_url is not None:
        try:
            from keyloom_core.tokens.redis import RedisTokenStore
        except ImportError:
            print("redis: skipped (pip install 'keyloom-core[redis]')")
        else:
            async with RedisTokenStore(redis_url, secret=SECRET) as redis_store:
                await redis_store.client.flushdb()
                rows.append(("redis", await measure(redis_store, iterations)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="sequential calls per store")
    parser.add_argument("--redis-url", help="use this Redis instead of starting redis-server")
    args = parser.parse_args()
    iterations = max(10, min(args.iterations, 100_000))
    with tempfile.TemporaryDirectory(prefix="keyloom-bench-") as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = args.redis_url or stack.enter_context(redis_server(folder))
            rows = anyio.run(run, iterations, url, folder)
    print(
        f"access_token() for a fresh token: {iterations} sequential calls per store, "
        f"then {CONCURRENCY} concurrent tasks; {ACCOUNTS} accounts"
    )
    print(f"{'store':<8} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9} {'calls/s (concurrent)':>22}")
    for name, row in rows:
        print(
            f"{name:<8} {row['mean']:>9.1f} {row['p50']:>9.1f} {row['p99']:>9.1f} "
            f"{row['concurrent']:>22,.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
