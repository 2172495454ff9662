"""Fixtures for the web integration: the same app served through aiohttp and through ASGI.

``integration``
    ``"aiohttp"`` or ``"asgi"``; every test that uses :func:`serve` runs on both.
``serve(*providers, on_login=None, on_logout=None, **keyloom_options)``
    An async context manager running a real server on 127.0.0.1 (aiohttp ``AppRunner`` /
    uvicorn serving Starlette wrapped in ``KeyloomASGI``) whose ``base_url`` is its own
    address. Besides the auth routes, the app has ``GET /`` and ``GET /me`` (the signed-in
    user through ``current_user``). Without providers, the fake RFC 6749 provider of
    ``tests/conftest.py`` is configured. Yields an :class:`AuthServer`.
``browser``
    An ``aiohttp.ClientSession`` with a cookie jar that keeps loopback cookies, like a
    browser talking to a local app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from keyloom_core import Keyloom, Provider
from keyloom_core.web import LoginCallback, LogoutCallback

Serve = Callable[..., contextlib.AbstractAsyncContextManager["AuthServer"]]


@dataclasses.dataclass
class AuthServer:
    """A running app with Keyloom mounted.

    Attributes:
        kind: ``"aiohttp"`` or ``"asgi"``.
        url: The app's origin (also ``keyloom.base_url``).
        keyloom: The instance it serves.
    """

    kind: str
    url: str
    keyloom: Keyloom

    def auth(self, path: str) -> str:
        """The absolute URL of an auth route, e.g. ``auth("/session")``."""
        return f"{self.url}{self.keyloom.base_path}{path}"


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _aiohttp_app(keyloom: Keyloom, **options: Any) -> web.Application:
    from keyloom_core.web.aiohttp import current_session, current_user, setup_keyloom

    async def home(_: web.Request) -> web.Response:
        return web.Response(text="home")

    async def me(request: web.Request) -> web.Response:
        session = await current_session(request)
        return web.json_response(
            {
                "user": await current_user(request),
                "provider": session.provider_id if session else None,
            }
        )

    app = web.Application()
    setup_keyloom(app, keyloom, **options)
    app.router.add_get("/", home)
    app.router.add_get("/me", me)
    return app


def _asgi_app(keyloom: Keyloom, **options: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from keyloom_core.web.asgi import KeyloomASGI, current_session, current_user

    async def home(_: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    async def me(request: Request) -> JSONResponse:
        session = await current_session(request.scope)
        return JSONResponse(
            {
                "user": await current_user(request.scope),
                "provider": session.provider_id if session else None,
            }
        )

    inner = Starlette(routes=[Route("/", home), Route("/me", me)])
    return KeyloomASGI(keyloom, inner, **options)


@contextlib.asynccontextmanager
async def _run_aiohttp(sock: socket.socket, app: web.Application) -> AsyncIterator[None]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _run_uvicorn(sock: socket.socket, app: Any) -> AsyncIterator[None]:
    import uvicorn

    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield
        finally:
            server.should_exit = True


@pytest.fixture(params=["aiohttp", "asgi"])
def integration(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(integration: str, make_keyloom: Callable[..., Keyloom]) -> Serve:
    @contextlib.asynccontextmanager
    async def serve(
        *providers: Provider,
        on_login: LoginCallback | None = None,
        on_logout: LogoutCallback | None = None,
        **keyloom_options: Any,
    ) -> AsyncIterator[AuthServer]:
        sock = _listening_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        keyloom_options.setdefault("base_url", url)
        keyloom = make_keyloom(*providers, **keyloom_options)
        options = {"on_login": on_login, "on_logout": on_logout}
        if integration == "aiohttp":
            running = _run_aiohttp(sock, _aiohttp_app(keyloom, **options))
        else:
            running = _run_uvicorn(sock, _asgi_app(keyloom, **options))
        async with running:
            yield AuthServer(integration, url, keyloom)

    return serve


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session
