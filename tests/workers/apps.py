"""The app the multi-worker tests serve, once as ASGI (uvicorn) and once as aiohttp (gunicorn).

Configured from the environment, as a deployed app is: ``KEYLOOM_SECRET``, ``KEYLOOM_URL``,
``KEYLOOM_STORE`` (``redis://…`` or ``sqlite:///…``) and ``WORKERS_EMULATOR`` (the TikTok
emulator's origin). Every response carries ``X-Worker`` (the worker's pid). Besides the auth
routes: ``GET /me`` answers ``{"user", "worker"}`` from ``current_session``, or the store
error as ``503 {"error": "store_unavailable", ...}``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from keyloom_core import Keyloom, KeyloomError, define_keyloom
from keyloom_core.store import open_store
from keyloom_core.tokens import TokenManager

CLIENT_KEY = "awkeyloomemulator"
CLIENT_SECRET = "keyloom-emulator-client-secret"
PID = str(os.getpid())


def make_keyloom() -> Keyloom:
    from keyloom_tiktok import tiktok

    secret = os.environ["KEYLOOM_SECRET"]
    store = open_store(os.environ["KEYLOOM_STORE"], namespace="workers")
    manager = TokenManager(store.token_store(secret=secret))
    provider = tiktok(
        client_id=CLIENT_KEY,
        client_secret=CLIENT_SECRET,
        endpoint_origin=os.environ["WORKERS_EMULATOR"],
        scopes=["user.info.basic"],
    )
    return define_keyloom(
        providers=[provider],
        secret=secret,
        base_url=os.environ["KEYLOOM_URL"],
        autoload=False,
        store=store,
        plugins=[manager.plugin],
        trusted_proxies=["127.0.0.1"],
    )


def _me(session: Any) -> tuple[int, dict[str, Any]]:
    user = dict(session.user) if session is not None else None
    return 200, {"user": user, "worker": PID}


def _error(error: KeyloomError) -> tuple[int, dict[str, Any]]:
    return error.status, {"error": error.code, "message": error.message, "hint": error.hint}


# -- ASGI, under uvicorn --------------------------------------------------------------------


def asgi_app() -> Any:
    """``uvicorn apps:asgi_app --factory``."""
    from keyloom_core.web.asgi import KeyloomASGI, current_session

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/me":
            try:
                status, data = _me(await current_session(scope))
            except KeyloomError as error:
                status, data = _error(error)
        else:
            status, data = 404, {"error": "not_found"}
        body = json.dumps(data).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    app = KeyloomASGI(make_keyloom(), inner)

    async def tagged(scope: Any, receive: Any, send: Any) -> None:
        async def tagging_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-worker", PID.encode())]}
            await send(message)

        await app(scope, receive, tagging_send)

    return tagged


# -- aiohttp, under gunicorn's aiohttp worker -------------------------------------------------


async def aiohttp_app() -> web.Application:
    """``gunicorn apps:aiohttp_app --worker-class aiohttp.GunicornWebWorker``."""
    from keyloom_core.web.aiohttp import current_session, setup_keyloom

    @web.middleware
    async def tag(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Worker"] = PID
        return response

    async def me(request: web.Request) -> web.Response:
        try:
            status, data = _me(await current_session(request))
        except KeyloomError as error:
            status, data = _error(error)
        return web.json_response(data, status=status)

    app = web.Application(middlewares=[tag])
    setup_keyloom(app, make_keyloom())
    app.router.add_get("/me", me)
    return app
