"""Sign in with TikTok: TikTok Login Kit (OAuth 2.0, v2 API) for Keyloom.

TikTok differs from plain OAuth 2.0 in ways this plugin handles: the client id is sent
as ``client_key``, scopes are joined with commas, the PKCE challenge is hex-encoded, the
profile comes in a ``{"data", "error"}`` envelope and only with the fields the *granted*
scopes allow, refresh tokens rotate, and there is never an e-mail. Token exchange,
refresh and revocation are standard apart from those names and go through the core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import attrs

from keyloom_core import (
    AuthorizationRequest,
    ConfigurationError,
    HttpClient,
    Profile,
    ProfileError,
    Provider,
    ProviderSpec,
    TokenSet,
    configure_provider,
    hookimpl,
)
from keyloom_core.hookspecs import ProviderFactory
from keyloom_core.models import ProfileOverrides
from keyloom_core.oauth2 import default_authorize_params

__all__ = ["FIELDS_BY_SCOPE", "SCOPES", "SPEC", "tiktok"]

#: Scopes this plugin knows; ``user.info.basic`` comes with Login Kit, the rest need review.
SCOPES = (
    "user.info.basic",
    "user.info.profile",
    "user.info.stats",
    "video.list",
    "video.upload",
    "video.publish",
)
#: The user-info fields each scope unlocks.
FIELDS_BY_SCOPE: Mapping[str, tuple[str, ...]] = {
    "user.info.basic": (
        "open_id",
        "union_id",
        "avatar_url",
        "avatar_url_100",
        "avatar_large_url",
        "display_name",
    ),
    "user.info.profile": ("bio_description", "profile_deep_link", "is_verified", "username"),
    "user.info.stats": ("follower_count", "following_count", "likes_count", "video_count"),
}
BASIC = "user.info.basic"

SPEC = ProviderSpec(
    id="tiktok",
    name="TikTok",
    authorize_url="https://www.tiktok.com/v2/auth/authorize/",
    token_url="https://open.tiktokapis.com/v2/oauth/token/",
    profile_url="https://open.tiktokapis.com/v2/user/info/",
    revoke_url="https://open.tiktokapis.com/v2/oauth/revoke/",
    known_scopes=SCOPES,
    default_scopes=(BASIC,),
    scope_separator=",",
    client_id_param="client_key",
    pkce_encoding="hex",
    env_prefix="TIKTOK",
    emulator="keyloom_tiktok.emulator:TikTokEmulator",
    plugin="keyloom_tiktok",
)


def tiktok(
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    scopes: Iterable[str] | None = None,
    required_scopes: Iterable[str] | None = None,
    approved_scopes: Iterable[str] | None = None,
    profile_overrides: ProfileOverrides | None = None,
    redirect_uri: str | None = None,
    endpoint_origin: str | None = None,
    pkce_encoding: Literal["hex", "base64url"] = "hex",
    disable_auto_auth: bool = False,
) -> Provider:
    """Configure TikTok sign-in.

    :param client_id: the app's *client key*; default ``TIKTOK_CLIENT_ID``.
    :param client_secret: default ``TIKTOK_CLIENT_SECRET``.
    :param scopes: scopes to request; default ``user.info.basic``.
    :param required_scopes: requested scopes a login cannot do without (default
        ``user.info.basic``); the others the user may untick on TikTok's consent screen.
    :param approved_scopes: the scopes TikTok's app review approved; requesting any other
        is a configuration error naming it.
    :param profile_overrides: ``fn(profile) -> dict`` applied last to every profile.
    :param redirect_uri: a fixed redirect URI; by default
        ``{base_url}/api/auth/oauth/tiktok/callback``.
    :param endpoint_origin: serve every TikTok endpoint from this origin (the local emulator).
    :param pkce_encoding: ``"hex"`` (TikTok's documented encoding) or ``"base64url"`` (RFC 7636).
    :param disable_auto_auth: always show TikTok's consent screen (lets users switch accounts).
    :raises ConfigurationError: a credential is missing, or a scope is unknown or unapproved.
    """
    return configure_provider(
        attrs.evolve(SPEC, pkce_encoding=pkce_encoding),
        client_id=client_id,
        client_secret=client_secret,
        scopes=scopes,
        required_scopes=required_scopes,
        # user.info.basic comes with Login Kit: it is never part of an app review.
        approved_scopes=None if approved_scopes is None else {*approved_scopes, BASIC},
        profile_overrides=profile_overrides,
        redirect_uri=redirect_uri,
        endpoint_origin=endpoint_origin,
        options={"disable_auto_auth": disable_auto_auth},
    )


@hookimpl
def register_providers(register: Callable[[ProviderSpec, ProviderFactory], None]) -> None:
    """Offer the ``tiktok`` provider."""
    register(SPEC, tiktok)


@hookimpl
def validate_scopes(provider: Provider) -> None:
    """TikTok's profile needs ``user.info.basic``: it must be requested and required."""
    if provider.id == SPEC.id and BASIC not in provider.required_scopes:
        msg = f"TikTok sign-in needs the '{BASIC}' scope requested and required"
        raise ConfigurationError(msg, provider_id=SPEC.id)


@hookimpl
async def authorize_params(provider: Provider, request: AuthorizationRequest) -> Mapping[str, str]:
    """Standard parameters in TikTok's dialect, plus ``disable_auto_auth`` when asked."""
    params = default_authorize_params(provider, request)
    if provider.options.get("disable_auto_auth"):
        params["disable_auto_auth"] = "1"
    return params


def profile_fields(granted: Iterable[str]) -> list[str]:
    """The user-info fields the granted scopes allow, in TikTok's documented order."""
    allowed = set(granted) | {BASIC}
    return [f for scope, fields in FIELDS_BY_SCOPE.items() if scope in allowed for f in fields]


@hookimpl
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile:
    """``GET /v2/user/info/`` with only the fields the granted scopes allow."""
    url = provider.spec.profile_url or SPEC.profile_url or ""
    fields = profile_fields(tokens.scopes or ())
    response = await http.get(
        url, params={"fields": ",".join(fields)}, bearer=tokens.access_token, provider_id=SPEC.id
    )
    body = response.json_object(ProfileError, SPEC.id)
    envelope = body.get("error")
    error: dict[str, object] = envelope if isinstance(envelope, dict) else {}
    code = error.get("code", "ok" if response.ok else f"http_{response.status}")
    data = body.get("data")
    user = data.get("user") if isinstance(data, dict) else None
    if code != "ok" or not response.ok or not isinstance(user, dict):
        raise ProfileError(
            f"TikTok refused the profile request (HTTP {response.status})",
            provider_id=SPEC.id,
            error=str(code)[:64],
            description=str(error.get("message") or "")[:300] or None,
            log_id=str(error.get("log_id") or "")[:128] or None,
            http_status=response.status,
        )
    open_id = user.get("open_id") or tokens.account_id
    if not isinstance(open_id, str) or not open_id:
        raise ProfileError("TikTok's profile has no open_id", provider_id=SPEC.id)
    name, avatar = user.get("display_name"), user.get("avatar_url")
    return Profile(
        provider_id=SPEC.id,
        id=open_id,
        name=name if isinstance(name, str) else None,
        email=None,
        image=avatar if isinstance(avatar, str) else None,
        raw=user,
    )
