"""Web integration: the Keyloom HTTP protocol for aiohttp and ASGI apps.

The routes, under ``keyloom.base_path`` (``/api/auth``), speak the protocol of the
JavaScript Keyloom server, so a front end written for ``@keyloom/react`` works unchanged:

==========================================  =============================================
``GET  /oauth/{provider}/start``            302 to the provider; ``?callbackUrl=/path``
``GET  /oauth/{provider}/callback``         302 to the callback URL, session cookie set
``GET  /session``                           ``{"session": {...} | null, "user": ... | null}``
``GET  /csrf``                              ``{"csrfToken": "..."}`` + the CSRF cookie
``POST /logout``                            ``{"ok": true}``; needs ``x-keyloom-csrf``
``GET  /providers``                         ``[{"id", "name", "signinUrl", "callbackUrl"}]``
==========================================  =============================================

aiohttp::

    from keyloom_core.web.aiohttp import current_user, setup_keyloom

    app = web.Application()
    setup_keyloom(app, keyloom, on_logout=forget_tokens)

ASGI (Starlette, FastAPI, or any ASGI app; no framework dependency)::

    from keyloom_core.web.asgi import KeyloomASGI, current_session

    app = KeyloomASGI(keyloom, starlette_app)

Provider tokens never go into the session cookie. The ``login_succeeded`` hook of a plugin
given to ``define_keyloom`` is where an app stores ``result.tokens`` (a
:class:`~keyloom_core.tokens.TokenManager` does it); ``on_logout(session)`` returns them
again (or ``None``) so that logging out revokes them at the provider. See
:class:`AuthHandler`.

This package imports neither aiohttp nor any ASGI framework; the adapter modules
``keyloom_core.web.aiohttp`` and ``keyloom_core.web.asgi`` are imported explicitly.
"""

from keyloom_core.web.sessions import CSRF_COOKIE as CSRF_COOKIE
from keyloom_core.web.sessions import CSRF_HEADER as CSRF_HEADER
from keyloom_core.web.sessions import SESSION_COOKIE as SESSION_COOKIE
from keyloom_core.web.sessions import Session as Session

from ._protocol import MAX_QUERY_CHARS as MAX_QUERY_CHARS
from ._protocol import MAX_QUERY_FIELDS as MAX_QUERY_FIELDS
from ._protocol import STATE_COOKIE as STATE_COOKIE
from ._protocol import AuthHandler as AuthHandler
from ._protocol import AuthRequest as AuthRequest
from ._protocol import AuthResponse as AuthResponse
from ._protocol import LoginCallback as LoginCallback
from ._protocol import LogoutCallback as LogoutCallback
from ._protocol import parse_cookies as parse_cookies
from ._protocol import render_page as render_page

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_FIELDS",
    "SESSION_COOKIE",
    "STATE_COOKIE",
    "AuthHandler",
    "AuthRequest",
    "AuthResponse",
    "LoginCallback",
    "LogoutCallback",
    "Session",
    "parse_cookies",
    "render_page",
]
