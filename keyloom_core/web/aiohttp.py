"""Keyloom for aiohttp.web: mount the auth routes and read the session in handlers.

::

    from aiohttp import web
    from keyloom_core.web.aiohttp import current_user, setup_keyloom

    async def dashboard(request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            raise web.HTTPFound("/api/auth/oauth/tiktok/start?callbackUrl=/dashboard")
        return web.Response(text=f"Hello {user['name']}")

    app = web.Application()
    setup_keyloom(app, keyloom)
    app.router.add_get("/dashboard", dashboard)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial, wraps
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import CIMultiDict

from ._protocol import AuthHandler, AuthRequest, LoginCallback, LogoutCallback
from ._session_io import load_session
from ._users import signed_in_user
from ._wire import cookie_value
from .sessions import read_session

if TYPE_CHECKING:
    from keyloom_core._keyloom import Keyloom
    from keyloom_core.web.sessions import Session

__all__ = [
    "KEYLOOM_HANDLER",
    "USER_KEY",
    "current_session",
    "current_user",
    "login_required",
    "setup_keyloom",
]

KEYLOOM_HANDLER = web.AppKey("keyloom_handler", AuthHandler)
"""The app key under which :func:`setup_keyloom` stores the :class:`AuthHandler`."""


def setup_keyloom(
    app: web.Application,
    keyloom: Keyloom,
    *,
    on_login: LoginCallback | None = None,
    on_logout: LogoutCallback | None = None,
) -> AuthHandler:
    """Mount the auth routes under ``keyloom.base_path`` and tie *keyloom* to *app*'s life.

    *keyloom* is opened when the app starts and closed when it shuts down (through
    ``app.cleanup_ctx``). For *on_login* and *on_logout* see
    :class:`~keyloom_core.web.AuthHandler`.

    :returns: the handler, also stored as ``app[KEYLOOM_HANDLER]``.
    """
    handler = AuthHandler(keyloom, on_login=on_login, on_logout=on_logout)
    app[KEYLOOM_HANDLER] = handler

    async def keyloom_lifetime(_: web.Application) -> AsyncIterator[None]:
        async with keyloom:
            yield

    app.cleanup_ctx.append(keyloom_lifetime)
    app.router.add_route("*", f"{keyloom.base_path}/{{tail:.*}}", partial(_handle, handler))
    return handler


async def _handle(handler: AuthHandler, request: web.Request) -> web.StreamResponse:
    path = handler.relative_path(request.path) or "/"
    auth_request = AuthRequest.from_raw(
        request.method,
        path,
        request.rel_url.raw_query_string,
        request.headers.items(),
        client=request.remote,
    )
    response = await handler.handle(auth_request)
    return web.Response(
        status=response.status,
        body=response.body,
        headers=CIMultiDict(response.header_list()),
    )


def _handler(request: web.Request) -> AuthHandler:
    try:  # the request's app first: building the chain of apps costs as much again (0.9 µs)
        return request.app[KEYLOOM_HANDLER]
    except KeyError:
        pass
    try:  # a sub-app's request: the app that set Keyloom up is a parent
        return request.config_dict[KEYLOOM_HANDLER]
    except KeyError:
        msg = "Keyloom is not set up on this app: call setup_keyloom(app, keyloom)"
        raise RuntimeError(msg) from None


async def current_session(request: web.Request) -> Session | None:
    """The request's valid Keyloom session, or ``None`` (no cookie, tampered, expired, ended).

    Server-side sessions cost one store read.

    :raises StoreUnavailableError: the store failed (a ``KeyloomError`` with status 503).
    """
    handler = _handler(request)
    keyloom = handler.keyloom
    value = cookie_value(request.headers.getall("Cookie", ()), handler.session_cookie)
    if not keyloom.sessions.server_side:  # one coroutine less per request
        return read_session(keyloom, value)
    return await load_session(keyloom, value)


async def current_user(request: web.Request) -> dict[str, Any] | None:
    """The signed-in user object (``id``, ``name``, ``email``, ``image``…), or ``None``."""
    session = await current_session(request)
    return dict(session.user) if session is not None else None


USER_KEY = web.RequestKey("keyloom_user", dict[str, Any])
"""Where :func:`login_required` puts the user object in the request (``request[USER_KEY]``)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def login_required(handler: Handler) -> Handler:
    """Decorate an aiohttp handler: signed out, it answers ``401 {"error": "sign_in_required"}``.

    Signed in, the user object (as in ``GET /session``) is in ``request[USER_KEY]``::

        @login_required
        async def me(request: web.Request) -> web.Response:
            return web.json_response({"name": request[USER_KEY]["name"]})
    """

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        keyloom_handler = _handler(request)
        session = await current_session(request)
        user = await signed_in_user(keyloom_handler.keyloom, session)
        if user is None:
            return web.json_response(
                {"error": "sign_in_required"}, status=401, headers={"Cache-Control": "no-store"}
            )
        request[USER_KEY] = user
        return await handler(request)

    return guarded
