"""Sign in with GitHub (OAuth apps, and GitHub Apps with expiring user tokens) for Keyloom.

``SPEC`` describes GitHub's dialect and the core's hooks follow it: they build the
authorization URL, exchange the code (reading GitHub's errors, sent with HTTP 200), refresh
(``bad_refresh_token`` means sign in again), read ``/user`` (``login`` and ``avatar_url``
where ``name`` or ``picture`` is missing), refuse a scope another requested scope includes,
and revoke (``DELETE``, a JSON body, the app's HTTP Basic credentials). This plugin adds
the e-mail of ``/user/emails``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keyloom_core import (
    HttpClient,
    Profile,
    ProfileError,
    Provider,
    ProviderSpec,
    TokenSet,
    configure_provider,
    deprecated_module_names,
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
_PLAIN = "gist notifications workflow delete_repo codespace admin:repo_hook"
#: Every OAuth app scope this plugin accepts: those above, and those that include no other.
SCOPES = parse_scopes(" ".join([*IMPLIED_SCOPES, *IMPLIED_SCOPES.values(), _PLAIN]))
SPEC = ProviderSpec(
    id="github",
    name="GitHub",
    authorize_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",
    profile_url="https://api.github.com/user",
    revoke_url="https://api.github.com/applications/{client_id}/token",
    known_scopes=SCOPES,
    implied_scopes=IMPLIED_SCOPES,
    default_scopes="read:user user:email",
    refresh_expires_field="refresh_token_expires_in",
    reauth_errors={"bad_refresh_token"},  # GitHub's invalid_grant
    profile_fields={"name": "login", "image": "avatar_url"},
    revoke_method="DELETE",
    revoke_encoding="json",
    revoke_token_param="access_token",
    revoke_auth_method="client_secret_basic",  # the app's id and secret, not the user's token
    api_headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
    emulator="keyloom_github.emulator:GitHubEmulator",
    plugin="keyloom_github",
)


def github(**options: Any) -> Provider:
    """Configure GitHub sign-in; *options* are :func:`keyloom_core.configure_provider`'s."""
    return configure_provider(SPEC, **options)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    """Offer ``github`` (credentials from ``GITHUB_CLIENT_ID`` / ``GITHUB_CLIENT_SECRET``)."""
    register(SPEC, github)


@hookimpl
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile | None:
    """The core reads ``/user``; the e-mail is the primary, verified one of ``/user/emails``."""
    profile = await oauth2.fetch_profile(provider, tokens, http)
    granted = provider.scopes if tokens.scopes is None else tokens.scopes
    if profile is None or not {"user", "user:email"} & granted:
        return profile
    url = f"{provider.spec.profile_url}/emails"
    headers, bearer = provider.spec.api_headers, tokens.access_token
    response = await http.get(url, bearer=bearer, headers=headers, provider_id=provider.id)
    emails = response.json(ProfileError, provider.id)  # a list, where all is well
    error = emails if isinstance(emails, dict) else {}
    oauth2.raise_for_error(response, error, provider, ProfileError)
    for row in emails if isinstance(emails, list) else ():
        email = row.get("email") if isinstance(row, dict) else None
        if isinstance(email, str) and row.get("primary") is True and row.get("verified") is True:
            return profile.with_overrides({"email": email, "email_verified": True})
    return profile


# The hooks this module had before the core read GitHub's dialect from SPEC still import.
__getattr__ = deprecated_module_names(
    __name__,
    {
        "refresh_token": ("keyloom_core.oauth2.refresh_token", oauth2.refresh_token),
        "revoke_token": ("keyloom_core.oauth2.revoke_token", oauth2.revoke_token),
        "validate_scopes": ("ProviderSpec.implied_scopes", oauth2.check_implied_scopes),
    },
)
