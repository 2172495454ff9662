"""A local GitHub for tests and development: ``python -m keyloom_github.emulator``.

:class:`~keyloom_core.testing.authserver.AuthorizationServer` reading ``SPEC``, plus GitHub's
quirks: token errors with HTTP 200, form-encoded token answers unless ``Accept:
application/json``, scopes split on commas too and without those another one includes,
callback URL matching (subdirectories; any port on loopback), ``redirect_uri_mismatch`` sent
to the registered callback, a remembered consent, ``/user/emails`` with scope checks, classic
or expiring (rotating) tokens and ``DELETE /applications/{client_id}/token``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import attrs
from aiohttp import web

from keyloom_core.testing.authserver import (
    AuthorizationServer,
    Client,
    DeprecatedAlias,
    client_factory,
    deprecated_module_names,
    redirect_uri_matches,
)
from keyloom_core.testing.emulator import AccessToken, AuthorizationCode, TokenFailure, TokenPair
from keyloom_github import SCOPES, SPEC

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_USERS",
    "EmulatedEmail",
    "EmulatedOAuthApp",
    "EmulatedUser",
    "GitHubEmulator",
    "callback_matches",
    "normalise_scopes",
]

DEFAULT_CLIENT_ID: Final = "Ov23liKeyloomEmulator"
DEFAULT_CLIENT_SECRET: Final = "keyloom-github-emulator-client-secret"
_EMAIL_SCOPES: Final = frozenset({"user", "user:email"})


_CALLBACK_RULES: Final = {"subpaths": True, "subdomains": True, "any_loopback_port": True}


def callback_matches(callback: str, redirect_uri: str) -> bool:
    """Whether GitHub accepts *redirect_uri* for the registered *callback* URL.

    The host or a subdomain, the same port (any port on loopback), the path or below it.
    """
    return redirect_uri_matches(callback, redirect_uri, **_CALLBACK_RULES)


def _tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class EmulatedOAuthApp(Client):
    """An OAuth app; *expiring_tokens* for a GitHub App's expiring tokens and refresh tokens."""

    redirect_uris: tuple[str, ...] = attrs.field(
        alias="callback_urls", converter=_tuple, validator=attrs.validators.min_len(1)
    )
    expiring_tokens: bool = False
    redirect_uri_rules = _CALLBACK_RULES  # callback_matches

    @property
    def callback_urls(self) -> tuple[str, ...]:
        """The callback URLs (:func:`callback_matches`); errors go to the first."""
        return self.redirect_uris


@attrs.frozen(kw_only=True)
class EmulatedEmail:
    """One of a user's addresses, as ``/user/emails`` lists it."""

    email: str
    primary: bool = False
    verified: bool = True
    visibility: str | None = "private"


@attrs.frozen(kw_only=True)
class EmulatedUser:
    """A GitHub account: ``/user``'s fields (a display name may be empty) and addresses."""

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
        """The verified address the user made public, the profile's ``email``."""
        return next((e.email for e in self.emails if e.visibility == "public" and e.verified), None)

    @property
    def primary_verified_email(self) -> str | None:
        """The primary address if it is verified (what a sign-in should use)."""
        return next((e.email for e in self.emails if e.primary and e.verified), None)


#: The built-in users; the first signs in by default.
DEFAULT_USERS: Final = (
    EmulatedUser(
        id=1_000_001,
        login="keyloom-octocat",
        name="Keyloom Octocat",
        emails=(
            EmulatedEmail(email="octocat@users.example.test", primary=True, visibility="public"),
            EmulatedEmail(email="octocat@work.example.test", verified=False),
        ),
    ),
    EmulatedUser(
        id=1_000_002,
        login="unverified-dev",
        emails=(
            EmulatedEmail(email="dev@unverified.example.test", primary=True, verified=False),
            EmulatedEmail(email="dev@verified.example.test"),
        ),
    ),
)


class GitHubEmulator(AuthorizationServer):
    """GitHub on 127.0.0.1; ``users`` and ``default_user`` (a login) may change as it runs.

    The constructor's options are :class:`AuthorizationServer`'s (``users``, ``default_user``,
    ``require_pkce``, ``consent``...).
    """

    spec = SPEC
    builtin_client = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    default_redirect_uris = ("http://127.0.0.1/", "http://localhost/")  # any port and path
    redirect_uri_optional = True
    default_users = DEFAULT_USERS
    user_key_attribute = "login"
    api_paths = frozenset({"/user", "/user/emails"})  # with the spec's token and revoke routes
    error_status = 200
    require_pkce = False
    require_response_type = False
    remember_consent = True
    partial_consent = False
    default_grant_type = "authorization_code"
    consent_path = "/login/oauth/authorize/consent"
    invalid_client_error = "incorrect_client_credentials"
    invalid_grant_error = "bad_verification_code"
    invalid_refresh_error = "bad_refresh_token"
    access_ttl = 8 * 3600  # expiring tokens
    refresh_ttl = 184 * 86_400
    token_prefixes = ("ghu_", "ghr_")
    make_client = client_factory(EmulatedOAuthApp)  # its expiring_tokens is a keyword
    form_encoded_answers = True
    redirect_uri_mismatch_error = "redirect_uri_mismatch"  # sent to the first callback URL
    revocation_api = True  # DELETE /applications/{client_id}/token: 204, 401 or 404

    client_flags: ClassVar = {
        "expiring_tokens": "a GitHub App's expiring tokens, with rotating refresh tokens"
    }

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """``--expiring-tokens``; ``--callback-url``, the old name of ``--redirect-uri``."""
        super().add_arguments(parser)
        help_ = "deprecated: --redirect-uri"
        parser.add_argument("--callback-url", action="append", dest="redirect_uri", help=help_)

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any]:
        """The default user as the plugin reads it (e-mail only with an e-mail scope)."""
        del client_id
        user = self.users[self.default_user]
        email = user.primary_verified_email if _EMAIL_SCOPES & set(scopes) else None
        return {
            "id": str(user.id),
            "name": user.name or user.login,
            "email": email,
            "image": self.avatar_url(user),
        }

    def requested_scopes(self, raw: str) -> tuple[str, ...]:
        """Split on spaces and commas, then :meth:`narrowest_scopes` (as SPEC says)."""
        return self.narrowest_scopes(raw.replace(",", " ").split())

    def issue(self, client: Any, code: AuthorizationCode) -> TokenPair:
        """Expiring ``ghu_`` / ``ghr_`` pairs, or classic ``gho_`` tokens that never expire."""
        if client.expiring_tokens:
            return super().issue(client, code)
        return self.book.issue_tokens(
            client_id=client.client_id,
            user_id=code.user_id,
            scopes=code.scopes,
            refresh=False,
            access_prefix="gho_",
            access_ttl=3650 * 86_400,
        )

    def token_answer(self, client: Any, pair: TokenPair) -> Mapping[str, Any]:
        """Comma-separated scopes; expiry and refresh token only for expiring tokens."""
        body = {**super().token_answer(client, pair), "token_type": "bearer"}
        body["scope"] = ",".join(pair.scopes)
        if not client.expiring_tokens:
            return {k: body[k] for k in ("access_token", "token_type", "scope")}
        return body

    def error_answer(self, status: int, error: str, description: str = "") -> web.Response:
        """API errors are ``{"message": ...}``."""
        return web.json_response({"message": description or error}, status=status)

    def profile(self, token: AccessToken) -> Mapping[str, Any]:
        """``/user``: the account's fields, a ``name`` that may be empty, the public e-mail."""
        user = self.users[str(token.user_id)]
        fields = attrs.asdict(user, filter=lambda field, _: field.name != "emails")
        return fields | {
            "avatar_url": self.avatar_url(user),
            "type": "User",
            "email": user.public_email,
        }

    def profile_headers(self, token: AccessToken) -> Mapping[str, str]:
        """The scopes of the token, as GitHub's API tells them."""
        return {"X-OAuth-Scopes": ", ".join(token.scopes), "X-Accepted-OAuth-Scopes": ""}

    def add_routes(self, app: web.Application) -> None:
        """The spec's routes (revocation is a ``DELETE``) and ``/user/emails``."""
        super().add_routes(app)
        app.router.add_get("/user/emails", self.limited(self.emails))

    async def emails(self, request: web.Request) -> web.StreamResponse:
        """``/user/emails``: 404 without ``user`` or ``user:email``."""
        token = self.authorized(request)
        if isinstance(token, TokenFailure):
            return self.error_answer(401, "Bad credentials")
        headers = {**self.profile_headers(token), "X-Accepted-OAuth-Scopes": "user, user:email"}
        if not _EMAIL_SCOPES & set(token.scopes):
            return web.json_response({"message": "Not Found"}, status=404, headers=headers)
        rows = [attrs.asdict(e) for e in self.users[str(token.user_id)].emails]
        return web.json_response(rows, headers=headers)

    # The names this emulator had before it was built on the kit:
    grants = DeprecatedAlias("book")
    access_token_ttl = DeprecatedAlias("book.access_ttl")
    refresh_token_ttl = DeprecatedAlias("book.refresh_ttl")
    code_ttl = DeprecatedAlias("book.code_ttl")
    user_url = DeprecatedAlias("profile_url")
    revoke_url = DeprecatedAlias("revocation_url")


__getattr__ = deprecated_module_names(
    __name__,
    {
        "AUTHORIZE_PATH": ("SPEC.authorize_url", "/login/oauth/authorize"),
        "TOKEN_PATH": ("SPEC.token_url", "/login/oauth/access_token"),
        "USER_PATH": ("SPEC.profile_url", "/user"),
        "EMAILS_PATH": ("'/user/emails'", "/user/emails"),
        "CONSENT_PATH": ("GitHubEmulator.consent_path", GitHubEmulator.consent_path),
        "KNOWN_SCOPES": ("keyloom_github.SCOPES", SCOPES),
        "IMPLIED_SCOPES": (
            "keyloom_github.IMPLIED_SCOPES (space-separated)",
            dict(SPEC.implied_scopes),
        ),
        "main": ("GitHubEmulator.main", GitHubEmulator.main),
    },
)


def normalise_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """The scopes GitHub grants: known ones, in order, without those another one includes."""
    return GitHubEmulator.narrowest_scopes(requested)


if __name__ == "__main__":
    raise SystemExit(GitHubEmulator.main())
