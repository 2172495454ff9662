"""Sign in with any OpenID Connect provider, configured from its discovery document.

``oidc(issuer=..., client_id=..., client_secret=...)`` is all a provider needs: the
endpoints, the key set and the provider's capabilities come from
``{issuer}/.well-known/openid-configuration``, fetched on first use inside
``async with keyloom:`` (configuration does no I/O). Everything else is the core's
built-in behaviour: ID-token validation, ``nonce``, RFC 9207 ``iss``, UserInfo, client
authentication (``client_secret_basic`` by default, as RFC 6749 §2.3.1 requires every
server to support) and revocation of both tokens. A provider plugin on top of it is a spec
and a factory (see the Google example in the guide).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs

from keyloom_core import ConfigurationError, Provider, ProviderSpec, configure_provider, hookimpl
from keyloom_core.models import TokenAuthMethod
from keyloom_core.oidc import STANDARD_LOGIN_PARAMS, require_jose

__all__ = ["SPEC", "STANDARD_LOGIN_PARAMS", "oidc", "oidc_spec"]

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})

#: The generic provider ``oidc``; its issuer comes from ``OIDC_ISSUER`` or ``issuer=``.
SPEC = ProviderSpec(
    id="oidc",
    name="OpenID Connect",
    authorize_url="",  # all endpoints from discovery
    token_url="",
    default_scopes="openid profile email",
    token_auth_method="client_secret_basic",
    revoke_refresh_token=True,
    login_params=STANDARD_LOGIN_PARAMS,
    plugin="keyloom_oidc",
)


def _check_issuer(issuer: str, provider_id: str) -> str:
    parts = urlsplit(issuer)
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    if not secure or not parts.hostname or parts.query or parts.fragment:
        msg = f"issuer must be an https URL without query or fragment, not {issuer!r}"
        raise ConfigurationError(msg, provider_id=provider_id)
    return issuer


def oidc_spec(
    *,
    id: str = "oidc",  # noqa: A002  (the ProviderSpec field's name)
    name: str = "OpenID Connect",
    issuer: str | None = None,
    token_auth_method: TokenAuthMethod = "client_secret_basic",  # noqa: S107
    login_params: Iterable[str] = STANDARD_LOGIN_PARAMS,
    plugin: str | None = "keyloom_oidc",
    **fields: Any,
) -> ProviderSpec:
    """A :class:`ProviderSpec` for an OpenID provider known by its *issuer*.

    Endpoints left out are read from discovery on first use; *fields* are any other
    :class:`ProviderSpec` fields (``default_scopes``, ``id_token_algorithms``…).
    """
    return attrs.evolve(
        SPEC,
        id=id,
        name=name,
        issuer=issuer,
        token_auth_method=token_auth_method,
        login_params=frozenset(login_params),
        plugin=plugin,
        env_prefix=fields.pop("env_prefix", id.upper().replace("-", "_")),
        **fields,
    )


def oidc(
    *, issuer: str | None = None, spec: ProviderSpec | None = None, **options: Any
) -> Provider:
    """Configure an OpenID provider; no I/O happens until ``async with keyloom:``.

    :param issuer: the provider's issuer (default: ``spec.issuer``, then
        ``{env_prefix}_ISSUER``, ``OIDC_ISSUER`` for the generic spec).
    :param spec: a provider's spec from :func:`oidc_spec` (default: the generic ``oidc``).
    :param options: :func:`keyloom_core.configure_provider`'s (``client_id``,
        ``client_secret``, ``scopes``, ``redirect_uri``…).
    :raises ConfigurationError: no issuer, a non-https one, missing credentials, or the
        ``oidc`` extra of keyloom-core is not installed.
    """
    spec = spec or SPEC
    issuer = issuer or spec.issuer or os.environ.get(f"{spec.env_prefix}_ISSUER", "").strip()
    if not issuer:
        msg = f"{spec.name}: no issuer; pass issuer=... or set {spec.env_prefix}_ISSUER"
        raise ConfigurationError(msg, provider_id=spec.id)
    require_jose(spec.id)
    spec = attrs.evolve(spec, issuer=_check_issuer(issuer, spec.id))
    return configure_provider(spec, **options)


@hookimpl
def register_providers(register: Callable[..., None]) -> None:
    """Offer ``oidc``."""
    register(SPEC, oidc)
