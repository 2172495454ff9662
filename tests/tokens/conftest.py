"""Fixtures for the token lifecycle tests: a real redis-server, the TikTok emulator, logins.

``redis_server`` (session scope)
    Starts ``redis-server`` on 127.0.0.1 on a free port, in a temporary directory, with no
    automatic snapshots; yields its ``redis://`` URL. Skips (saying why) only when the
    binary or the ``redis`` package is missing, or the server does not start.
``redis_url``
    The same URL, with the database flushed before the test.
``emulator``
    A running :class:`CountingEmulator` (consent ``"approve"``): it counts refresh grants
    and can slow them down (``refresh_delay``) so that concurrent callers overlap.
``clock``
    A :class:`Clock` (``time.time() + offset``) for managers: moving it forward makes
    stored tokens expire without waiting.
``make_keyloom(*plugins)``
    A Keyloom instance for the emulator's default app (not opened).
``login(keyloom)``
    A whole TikTok sign-in through the emulator; returns the ``LoginResult``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aiohttp import web

from keyloom_core import Keyloom, LoginResult, define_keyloom

pytest.importorskip(
    "cryptography", reason="keyloom_core.tokens needs 'cryptography' (keyloom-core[tokens])"
)
tiktok_plugin = pytest.importorskip("keyloom_tiktok")
emulator_module = pytest.importorskip("keyloom_tiktok.emulator")

SECRET = "token-store-test-secret-0123456789-abcdefghij"
BASE_URL = "http://127.0.0.1:8000"
SCOPES = ("user.info.basic", "video.list")


class CountingEmulator(emulator_module.TikTokEmulator):
    """The TikTok emulator, counting ``refresh_token`` grants at its token endpoint."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.refresh_requests = 0
        self.refreshes = 0
        self.token_requests = 0
        self.refresh_delay = 0.0

    def build_app(self) -> web.Application:
        app = super().build_app()

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path != emulator_module.TOKEN_PATH:
                return await handler(request)
            self.token_requests += 1
            form = await request.post()
            if form.get("grant_type") != "refresh_token":
                return await handler(request)
            self.refresh_requests += 1
            await asyncio.sleep(self.refresh_delay)
            response = await handler(request)
            if response.status == 200:
                self.refreshes += 1
            return response

        app.middlewares.append(count)
        return app


class Clock:
    """``time.time() + offset``: a manager clock that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emulator() -> AsyncIterator[CountingEmulator]:
    async with CountingEmulator(consent="approve", access_token_ttl=600) as server:
        yield server


def provider_for(origin: str) -> Any:
    return tiktok_plugin.tiktok(
        client_id=emulator_module.DEFAULT_CLIENT_KEY,
        client_secret=emulator_module.DEFAULT_CLIENT_SECRET,
        endpoint_origin=origin,
        scopes=SCOPES,
    )


def keyloom_for(origin: str, *plugins: object) -> Keyloom:
    return define_keyloom(
        providers=[provider_for(origin)],
        secret=SECRET,
        base_url=BASE_URL,
        autoload=False,
        plugins=list(plugins),
    )


@pytest.fixture
def make_keyloom(emulator: CountingEmulator) -> Callable[..., Keyloom]:
    def make(*plugins: object) -> Keyloom:
        return keyloom_for(emulator.url, *plugins)

    return make


async def sign_in(keyloom: Keyloom) -> LoginResult:
    start = await keyloom.begin_login("tiktok")
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(start.url, allow_redirects=False) as resp,
    ):
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    query = dict(parse_qsl(urlsplit(location).query))
    return await keyloom.complete_login("tiktok", query, start.state)


@pytest.fixture
def login() -> Callable[[Keyloom], Awaitable[LoginResult]]:
    return sign_in


# -- redis-server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis package is not installed (keyloom-core[redis])")
    folder = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):
        port = _free_port()
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--dir",
                str(folder),
                "--dbfilename",
                "dump.rdb",
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
        while time.monotonic() < deadline and process.poll() is None and not _ping(port):
            time.sleep(0.05)
        if process.poll() is None and _ping(port):
            break
        process.kill()
        process.wait()
    else:
        pytest.skip("redis-server did not start on 127.0.0.1")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture
def redis_dir(redis_server: str) -> Path:
    import redis

    client = redis.Redis.from_url(redis_server)
    try:
        return Path(str(client.config_get("dir")["dir"]))
    finally:
        client.close()
