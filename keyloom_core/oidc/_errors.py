"""The errors of OpenID Connect (all under the core's tree, so existing handlers catch them)."""

from __future__ import annotations

from ..errors import AuthorizationError, InvalidCallbackError, ProviderError, TokenExchangeError

__all__ = ["DiscoveryError", "IdTokenError", "IssuerMismatchError", "LoginParameterError"]


class DiscoveryError(ProviderError):
    """The provider's discovery document or key set is missing or invalid."""

    code = "discovery_failed"


class IdTokenError(TokenExchangeError):
    """An ID token failed validation (signature, issuer, audience, nonce, lifetime…).

    The message names the failed check, never the token or its claims' values.
    """

    code = "invalid_id_token"


class IssuerMismatchError(InvalidCallbackError):
    """The callback's ``iss`` is not the provider's issuer (RFC 9207 mix-up defence)."""

    code = "issuer_mismatch"


class LoginParameterError(AuthorizationError):
    """A per-login parameter (``prompt``, ``login_hint``…) is not allowed, or is invalid."""

    code = "invalid_login_parameter"
