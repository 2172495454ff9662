"""OpenID Connect in the login flow: the pieces the core and the built-in hooks call.

A provider speaks OpenID Connect when its spec names an ``issuer`` and the app requests the
``openid`` scope. Nothing here does I/O for any other provider.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._responses import clip, raise_for_error
from .._signing import b64encode
from ..errors import ConfigurationError, ProfileError
from ..models import Profile, Provider, TokenSet
from ._discovery import ProviderMetadata, fetch_jwks, fetch_metadata
from ._errors import IdTokenError, IssuerMismatchError, LoginParameterError
from ._idtoken import DEFAULT_LEEWAY, IdTokenRules, UnknownKeyError, validate_id_token

if TYPE_CHECKING:
    from ..http import HttpClient

__all__ = [
    "STANDARD_LOGIN_PARAMS",
    "Endpoints",
    "check_callback_issuer",
    "check_login_params",
    "check_max_age",
    "endpoints",
    "id_token_claims",
    "is_openid",
    "nonce_for",
    "profile_from_claims",
    "require_jose",
    "validate_tokens",
]

#: The per-login parameters of OpenID Connect Core §3.1.2.1 that Keyloom forwards.
STANDARD_LOGIN_PARAMS = frozenset({"prompt", "login_hint", "max_age"})
_PROMPTS = frozenset({"none", "login", "consent", "select_account"})
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,256}")
_NONCE_LABEL = b"keyloom-oidc-nonce:"
_JSON = {"Accept": "application/json"}


def is_openid(provider: Provider) -> bool:
    """Whether logins with *provider* are OpenID Connect ones (an issuer and ``openid``)."""
    return provider.spec.issuer is not None and "openid" in provider.scopes


def require_jose(provider_id: str | None = None) -> None:
    """Raise :class:`ConfigurationError` unless the ``oidc`` extra (PyJWT) is installed."""
    try:
        import jwt  # noqa: F401, PLC0415
    except ImportError:
        msg = "OpenID Connect needs the 'oidc' extra: pip install 'keyloom-core[oidc]'"
        raise ConfigurationError(msg, provider_id=provider_id) from None


def nonce_for(code_verifier: str) -> str:
    """The ``nonce`` of a login, derived from its (secret, single-use) PKCE verifier.

    ``base64url(SHA-256("keyloom-oidc-nonce:" + verifier))``: unguessable without the
    verifier, bound to the one login, and re-derived at the callback from the signed state,
    so the state carries nothing more.
    """
    digest = hashlib.sha256(_NONCE_LABEL + code_verifier.encode()).digest()
    return b64encode(digest)


def check_login_params(provider: Provider, params: Mapping[str, str] | None) -> dict[str, str]:
    """Check per-login parameters against the provider's allow-list and their syntax.

    :raises LoginParameterError: a parameter is not allowed for this provider, or invalid.
    """
    if not params:
        return {}
    allowed = provider.spec.login_params
    checked: dict[str, str] = {}
    for name, value in params.items():
        shown = str(name)[:40]
        if name not in allowed:
            msg = f"'{shown}' cannot be passed to {provider.spec.name} at sign-in"
            raise LoginParameterError(msg, provider_id=provider.id)
        if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
            msg = f"'{shown}' must be 1 to 256 printable characters"
            raise LoginParameterError(msg, provider_id=provider.id)
        if name == "prompt" and not set(value.split(" ")) <= _PROMPTS:
            msg = "'prompt' must be none, login, consent and/or select_account"
            raise LoginParameterError(msg, provider_id=provider.id)
        if name == "max_age" and not (value.isdigit() and len(value) <= 9):
            msg = "'max_age' must be a number of seconds"
            raise LoginParameterError(msg, provider_id=provider.id)
        checked[name] = value
    return checked


@attrs.frozen
class Endpoints:
    """A provider's endpoints: the spec's, or those of its discovery document.

    Attributes:
        authorize_url: The authorization endpoint.
        token_url: The token endpoint.
        profile_url: The user-info endpoint, if any.
        revoke_url: The revocation endpoint, if any.
        metadata: The discovery document, for providers with an issuer.
    """

    authorize_url: str
    token_url: str
    profile_url: str | None
    revoke_url: str | None
    metadata: ProviderMetadata | None = None


async def endpoints(provider: Provider, http: HttpClient) -> Endpoints:
    """The endpoints to call: the spec's where it names them, else discovered ones.

    No I/O unless the spec has an issuer and leaves an endpoint empty, or the login is an
    OpenID one (which needs the key set's address anyway).
    """
    spec = provider.spec
    complete = spec.authorize_url and spec.token_url
    if spec.issuer is None or (complete and not is_openid(provider)):
        return Endpoints(spec.authorize_url, spec.token_url, spec.profile_url, spec.revoke_url)
    found = await fetch_metadata(http, spec.issuer, provider.id)
    return Endpoints(
        authorize_url=spec.authorize_url or found.authorization_endpoint,
        token_url=spec.token_url or found.token_endpoint,
        profile_url=spec.profile_url or found.userinfo_endpoint,
        revoke_url=spec.revoke_url or found.revocation_endpoint,
        metadata=found,
    )


async def check_callback_issuer(
    provider: Provider, query: Mapping[str, str], http: HttpClient
) -> None:
    """RFC 9207: the callback's ``iss`` must be the provider's issuer.

    Checked for providers with an issuer: a present ``iss`` must match; a missing one is
    refused when the provider advertises the parameter.

    :raises IssuerMismatchError: the callback comes from another issuer (a mix-up).
    """
    issuer = provider.spec.issuer
    if issuer is None:
        return
    echoed = query.get("iss")
    if echoed is None:
        found = await fetch_metadata(http, issuer, provider.id)
        if not found.iss_parameter_supported:
            return
        msg = "the callback has no issuer (iss), which this provider always sends"
        raise IssuerMismatchError(msg, provider_id=provider.id)
    if echoed != issuer:
        msg = "the callback comes from another issuer (iss)"
        raise IssuerMismatchError(msg, provider_id=provider.id)


def id_token_claims(token: str) -> dict[str, Any]:
    """The claims of an ID token *already validated* (no signature check here).

    :raises ValueError: the token is not a JWS with a JSON object payload.
    """
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error) as exc:
        msg = "not a JWS"
        raise ValueError(msg) from exc
    if not isinstance(data, dict):
        msg = "the payload is not a JSON object"
        raise ValueError(msg)  # noqa: TRY004  (one error type for every malformed token)
    return data


async def validate_tokens(
    provider: Provider,
    tokens: TokenSet,
    http: HttpClient,
    *,
    nonce: str | None,
    previous: TokenSet | None = None,
) -> dict[str, Any]:
    """Validate the ID token of a token answer against the provider's keys; its claims.

    The key set is fetched (cached) and, on an unknown ``kid``, fetched again once.

    :param nonce: the login's nonce; ``None`` on a refresh, where the new ID token must keep
        the *previous* one's subject instead.
    :raises IdTokenError: no ID token where one is due, or it failed a check.
    """
    if tokens.id_token is None or (previous is not None and tokens.id_token == previous.id_token):
        if previous is None:
            raise IdTokenError("the token answer has no ID token", provider_id=provider.id)
        return id_token_claims(previous.id_token) if previous.id_token else {}
    found = (await endpoints(provider, http)).metadata
    if found is None:  # pragma: no cover - is_openid guarantees an issuer
        raise IdTokenError("the provider has no issuer", provider_id=provider.id)
    subject = None
    if previous is not None and previous.id_token:
        subject = id_token_claims(previous.id_token).get("sub")
    rules = IdTokenRules(
        issuer=found.issuer,
        client_id=provider.client_id,
        algorithms=provider.spec.id_token_algorithms,
        nonce=nonce,
        access_token=tokens.access_token,
        subject=subject if isinstance(subject, str) else None,
    )
    keys, fetched = await fetch_jwks(http, found.jwks_uri, provider.id)
    try:
        return validate_id_token(tokens.id_token, keys, rules, provider_id=provider.id)
    except UnknownKeyError:
        keys, _ = await fetch_jwks(
            http, found.jwks_uri, provider.id, refresh_if_fetched_before=fetched + 1e-6
        )
    try:
        return validate_id_token(tokens.id_token, keys, rules, provider_id=provider.id)
    except UnknownKeyError:
        msg = "the ID token failed validation: signed with an unknown key (kid)"
        raise IdTokenError(msg, provider_id=provider.id) from None


def check_max_age(
    provider: Provider, tokens: TokenSet, max_age: int, *, now: float | None = None
) -> None:
    """A login asked with ``max_age``: the ID token's ``auth_time`` must be recent enough.

    OpenID Connect Core §3.1.2.1: ``auth_time`` is then required, and the user must have
    authenticated within *max_age* seconds (give or take the allowed clock skew).

    :raises IdTokenError: ``auth_time`` is missing or too old.
    """
    claims = id_token_claims(tokens.id_token) if tokens.id_token else {}
    auth_time = claims.get("auth_time")
    if not isinstance(auth_time, (int, float)) or isinstance(auth_time, bool):
        msg = "the ID token failed validation: no auth_time although max_age was asked"
        raise IdTokenError(msg, provider_id=provider.id)
    current = time.time() if now is None else now
    if auth_time + max_age + DEFAULT_LEEWAY < current:
        msg = "the ID token failed validation: the authentication is older than max_age"
        raise IdTokenError(msg, provider_id=provider.id)


def profile_from_claims(provider: Provider, claims: Mapping[str, Any]) -> Profile:
    """A :class:`Profile` from OpenID claims; ``email`` only when ``email_verified`` is true.

    :raises ProfileError: no ``sub``.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        msg = f"{provider.spec.name} profile has no subject (sub)"
        raise ProfileError(msg, provider_id=provider.id)
    verified = claims.get("email_verified") is True
    given = " ".join(
        part for part in (clip(claims.get("given_name")), clip(claims.get("family_name"))) if part
    )
    return Profile(
        provider_id=provider.id,
        id=subject,
        name=clip(claims.get("name")) or given or clip(claims.get("preferred_username")),
        email=clip(claims.get("email")) if verified else None,
        email_verified=verified,
        image=clip(claims.get("picture"), 2048),
        raw=dict(claims),
    )


async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile:
    """The profile of an OpenID login: the ID token's claims, completed by UserInfo.

    UserInfo's ``sub`` must equal the ID token's (Core §5.3.4); its claims win otherwise.

    :raises ProfileError: UserInfo failed, or names another subject.
    """
    claims = id_token_claims(tokens.id_token) if tokens.id_token else {}
    url = (await endpoints(provider, http)).profile_url
    if url:
        response = await http.get(
            url,
            bearer=tokens.access_token,
            headers={**_JSON, **provider.spec.api_headers},
            provider_id=provider.id,
        )
        info = response.json_object(ProfileError, provider.id)
        raise_for_error(response, info, provider, ProfileError)
        if claims and info.get("sub") != claims.get("sub"):
            msg = f"{provider.spec.name} UserInfo names another user than the ID token (sub)"
            raise ProfileError(msg, provider_id=provider.id, error="sub_mismatch")
        claims = {**claims, **info}
    return profile_from_claims(provider, claims)
