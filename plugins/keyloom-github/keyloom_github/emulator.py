"""A local emulator of GitHub's OAuth web flow and user API, for tests and development.

Built from :mod:`keyloom_core.testing.emulator`, it reproduces what GitHub documents, quirks
included: token endpoint errors answered with HTTP 200 and an ``error`` field, form-encoded
token answers unless ``Accept: application/json`` is sent, comma-separated granted scopes
normalised to drop the ones another requested scope includes, callback URL matching
(subdirectories, and any port on a loopback callback), ``redirect_uri_mismatch`` sent to the
registered callback, optional S256 PKCE, ``/user`` and ``/user/emails`` with scope checks,
expiring user tokens with rotating refresh tokens (GitHub Apps) and app-authenticated token
revocation.

Endpoints, all served from one loopback origin:

==========  ====================================  ==========================================
``GET``     ``/login/oauth/authorize``            authorization (consent per :attr:`consent`)
``POST``    ``/login/oauth/authorize/consent``    target of the emulated consent form
``POST``    ``/login/oauth/access_token``         code exchange and refresh
``GET``     ``/user``                             the signed-in user
``GET``     ``/user/emails``                      their addresses (``user:email`` or ``user``)
``DELETE``  ``/applications/{client_id}/token``   revocation (basic auth as the app)
``GET``     ``/emulator/avatars/{id}.svg``        avatars
``GET``     ``/emulator/health``                  ``{"status": "ok"}``
==========  ====================================  ==========================================

Use it in tests as an async context manager::

    async with GitHubEmulator(consent="approve") as emulator:
        provider = github(client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET,
                          endpoint_origin=emulator.url)

or run it alone: ``python -m keyloom_github.emulator --port 9001`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import html
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import attrs
from aiohttp import web

from keyloom_core.testing.emulator import (
    LOOPBACK_HOST,
    Clock,
    CodeFailure,
    ConsentMode,
    EmulatorServer,
    FaultInjector,
    FaultKind,
    GrantBook,
    PendingRequests,
    ScopeOption,
    TokenFailure,
    TokenPair,
    UserOption,
    add_emulator_arguments,
    consent_page,
    emulator_main,
    emulator_options,
    html_response,
    message_page,
    verify_s256,
)

__all__ = [
    "AUTHORIZE_PATH",
    "CONSENT_PATH",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_USERS",
    "EMAILS_PATH",
    "IMPLIED_SCOPES",
    "KNOWN_SCOPES",
    "TOKEN_PATH",
    "USER_PATH",
    "EmulatedEmail",
    "EmulatedOAuthApp",
    "EmulatedUser",
    "GitHubEmulator",
    "callback_matches",
    "main",
    "normalise_scopes",
]

logger = logging.getLogger(__name__)

AUTHORIZE_PATH: Final = "/login/oauth/authorize"
CONSENT_PATH: Final = "/login/oauth/authorize/consent"
TOKEN_PATH: Final = "/login/oauth/access_token"
USER_PATH: Final = "/user"
EMAILS_PATH: Final = "/user/emails"
_REVOKE_PREFIX: Final = "/applications/"

#: Scopes that include others; GitHub keeps only the wider one in a token.
IMPLIED_SCOPES: Final[Mapping[str, frozenset[str]]] = {
    "user": frozenset({"read:user", "user:email", "user:follow"}),
    "repo": frozenset(
        {"repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events"}
    ),
    "admin:org": frozenset({"write:org", "read:org"}),
    "write:org": frozenset({"read:org"}),
    "write:packages": frozenset({"read:packages"}),
    "project": frozenset({"read:project"}),
}
#: Every scope the emulator knows; others are ignored, as GitHub does.
KNOWN_SCOPES: Final = frozenset(
    {*IMPLIED_SCOPES, *(s for implied in IMPLIED_SCOPES.values() for s in implied)}
    | {"gist", "notifications", "workflow", "delete_repo", "codespace", "admin:repo_hook"}
)
_EMAIL_SCOPES: Final = frozenset({"user", "user:email"})

DEFAULT_CLIENT_ID: Final = "Ov23liKeyloomEmulator"
DEFAULT_CLIENT_SECRET: Final = "keyloom-github-emulator-client-secret"
_DEFAULT_CALLBACKS: Final = ("http://127.0.0.1/", "http://localhost/")
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})
_DOCS: Final = "https://docs.github.com/apps/oauth-apps"
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_MAX_PENDING: Final = 10_000
_CLASSIC_TOKEN_TTL: Final = 10 * 365 * 86_400.0  # classic OAuth tokens do not expire


def normalise_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """Return the scopes GitHub grants for *requested*: known ones, minus those implied.

    GitHub splits on spaces and commas, ignores unknown scopes and, when a requested scope
    includes another requested one (``user`` includes ``user:email``), keeps the wider one.
    """
    wanted: list[str] = []
    for scope in requested:
        if scope in KNOWN_SCOPES and scope not in wanted:
            wanted.append(scope)
    implied = {s for scope in wanted for s in IMPLIED_SCOPES.get(scope, ())}
    return tuple(s for s in wanted if s not in implied)


def _split_scopes(raw: str) -> list[str]:
    return [part for part in raw.replace(",", " ").split() if part]


def callback_matches(callback: str, redirect_uri: str) -> bool:
    """Return whether GitHub accepts *redirect_uri* for the registered *callback* URL.

    The host must be the callback's or a subdomain of it, the port the same (any port when
    the callback is on a loopback address), and the path the callback's or below it.
    """
    if redirect_uri == callback:
        return True
    want, got = urlsplit(callback), urlsplit(redirect_uri)
    if got.fragment or got.scheme != want.scheme or not got.hostname or not want.hostname:
        return False
    host, wanted_host = got.hostname.lower(), want.hostname.lower()
    if host != wanted_host and not host.endswith("." + wanted_host):
        return False
    if want.hostname not in _LOOPBACK_HOSTS and got.port != want.port:
        return False
    base = want.path.rstrip("/")
    return got.path in {want.path, base} or got.path.startswith(base + "/")


def _as_str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


@attrs.frozen(kw_only=True)
class EmulatedOAuthApp:
    """A client registered with the emulated GitHub.

    Attributes:
        client_id: The app's client id.
        client_secret: The app's client secret.
        callback_urls: Registered callback URLs (see :func:`callback_matches`); the first is
            where GitHub sends errors when the ``redirect_uri`` does not match.
        expiring_tokens: Issue expiring user tokens with refresh tokens (a GitHub App with
            token expiration on) instead of classic tokens that never expire.
        name: The app name shown on the consent screen.

    """

    client_id: str = attrs.field(validator=attrs.validators.min_len(1))
    client_secret: str = attrs.field(repr=False, validator=attrs.validators.min_len(1))
    callback_urls: tuple[str, ...] = attrs.field(
        converter=_as_str_tuple, validator=attrs.validators.min_len(1)
    )
    expiring_tokens: bool = False
    name: str = "Keyloom Test App"

    def accepts_redirect_uri(self, uri: str) -> bool:
        """Return whether *uri* matches one of the registered callback URLs."""
        return any(callback_matches(callback, uri) for callback in self.callback_urls)

    def secret_matches(self, secret: str) -> bool:
        """Compare *secret* with the client secret in constant time."""
        return hmac.compare_digest(secret.encode(), self.client_secret.encode())


@attrs.frozen(kw_only=True)
class EmulatedEmail:
    """One address of a user, as ``/user/emails`` lists it.

    Attributes:
        email: The address.
        primary: Whether it is the primary address.
        verified: Whether the user verified it.
        visibility: ``"public"`` (shown as the profile's ``email``), ``"private"`` or ``None``.

    """

    email: str
    primary: bool = False
    verified: bool = True
    visibility: str | None = "private"


@attrs.frozen(kw_only=True)
class EmulatedUser:
    """A GitHub account in the emulator's user directory.

    Attributes:
        id: The numeric user id.
        login: The handle.
        name: The display name, which GitHub users may leave empty.
        emails: The user's addresses.
        bio: The profile bio.
        company: The company.
        location: The location.
        public_repos: Public repositories.
        followers: Followers.
        following: Accounts followed.

    """

    id: int
    login: str = attrs.field(validator=attrs.validators.matches_re(r"[A-Za-z0-9-]{1,39}"))
    name: str | None = None
    emails: tuple[EmulatedEmail, ...] = ()
    bio: str | None = None
    company: str | None = None
    location: str | None = None
    public_repos: int = 0
    followers: int = 0
    following: int = 0

    @property
    def public_email(self) -> str | None:
        """The address shown on the public profile, if the user chose one."""
        return next((e.email for e in self.emails if e.visibility == "public" and e.verified), None)

    @property
    def primary_verified_email(self) -> str | None:
        """The primary address if it is verified (what a sign-in should use)."""
        return next((e.email for e in self.emails if e.primary and e.verified), None)


#: The built-in user directory; the first user is the default.
DEFAULT_USERS: Final = (
    EmulatedUser(
        id=1_000_001,
        login="keyloom-octocat",
        name="Keyloom Octocat",
        emails=(
            EmulatedEmail(email="octocat@users.example.test", primary=True, visibility="public"),
            EmulatedEmail(email="octocat@work.example.test", verified=False),
        ),
        bio="Testing sign-in against an emulated GitHub.",
        company="@keyloom",
        location="Loopback",
        public_repos=8,
        followers=42,
        following=7,
    ),
    EmulatedUser(
        id=1_000_002,
        login="unverified-dev",
        emails=(
            EmulatedEmail(email="dev@unverified.example.test", primary=True, verified=False),
            EmulatedEmail(email="dev@verified.example.test", verified=True),
        ),
    ),
)


@attrs.frozen(kw_only=True)
class _Pending:
    request_id: str = attrs.field(repr=False)
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None = attrs.field(repr=False)
    code_challenge: str | None = attrs.field(repr=False)
    expires_at: float


class GitHubEmulator(EmulatorServer):
    """GitHub's OAuth web flow and user API on a loopback port.

    Every constructor argument is also an attribute that may be changed while the emulator
    runs (``emulator.consent = "deny"``, ``emulator.faults.rate = 0.5``…).

    :param clients: Registered apps; defaults to one OAuth app (:data:`DEFAULT_CLIENT_ID`)
        with loopback callback URLs, so any port and path on ``127.0.0.1`` or ``localhost``
        is accepted.
    :param users: The user directory; defaults to :data:`DEFAULT_USERS`.
    :param default_user: The login signed in by default; defaults to the first user.
    :param consent: ``"form"``, ``"approve"`` or ``"deny"`` (see the kit's convention). In
        ``"form"`` mode a user who already granted every requested scope to the app is sent
        back at once, as GitHub does.
    :param require_pkce: Refuse authorization requests without a PKCE challenge (GitHub
        makes PKCE optional).
    :param access_token_ttl: Lifetime of expiring user tokens (GitHub: 8 hours).
    :param refresh_token_ttl: Lifetime of their refresh tokens (GitHub: 6 months).
    :param code_ttl: Authorization code lifetime (GitHub: 10 minutes).
    :param faults: Fault injector for the token, user and revocation endpoints; a disabled
        one by default.
    :param clock: The time source.
    :param host: A loopback address.
    :param port: The port, ``0`` for a free one.
    """

    api_paths = frozenset({TOKEN_PATH, USER_PATH, EMAILS_PATH})
    invalid_client_error = "incorrect_client_credentials"
    invalid_grant_error = "bad_verification_code"

    def __init__(
        self,
        *,
        clients: Iterable[EmulatedOAuthApp] | None = None,
        users: Iterable[EmulatedUser] | None = None,
        default_user: str | None = None,
        consent: ConsentMode = "form",
        require_pkce: bool = False,
        access_token_ttl: int = 28_800,
        refresh_token_ttl: int = 15_897_600,
        code_ttl: float = 600.0,
        faults: FaultInjector | None = None,
        clock: Clock = time.time,
        host: str = LOOPBACK_HOST,
        port: int = 0,
    ) -> None:
        """Configure the emulator; see the class docstring for the parameters."""
        super().__init__(
            host=host,
            port=port,
            faults=faults if faults is not None else FaultInjector(),
            clock=clock,
            consent=consent,
        )
        default_app = EmulatedOAuthApp(
            client_id=DEFAULT_CLIENT_ID,
            client_secret=DEFAULT_CLIENT_SECRET,
            callback_urls=_DEFAULT_CALLBACKS,
        )
        self.clients = {app.client_id: app for app in (clients or (default_app,))}
        self.users = {user.login: user for user in (users or DEFAULT_USERS)}
        self.default_user = default_user or next(iter(self.users))
        if self.default_user not in self.users:
            raise ValueError(f"unknown default user {self.default_user!r}")
        self.require_pkce = require_pkce
        self.access_token_ttl = access_token_ttl
        self.refresh_token_ttl = refresh_token_ttl
        self.code_ttl = code_ttl
        #: Codes and tokens.
        self.grants = GrantBook(clock=self._now, code_ttl=code_ttl, code_factory=_new_code)
        self._pending = PendingRequests[_Pending](self._now, limit=_MAX_PENDING)
        self._authorized: dict[tuple[str, str], frozenset[str]] = {}
        self._code_redirects: dict[str, str] = {}  # GitHub lets the token request omit it

    # -- the conformance convention ------------------------------------------------------

    @classmethod
    def for_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        scopes: Iterable[str],
        **options: Any,
    ) -> GitHubEmulator:
        """Return an emulator with one OAuth app whose callback URLs are *redirect_uris*.

        GitHub has no scope approval, so *scopes* are not restricted. ``expiring_tokens=True``
        among *options* makes the app issue expiring tokens and refresh tokens.
        """
        del scopes
        app = EmulatedOAuthApp(
            client_id=client_id,
            client_secret=client_secret,
            callback_urls=tuple(redirect_uris),
            expiring_tokens=bool(options.pop("expiring_tokens", False)),
        )
        return cls(clients=[app], **options)

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any] | None:
        """The default user as Keyloom should normalise it (e-mail only with an e-mail scope)."""
        del client_id
        user = self.users[self.default_user]
        return {
            "id": str(user.id),
            "name": user.name or user.login,
            "email": user.primary_verified_email if _EMAIL_SCOPES & set(scopes) else None,
            "image": self.avatar_url(user),
        }

    # -- configuration and URLs ----------------------------------------------------------

    @property
    def default_app(self) -> EmulatedOAuthApp:
        """The first registered app."""
        return next(iter(self.clients.values()))

    @property
    def authorize_url(self) -> str:
        """Absolute URL of the authorization endpoint."""
        return self.url_for(AUTHORIZE_PATH)

    @property
    def token_url(self) -> str:
        """Absolute URL of the token endpoint."""
        return self.url_for(TOKEN_PATH)

    @property
    def user_url(self) -> str:
        """Absolute URL of ``/user``."""
        return self.url_for(USER_PATH)

    def revoke_url(self, client_id: str) -> str:
        """Absolute URL of the revocation endpoint of *client_id*."""
        return self.url_for(f"{_REVOKE_PREFIX}{quote(client_id, safe='')}/token")

    def avatar_url(self, user: EmulatedUser) -> str:
        """Absolute URL of *user*'s avatar."""
        return self.url_for(f"/emulator/avatars/{user.id}.svg")

    def is_api_path(self, path: str) -> bool:
        """Faults apply to the token, user, e-mail and revocation endpoints."""
        return super().is_api_path(path) or path.startswith(_REVOKE_PREFIX)

    def add_routes(self, app: web.Application) -> None:
        """Register GitHub's endpoints and the emulator's helper pages."""
        app.router.add_get(AUTHORIZE_PATH, self._authorize)
        app.router.add_post(CONSENT_PATH, self._consent_submitted)
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_get(USER_PATH, self._user)
        app.router.add_get(EMAILS_PATH, self._emails)
        app.router.add_delete(_REVOKE_PREFIX + "{client_id}/token", self._revoke)
        app.router.add_get("/emulator/avatars/{user_id}.svg", self._avatar)

    def render_fault(
        self, kind: FaultKind, status: int, request: web.Request
    ) -> web.StreamResponse:
        """Shape injected errors like GitHub: OAuth errors at the token endpoint, else API ones."""
        del kind
        if request.path == TOKEN_PATH:
            error = "server_error" if status == 500 else "temporarily_unavailable"
            body: dict[str, str] = {"error": error, "error_description": "Injected fault."}
        else:
            body = {"message": "Injected fault.", "documentation_url": _DOCS}
        return web.json_response(body, status=status)

    # -- authorization -------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock()

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        app = self.clients.get(query.get("client_id", ""))
        if app is None:
            return _error_page("The client_id is not registered with this emulated GitHub.")
        refused = self._refuse(app, query)
        if refused is not None:
            return refused
        state = query.get("state")
        redirect_uri = query.get("redirect_uri") or app.callback_urls[0]
        challenge = query.get("code_challenge") or None
        pending = _Pending(
            request_id=secrets.token_urlsafe(24),
            client_id=app.client_id,
            redirect_uri=redirect_uri,
            scopes=normalise_scopes(_split_scopes(query.get("scope", ""))),
            state=state,
            code_challenge=challenge,
            expires_at=self._now() + self.code_ttl,
        )
        if self.consent == "deny":
            return self._deny(pending)
        previous = self._authorized.get((app.client_id, self.default_user))
        if self.consent == "approve" or (
            previous is not None and previous.issuperset(pending.scopes)
        ):
            return self._grant(pending, self.default_user)
        self._pending.add(pending)
        return html_response(self._consent_html(pending, app))

    def _refuse(self, app: EmulatedOAuthApp, query: Mapping[str, str]) -> web.Response | None:
        """The answer to an authorization request GitHub refuses, or ``None``."""
        state = query.get("state")
        redirect_uri = query.get("redirect_uri") or app.callback_urls[0]
        if not app.accepts_redirect_uri(redirect_uri):
            description = "The redirect_uri MUST match the registered callback URL."
            callback = app.callback_urls[0]
            return _redirect_error(callback, "redirect_uri_mismatch", description, state)
        challenge = query.get("code_challenge")
        if not challenge and self.require_pkce:
            return _error_page("This app requires a PKCE code_challenge.")
        if challenge and query.get("code_challenge_method") != "S256":
            description = "code_challenge_method must be S256."
            return _redirect_error(redirect_uri, "invalid_request", description, state)
        return None

    def _consent_html(self, pending: _Pending, app: EmulatedOAuthApp) -> str:
        users = [
            UserOption(user.login, f"{user.login} ({user.name or 'no name'})")
            for user in self.users.values()
        ]
        return consent_page(
            app_name=app.name,
            action=CONSENT_PATH,
            scopes=[ScopeOption(name=s, required=True) for s in pending.scopes],
            hidden={"request_id": pending.request_id},
            title=f"Authorize {app.name}",
            provider_name="GitHub",
            users=users,
            selected_user=self.default_user,
            notice=f"Emulated GitHub. You will return to {pending.redirect_uri}",
            approve_label=f"Authorize {app.name}",
            accent="#1f883d",
        )

    async def _consent_submitted(self, request: web.Request) -> web.StreamResponse:
        form = await request.post() if request.content_type == _FORM_TYPE else None
        request_id = form.get("request_id") if form is not None else None
        pending = self._pending.take(request_id) if isinstance(request_id, str) else None
        if form is None or pending is None:
            return _error_page("This authorization request expired or was already answered.")
        if form.get("decision") == "deny":
            return self._deny(pending)
        login = form.get("user") or self.default_user
        if (
            form.get("decision") != "approve"
            or not isinstance(login, str)
            or login not in self.users
        ):
            return _error_page("Choose Authorize or Cancel, and a user from the list.")
        return self._grant(pending, login)

    def _deny(self, pending: _Pending) -> web.Response:
        description = "The user has denied your application access."
        return _redirect_error(pending.redirect_uri, "access_denied", description, pending.state)

    def _grant(self, pending: _Pending, login: str) -> web.Response:
        key = (pending.client_id, login)
        self._authorized[key] = self._authorized.get(key, frozenset()) | set(pending.scopes)
        code = self.grants.issue_code(
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            user_id=login,
            scopes=pending.scopes,
            code_challenge=pending.code_challenge,
            code_challenge_method="S256" if pending.code_challenge else None,
            ttl=self.code_ttl,
        )
        while len(self._code_redirects) >= _MAX_PENDING:
            del self._code_redirects[next(iter(self._code_redirects))]
        self._code_redirects[code.code] = pending.redirect_uri
        params = [("code", code.code)]
        if pending.state is not None:
            params.append(("state", pending.state))
        logger.info("authorization granted to client %s", pending.client_id)
        return _redirect(pending.redirect_uri, params)

    # -- token endpoint ------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await _read_params(request)
        as_json = "json" in request.headers.get("Accept", "")
        if form is None:
            return _token_answer({"error": "invalid_request"}, as_json=as_json)
        client_id, secret = _basic_auth(request) or (form.get("client_id", ""), "")
        secret = form.get("client_secret", secret)
        app = self.clients.get(client_id)
        if app is None or not app.secret_matches(secret):
            return _oauth_error(
                self.invalid_client_error,
                "The client_id and/or client_secret passed are incorrect.",
                as_json=as_json,
            )
        if form.get("grant_type") == "refresh_token":
            return self._refresh(app, form, as_json=as_json)
        if form.get("grant_type", "authorization_code") != "authorization_code":
            return _oauth_error(
                "unsupported_grant_type", "Unsupported grant type.", as_json=as_json
            )
        return self._exchange(app, form, as_json=as_json)

    def _exchange(
        self, app: EmulatedOAuthApp, form: Mapping[str, str], *, as_json: bool
    ) -> web.Response:
        code = form.get("code", "")
        redirect_uri = form.get("redirect_uri") or self._code_redirects.get(code, "")
        found = self.grants.inspect_code(code, client_id=app.client_id, redirect_uri=redirect_uri)
        if found is CodeFailure.REDIRECT_MISMATCH:
            description = "The redirect_uri MUST match the one of the authorization request."
            return _oauth_error("redirect_uri_mismatch", description, as_json=as_json)
        if isinstance(found, CodeFailure):
            description = "The code passed is incorrect or expired."
            return _oauth_error(self.invalid_grant_error, description, as_json=as_json)
        if found.code_challenge is not None and not verify_s256(
            form.get("code_verifier", ""), found.code_challenge
        ):
            return _oauth_error(
                self.invalid_grant_error, "The code_verifier does not match.", as_json=as_json
            )
        self.grants.consume_code(code, client_id=app.client_id, redirect_uri=found.redirect_uri)
        pair = self.grants.issue_tokens(
            client_id=app.client_id,
            user_id=found.user_id,
            scopes=found.scopes,
            refresh=app.expiring_tokens,
            access_ttl=self.access_token_ttl if app.expiring_tokens else _CLASSIC_TOKEN_TTL,
            refresh_ttl=self.refresh_token_ttl,
            access_prefix="ghu_" if app.expiring_tokens else "gho_",
            refresh_prefix="ghr_",
        )
        return self._token_response(pair, app, as_json=as_json)

    def _refresh(
        self, app: EmulatedOAuthApp, form: Mapping[str, str], *, as_json: bool
    ) -> web.Response:
        result = self.grants.refresh(
            form.get("refresh_token", ""),
            client_id=app.client_id,
            rotate=True,
            access_ttl=self.access_token_ttl,
            refresh_ttl=self.refresh_token_ttl,
            access_prefix="ghu_",
            refresh_prefix="ghr_",
        )
        if isinstance(result, TokenFailure):
            description = "The refresh token passed is incorrect or expired."
            return _oauth_error("bad_refresh_token", description, as_json=as_json)
        return self._token_response(result, app, as_json=as_json)

    def _token_response(
        self, pair: TokenPair, app: EmulatedOAuthApp, *, as_json: bool
    ) -> web.Response:
        body: dict[str, Any] = {
            "access_token": pair.access_token,
            "scope": ",".join(pair.scopes),
            "token_type": "bearer",
        }
        if app.expiring_tokens:
            now = self._now()
            body["expires_in"] = pair.expires_in(now)
            body["refresh_token"] = pair.refresh_token
            body["refresh_token_expires_in"] = pair.refresh_expires_in(now)
        return _token_answer(body, as_json=as_json)

    # -- API -----------------------------------------------------------------------------

    def _bearer(self, request: web.Request) -> tuple[EmulatedUser, tuple[str, ...]] | web.Response:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() in {"bearer", "token"} and value.strip():
            found = self.grants.lookup_access(value.strip())
            if not isinstance(found, TokenFailure) and found.user_id in self.users:
                return self.users[found.user_id], found.scopes
        return _api_error("Bad credentials", status=401)

    async def _user(self, request: web.Request) -> web.StreamResponse:
        found = self._bearer(request)
        if isinstance(found, web.Response):
            return found
        user, scopes = found
        body = {
            "login": user.login,
            "id": user.id,
            "node_id": base64.b64encode(f"04:User{user.id}".encode()).decode(),
            "avatar_url": self.avatar_url(user),
            "html_url": self.url_for(f"/{user.login}"),
            "type": "User",
            "site_admin": False,
            "name": user.name,
            "company": user.company,
            "blog": "",
            "location": user.location,
            "email": user.public_email,
            "hireable": None,
            "bio": user.bio,
            "public_repos": user.public_repos,
            "followers": user.followers,
            "following": user.following,
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
        return web.json_response(body, headers=_scope_headers(scopes, ""))

    async def _emails(self, request: web.Request) -> web.StreamResponse:
        found = self._bearer(request)
        if isinstance(found, web.Response):
            return found
        user, scopes = found
        if not _EMAIL_SCOPES & set(scopes):
            return _api_error("Not Found", status=404, headers=_scope_headers(scopes, "user"))
        body = [
            {
                "email": e.email,
                "primary": e.primary,
                "verified": e.verified,
                "visibility": e.visibility,
            }
            for e in user.emails
        ]
        return web.json_response(body, headers=_scope_headers(scopes, "user, user:email"))

    async def _revoke(self, request: web.Request) -> web.StreamResponse:
        auth = _basic_auth(request)
        app = self.clients.get(request.match_info["client_id"])
        if (
            auth is None
            or app is None
            or auth[0] != app.client_id
            or not app.secret_matches(auth[1])
        ):
            return _api_error("Requires authentication", status=401)
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return _api_error("Invalid request.", status=422)
        found = self.grants.lookup_access(token)
        if isinstance(found, TokenFailure) or found.client_id != app.client_id:
            return _api_error("Not Found", status=404)
        self.grants.revoke(token, client_id=app.client_id)
        return web.Response(status=204)

    async def _avatar(self, request: web.Request) -> web.StreamResponse:
        user_id = request.match_info["user_id"]
        user = next((u for u in self.users.values() if str(u.id) == user_id), None)
        if user is None:
            raise web.HTTPNotFound
        letter = html.escape(user.login[:1].upper())
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120" '
            'viewBox="0 0 100 100"><rect width="100" height="100" rx="50" fill="#1f883d"/>'
            '<text x="50" y="50" dy=".35em" text-anchor="middle" font-family="sans-serif" '
            f'font-size="48" fill="#fff">{letter}</text></svg>'
        )
        return web.Response(text=svg, content_type="image/svg+xml")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _new_code() -> str:
    return secrets.token_hex(10)


def _redirect(uri: str, params: Sequence[tuple[str, str]]) -> web.Response:
    sep = "&" if "?" in uri else "?"
    location = f"{uri}{sep}{urlencode(params, quote_via=quote)}"
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _redirect_error(uri: str, error: str, description: str, state: str | None) -> web.Response:
    logger.info("authorization ended with %s", error)
    params = [("error", error), ("error_description", description), ("error_uri", _DOCS)]
    if state is not None:
        params.append(("state", state))
    return _redirect(uri, params)


def _error_page(text: str) -> web.Response:
    page = message_page(title="GitHub", heading="Something went wrong", paragraphs=[text])
    return html_response(page, status=400)


async def _read_params(request: web.Request) -> dict[str, str] | None:
    if request.content_type == _FORM_TYPE:
        return dict(parse_qsl(await request.text(), keep_blank_values=True))
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            return None
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    return None


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def _token_answer(body: Mapping[str, Any], *, as_json: bool) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if as_json:
        return web.json_response(dict(body), headers=headers)
    text = urlencode({k: "" if v is None else str(v) for k, v in body.items()})
    return web.Response(text=text, content_type=_FORM_TYPE, headers=headers)


def _oauth_error(error: str, description: str, *, as_json: bool) -> web.Response:
    """GitHub answers token endpoint errors with HTTP 200."""
    logger.info("token endpoint error %s", error)
    body = {"error": error, "error_description": description, "error_uri": _DOCS}
    return _token_answer(body, as_json=as_json)


def _api_error(
    message: str, *, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"message": message, "documentation_url": "https://docs.github.com/rest"}
    return web.json_response(body, status=status, headers=dict(headers or {}))


def _scope_headers(scopes: Sequence[str], accepted: str) -> dict[str, str]:
    return {"X-OAuth-Scopes": ", ".join(scopes), "X-Accepted-OAuth-Scopes": accepted}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keyloom_github.emulator",
        description="Run a local GitHub OAuth emulator until Ctrl-C.",
    )
    add_emulator_arguments(parser, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)
    parser.add_argument(
        "--callback-url",
        action="append",
        default=[],
        metavar="URL",
        help="registered callback URL (repeatable; default: any path on 127.0.0.1/localhost)",
    )
    parser.add_argument(
        "--expiring-tokens", action="store_true", help="issue expiring tokens and refresh tokens"
    )
    parser.add_argument("--require-pkce", action="store_true", help="refuse requests without PKCE")
    return parser


def _from_args(args: argparse.Namespace) -> GitHubEmulator:
    app = EmulatedOAuthApp(
        client_id=args.client_id,
        client_secret=args.client_secret,
        callback_urls=args.callback_url or _DEFAULT_CALLBACKS,
        expiring_tokens=args.expiring_tokens,
    )
    return GitHubEmulator(clients=[app], require_pkce=args.require_pkce, **emulator_options(args))


def _describe(emulator: GitHubEmulator) -> list[str]:
    return [
        f"  authorize:  {emulator.authorize_url}",
        f"  token:      {emulator.token_url}",
        f"  user:       {emulator.user_url}",
        *(f"  callback URL:  {url}" for url in emulator.default_app.callback_urls),
        f"  use: github(..., endpoint_origin={json.dumps(emulator.url)})",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator from the command line (``python -m keyloom_github.emulator``)."""
    return emulator_main("GitHub emulator", _parser(), _from_args, _describe, argv)


if __name__ == "__main__":
    raise SystemExit(main())
