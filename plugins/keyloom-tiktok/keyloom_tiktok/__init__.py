"""Sign in with TikTok: TikTok Login Kit (OAuth 2.0, v2 API) for Keyloom.

TikTok differs from plain OAuth 2.0 in ways this plugin handles: the client id is sent
as ``client_key``, scopes are joined with commas, the PKCE challenge is hex-encoded, the
profile comes in a ``{"data", "error"}`` envelope and only with the fields the *granted*
scopes allow, refresh tokens rotate, and there is never an e-mail. Token exchange,
refresh and revocation are standard apart from those names and go through the core.

TikTok answers OAuth errors with HTTP 200 and the error in the body: every call here
(and in the core) treats an error body as an error whatever the status, so a refused
exchange, refresh, revocation or profile request is a typed error with TikTok's
``error``, ``description`` and ``log_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

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

if TYPE_CHECKING:
    from .demo import TikTokDashboard

__all__ = ["FIELDS_BY_SCOPE", "SCOPES", "SCOPES_WITHOUT_REVIEW", "SCOPE_PRODUCTS", "SPEC", "tiktok"]

#: Every scope in TikTok's scopes reference, with the TikTok product that grants it.
#: Only ``user.info.basic`` (it comes with Login Kit) is granted without TikTok's app review.
SCOPE_PRODUCTS: Mapping[str, str] = {
    "user.info.basic": "Login Kit",
    "user.info.profile": "Login Kit",
    "user.info.stats": "Login Kit",
    "video.list": "Display API",
    "video.upload": "Content Posting API (upload to the creator's inbox as a draft)",
    "video.publish": "Content Posting API (Direct Post to the creator's profile)",
    "portability.activity.ongoing": "Data Portability API (EEA and UK users)",
    "portability.activity.single": "Data Portability API (EEA and UK users)",
    "portability.all.ongoing": "Data Portability API (EEA and UK users)",
    "portability.all.single": "Data Portability API (EEA and UK users)",
    "portability.directmessages.ongoing": "Data Portability API (EEA and UK users)",
    "portability.directmessages.single": "Data Portability API (EEA and UK users)",
    "portability.postsandprofile.ongoing": "Data Portability API (EEA and UK users)",
    "portability.postsandprofile.single": "Data Portability API (EEA and UK users)",
    "research.adlib.basic": "Research API (client access tokens, not user sign-in)",
    "research.data.basic": "Research API (client access tokens, not user sign-in)",
    "research.data.u18eu": "Research API (client access tokens, not user sign-in)",
    "research.data.vra": "Research API (client access tokens, not user sign-in)",
    "local.product.manage": "Local Service",
    "local.shop.manage": "Local Service",
    "local.voucher.manage": "Local Service",
    "minis.public.upsert": "TikTok Minis",
}
#: Scopes this plugin knows (``known_scopes``), in TikTok's order.
SCOPES = tuple(SCOPE_PRODUCTS)
#: The scopes TikTok grants without an app review.
SCOPES_WITHOUT_REVIEW = ("user.info.basic",)
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
    account_id_field="open_id",
    log_id_header="x-tt-logid",
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
def authorize_params(provider: Provider, request: AuthorizationRequest) -> Mapping[str, str]:
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
    fields = ",".join(profile_fields(tokens.scopes or ()))
    response = await http.get(
        url, params={"fields": fields}, bearer=tokens.access_token, provider_id=SPEC.id
    )
    body = response.json_object(ProfileError, SPEC.id)
    envelope = body.get("error")
    # The v2 envelope {"code", "message", "log_id"}, or a flat OAuth error body; either one
    # is an error whatever the HTTP status (TikTok may answer errors with HTTP 200).
    error: dict[str, object] = envelope if isinstance(envelope, dict) else {}
    if isinstance(envelope, str) and envelope:
        error = {
            "code": envelope,
            "message": body.get("error_description"),
            "log_id": body.get("log_id"),
        }
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


def demo_dashboard(**parts: Any) -> TikTokDashboard:
    """The TikTok section of ``keyloom demo`` (see :mod:`keyloom_tiktok.demo`).

    ``keyloom demo`` calls it with ``keyloom``, ``tokens``, ``provider_id`` and ``emulator``.
    """
    from .demo import TikTokDashboard  # noqa: PLC0415 - only the demo needs it

    return TikTokDashboard(**parts)
