"""Sign in with GitHub (OAuth apps, and GitHub Apps with expiring user tokens) for Keyloom.

The core's RFC 6749 hooks build the authorization URL, exchange the code (reading GitHub's
errors, sent with HTTP 200), refresh (``bad_refresh_token`` means sign in again) and read
``/user`` (``login`` and ``avatar_url`` where ``name`` or ``picture`` is missing). This
plugin adds GitHub's scope rules, the e-mail of ``/user/emails`` and revocation.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from keyloom_core import (
    ConfigurationError,
    HttpClient,
    Profile,
    ProfileError,
    Provider,
    ProviderSpec,
    RevokeError,
    TokenSet,
    configure_provider,
    hookimpl,
    oauth2,
    parse_scopes,
)

__all__ = ["IMPLIED_SCOPES", "SCOPES", "SPEC", "github"]

#: Scopes that include others: GitHub keeps only the wider one in the token.
IMPLIED_SCOPES = {
    "user": "read:user user:email user:follow",
    "repo": "repo:status repo_deployment public_repo repo:invite security_events",
    "admin:org": "write:org read:org",
    "write:org": "read:org",
    "write:packages": "read:packages",
    "project": "read:project",
}
#: Every OAuth app scope this plugin accepts: those above, and those that include no other.
SCOPES = parse_scopes(
    " ".join([*IMPLIED_SCOPES, *IMPLIED_SCOPES.values()])
    + " gist notifications workflow delete_repo codespace admin:repo_hook"
)
SPEC = ProviderSpec(
    id="github",
    name="GitHub",
    authorize_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",
    profile_url="https://api.github.com/user",
    revoke_url="https://api.github.com/applications/{client_id}/token",
    known_scopes=SCOPES,
    default_scopes="read:user user:email",
    refresh_expires_field="refresh_token_expires_in",
    reauth_errors={"bad_refresh_token"},  # GitHub's invalid_grant
    profile_fields={"name": "login", "image": "avatar_url"},
    emulator="keyloom_github.emulator:GitHubEmulator",
    plugin="keyloom_github",
)
_API = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def github(**options: Any) -> Provider:
    """Configure GitHub sign-in; *options* are :func:`keyloom_core.configure_provider`'s."""
    return configure_provider(SPEC, **options)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    """Offer ``github`` (credentials from ``GITHUB_CLIENT_ID`` / ``GITHUB_CLIENT_SECRET``)."""
    register(SPEC, github)


@hookimpl
def validate_scopes(provider: Provider) -> None:
    """Refuse a scope that another requested scope includes (GitHub would drop it)."""
    for wide in provider.scopes if provider.id == SPEC.id else ():
        if narrow := sorted(provider.scopes & parse_scopes(IMPLIED_SCOPES.get(wide))):
            msg = f"GitHub scope '{wide}' includes {', '.join(narrow)}: request '{wide}' alone"
            raise ConfigurationError(msg, provider_id=provider.id)


@hookimpl
async def revoke_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> bool:
    """``DELETE`` the token, authenticated as the app (basic auth); GitHub answers 204."""
    url = (provider.spec.revoke_url or "").replace("{client_id}", quote(provider.client_id))
    app = base64.b64encode(f"{provider.client_id}:{provider.client_secret}".encode()).decode()
    headers, body = {**_API, "Authorization": f"Basic {app}"}, {"access_token": tokens.access_token}
    response = await http.request(
        "DELETE", url, json_body=body, headers=headers, idempotent=True, provider_id=provider.id
    )
    if response.status != 204:
        data = response.json_object(RevokeError, provider.id)
        oauth2.raise_for_error(response, data, provider, RevokeError)
    return True


@hookimpl
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile | None:
    """The core reads ``/user``; the e-mail is the primary, verified one of ``/user/emails``."""
    profile = await oauth2.fetch_profile(provider, tokens, http)
    if profile is None:
        return None
    granted = provider.scopes if tokens.scopes is None else tokens.scopes
    if not {"user", "user:email"} & granted:
        return profile
    url, bearer = f"{provider.spec.profile_url}/emails", tokens.access_token
    response = await http.get(url, bearer=bearer, headers=_API, provider_id=provider.id)
    emails = response.json(ProfileError, provider.id)  # a list, where all is well
    error = emails if isinstance(emails, dict) else {}
    oauth2.raise_for_error(response, error, provider, ProfileError)
    for row in emails if isinstance(emails, list) else ():
        email = row.get("email") if isinstance(row, dict) else None
        if isinstance(email, str) and row.get("primary") is True and row.get("verified") is True:
            return profile.with_overrides({"email": email, "email_verified": True})
    return profile


def __getattr__(name: str) -> Any:
    if name == "refresh_token":  # the core's refresh reads SPEC.reauth_errors now
        msg = "keyloom_github.refresh_token is deprecated: use keyloom_core.oauth2.refresh_token"
        warnings.warn(msg, DeprecationWarning, stacklevel=2)
        return oauth2.refresh_token
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
