"""The Keyloom HTTP protocol, implemented once; framework adapters only translate to it.

:class:`AuthHandler` takes an :class:`AuthRequest` (method, path below the base path,
query pairs, headers, cookies) and returns an :class:`AuthResponse` (status, headers,
``Set-Cookie`` values, body). It speaks the protocol of the JavaScript Keyloom server,
so a front end written for ``@keyloom/react`` works unchanged.
"""

from __future__ import annotations

import html
import json
import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

import anyio
import attrs

from keyloom_core.errors import (
    AccessDeniedError,
    InvalidCallbackError,
    KeyloomError,
    ProviderError,
    StateError,
    TokenExchangeError,
)
from keyloom_core.models import PROVIDER_ID_PATTERN
from keyloom_core.store import Store, StoreUnavailableError, TooManyRequestsError, client_address
from keyloom_core.web._session_io import end_session, load_session, start_session
from keyloom_core.web.sessions import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    Session,
    check_csrf,
    new_csrf_token,
    read_session,
)

if TYPE_CHECKING:
    from keyloom_core._keyloom import Keyloom
    from keyloom_core.models import LoginResult, TokenSet

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_QUERY_FIELDS",
    "STATE_COOKIE",
    "AuthHandler",
    "AuthRequest",
    "AuthResponse",
    "LoginCallback",
    "LogoutCallback",
    "parse_cookies",
    "render_page",
]

log = logging.getLogger("keyloom.web")

STATE_COOKIE: Final = "__keyloom_oauth"
MAX_QUERY_FIELDS: Final = 32
MAX_QUERY_CHARS: Final = 6144

LoginCallback = Callable[["LoginResult"], Awaitable[None]]
"""``async def on_login(result: LoginResult) -> None``: called after a successful login."""

LogoutCallback = Callable[[Session], Awaitable["TokenSet | None"]]
"""``async def on_logout(session: Session) -> TokenSet | None``: called on logout."""

_JSON: Final = "application/json"
_HTML: Final = "text/html; charset=utf-8"
_COMMON_HEADERS: Final = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
_HTML_HEADERS: Final = (
    (
        "Content-Security-Policy",
        (
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        ),
    ),
    ("Referrer-Policy", "no-referrer"),
)
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_ROUTES: Final = {"/session": "GET", "/csrf": "GET", "/providers": "GET", "/logout": "POST"}
_OAUTH_SEGMENTS: Final = 4  # "", "oauth", provider, "start" | "callback"


class _BadRequestError(KeyloomError):
    """The request is malformed (repeated or oversized query parameters)."""

    code = "invalid_request"
    status = 400


class _InternalError(KeyloomError):
    """Something unexpected failed; details are in the server log only."""

    code = "internal_error"
    status = 500


def parse_cookies(headers: Iterable[str]) -> dict[str, str]:
    """Parse ``Cookie`` header values; the first cookie of each name wins (as in browsers).

    Unlike :class:`http.cookies.SimpleCookie`, one malformed cookie does not hide the rest.
    """
    cookies: dict[str, str] = {}
    for header in headers:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            name, value = name.strip(), value.strip()
            if len(value) > 1 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if sep and name and name not in cookies:
                cookies[name] = value
    return cookies


def _upper(value: str) -> str:
    return value.upper()


def _pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(value)


@attrs.frozen
class AuthRequest:
    """A request to one of the auth routes, independent of any web framework.

    Attributes:
        method: The HTTP method, upper case.
        path: The path below the base path, e.g. ``/session`` or ``/oauth/tiktok/start``.
        query: The query parameters in order, repeated keys kept.
        headers: Header values by lower-case name (repeated headers joined with ``", "``).
        cookies: Cookie values by name.
        client: The peer's address (the TCP client, or a proxy), if the server knows it.
    """

    method: str = attrs.field(converter=_upper)
    path: str
    query: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
    headers: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)
    cookies: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False, repr=False)
    client: str | None = attrs.field(default=None, eq=False, hash=False, repr=False)

    @classmethod
    def from_raw(
        cls,
        method: str,
        path: str,
        query_string: str | bytes,
        headers: Iterable[tuple[str, str]],
        client: str | None = None,
    ) -> AuthRequest:
        """Build a request from the raw query string and the header pairs.

        *query_string* is still percent-encoded (as sent); ``Cookie`` headers are parsed.
        """
        if isinstance(query_string, bytes):
            query_string = query_string.decode("latin-1")
        query = parse_qsl(query_string, keep_blank_values=True)
        merged: dict[str, str] = {}
        cookie_headers: list[str] = []
        for name, value in headers:
            key = name.lower()
            if key == "cookie":
                cookie_headers.append(value)
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return cls(
            method=method,
            path=path,
            query=tuple(query),
            headers=merged,
            cookies=parse_cookies(cookie_headers),
            client=client,
        )


@attrs.frozen
class AuthResponse:
    """The answer to an :class:`AuthRequest`, for an adapter to send as is.

    Attributes:
        status: The HTTP status.
        body: The body bytes.
        content_type: The ``Content-Type``, or ``None`` for an empty body.
        headers: Other headers, in order.
        cookies: ``Set-Cookie`` header values, one per cookie.
    """

    status: int
    body: bytes = attrs.field(default=b"", repr=False)
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[str, ...] = attrs.field(default=(), repr=False)

    def header_list(self) -> list[tuple[str, str]]:
        """Every header to send: ``Content-Type``, the others, then one ``Set-Cookie`` each."""
        out = [("Content-Type", self.content_type)] if self.content_type else []
        out.extend(self.headers)
        out.extend(("Set-Cookie", cookie) for cookie in self.cookies)
        return out


def _json_response(
    status: int,
    data: object,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    cookies: tuple[str, ...] = (),
) -> AuthResponse:
    body = json.dumps(data, separators=(",", ":")).encode()  # ASCII: lone surrogates survive
    return AuthResponse(status, body, _JSON, headers=(*_COMMON_HEADERS, *headers), cookies=cookies)


def _wants_html(request: AuthRequest) -> bool:
    """Whether the client is a browser navigating (it accepts HTML, not JSON)."""
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept and "application/json" not in accept


def _secure_cookies(base_url: str) -> bool:
    parts = urlsplit(base_url)
    return not (parts.scheme == "http" and parts.hostname in _LOOPBACK)


@attrs.frozen
class AuthHandler:
    """Serves the Keyloom auth routes under ``keyloom.base_path`` for one instance.

    Routes (below the base path): ``GET /oauth/{provider}/start?callbackUrl=…``,
    ``GET /oauth/{provider}/callback``, ``GET /session``, ``GET /csrf``,
    ``POST /logout`` and ``GET /providers``. Every ``POST`` must carry the CSRF token in
    the ``x-keyloom-csrf`` header, equal to the ``__keyloom_csrf`` cookie.

    Cookies are ``HttpOnly; SameSite=Lax; Path=/`` and ``Secure``, except when
    ``base_url`` is ``http://`` on ``localhost``, ``127.0.0.1`` or ``::1``.

    Attributes:
        keyloom: The configured instance (open it for the app's lifetime).
        on_login: Deprecated: implement the ``login_succeeded`` hook in a plugin given to
            ``define_keyloom`` instead (a :class:`DeprecationWarning` says so). Still
            awaited after each successful login, after the hooks and before the answer
            that sets the session cookie; raising a :class:`~keyloom_core.KeyloomError`
            refuses the login with that error (the tokens are revoked), any other
            exception answers 500 ``internal_error``.
        on_logout: ``async (Session) -> TokenSet | None``, awaited on ``POST /logout`` when
            the browser has a valid session: forget the session's server-side data and
            return its tokens (found by ``session.provider_id`` and ``session.user_id``)
            to have them revoked at the provider, or ``None``. It gets
            ``2 * keyloom.timeout`` seconds, revocation included; its failures are
            logged, and the logout itself always succeeds.
    """

    keyloom: Keyloom
    on_login: LoginCallback | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    on_logout: LogoutCallback | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)
    _secure: bool = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.on_login is not None:
            warnings.warn(
                "on_login is deprecated: implement the login_succeeded hook in a plugin passed "
                "to define_keyloom(plugins=[...]) (the one place to act after a login)",
                DeprecationWarning,
                stacklevel=4,
            )

    @_secure.default
    def _secure_default(self) -> bool:
        return _secure_cookies(self.keyloom.base_url)

    # -- helpers for adapters and apps ---------------------------------------------

    def relative_path(self, path: str) -> str | None:
        """*path* below the base path (``/session``), or ``None`` if it is not an auth route."""
        base = self.keyloom.base_path
        return path[len(base) :] if path.startswith(f"{base}/") else None

    def current_session(self, cookies: Mapping[str, str]) -> Session | None:
        """The valid stateless session in *cookies*, or ``None``.

        :raises RuntimeError: sessions are server-side: use :meth:`load_session`.
        """
        if self.keyloom.sessions.server_side:
            msg = "sessions are server-side: await handler.load_session(cookies)"
            raise RuntimeError(msg)
        return read_session(self.keyloom, cookies.get(SESSION_COOKIE))

    async def load_session(self, cookies: Mapping[str, str]) -> Session | None:
        """The valid session in *cookies*, or ``None``; one store read when server-side.

        :raises StoreUnavailableError: the store failed.
        """
        return await load_session(self.keyloom, cookies.get(SESSION_COOKIE))

    def _client(self, request: AuthRequest) -> str:
        return client_address(
            request.client, request.headers, self.keyloom.settings.trusted_proxies
        )

    @property
    def _store(self) -> Store:
        store = self.keyloom.settings.store
        if store is None:  # define_keyloom refuses rate limits without a store
            msg = "rate limits need a store"
            raise RuntimeError(msg)
        return store

    async def _failed(self, request: AuthRequest, error: KeyloomError) -> None:
        """Count a refused callback against the client's address (not a cancelled one)."""
        limits = self.keyloom.settings.rate_limits
        if limits is not None and isinstance(
            error, StateError | InvalidCallbackError | TokenExchangeError
        ):
            try:
                await limits.failed(self._store, self._client(request))
            except StoreUnavailableError as exc:
                log.warning("keyloom: could not count a failed callback: %s", exc.code)

    def signin_url(self, provider_id: str) -> str:
        """The absolute URL that starts a login with *provider_id*."""
        return f"{self.keyloom.base_url}{self.keyloom.base_path}/oauth/{quote(provider_id)}/start"

    def cookie(self, name: str, value: str, *, max_age: int | None = None) -> str:
        """A ``Set-Cookie`` value with this protocol's attributes."""
        parts = [f"{name}={value}", "Path=/"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        parts += ["HttpOnly", "SameSite=Lax"]
        if self._secure:
            parts.append("Secure")
        return "; ".join(parts)

    # -- dispatch ------------------------------------------------------------------

    async def handle(self, request: AuthRequest) -> AuthResponse:
        """Answer *request*; never raises for bad input, never shows a traceback."""
        try:
            return await self._dispatch(request)
        except KeyloomError as error:
            return self._error(request, error)
        except Exception:
            log.exception("keyloom: unexpected error answering %s %r", request.method, request.path)
            return self._error(request, _InternalError("an unexpected error occurred"))

    async def _dispatch(self, request: AuthRequest) -> AuthResponse:
        match = _match(request.path)
        if match is None:
            return _json_response(404, {"error": "not_found"})
        route, allowed, provider = match
        if request.method == "POST" and not check_csrf(
            self.keyloom, request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER)
        ):
            return _json_response(403, {"error": "csrf"})
        if request.method != allowed:
            return _json_response(
                405, {"error": "method_not_allowed"}, headers=(("Allow", allowed),)
            )
        limits = self.keyloom.settings.rate_limits
        if limits is not None and route in {"start", "callback"}:
            await limits.check(self._store, route, self._client(request))
        routes = {
            "start": self._start,
            "callback": self._callback,
            "session": self._session,
            "csrf": self._csrf,
            "providers": self._providers,
            "logout": self._logout,
        }
        return await routes[route](request, provider)

    # -- routes --------------------------------------------------------------------

    async def _start(self, request: AuthRequest, provider: str) -> AuthResponse:
        query = _single_values(request.query, _BadRequestError)
        start = await self.keyloom.begin_login(provider, callback_url=query.get("callbackUrl"))
        state = self.cookie(STATE_COOKIE, start.state, max_age=int(self.keyloom.state_ttl))
        return _redirect(start.url, cookies=(state,))

    async def _callback(self, request: AuthRequest, provider: str) -> AuthResponse:
        query = _single_values(request.query, InvalidCallbackError)
        if "error" not in query and not (query.get("code") and query.get("state")):
            if _wants_html(request):
                msg = "the sign-in callback has no code or state"
                return self._error(request, InvalidCallbackError(msg, provider_id=provider))
            return _json_response(400, {"error": "invalid_callback"})
        clear_state = self.cookie(STATE_COOKIE, "", max_age=0)
        try:
            result = await self.keyloom.complete_login(
                provider, query, request.cookies.get(STATE_COOKIE)
            )
        except StateError as error:  # not ours to clear: it may belong to another sign-in
            await self._failed(request, error)
            return self._error(request, error)
        except KeyloomError as error:
            await self._failed(request, error)
            return self._error(request, error, cookies=(clear_state,))
        try:
            async with self.keyloom.revoking_on_failure(result.provider_id, result.tokens):
                _, value, max_age = await start_session(self.keyloom, result)
                await end_session(self.keyloom, request.cookies.get(SESSION_COOKIE))
                if self.on_login is not None:
                    await self.on_login(result)
        except KeyloomError as error:
            return self._error(request, error, cookies=(clear_state,))
        log.info("keyloom: signed in with %s", result.provider_id)
        location = urljoin(self.keyloom.base_url, result.callback_url)
        return _redirect(
            location,
            cookies=(self.cookie(SESSION_COOKIE, value, max_age=max_age), clear_state),
        )

    async def _session(self, request: AuthRequest, _: str) -> AuthResponse:
        value = request.cookies.get(SESSION_COOKIE)
        session = await load_session(self.keyloom, value)
        if session is not None:
            return _json_response(200, session.to_json())
        cookies = (self.cookie(SESSION_COOKIE, "", max_age=0),) if value else ()
        return _json_response(200, {"session": None, "user": None}, cookies=cookies)

    async def _csrf(self, _request: AuthRequest, _provider: str) -> AuthResponse:
        token = new_csrf_token(self.keyloom)
        return _json_response(200, {"csrfToken": token}, cookies=(self.cookie(CSRF_COOKIE, token),))

    async def _providers(self, _request: AuthRequest, _provider: str) -> AuthResponse:
        listing = [
            {
                "id": provider.id,
                "name": provider.spec.name,
                "signinUrl": self.signin_url(provider.id),
                "callbackUrl": self.keyloom.redirect_uri(provider),
            }
            for provider in self.keyloom.providers.values()
        ]
        return _json_response(200, listing)

    async def _logout(self, request: AuthRequest, _: str) -> AuthResponse:
        clear = (self.cookie(SESSION_COOKIE, "", max_age=0),)
        try:
            session = await end_session(self.keyloom, request.cookies.get(SESSION_COOKIE))
        except StoreUnavailableError as error:  # the record stays: say so, never "ok"
            return self._error(request, error, cookies=clear)
        if session is not None and self.on_logout is not None:
            await self._revoke(session, self.on_logout)
        return _json_response(200, {"ok": True}, cookies=clear)

    async def _revoke(self, session: Session, on_logout: LogoutCallback) -> None:
        try:
            with anyio.move_on_after(2 * self.keyloom.timeout) as scope:
                tokens = await on_logout(session)
                if tokens is not None:
                    await self.keyloom.revoke(session.provider_id, tokens)
            if scope.cancelled_caught:
                log.warning("keyloom: logout gave up waiting for on_logout / revocation")
        except KeyloomError as exc:
            log.warning("keyloom: logout could not revoke the provider token: %s", exc.code)
        except Exception:
            log.exception("keyloom: the on_logout callback failed")

    # -- errors --------------------------------------------------------------------

    def _error(
        self, request: AuthRequest, error: KeyloomError, *, cookies: tuple[str, ...] = ()
    ) -> AuthResponse:
        status = error.status if 400 <= error.status <= 599 else 500
        log.info(
            "keyloom: %s %r answered %s (%s)", request.method, request.path, status, error.code
        )
        extra = _retry_after(error)
        if not _wants_html(request):
            data = {"error": error.code, "message": error.message, "hint": error.hint}
            return _json_response(status, data, headers=extra, cookies=cookies)
        page = self._error_page(error, status)
        return AuthResponse(
            status,
            page.encode(),
            _HTML,
            headers=(*_COMMON_HEADERS, *_HTML_HEADERS, *extra),
            cookies=cookies,
        )

    def _error_page(self, error: KeyloomError, status: int) -> str:
        provider = self.keyloom.providers.get(error.provider_id or "")
        home = f"{self.keyloom.base_url}/"
        links = [(home, "Back to the site")]
        if isinstance(error, AccessDeniedError):
            name = provider.spec.name if provider is not None else "the provider"
            title = "You cancelled the sign-in"
            text = f"Nothing was shared with {name}. You can sign in again whenever you like."
        elif status < 500 or isinstance(error, ProviderError):
            title = "Sign-in failed"
            text = error.message[:1].upper() + error.message[1:] + "."
        else:
            title = "Something went wrong"
            text = "The sign-in could not be completed. Please try again in a moment."
        if provider is not None:
            links.insert(0, (self.signin_url(provider.id), "Try again"))
        return render_page(title, text, code=error.code, hint=error.hint, links=links)


_PROVIDER_ID = re.compile(PROVIDER_ID_PATTERN.strip("^$"))


def _retry_after(error: KeyloomError) -> tuple[tuple[str, str], ...]:
    if isinstance(error, TooManyRequestsError):
        return (("Retry-After", str(error.retry_after)),)
    if isinstance(error, StoreUnavailableError):
        return (("Retry-After", "5"),)
    return ()


def _match(path: str) -> tuple[str, str, str] | None:
    """``(route, allowed method, provider id or "")`` for *path*, or ``None``."""
    allowed = _ROUTES.get(path)
    if allowed is not None:
        return path[1:], allowed, ""
    parts = path.split("/")
    if (
        len(parts) == _OAUTH_SEGMENTS
        and parts[1] == "oauth"
        and _PROVIDER_ID.fullmatch(parts[2])
        and parts[3] in {"start", "callback"}
    ):
        return parts[3], "GET", parts[2]
    return None


def _single_values(pairs: tuple[tuple[str, str], ...], error: type[KeyloomError]) -> dict[str, str]:
    """The query as a dict; refuses repeated keys and oversized queries with *error*."""
    if len(pairs) > MAX_QUERY_FIELDS or sum(len(k) + len(v) for k, v in pairs) > MAX_QUERY_CHARS:
        raise error("the query string is too long")
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            shown = f"'{key}'" if _SIMPLE_NAME.match(key) else "a query parameter"
            raise error(f"{shown} is given more than once")
        values[key] = value
    return values


def _redirect(location: str, *, cookies: tuple[str, ...]) -> AuthResponse:
    return AuthResponse(
        302,
        headers=(("Location", location), *_COMMON_HEADERS, ("Referrer-Policy", "no-referrer")),
        cookies=cookies,
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:#f4f5f7;
color:#1d2330;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}}
main{{max-width:30rem;margin:1rem;padding:2rem;background:#fff;border-radius:12px;
box-shadow:0 2px 16px rgba(0,0,0,.08)}}
h1{{margin:0 0 .75rem;font-size:1.35rem}}
.hint{{color:#555;font-size:.95rem}}
code{{background:#eef0f4;padding:.1rem .4rem;border-radius:4px;font-size:.85rem}}
nav a{{display:inline-block;margin:.5rem 1rem 0 0;color:#2456d3}}
</style></head>
<body><main><h1>{title}</h1><p>{text}</p>{hint}<p><code>{code}</code></p>
<nav>{links}</nav></main></body></html>
"""


def render_page(
    title: str,
    text: str,
    *,
    code: str,
    hint: str | None = None,
    links: Iterable[tuple[str, str]] = (),
) -> str:
    """A small, styled HTML page; every value is escaped.

    *links* are ``(url, label)`` pairs; only ``http(s)`` URLs and paths are rendered.
    """
    esc = html.escape
    hint_html = f'<p class="hint">{esc(hint)}</p>' if hint else ""
    links_html = "".join(
        f'<a href="{esc(url)}">{esc(label)}</a>'
        for url, label in links
        if url.startswith(("https://", "http://", "/"))
    )
    return _PAGE.format(
        title=esc(title), text=esc(text), hint=hint_html, code=esc(code), links=links_html
    )
