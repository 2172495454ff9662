"""The Keyloom HTTP protocol, implemented once; framework adapters only translate to it.

:class:`AuthHandler` takes an :class:`AuthRequest` (method, path below the base path,
query pairs, headers, cookies) and returns an :class:`AuthResponse` (status, headers,
``Set-Cookie`` values, body). It speaks the protocol of the JavaScript Keyloom server,
so a front end written for ``@keyloom/react`` works unchanged.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urljoin, urlsplit

import anyio
import attrs

from keyloom_core.errors import (
    AccessDeniedError,
    InvalidCallbackError,
    InvalidRedirectError,
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

from ._messages import (
    COMMON_HEADERS,
    HTML_HEADERS,
    HTML_TYPE,
    AuthRequest,
    AuthResponse,
    json_response,
    redirect,
    render_page,
    wants_html,
)
from ._users import accounts_answer, link_target, session_json, unlink_answer
from ._wire import (
    AUTH_COOKIES,
    HOST_PREFIX,
    MAX_COOKIE_BYTES,
    STATE_COOKIE,
    check_sendable,
    host_cookie_name,
    parse_cookies,
)

if TYPE_CHECKING:
    from keyloom_core._keyloom import Keyloom
    from keyloom_core.models import LoginResult, TokenSet

__all__ = [
    "AUTH_COOKIES",
    "HOST_PREFIX",
    "MAX_COOKIE_BYTES",
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

MAX_QUERY_FIELDS: Final = 32
MAX_QUERY_CHARS: Final = 6144

LoginCallback = Callable[["LoginResult"], Awaitable[None]]
"""``async def on_login(result: LoginResult) -> None``: called after a successful login."""

LogoutCallback = Callable[[Session], Awaitable["TokenSet | None"]]
"""``async def on_logout(session: Session) -> TokenSet | None``: called on logout."""

_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_ROUTES: Final = {
    "/session": "GET",
    "/csrf": "GET",
    "/providers": "GET",
    "/logout": "POST",
    "/accounts": "GET",
    "/accounts/unlink": "POST",
}
_OAUTH_SEGMENTS: Final = 4  # "", "oauth", provider, "start" | "callback"


class _BadRequestError(KeyloomError):
    """The request is malformed (repeated or oversized query parameters)."""

    code = "invalid_request"
    status = 400


class _InternalError(KeyloomError):
    """Something unexpected failed; details are in the server log only."""

    code = "internal_error"
    status = 500


def _secure_cookies(base_url: str) -> bool:
    parts = urlsplit(base_url)
    return not (parts.scheme == "http" and parts.hostname in _LOOPBACK)


@attrs.frozen
class AuthHandler:
    """Serves the Keyloom auth routes under ``keyloom.base_path`` for one instance.

    Routes (below the base path): ``GET /oauth/{provider}/start?callbackUrl=…``,
    ``GET /oauth/{provider}/callback``, ``GET /session``, ``GET /csrf``,
    ``POST /logout``, ``GET /providers``, and with an adapter ``GET /accounts`` and
    ``POST /accounts/unlink`` (:mod:`keyloom_core.web._users`); ``HEAD`` on a ``GET``
    route answers as ``GET`` without the body. Every ``POST`` must carry the CSRF token in the
    ``x-keyloom-csrf`` header, equal to the CSRF cookie and minted for the browser's
    current session (or for no session, when signed out).

    Cookies are ``HttpOnly; SameSite=Lax; Path=/`` and ``Secure``, except when
    ``base_url`` is ``http://`` on ``localhost``, ``127.0.0.1`` or ``::1``. Secure cookies
    carry the ``__Host-`` prefix (``__Host-keyloom_session``, ``__Host-keyloom_csrf``,
    ``__Host-keyloom_oauth``; see :attr:`session_cookie` and its siblings).

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

    def _cookie_name(self, name: str) -> str:
        return host_cookie_name(name) if self._secure else name

    @property
    def session_cookie(self) -> str:
        """The session cookie's name.

        ``__Host-keyloom_session`` when cookies are Secure, ``__keyloom_session`` on a
        loopback ``http://`` base URL.
        """
        return self._cookie_name(SESSION_COOKIE)

    @property
    def csrf_cookie(self) -> str:
        """The CSRF cookie's name (``__Host-keyloom_csrf`` or ``__keyloom_csrf``)."""
        return self._cookie_name(CSRF_COOKIE)

    @property
    def state_cookie(self) -> str:
        """The login state cookie's name (``__Host-keyloom_oauth`` or ``__keyloom_oauth``)."""
        return self._cookie_name(STATE_COOKIE)

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
        return read_session(self.keyloom, cookies.get(self.session_cookie))

    async def load_session(self, cookies: Mapping[str, str]) -> Session | None:
        """The valid session in *cookies*, or ``None``; one store read when server-side.

        :raises StoreUnavailableError: the store failed.
        """
        return await load_session(self.keyloom, cookies.get(self.session_cookie))

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
        """Answer *request*; never raises for bad input, never shows a traceback.

        A ``HEAD`` request gets the answer of the ``GET`` without its body.
        """
        try:
            response = await self._dispatch(request)
            check_sendable(response.header_list())
        except KeyloomError as error:
            response = self._error(request, error)
        except Exception:
            log.exception("keyloom: unexpected error answering %s %r", request.method, request.path)
            response = self._error(request, _InternalError("an unexpected error occurred"))
        return attrs.evolve(response, body=b"") if request.method == "HEAD" else response

    async def _dispatch(self, request: AuthRequest) -> AuthResponse:
        match = _match(request.path)
        if match is None:
            return json_response(404, {"error": "not_found"})
        route, allowed, provider = match
        session: Session | None = None
        if request.method == "POST":  # the session, read once: for the CSRF check and the route
            checked = await self._checked_post(request, route)
            if isinstance(checked, AuthResponse):
                return checked
            session = checked
        head = request.method == "HEAD" and allowed == "GET"
        if request.method != allowed and not head:
            allow = "GET, HEAD" if allowed == "GET" else allowed
            return json_response(405, {"error": "method_not_allowed"}, headers=(("Allow", allow),))
        limits = self.keyloom.settings.rate_limits
        if limits is not None and route in {"start", "callback"}:
            await limits.check(self._store, route, self._client(request))
        if route == "logout":
            return await self._logout(request, session)
        if route == "accounts/unlink":
            return await unlink_answer(
                self.keyloom, session, _single_values(request.query, _BadRequestError)
            )
        routes = {
            "start": self._start,
            "callback": self._callback,
            "session": self._session,
            "csrf": self._csrf,
            "providers": self._providers,
            "accounts": self._accounts,
        }
        return await routes[route](request, provider)

    async def _checked_post(
        self, request: AuthRequest, route: str
    ) -> Session | AuthResponse | None:
        """A POST's session (``None``: signed out), or the answer refusing the POST."""
        try:
            session = await self.load_session(request.cookies)
        except StoreUnavailableError as error:  # a logout says so, and clears the cookie
            clear = (self._clear_session(),) if route == "logout" else ()
            return self._error(request, error, cookies=clear)
        csrf_ok = check_csrf(
            self.keyloom,
            request.cookies.get(self.csrf_cookie),
            request.headers.get(CSRF_HEADER),
            session_id=session.id if session is not None else None,
        )
        return session if csrf_ok else json_response(403, {"error": "csrf"})

    # -- routes --------------------------------------------------------------------

    async def _start(self, request: AuthRequest, provider: str) -> AuthResponse:
        query = _single_values(request.query, _BadRequestError)
        allowed = self.keyloom.provider(provider).spec.login_params  # e.g. prompt, login_hint
        session = await self.load_session(request.cookies) if "link" in query else None
        start = await self.keyloom.begin_login(
            provider,
            callback_url=query.get("callbackUrl"),
            params={k: v for k, v in query.items() if k in allowed},
            link_to=link_target(self.keyloom, session, query),
        )
        state = self.cookie(self.state_cookie, start.state, max_age=int(self.keyloom.state_ttl))
        if len(state.encode()) > MAX_COOKIE_BYTES:  # a browser would drop it silently
            msg = "the callback URL is too long to keep during the sign-in"
            raise InvalidRedirectError(msg, provider_id=provider, hint="Use a shorter callbackUrl.")
        return redirect(start.url, cookies=(state,))

    async def _callback(self, request: AuthRequest, provider: str) -> AuthResponse:
        query = _single_values(request.query, InvalidCallbackError)
        if "error" not in query and not (query.get("code") and query.get("state")):
            if wants_html(request):
                msg = "the sign-in callback has no code or state"
                return self._error(request, InvalidCallbackError(msg, provider_id=provider))
            return json_response(400, {"error": "invalid_callback"})
        clear_state = self.cookie(self.state_cookie, "", max_age=0)
        try:
            result = await self.keyloom.complete_login(
                provider, query, request.cookies.get(self.state_cookie)
            )
        except StateError as error:  # not ours to clear: it may belong to another sign-in
            await self._failed(request, error)
            return self._error(request, error)
        except KeyloomError as error:
            await self._failed(request, error)
            return self._error(request, error, cookies=(clear_state,))
        session: Session | None = None
        try:
            session, value, max_age = await start_session(self.keyloom, result)
            await end_session(self.keyloom, request.cookies.get(self.session_cookie))
            if self.on_login is not None:
                await self.on_login(result)
            location = urljoin(self.keyloom.base_url, result.callback_url)
            cookie = self.cookie(self.session_cookie, value, max_age=max_age)
            answer = redirect(location, cookies=(cookie, clear_state))
            check_sendable(answer.header_list())
        except BaseException as error:
            await self.keyloom.revoke_refused(result.provider_id, result.tokens)
            if session is not None and self.keyloom.sessions.server_side:
                await self._end_quietly(session.id)  # never given to the browser
            if not isinstance(error, KeyloomError):
                raise
            return self._error(request, error, cookies=(clear_state,))
        log.info("keyloom: signed in with %s", result.provider_id)
        return answer

    async def _session(self, request: AuthRequest, _: str) -> AuthResponse:
        value = request.cookies.get(self.session_cookie)
        session = await load_session(self.keyloom, value)
        answer = await session_json(self.keyloom, session) if session is not None else None
        if answer is not None:
            return json_response(200, answer)
        cookies = (self.cookie(self.session_cookie, "", max_age=0),) if value else ()
        return json_response(200, {"session": None, "user": None}, cookies=cookies)

    async def _accounts(self, request: AuthRequest, _: str) -> AuthResponse:
        return await accounts_answer(self.keyloom, await self.load_session(request.cookies))

    async def _csrf(self, request: AuthRequest, _provider: str) -> AuthResponse:
        session = await self.load_session(request.cookies)
        token = new_csrf_token(self.keyloom, session_id=session.id if session else None)
        cookie = self.cookie(self.csrf_cookie, token)
        return json_response(200, {"csrfToken": token}, cookies=(cookie,))

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
        return json_response(200, listing)

    def _clear_session(self) -> str:
        return self.cookie(self.session_cookie, "", max_age=0)

    async def _logout(self, request: AuthRequest, session: Session | None) -> AuthResponse:
        clear = (self._clear_session(),)
        if session is not None and self.keyloom.sessions.server_side:
            try:
                await self.keyloom.sessions.end(session.id)
            except StoreUnavailableError as error:  # the record stays: say so, never "ok"
                return self._error(request, error, cookies=clear)
        if session is not None and self.on_logout is not None:
            await self._revoke(session, self.on_logout)
        return json_response(200, {"ok": True}, cookies=clear)

    async def _end_quietly(self, session_id: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.keyloom.timeout):
            try:
                await self.keyloom.sessions.end(session_id)
            except StoreUnavailableError:
                log.warning("keyloom: a refused login's session record could not be deleted")

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
        if not wants_html(request):
            data = {"error": error.code, "message": error.message, "hint": error.hint}
            return json_response(status, data, headers=extra, cookies=cookies)
        page = self._error_page(error, status)
        return AuthResponse(
            status,
            page.encode(),
            HTML_TYPE,
            headers=(*COMMON_HEADERS, *HTML_HEADERS, *extra),
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
