"""Reading the provider's answer on the redirect back: errors, the code, reported scopes."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import AccessDeniedError, AuthorizationError, InvalidCallbackError, ProviderError
from .models import Provider, TokenSet, parse_scopes

__all__ = ["callback_code", "check_query", "granted_scopes", "reported_scopes"]

MAX_PARAM = 4096


def callback_code(provider: Provider, query: Mapping[str, str]) -> str:
    """The authorization code of a callback whose state was verified.

    :raises AccessDeniedError: the user cancelled.
    :raises ProviderError: the provider answered with another error.
    :raises InvalidCallbackError: there is no code.
    """
    if "error" in query:
        raise _callback_error(provider, query)
    code = query.get("code")
    if not code:
        msg = "the callback has no authorization code"
        raise InvalidCallbackError(msg, provider_id=provider.id)
    return code


def check_query(provider: Provider, query: Mapping[str, str]) -> None:
    """Refuse a callback query with a value that is not text or is too long."""
    for key, value in query.items():
        if not isinstance(value, str) or len(value) > MAX_PARAM:
            msg = f"callback parameter '{str(key)[:40]}' is invalid or too long"
            raise InvalidCallbackError(msg, provider_id=provider.id)


def reported_scopes(query: Mapping[str, str]) -> frozenset[str] | None:
    """The scopes the callback says were granted (``scopes`` or ``scope``), if it says."""
    reported = query.get("scopes", query.get("scope"))
    return parse_scopes(reported) if reported is not None else None


def granted_scopes(
    provider: Provider, from_callback: frozenset[str] | None, tokens: TokenSet
) -> frozenset[str]:
    """The granted scopes, by the most authoritative report.

    The token answer's scopes win, then the callback's report; a provider that reports
    neither granted what was asked.
    """
    if tokens.scopes is not None:
        return tokens.scopes
    return from_callback if from_callback is not None else provider.scopes


def _callback_error(
    provider: Provider, query: Mapping[str, str]
) -> AuthorizationError | ProviderError:
    error = query.get("error", "")[:64]
    description = (query.get("error_description") or "")[:300] or None
    if error == "access_denied":
        return AccessDeniedError(
            "you cancelled the sign-in",
            error=error,
            description=description,
            provider_id=provider.id,
        )
    return ProviderError(
        f"{provider.spec.name} could not sign you in",
        provider_id=provider.id,
        error=error or "unknown_error",
        description=description,
    )
