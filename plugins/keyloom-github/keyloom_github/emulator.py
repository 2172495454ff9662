"""A local GitHub for tests and development: ``python -m keyloom_github.emulator``.

:class:`~keyloom_core.testing.authserver.AuthorizationServer` reading ``SPEC``, plus GitHub's
quirks: token errors with HTTP 200, form-encoded token answers unless ``Accept:
application/json``, scopes split on commas too and without those another one includes,
callback URL matching (subdirectories; any port on loopback), ``redirect_uri_mismatch`` sent
to the registered callback, optional PKCE, a remembered consent, ``/user/emails`` with scope
checks, classic or expiring (rotating) tokens and ``DELETE /applications/{client_id}/token``.
"""

# fmt: off
from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final
from urllib.parse import urlencode, urlsplit

import attrs
from aiohttp import web

from keyloom_core.testing.authserver import AVATAR_PATH, AuthorizationServer, Client
from keyloom_core.testing.emulator import (
    AccessToken,
    AuthorizationCode,
    TokenFailure,
    TokenPair,
    UserOption,
)
from keyloom_github import IMPLIED_SCOPES, SCOPES, SPEC

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "DEFAULT_USERS", "EmulatedEmail",
           "EmulatedOAuthApp", "EmulatedUser", "GitHubEmulator", "callback_matches",
           "normalise_scopes"]

DEFAULT_CLIENT_ID: Final = "Ov23liKeyloomEmulator"
DEFAULT_CLIENT_SECRET: Final = "keyloom-github-emulator-client-secret"
_EMAIL_SCOPES: Final = frozenset({"user", "user:email"})
_DAY: Final = 86_400


def normalise_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """The scopes GitHub grants: known ones, in order, without those another one includes."""
    wanted = list(dict.fromkeys(s for s in requested if s in SCOPES))
    implied = {s for scope in wanted for s in IMPLIED_SCOPES.get(scope, "").split()}
    return tuple(s for s in wanted if s not in implied)


def callback_matches(callback: str, redirect_uri: str) -> bool:
    """Whether GitHub accepts *redirect_uri* for the registered *callback* URL.

    The host or a subdomain, the same port (any port on loopback), the path or below it.
    """
    want, got = urlsplit(callback), urlsplit(redirect_uri)
    if redirect_uri == callback:
        return True
    if got.fragment or got.scheme != want.scheme or not got.hostname or not want.hostname:
        return False
    if got.hostname != want.hostname and not got.hostname.endswith("." + want.hostname):
        return False
    if want.hostname not in {"127.0.0.1", "::1", "localhost"} and got.port != want.port:
        return False
    base = want.path.rstrip("/")
    return got.path in {want.path, base} or got.path.startswith(base + "/")


def _tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class EmulatedOAuthApp(Client):
    """An OAuth app; *expiring_tokens* for a GitHub App's expiring tokens and refresh tokens."""

    callback_urls: tuple[str, ...] = attrs.field(converter=_tuple)
    expiring_tokens: bool = False

    def accepts_redirect_uri(self, uri: str) -> bool:
        """Whether *uri* matches one of :attr:`callback_urls`."""
        return any(callback_matches(callback, uri) for callback in self.callback_urls)


@attrs.frozen(kw_only=True)
class EmulatedEmail:
    """One of a user's addresses, as ``/user/emails`` lists it."""

    email: str
    primary: bool = False
    verified: bool = True
    visibility: str | None = "private"


@attrs.frozen(kw_only=True)
class EmulatedUser:
    """A GitHub account: id, login, display name (may be empty) and addresses."""

    id: int
    login: str
    name: str | None = None
    emails: tuple[EmulatedEmail, ...] = ()

    @property
    def primary_verified_email(self) -> str | None:
        """The primary address if it is verified (what a sign-in should use)."""
        return next((e.email for e in self.emails if e.primary and e.verified), None)


_MAIL = EmulatedEmail
#: The built-in users; the first signs in by default.
DEFAULT_USERS: Final = (
    EmulatedUser(id=1_000_001, login="keyloom-octocat", name="Keyloom Octocat", emails=(
        _MAIL(email="octocat@users.example.test", primary=True, visibility="public"),
        _MAIL(email="octocat@work.example.test", verified=False))),
    EmulatedUser(id=1_000_002, login="unverified-dev", emails=(
        _MAIL(email="dev@unverified.example.test", primary=True, verified=False),
        _MAIL(email="dev@verified.example.test"))),
)


class GitHubEmulator(AuthorizationServer):
    """GitHub on 127.0.0.1; ``users`` and ``default_user`` (a login) may change as it runs."""

    spec = SPEC
    builtin_client = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    error_status = 200
    remember_consent = True
    require_pkce = False
    default_grant_type = "authorization_code"
    consent_path = "/login/oauth/authorize/consent"
    invalid_client_error = "incorrect_client_credentials"
    invalid_grant_error = "bad_verification_code"
    invalid_refresh_error = "bad_refresh_token"
    user: ClassVar[Mapping[str, str]] = {"sub": DEFAULT_USERS[0].login}

    def __init__(self, *, users: Iterable[EmulatedUser] = DEFAULT_USERS, **options: Any) -> None:
        """Register *users*; *options* are :class:`AuthorizationServer`'s."""
        super().__init__(**options)
        self.users = {user.login: user for user in users}
        self.default_user = next(iter(self.users))
        self.routes["revoke"] = None  # a DELETE, added below

    @classmethod
    def default_clients(cls) -> list[Any]:
        """The built-in app, with loopback callbacks: any port and path on 127.0.0.1."""
        callbacks = ["http://127.0.0.1/", "http://localhost/"]
        return [cls.make_client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, callbacks)]

    @classmethod
    def make_client(cls, client_id: str, client_secret: str, redirect_uris: Sequence[str],
                    expiring_tokens: bool = False) -> EmulatedOAuthApp:
        """An OAuth app whose callback URLs are *redirect_uris*."""
        return EmulatedOAuthApp(client_id=client_id, client_secret=client_secret,
                                redirect_uris=redirect_uris, callback_urls=redirect_uris,
                                expiring_tokens=expiring_tokens)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """``--expiring-tokens``; ``--callback-url``, the old name of ``--redirect-uri``."""
        parser.add_argument(
            "--expiring-tokens",
            action="store_true",
            help="a GitHub App's expiring tokens, with rotating refresh tokens",
        )
        parser.add_argument(
            "--callback-url",
            action="append",
            dest="redirect_uri",
            help="deprecated: --redirect-uri",
        )

    @classmethod
    def client_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The app's token kind, from ``--expiring-tokens``."""
        return {"expiring_tokens": args.expiring_tokens}

    @property
    def default_app(self) -> Any:
        """The first registered app."""
        return next(iter(self.clients.values()))

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any]:
        """The default user as the plugin reads it (e-mail only with an e-mail scope)."""
        del client_id
        user = self.users[self.default_user]
        email = user.primary_verified_email if _EMAIL_SCOPES & set(scopes) else None
        return {"id": str(user.id), "name": user.name or user.login, "email": email,
                "image": self.url_for(AVATAR_PATH)}

    def requested_scopes(self, raw: str) -> tuple[str, ...]:
        """Split on spaces and commas, then :func:`normalise_scopes`."""
        return normalise_scopes(raw.replace(",", " ").split())

    def redirect_uri(self, client: Any, params: Mapping[str, str]) -> str:
        """GitHub defaults to the first callback URL."""
        return params.get("redirect_uri") or client.callback_urls[0]

    def refused(self, params: Mapping[str, str]) -> web.Response | None:
        """An unknown client gets a page; a callback mismatch goes to the registered one."""
        app = self.clients.get(params.get("client_id", ""))
        if app is None or app.accepts_redirect_uri(self.redirect_uri(app, params)):
            return super().refused(params)
        error = {"error": "redirect_uri_mismatch", **self._state(params)}
        return self.back(getattr(app, "callback_urls", [""])[0], error)

    def check_authorization(self, params: Mapping[str, str]) -> str | None:
        """GitHub does not require ``response_type``."""
        return super().check_authorization({"response_type": "code", **params})

    def user_options(self) -> list[UserOption]:
        """Every user may be picked on the consent page."""
        return [UserOption(u.login, u.name or u.login) for u in self.users.values()]

    def knows_user(self, user_id: str) -> bool:
        """Any user of :attr:`users`."""
        return user_id in self.users

    def consented_scopes(self, pending: Any, form: Mapping[str, Any]) -> tuple[str, ...]:
        """GitHub's scopes are all or nothing."""
        del form
        return tuple(pending.scopes)

    def issue(self, client: Any, code: AuthorizationCode) -> TokenPair:
        """Classic ``gho_`` tokens that never expire, or expiring ``ghu_`` / ``ghr_`` pairs."""
        expiring = client.expiring_tokens
        ttl, prefix = (8 * 3600, "ghu_") if expiring else (3650 * _DAY, "gho_")
        return self.book.issue_tokens(client_id=client.client_id, user_id=code.user_id,
                                      scopes=code.scopes, refresh=expiring, access_ttl=ttl,
                                      refresh_ttl=184 * _DAY, access_prefix=prefix,
                                      refresh_prefix="ghr_")

    def refresh(self, client: Any, refresh_token: str) -> TokenPair | TokenFailure:
        """Rotating refresh tokens."""
        return self.book.refresh(refresh_token, client_id=client.client_id, rotate=True,
                                 access_ttl=8 * 3600, refresh_ttl=184 * _DAY,
                                 access_prefix="ghu_", refresh_prefix="ghr_")

    def answer(self, request: web.Request, body: Mapping[str, Any], status: int = 200,
               ) -> web.Response:
        """JSON with ``Accept: application/json``, else form-encoded."""
        if "json" in request.headers.get("Accept", ""):
            return super().answer(request, body, status)
        text = urlencode({k: "" if v is None else str(v) for k, v in body.items()})
        form = "application/x-www-form-urlencoded"
        return web.Response(text=text, status=status, content_type=form)

    def token_answer(self, client: Any, pair: TokenPair) -> Mapping[str, Any]:
        """Comma-separated scopes; expiry and refresh token only for expiring tokens."""
        body: dict[str, Any] = {"access_token": pair.access_token, "token_type": "bearer",
                                "scope": ",".join(pair.scopes)}
        if client.expiring_tokens:
            now = self.clock()
            body |= {"expires_in": pair.expires_in(now), "refresh_token": pair.refresh_token,
                     "refresh_token_expires_in": pair.refresh_expires_in(now)}
        return body

    def add_routes(self, app: web.Application) -> None:
        """The spec's routes, ``/user/emails`` and the revocation ``DELETE``."""
        super().add_routes(app)
        app.router.add_get("/user/emails", self.limited(self.emails))
        app.router.add_delete("/applications/{client_id}/token", self.limited(self.delete_token))

    def is_api_path(self, path: str) -> bool:
        """Faults also apply to ``/user/emails`` and revocation."""
        return super().is_api_path(path) or path.startswith(("/user/", "/applications/"))

    def error_answer(self, status: int, error: str, description: str = "") -> web.Response:
        """API errors are ``{"message": ...}``."""
        return web.json_response({"message": description or error}, status=status)

    def profile(self, token: AccessToken) -> Mapping[str, Any]:
        """``/user``: ``login``, a ``name`` that may be empty, the public e-mail only."""
        user = self.users[str(token.user_id)]
        public = [e.email for e in user.emails if e.visibility == "public" and e.verified]
        return {"login": user.login, "id": user.id, "avatar_url": self.url_for(AVATAR_PATH),
                "type": "User", "name": user.name, "email": next(iter(public), None)}

    def profile_headers(self, token: AccessToken) -> Mapping[str, str]:
        """The scopes of the token, as GitHub's API tells them."""
        return {"X-OAuth-Scopes": ", ".join(token.scopes), "X-Accepted-OAuth-Scopes": ""}

    async def emails(self, request: web.Request) -> web.StreamResponse:
        """``/user/emails``: 404 without ``user`` or ``user:email``."""
        token = self.bearer(request)
        if token is None or not self.knows_user(str(token.user_id)):
            return self.error_answer(401, "Bad credentials")
        headers = {**self.profile_headers(token), "X-Accepted-OAuth-Scopes": "user, user:email"}
        if not _EMAIL_SCOPES & set(token.scopes):
            return web.json_response({"message": "Not Found"}, status=404, headers=headers)
        rows = [attrs.asdict(e) for e in self.users[str(token.user_id)].emails]
        return web.json_response(rows, headers=headers)

    async def delete_token(self, request: web.Request) -> web.StreamResponse:
        """Revocation, authenticated as the app (basic); 204, or 404 for an unknown token."""
        app = self.clients.get(request.match_info["client_id"])
        if app is None or self.basic_credentials(request) is None or (
                self.client_of(request, {}) is not app):
            return self.error_answer(401, "Requires authentication")
        body = await request.json() if request.content_type == "application/json" else {}
        token = body.get("access_token") if isinstance(body, dict) else None
        found = self.book.lookup_access(token if isinstance(token, str) else "")
        if isinstance(found, TokenFailure) or found.client_id != app.client_id:
            return self.error_answer(404, "Not Found")
        self.book.revoke(found.token, client_id=app.client_id)
        return web.Response(status=204)


_MOVED = {"AUTHORIZE_PATH": ("SPEC.authorize_url", "/login/oauth/authorize"),
          "TOKEN_PATH": ("SPEC.token_url", "/login/oauth/access_token"),
          "USER_PATH": ("SPEC.profile_url", "/user"),
          "EMAILS_PATH": ("'/user/emails'", "/user/emails"),
          "CONSENT_PATH": ("GitHubEmulator.consent_path", GitHubEmulator.consent_path),
          "KNOWN_SCOPES": ("keyloom_github.SCOPES", SCOPES),
          "main": ("GitHubEmulator.main", GitHubEmulator.main)}


def __getattr__(name: str) -> Any:
    """The names this module had before it was built on the generic server (deprecated)."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new, value = _MOVED[name]
    message = f"keyloom_github.emulator.{name} is deprecated; use {new}"
    warnings.warn(message, DeprecationWarning, stacklevel=2)
    return value


if __name__ == "__main__":
    raise SystemExit(GitHubEmulator.main())
