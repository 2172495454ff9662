"""OpenID Connect for the built-in provider behaviour: discovery, JWKS, ID-token validation.

Switched on for a provider whose :class:`~keyloom_core.ProviderSpec` names an ``issuer``
when the app requests the ``openid`` scope. JOSE comes from PyJWT, through the optional
extra ``keyloom-core[oidc]``; importing this module does not need it.
"""

from __future__ import annotations

from ._discovery import DISCOVERY_PATH, ProviderMetadata, discovery_url, fetch_jwks, fetch_metadata
from ._errors import DiscoveryError, IdTokenError, IssuerMismatchError, LoginParameterError
from ._flow import (
    STANDARD_LOGIN_PARAMS,
    Endpoints,
    check_callback_issuer,
    check_login_params,
    check_max_age,
    endpoints,
    fetch_profile,
    id_token_claims,
    is_openid,
    nonce_for,
    profile_from_claims,
    require_jose,
    validate_tokens,
)
from ._idtoken import DEFAULT_LEEWAY, IdTokenRules, UnknownKeyError, at_hash, validate_id_token

__all__ = [
    "DEFAULT_LEEWAY",
    "DISCOVERY_PATH",
    "STANDARD_LOGIN_PARAMS",
    "DiscoveryError",
    "Endpoints",
    "IdTokenError",
    "IdTokenRules",
    "IssuerMismatchError",
    "LoginParameterError",
    "ProviderMetadata",
    "UnknownKeyError",
    "at_hash",
    "check_callback_issuer",
    "check_login_params",
    "check_max_age",
    "discovery_url",
    "endpoints",
    "fetch_jwks",
    "fetch_metadata",
    "fetch_profile",
    "id_token_claims",
    "is_openid",
    "nonce_for",
    "profile_from_claims",
    "require_jose",
    "validate_id_token",
    "validate_tokens",
]
