"""OpenID Provider metadata (Discovery 1.0) and JWK sets, fetched on first use and cached.

The caches live with the HTTP client of one open Keyloom instance (weakly keyed), so they
start empty in every ``async with keyloom:`` and never outlive it. Concurrent first uses
fetch once.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import attrs

from ._errors import DiscoveryError

if TYPE_CHECKING:
    from ..http import HttpClient

__all__ = ["DISCOVERY_PATH", "ProviderMetadata", "discovery_url", "fetch_jwks", "fetch_metadata"]

DISCOVERY_PATH = "/.well-known/openid-configuration"
#: Seconds a discovery document is reused before it is fetched again.
METADATA_TTL = 3600.0
#: Seconds a JWK set is reused; an unknown ``kid`` refetches it sooner (once per token).
JWKS_TTL = 24 * 3600.0
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_JSON = {"Accept": "application/json"}


def discovery_url(issuer: str) -> str:
    """``{issuer}/.well-known/openid-configuration`` (Discovery §4)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def _url(data: Mapping[str, Any], name: str, provider_id: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if (
        parts is None
        or not parts.hostname
        or parts.fragment
        or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
        )
    ):
        msg = f"the discovery document's '{name}' is missing or not an https URL"
        raise DiscoveryError(msg, provider_id=provider_id)
    return str(value)


def _strings(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name)
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


@attrs.frozen
class ProviderMetadata:
    """The parts of an OpenID Provider's discovery document Keyloom uses.

    Attributes:
        issuer: The issuer, equal to the configured one.
        authorization_endpoint: Where the user is sent to sign in.
        token_endpoint: Where codes and refresh tokens are exchanged.
        jwks_uri: The provider's public signing keys.
        userinfo_endpoint: The UserInfo endpoint, if any.
        revocation_endpoint: The RFC 7009 endpoint, if any.
        iss_parameter_supported: RFC 9207: the callback carries ``iss``.
        token_endpoint_auth_methods: The client authentication methods it accepts.
        id_token_algorithms: The algorithms it signs ID tokens with.
    """

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    revocation_endpoint: str | None = None
    iss_parameter_supported: bool = False
    token_endpoint_auth_methods: tuple[str, ...] = ()
    id_token_algorithms: tuple[str, ...] = ()

    @classmethod
    def from_document(
        cls, data: Mapping[str, Any], issuer: str, provider_id: str
    ) -> ProviderMetadata:
        """Read a discovery document; its ``issuer`` must equal *issuer* exactly (§4.3).

        :raises DiscoveryError: the issuer differs, or an endpoint is missing or not https.
        """
        if data.get("issuer") != issuer:
            msg = "the discovery document names another issuer"
            raise DiscoveryError(msg, provider_id=provider_id)
        return cls(
            issuer=issuer,
            authorization_endpoint=_url(
                data, "authorization_endpoint", provider_id, required=True
            )
            or "",
            token_endpoint=_url(data, "token_endpoint", provider_id, required=True) or "",
            jwks_uri=_url(data, "jwks_uri", provider_id, required=True) or "",
            userinfo_endpoint=_url(data, "userinfo_endpoint", provider_id, required=False),
            revocation_endpoint=_url(data, "revocation_endpoint", provider_id, required=False),
            iss_parameter_supported=data.get("authorization_response_iss_parameter_supported")
            is True,
            token_endpoint_auth_methods=_strings(data, "token_endpoint_auth_methods_supported"),
            id_token_algorithms=_strings(data, "id_token_signing_alg_values_supported"),
        )


@attrs.define
class _Cache:
    metadata: dict[str, tuple[ProviderMetadata, float]] = attrs.Factory(dict)
    jwks: dict[str, tuple[tuple[Mapping[str, Any], ...], float]] = attrs.Factory(dict)
    locks: dict[str, anyio.Lock] = attrs.Factory(dict)

    def lock(self, key: str) -> anyio.Lock:
        return self.locks.setdefault(key, anyio.Lock())


_CACHES: weakref.WeakKeyDictionary[HttpClient, _Cache] = weakref.WeakKeyDictionary()


def _cache(http: HttpClient) -> _Cache:
    cache = _CACHES.get(http)
    if cache is None:
        cache = _CACHES[http] = _Cache()
    return cache


async def _get_json(http: HttpClient, url: str, provider_id: str, what: str) -> dict[str, Any]:
    response = await http.get(url, headers=_JSON, provider_id=provider_id)
    if not response.ok:
        msg = f"the provider's {what} answered HTTP {response.status}"
        raise DiscoveryError(msg, provider_id=provider_id, http_status=response.status)
    data: dict[str, Any] = response.json_object(DiscoveryError, provider_id)
    return data


async def fetch_metadata(
    http: HttpClient, issuer: str, provider_id: str, *, now: float | None = None
) -> ProviderMetadata:
    """The issuer's metadata, from the cache or its discovery document.

    :raises DiscoveryError: the document cannot be fetched or is invalid.
    """
    cache = _cache(http)
    current = time.time() if now is None else now

    def fresh() -> ProviderMetadata | None:
        hit = cache.metadata.get(issuer)
        return hit[0] if hit is not None and current - hit[1] < METADATA_TTL else None

    if found := fresh():  # a fresh hit takes no lock (several of them in a login)
        return found
    async with cache.lock("metadata " + issuer):
        if found := fresh():  # fetched meanwhile by a concurrent first use
            return found
        data = await _get_json(http, discovery_url(issuer), provider_id, "discovery document")
        metadata = ProviderMetadata.from_document(data, issuer, provider_id)
        cache.metadata[issuer] = (metadata, current)
        return metadata


async def fetch_jwks(
    http: HttpClient,
    jwks_uri: str,
    provider_id: str,
    *,
    refresh_if_fetched_before: float | None = None,
    now: float | None = None,
) -> tuple[tuple[Mapping[str, Any], ...], float]:
    """The keys of a JWK set and when they were fetched, from the cache or the provider.

    :param refresh_if_fetched_before: refetch when the cached set is older than this time
        (an unknown ``kid``); concurrent callers that saw the same old set refetch once.
    :raises DiscoveryError: the set cannot be fetched or is not a JWK set.
    """
    cache = _cache(http)
    current = time.time() if now is None else now

    def fresh() -> tuple[tuple[Mapping[str, Any], ...], float] | None:
        hit = cache.jwks.get(jwks_uri)
        if hit is None or current - hit[1] >= JWKS_TTL:
            return None
        stale = refresh_if_fetched_before is not None and hit[1] <= refresh_if_fetched_before
        return None if stale else hit

    if found := fresh():  # a fresh hit takes no lock
        return found
    async with cache.lock("jwks " + jwks_uri):
        if found := fresh():  # fetched meanwhile by a concurrent caller
            return found
        data = await _get_json(http, jwks_uri, provider_id, "key set")
        keys = data.get("keys")
        if not isinstance(keys, list):
            msg = "the provider's key set has no 'keys' list"
            raise DiscoveryError(msg, provider_id=provider_id)
        entry = (tuple(k for k in keys if isinstance(k, Mapping)), current)
        cache.jwks[jwks_uri] = entry
        return entry
