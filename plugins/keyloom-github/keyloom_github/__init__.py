"""Sign in with GitHub (OAuth apps, and GitHub Apps with expiring user tokens) for Keyloom.

The core's RFC 6749 hooks build the authorization URL and exchange the code (GitHub's errors
come with HTTP 200 and an ``error`` field, which the core reads). This plugin adds GitHub's
scope rules, the profile (``/user`` and ``/user/emails``), refresh and revocation.
"""

from __future__ import annotations

import base64
import json
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
    ReauthenticationRequiredError,
    RevokeError,
    TokenRefreshError,
    TokenSet,
    configure_provider,
    hookimpl,
    parse_scopes,
)
from keyloom_core.oauth2 import client_credentials, parse_token_response, raise_for_error

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
#: Every OAuth app scope this plugin accepts.
SCOPES = parse_scopes(
    "user read:user user:email user:follow repo repo:status repo_deployment public_repo "
    "repo:invite security_events admin:org write:org read:org write:packages read:packages "
    "project read:project gist notifications workflow delete_repo codespace admin:repo_hook"
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
async def refresh_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> TokenSet:
    """Refresh an expiring GitHub App user token; the refresh token rotates."""
    form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token or ""}
    headers = {"Accept": "application/json"}
    url, form = provider.spec.token_url, {**client_credentials(provider), **form}
    response = await http.post_form(url, form, headers=headers, provider_id=provider.id)
    dead = response.json_object(TokenRefreshError, provider.id).get("error") == "bad_refresh_token"
    error = ReauthenticationRequiredError if dead else TokenRefreshError
    return parse_token_response(response, provider, error, previous=tokens)


@hookimpl
async def revoke_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> bool:
    """Revoke the token, authenticated as the app (basic auth); GitHub answers 204."""
    url = (provider.spec.revoke_url or "").replace("{client_id}", quote(provider.client_id))
    basic = base64.b64encode(f"{provider.client_id}:{provider.client_secret}".encode()).decode()
    response = await http.request(
        "DELETE",
        url,
        json_body={"access_token": tokens.access_token},
        headers={**_API, "Authorization": f"Basic {basic}"},
        idempotent=True,
        provider_id=provider.id,
    )
    if response.status != 204:
        data = response.json_object(RevokeError, provider.id)
        raise_for_error(response, data, provider, RevokeError)
    return True


async def _get(http: HttpClient, url: str, tokens: TokenSet, provider: Provider) -> Any:
    response = await http.get(
        url, bearer=tokens.access_token, headers=_API, provider_id=provider.id
    )
    if not response.ok:
        data = response.json_object(ProfileError, provider.id)
        raise_for_error(response, data, provider, ProfileError)
    try:
        return json.loads(response.body)
    except ValueError as exc:
        raise ProfileError("GitHub sent a body that is not JSON", provider_id=provider.id) from exc


@hookimpl
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile:
    """``GET /user``; the e-mail is the primary, verified one of ``/user/emails``, if granted."""
    user = await _get(http, provider.spec.profile_url or "", tokens, provider)
    if not isinstance(user, dict) or type(user.get("id")) is not int:
        raise ProfileError("GitHub's profile has no user id", provider_id=provider.id)
    email = None
    if {"user", "user:email"} & (provider.scopes if tokens.scopes is None else tokens.scopes):
        emails = await _get(http, f"{provider.spec.profile_url}/emails", tokens, provider)
        for row in emails if isinstance(emails, list) else ():
            if isinstance(row, dict) and row.get("primary") is True and row.get("verified") is True:
                email = row.get("email") if isinstance(row.get("email"), str) else None
    name, image = user.get("name") or user.get("login"), user.get("avatar_url")
    return Profile(
        provider_id=provider.id,
        id=str(user["id"]),
        name=name if isinstance(name, str) else None,
        email=email,
        email_verified=email is not None,
        image=image if isinstance(image, str) else None,
        raw=user,
    )
