"""The built-in RFC 6749 / 7636 / 7009 provider behaviour, and helpers for plugins.

Its hooks are the fallback every provider call reaches when the provider's own plugin
returns ``None`` or does not implement the hook. A plugin for a provider that deviates
from the standard reuses these helpers and overrides only the deviation.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from ._responses import clip, raise_for_error
from .errors import (
    ConfigurationError,
    ProfileError,
    ProviderError,
    ReauthenticationRequiredError,
    RevokeError,
    TokenExchangeError,
    TokenRefreshError,
)
from .hookspecs import hookimpl
from .models import AuthorizationRequest, Profile, Provider, TokenAuthMethod, TokenSet
from .oidc import _flow as oidc

if TYPE_CHECKING:
    from .http import HttpClient, HttpResponse

__all__ = [
    "check_implied_scopes",
    "client_authentication",
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
        **({"nonce": request.nonce} if request.nonce else {}),
        **request.extra,
    }


def client_credentials(provider: Provider) -> dict[str, str]:
    """The client authentication fields of a form body (``client_secret_post``)."""
    return {
        provider.spec.client_id_param: provider.client_id,
        "client_secret": provider.client_secret,
    }


def client_authentication(
    provider: Provider, method: TokenAuthMethod | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers that authenticate the client, per ``token_auth_method``.

    ``client_secret_basic``: an ``Authorization: Basic`` header of the client id and secret,
    each form-urlencoded first (RFC 6749 §2.3.1, Appendix B), and nothing in the form.
    ``client_secret_post``: :func:`client_credentials` in the form. ``none``: the client id
    alone in the form (a public client, RFC 6749 §2.1).

    :param method: authenticate by this method instead of the spec's ``token_auth_method``.
    """
    method = method or provider.spec.token_auth_method
    if method == "client_secret_basic":
        user = quote_plus(provider.client_id, safe="")
        password = quote_plus(provider.client_secret, safe="")
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return {}, {"Authorization": f"Basic {basic}"}
    if method == "none":
        return {provider.spec.client_id_param: provider.client_id}, {}
    return client_credentials(provider), {}


def check_implied_scopes(provider: Provider) -> None:
    """Refuse a requested scope that another requested scope includes (``spec.implied_scopes``).

    A provider that keeps only the wider scope in the token would fail every login's scope
    check; the core's scope policy runs this when the app is configured.

    :raises ConfigurationError: naming the wider scope and those it includes.
    """
    spec = provider.spec
    for wide in sorted(provider.scopes & spec.implied_scopes.keys()):
        if narrow := sorted(provider.scopes & spec.implied_scopes[wide]):
            msg = f"{spec.name} scope '{wide}' includes {', '.join(narrow)}: request '{wide}' alone"
            raise ConfigurationError(msg, provider_id=spec.id)


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
def authorize_params(provider: Provider, request: AuthorizationRequest) -> Mapping[str, str] | None:
    """RFC 6749 authorization parameters (a plain function: nothing to wait for)."""
    return default_authorize_params(provider, request)


@hookimpl(trylast=True)
async def exchange_code(
    provider: Provider, code: str, redirect_uri: str, code_verifier: str, http: HttpClient
) -> TokenSet | None:
    """RFC 6749 §4.1.3 code exchange with the PKCE verifier; the ID token validated."""
    fields, headers = client_authentication(provider)
    form = {
        **fields,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    if provider.spec.issuer is None:  # the spec's endpoint: nothing to discover or await
        url = provider.spec.token_url
    else:
        url = (await oidc.endpoints(provider, http)).token_url
    response = await http.post_form(
        url, form, headers={**_JSON, **headers}, provider_id=provider.id
    )
    tokens = parse_token_response(response, provider, TokenExchangeError)
    if oidc.is_openid(provider):
        await oidc.validate_tokens(provider, tokens, http, nonce=oidc.nonce_for(code_verifier))
    return tokens


@hookimpl(trylast=True)
async def refresh_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> TokenSet | None:
    """RFC 6749 §6 refresh."""
    if not tokens.refresh_token:
        msg = "no refresh token: the user must sign in again"
        raise ReauthenticationRequiredError(msg, provider_id=provider.id)
    fields, headers = client_authentication(provider)
    form = {**fields, "grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
    url = (await oidc.endpoints(provider, http)).token_url
    response = await http.post_form(
        url, form, headers={**_JSON, **headers}, provider_id=provider.id
    )
    fresh = parse_token_response(response, provider, TokenRefreshError, previous=tokens)
    if oidc.is_openid(provider):
        await oidc.validate_tokens(provider, fresh, http, nonce=None, previous=tokens)
    return fresh


@hookimpl(trylast=True)
async def revoke_token(provider: Provider, tokens: TokenSet, http: HttpClient) -> bool | None:
    """RFC 7009 revocation, if the provider has an endpoint.

    The access token; first the refresh token too, when ``spec.revoke_refresh_token``
    says the provider revokes them (each with its ``token_type_hint``). The request
    follows the spec's ``revoke_method``, ``revoke_encoding``, ``revoke_token_param``,
    ``revoke_auth_method`` and ``api_headers``; ``{client_id}`` in the URL is the client id.
    """
    url = (await oidc.endpoints(provider, http)).revoke_url
    if not url:
        return False
    url = url.replace("{client_id}", quote(provider.client_id, safe=""))
    if provider.spec.revoke_refresh_token and tokens.refresh_token:
        await _revoke(provider, http, url, tokens.refresh_token, "refresh_token")
        await _revoke(provider, http, url, tokens.access_token, "access_token")
    else:
        await _revoke(provider, http, url, tokens.access_token, None)
    return True


async def _revoke(
    provider: Provider, http: HttpClient, url: str, token: str, hint: str | None
) -> None:
    spec = provider.spec
    fields, auth = client_authentication(provider, spec.revoke_auth_method)
    body = {**fields, spec.revoke_token_param: token}
    if hint:
        body["token_type_hint"] = hint
    json = spec.revoke_encoding == "json"
    response = await http.request(
        spec.revoke_method,
        url,
        data=None if json else body,
        json_body=body if json else None,
        headers={**spec.api_headers, **auth} or None,
        idempotent=True,
        provider_id=provider.id,
    )
    if response.ok:
        # An RFC 6749 error body wins over a 2xx status (some providers answer errors with 200);
        # any other 2xx answer confirms the revocation, whatever its body (RFC 7009 §2.2).
        try:
            data = response.json(RevokeError, provider.id)
        except RevokeError:
            return
        if not isinstance(data, dict) or not data.get("error"):
            return
    else:
        data = response.json_object(RevokeError, provider.id)
    raise_for_error(response, data, provider, RevokeError)


@hookimpl(trylast=True)
async def fetch_profile(provider: Provider, tokens: TokenSet, http: HttpClient) -> Profile | None:
    """Read an OpenID-Connect-like user-info document (``sub``/``id``, ``name``, ``picture``).

    Where one is missing, the field the spec's ``profile_fields`` names is read instead.

    A provider with other field names reads ``profile.raw`` in its own ``fetch_profile``.
    For an OpenID login: the ID token's claims, completed by UserInfo (same ``sub``).
    """
    if oidc.is_openid(provider) and tokens.id_token:
        return await oidc.fetch_profile(provider, tokens, http)
    url = (await oidc.endpoints(provider, http)).profile_url
    if not url:
        msg = f"{provider.spec.name} has no profile endpoint configured"
        raise ProfileError(msg, provider_id=provider.id)
    response = await http.get(
        url,
        bearer=tokens.access_token,
        headers={**_JSON, **provider.spec.api_headers} if provider.spec.api_headers else _JSON,
        provider_id=provider.id,
    )
    data = response.json_object(ProfileError, provider.id)
    raise_for_error(response, data, provider, ProfileError)
    aliases = dict(provider.spec.profile_fields)

    def field(name: str, standard: object) -> object:
        return standard if standard not in (None, "") else data.get(aliases.get(name, ""))

    subject = field("id", data.get("sub", data.get("id")))
    if not isinstance(subject, (str, int)) or isinstance(subject, bool) or subject == "":
        msg = f"{provider.spec.name} profile has no user id"
        raise ProfileError(msg, provider_id=provider.id)
    verified = data.get("email_verified") is True
    return Profile(
        provider_id=provider.id,
        id=str(subject),
        name=clip(field("name", data.get("name"))),
        email=clip(data.get("email")) if verified else None,
        email_verified=verified,
        image=clip(field("image", data.get("picture")), 2048),
        raw=data,
    )
