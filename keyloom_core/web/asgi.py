"""Keyloom as pure ASGI: serve the auth routes, pass everything else to your app.

No framework is imported, so it works with Starlette, FastAPI, Quart, Litestar or a bare
ASGI callable::

    from fastapi import FastAPI, Request
    from keyloom_core.web.asgi import KeyloomASGI, current_user

    api = FastAPI()

    @api.get("/me")
    async def me(request: Request) -> dict:
        return {"user": await current_user(request.scope)}

    app = KeyloomASGI(keyloom, api)        # serve `app` with uvicorn

:class:`KeyloomASGI` handles the ``lifespan`` protocol: *keyloom* is opened once the
wrapped app has started and closed when it has shut down. Requests to the auth routes
never reach the wrapped app; every other request does, with the handler available as
``scope["state"]["keyloom"]`` (``request.state.keyloom`` in Starlette).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio

from ._protocol import AuthHandler, AuthRequest, LoginCallback, LogoutCallback, parse_cookies
from ._session_io import load_session
from ._wire import cookie_value
from .sessions import read_session

if TYPE_CHECKING:
    from keyloom_core._keyloom import Keyloom
    from keyloom_core.web.sessions import Session

__all__ = ["STATE_KEY", "ASGIApp", "KeyloomASGI", "current_session", "current_user"]

log = logging.getLogger("keyloom.web")

Scope = MutableMapping[str, Any]
"""An ASGI connection scope (Starlette's ``Scope`` is the same type)."""
Message = MutableMapping[str, Any]
"""An ASGI event."""
Receive = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

STATE_KEY = "keyloom"
"""Key of the :class:`~keyloom_core.web.AuthHandler` in ``scope["state"]``."""


class KeyloomASGI:
    """An ASGI app serving the Keyloom routes under ``keyloom.base_path``.

    :param keyloom: the configured instance.
    :param app: the ASGI app to pass every other request to; without one, other paths
        answer 404 ``{"error": "not_found"}``.
    :param on_login: see :class:`~keyloom_core.web.AuthHandler`.
    :param on_logout: see :class:`~keyloom_core.web.AuthHandler`.

    When the server runs without lifespan events, *keyloom* is opened on the first auth
    request instead, and never closed.
    """

    def __init__(
        self,
        keyloom: Keyloom,
        app: ASGIApp | None = None,
        *,
        on_login: LoginCallback | None = None,
        on_logout: LogoutCallback | None = None,
    ) -> None:
        self.handler = AuthHandler(keyloom, on_login=on_login, on_logout=on_logout)
        self.app = app
        self._open = False
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"KeyloomASGI(base_path={self.handler.keyloom.base_path!r}, app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind == "http":
            path = self._auth_path(scope)
            if path is not None:
                await self._serve(scope, path, send)
                return
        scope.setdefault("state", {})[STATE_KEY] = self.handler
        if self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await self._serve(scope, "/", send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    def _auth_path(self, scope: Scope) -> str | None:
        """The path below the base path, whether or not ``path`` includes ``root_path``."""
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        candidates = [path]
        if root:
            candidates.append(path[len(root) :] if path.startswith(root) else root + path)
        for candidate in candidates:
            relative = self.handler.relative_path(candidate)
            if relative is not None:
                return relative
        return None

    async def _serve(self, scope: Scope, path: str, send: Send) -> None:
        if not self._open:
            await self._open_keyloom(lazily=True)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
        ]
        client = scope.get("client")
        request = AuthRequest.from_raw(
            scope.get("method", "GET"),
            path,
            scope.get("query_string", b""),
            headers,
            client=str(client[0]) if client else None,
        )
        response = await self.handler.handle(request)
        raw_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.header_list()
        ]
        raw_headers.append((b"content-length", str(len(response.body)).encode()))
        await send(
            {"type": "http.response.start", "status": response.status, "headers": raw_headers}
        )
        await send({"type": "http.response.body", "body": response.body})

    # -- lifespan --------------------------------------------------------------------

    async def _open_keyloom(self, *, lazily: bool = False) -> None:
        async with self._lock:
            if not self._open:
                await self.handler.keyloom.__aenter__()
                self._open = True
                if lazily:
                    log.warning("keyloom: opened on first request (the server sent no lifespan)")

    async def _close_keyloom(self) -> None:
        async with self._lock:
            if self._open:
                self._open = False
                await self.handler.keyloom.__aexit__(None, None, None)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is None:
            await self._own_lifespan(receive, send)
            return

        async def lifespan_send(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                try:
                    await self._open_keyloom()
                except Exception as exc:
                    log.exception("keyloom: could not open")
                    message = {"type": "lifespan.startup.failed", "message": _describe(exc)}
            elif kind in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                await self._close_keyloom()
            await send(message)

        await self.app(scope, receive, lifespan_send)

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._open_keyloom()
                except Exception as exc:
                    log.exception("keyloom: could not open")
                    await send({"type": "lifespan.startup.failed", "message": _describe(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._close_keyloom()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _describe(exc: BaseException) -> str:
    return f"keyloom could not open: {type(exc).__name__}"


def _cookies(scope: Scope) -> dict[str, str]:
    return parse_cookies(
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == b"cookie"
    )


def _handler(scope: Scope) -> AuthHandler:
    handler = scope.get("state", {}).get(STATE_KEY)
    if isinstance(handler, AuthHandler):
        return handler
    msg = "no Keyloom in this request's scope: wrap the app with KeyloomASGI(keyloom, app)"
    raise RuntimeError(msg)


async def current_session(scope: Scope) -> Session | None:
    """The request's valid Keyloom session, or ``None``.

    Pass the ASGI scope (``request.scope`` in Starlette and FastAPI).

    Server-side sessions cost one store read.

    :raises RuntimeError: the request did not pass through :class:`KeyloomASGI`.
    :raises StoreUnavailableError: the store failed (a ``KeyloomError`` with status 503).
    """
    handler = _handler(scope)
    keyloom = handler.keyloom
    headers = (v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"cookie")
    value = cookie_value(headers, handler.session_cookie)
    if not keyloom.sessions.server_side:  # one coroutine less per request
        return read_session(keyloom, value)
    return await load_session(keyloom, value)


async def current_user(scope: Scope) -> dict[str, Any] | None:
    """The signed-in user object (``id``, ``name``, ``email``, ``image``…), or ``None``."""
    session = await current_session(scope)
    return dict(session.user) if session is not None else None
