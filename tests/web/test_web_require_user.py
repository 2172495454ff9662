"""``require_user`` (Starlette under uvicorn) and ``@login_required`` (aiohttp) over HTTP."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
import yarl
from aiohttp import web

from keyloom_core import Keyloom
from keyloom_core.users import MemoryAdapter

pytestmark = pytest.mark.anyio


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _aiohttp_app(keyloom: Keyloom) -> web.Application:
    from keyloom_core.web.aiohttp import USER_KEY, login_required, setup_keyloom

    @login_required
    async def me(request: web.Request) -> web.Response:
        return web.json_response({"id": request[USER_KEY]["id"]})

    app = web.Application()
    setup_keyloom(app, keyloom)
    app.router.add_get("/me", me)
    return app


def _starlette_app(keyloom: Keyloom) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from keyloom_core.web.asgi import KeyloomASGI
    from keyloom_core.web.starlette import EXCEPTION_HANDLERS, require_user

    async def me(request: Request) -> JSONResponse:
        user = await require_user(request)
        return JSONResponse({"id": user["id"]})

    inner = Starlette(routes=[Route("/me", me)], exception_handlers=EXCEPTION_HANDLERS)
    return KeyloomASGI(keyloom, inner)


@contextlib.asynccontextmanager
async def _serve(kind: str, sock: socket.socket, keyloom: Keyloom) -> AsyncIterator[None]:
    if kind == "aiohttp":
        runner = web.AppRunner(_aiohttp_app(keyloom))
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            yield
        finally:
            await runner.cleanup()
        return
    import uvicorn

    config = uvicorn.Config(
        _starlette_app(keyloom), lifespan="on", log_config=None, log_level="warning"
    )
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


@pytest.mark.parametrize("kind", ["aiohttp", "starlette"])
async def test_signed_out_is_401_json_and_signed_in_gets_the_user(
    kind: str, make_keyloom: Callable[..., Keyloom]
) -> None:
    sock = _socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    keyloom = make_keyloom(adapter=MemoryAdapter(), base_url=url)
    async with (
        _serve(kind, sock, keyloom),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
    ):
        async with browser.get(f"{url}/me") as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": "sign_in_required"}
        async with browser.get(f"{url}/api/auth/oauth/fake/start", allow_redirects=False) as resp:
            at_provider = resp.headers["Location"]
        async with browser.get(at_provider, allow_redirects=False) as resp:
            back = yarl.URL(resp.headers["Location"], encoded=True)
        async with browser.get(back, allow_redirects=False) as resp:
            assert resp.status == 302
        async with browser.get(f"{url}/me") as resp:
            assert resp.status == 200
            user_id = (await resp.json())["id"]
        assert keyloom.users is not None
        assert await keyloom.users.get(user_id) is not None
