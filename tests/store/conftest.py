"""Fixtures for the shared store: every backend (memory, an SQLite file, a real Redis).

``redis_server`` (session scope)
    ``redis-server`` on 127.0.0.1 on a free port, no persistence; yields its URL. Skips
    (saying why) only when the binary or the ``redis`` package is missing.
``redis_url``
    The same URL, database flushed first.
``make_store(kind, **options)``
    A new store of *kind* (``"memory"``, ``"sqlite"``, ``"redis"``); SQLite stores of one
    test share one file, Redis stores one server, so two of them act like two processes.
``store_kind``
    Parametrises a test over the three backends.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyloom_core.store import MemoryStore, Store


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def start_redis(binary: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:*port*; wait (bounded) until it answers PING."""
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None and not ping(port):
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis package is not installed (keyloom-core[redis])")
    folder = tmp_path_factory.mktemp("redis-store")
    for _attempt in range(3):
        port = free_port()
        process = start_redis(binary, port, folder)
        if process.poll() is None and ping(port):
            break
        stop(process)
    else:
        pytest.skip("redis-server did not start on 127.0.0.1")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Store]]:
    made: list[Store] = []
    shared_memory: dict[str, MemoryStore] = {}

    def make(kind: str, **options: Any) -> Store:
        store: Store
        if kind == "memory":
            # One process: "two stores" are the same object, as two tasks would share it.
            key = options.get("namespace", "app")
            store = shared_memory.setdefault(key, MemoryStore(**options))
        elif kind == "sqlite":
            from keyloom_core.store import SQLiteStore

            store = SQLiteStore(tmp_path / "keyloom.db", **options)
        else:
            from keyloom_core.store import RedisStore

            url = options.pop("url", None) or request.getfixturevalue("redis_url")
            store = RedisStore(url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()
