"""The built-in RFC 6749 / 7636 / 7009 provider behaviour, and helpers for plugins.

Its hooks are the fallback every provider call reaches when the provider's own plugin
returns ``None`` or does not implement the hook. A plugin for a provider that deviates
from the standard reuses these helpers and overrides only the deviation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    ProfileError,
    ProviderError,
    ReauthenticationRequiredError,
    RevokeError,
    TokenExchangeError,
    TokenRefreshError,
)
from .hookspecs import hookimpl
from .models import AuthorizationRequest, Profile, Provider, TokenSet

if TYPE_CHECKING:
    from .http import HttpClient, HttpResponse

__all__ = [
    "client_credentials",
    "default_authorize_params",
    "parse_token_response",
    "raise_for_error",
]

_JSON = {"Accept": "application/json"}


def default_authorize_params(provider: Provider, request: AuthorizationRequest) -> dict[str, str]:
    """RFC 6749 §4.1.1 + RFC 7636 authorization parameters, in the provider's dialect."""
    spec = provider.spec
    return {
        spec.client_id_param: provider.client_id,
        "response_type": "code",
        "redirect_uri": request.redirect_uri,
        "scope": spec.scope_separator.join(request.scopes),
        "state": request.state,
        "code_challenge": request.code_challenge,
        "code_challenge_method": request.code_challenge_method,
    }


def client_credentials(provider: Provider) -> dict[str, str]:
    """The client authentication fields of a form body (``client_secret_post``)."""
    return {
        provider.spec.client_id_param: provider.client_id,
        "client_secret": provider.client_secret,
    }


def _text(value: object, limit: int = 300) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def raise_for_error(
    response: HttpResponse,
    data: Mapping[str, Any],
    provider: Provider,
    error: type[ProviderError],
) -> None:
    """Raise *error* if *data* (a parsed body) is an RFC 6749 §5.2 error or the status failed.

    ``invalid_grant`` on a refresh raises :class:`ReauthenticationRequiredError`. The
    provider's ``error``, ``error_description`` and ``log_id`` are kept on the exception.
    """
    code = data.get("error")
    if response.ok and not code:
        return
    cls = error
    if code == "invalid_grant" and issubclass(error, TokenRefreshError):
        cls = ReauthenticationRequiredError
    description = _text(data.get("error_description")) or _text(data.get("message"))
    raise cls(
        f"{provider.spec.name} refused the request (HTTP {response.status})",
        provider_id=provider.id,
        error=_text(code, 64) or f"http_{response.status}",
        description=description,
        log_id=_text(data.get("log_id"), 128) or _log_id(response, provider),
        http_status=response.status,
    )


def _log_id(response: HttpResponse, provider: Provider) -> str | None:
    header = provider.spec.log_id_header
    return _text(response.headers.get(header), 128) if header else None


def parse_token_response(
    response: HttpResponse,
    provider: Provider,
    error: type[ProviderError],
    previous: TokenSet | None = None,
) -> TokenSet:
    """Read a token endpoint answer into a :class:`TokenSet`, or raise *error*."""
    data = response.json_object(error, provider.id)
    raise_for_error(response, data, provider, error)
    try:
        return TokenSet.from_response(
            data,
            previous=previous,
            account_id_field=provider.spec.account_id_field,
            refresh_expires_field=provider.spec.refresh_expires_field,
        )
    except (TypeError, ValueError, ArithmeticError) as exc:
        msg = f"{provider.spec.name} sent an invalid token answer: {exc}"
        raise error(msg, provider_id=provider.id, http_status=response.status) from exc


@hookimpl(trylast=True)
async def authorize_params(
    provider: Provider, request: AuthorizationRequest
) -> Mapping[str, str] | None:
    """RFC 6749 authorization parameters."""
    return default_authorize_params(provider, request)


@hookimpl(trylast=True)
async def exchange_code(
    provider: Provider, code: str, redirect_uri: str, code_verifier: str, http: HttpClient
) -> TokenSet | None:
    """RFC 6749 §4.1.3 code exchange with the PKCE verifier."""
    form = {
        **client_credentials(provider),
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    response = await http.post_form(
        provider.spec.token_url, form, headers=_JSON, provider_id=provider.id
    )
    return parse_token_response(response, provider, TokenExchangeError)


@hookimpl(trylast=True)
async def refresh_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> TokenSet | None:
    """RFC 6749 §6 refresh."""
    if not tokens.refresh_token:
        msg = "no refresh token: the user must sign in again"
        raise ReauthenticationRequiredError(msg, provider_id=provider.id)
    form = {
        **client_credentials(provider),
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token,
    }
    response = await http.post_form(
        provider.spec.token_url, form, headers=_JSON, provider_id=provider.id
    )
    return parse_token_response(response, provider, TokenRefreshError, previous=tokens)


@hookimpl(trylast=True)
async def revoke_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> bool | None:
    """RFC 7009 revocation of the access token, if the provider has an endpoint."""
    if not provider.spec.revoke_url:
        return False
    form = {**client_credentials(provider), "token": tokens.access_token}
    response = await http.post_form(
        provider.spec.revoke_url, form, idempotent=True, provider_id=provider.id
    )
    if response.ok:
        # An RFC 6749 error body wins over a 2xx status (some providers answer errors with 200);
        # any other 2xx answer confirms the revocation, whatever its body (RFC 7009 §2.2).
        try:
            data = response.json(RevokeError, provider.id)
        except RevokeError:
            return True
        if not isinstance(data, dict) or not data.get("error"):
            return True
    else:
        data = response.json_object(RevokeError, provider.id)
    raise_for_error(response, data, provider, RevokeError)
    return True  # not reached: raise_for_error raised on the error body or status


@hookimpl(trylast=True)
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile | None:
    """Read an OpenID-Connect-like user-info document (``sub``/``id``, ``name``, ``picture``).

    A provider with other field names reads ``profile.raw`` in its own ``fetch_profile``.
    """
    if not provider.spec.profile_url:
        msg = f"{provider.spec.name} has no profile endpoint configured"
        raise ProfileError(msg, provider_id=provider.id)
    response = await http.get(
        provider.spec.profile_url,
        bearer=tokens.access_token,
        headers=_JSON,
        provider_id=provider.id,
    )
    data = response.json_object(ProfileError, provider.id)
    raise_for_error(response, data, provider, ProfileError)
    subject = data.get("sub", data.get("id"))
    if not isinstance(subject, (str, int)) or isinstance(subject, bool) or subject == "":
        msg = f"{provider.spec.name} profile has no user id"
        raise ProfileError(msg, provider_id=provider.id)
    verified = data.get("email_verified") is True
    return Profile(
        provider_id=provider.id,
        id=str(subject),
        name=_text(data.get("name")),
        email=_text(data.get("email")) if verified else None,
        email_verified=verified,
        image=_text(data.get("picture"), 2048),
        raw=data,
    )
