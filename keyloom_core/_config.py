"""Configuration: ``configure_provider`` for plugin factories, ``define_keyloom`` for apps."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._signing import MIN_SECRET_LENGTH
from .errors import ConfigurationError
from .models import ProfileOverrides, Provider, ProviderSpec, parse_scopes

if TYPE_CHECKING:
    import aiohttp

    from ._keyloom import Keyloom, StateGuard
    from .http import RetryPolicy

__all__ = ["configure_provider", "define_keyloom"]

SECRET_ENV = "KEYLOOM_SECRET"
URL_ENVS = ("KEYLOOM_URL", "APP_URL")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def configure_provider(
    spec: ProviderSpec,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    scopes: Iterable[str] | str | None = None,
    required_scopes: Iterable[str] | str | None = None,
    approved_scopes: Iterable[str] | str | None = None,
    profile_overrides: ProfileOverrides | None = None,
    redirect_uri: str | None = None,
    endpoint_origin: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Provider:
    """Build a configured :class:`Provider` from *spec*; what plugin factories call.

    Missing credentials are read from ``{spec.env_prefix}_CLIENT_ID`` and
    ``{spec.env_prefix}_CLIENT_SECRET``. *scopes* default to ``spec.default_scopes``;
    *required_scopes* default to the requested scopes that are among the defaults (the
    rest may be declined by the user without failing the login).

    :param endpoint_origin: serve every endpoint from this origin instead (an emulator).
    :raises ConfigurationError: a credential is missing.
    """
    client_id = client_id or _env(f"{spec.env_prefix}_CLIENT_ID")
    client_secret = client_secret or _env(f"{spec.env_prefix}_CLIENT_SECRET")
    for value, what in ((client_id, "CLIENT_ID"), (client_secret, "CLIENT_SECRET")):
        if not value and not (what == "CLIENT_SECRET" and spec.token_auth_method == "none"):
            msg = (
                f"{spec.name}: no {what.lower().replace('_', ' ')}; pass it or set "
                f"{spec.env_prefix}_{what}"
            )
            raise ConfigurationError(msg, provider_id=spec.id)
    if endpoint_origin:
        spec = spec.with_endpoint_origin(endpoint_origin)
    requested = parse_scopes(scopes) if scopes is not None else spec.default_scopes
    required = (
        parse_scopes(required_scopes)
        if required_scopes is not None
        else requested & spec.default_scopes
    )
    return Provider(
        spec=spec,
        client_id=client_id or "",
        client_secret=client_secret or "",
        scopes=requested,
        required_scopes=required,
        approved_scopes=approved_scopes,
        profile_overrides=profile_overrides,
        redirect_uri=redirect_uri,
        options=dict(options or {}),
    )


def check_base_url(base_url: str) -> str:
    """Validate the app's public URL; return it without a trailing slash."""
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        msg = f"base_url must be an absolute http(s) URL, not {base_url!r}"
        raise ConfigurationError(msg)
    if parts.query or parts.fragment:
        msg = "base_url must not have a query or fragment"
        raise ConfigurationError(msg)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        msg = "base_url must use https outside localhost"
        raise ConfigurationError(msg, hint="OAuth providers require https redirect URIs.")
    return base_url.rstrip("/")


def check_secret(secret: str | None) -> str:
    """Validate the signing secret."""
    if not secret:
        msg = f"no secret: pass secret=... or set {SECRET_ENV}"
        raise ConfigurationError(
            msg, hint='Generate one: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    if len(secret) < MIN_SECRET_LENGTH:
        msg = f"the secret must be at least {MIN_SECRET_LENGTH} characters"
        raise ConfigurationError(
            msg, hint='Generate one: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return secret


def define_keyloom(
    *,
    providers: Sequence[Provider | str],
    secret: str | None = None,
    base_url: str | None = None,
    old_secrets: Sequence[str] = (),
    plugins: Sequence[object] = (),
    autoload: bool | None = None,
    base_path: str = "/api/auth",
    state_ttl: float = 600.0,
    session_ttl: float = 30 * 24 * 3600.0,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    session: aiohttp.ClientSession | None = None,
    state_guard: StateGuard | None = None,
) -> Keyloom:
    """Configure Keyloom; no I/O happens until ``async with`` opens the HTTP session.

    :param providers: configured providers (``tiktok(...)``) or ids (``"tiktok"``) resolved
        through the installed plugins, which read their credentials from the environment.
    :param secret: signs login state and sessions; default ``KEYLOOM_SECRET``.
    :param base_url: the app's public URL; default ``KEYLOOM_URL`` or ``APP_URL``.
        Redirect URIs are ``{base_url}{base_path}/oauth/{provider}/callback``.
    :param old_secrets: previous secrets, still accepted when verifying (rotation).
    :param plugins: plugin modules or objects to register besides the entry points.
    :param autoload: load the ``keyloom`` entry points (default: unless
        ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD=1``).
    :param state_ttl: seconds a started login stays valid.
    :param session_ttl: seconds a session cookie stays valid.
    :param timeout: seconds for one provider call (the plugin's answer and any fallback to
        the built-in one together), retries included.
    :param retry: retry policy for provider calls.
    :param session: an ``aiohttp.ClientSession`` to borrow instead of opening one.
    :param state_guard: where used login states are remembered (single use); in memory
        by default, shared storage when the app runs as several processes.
    :raises ConfigurationError: anything wrong, named.
    :raises PluginError: a plugin failed to load or broke the contract.
    """
    from ._keyloom import Keyloom  # noqa: PLC0415
    from ._plugins import PluginRegistry  # noqa: PLC0415

    registry = PluginRegistry(plugins, autoload=autoload)
    resolved = [registry.resolve(p) for p in providers]
    by_id: dict[str, Provider] = {}
    for provider in resolved:
        if provider.id in by_id:
            msg = f"provider '{provider.id}' is configured twice"
            raise ConfigurationError(msg, provider_id=provider.id)
        registry.pm.hook.validate_scopes(provider=provider)
        by_id[provider.id] = provider
    if not by_id:
        msg = "configure at least one provider"
        raise ConfigurationError(msg)
    url = base_url or next((v for v in map(_env, URL_ENVS) if v), None)
    if not url:
        msg = "no base_url: pass base_url=... or set KEYLOOM_URL"
        raise ConfigurationError(msg)
    if not base_path.startswith("/") or base_path.endswith("/"):
        msg = "base_path must start with '/' and not end with one"
        raise ConfigurationError(msg)
    return Keyloom(
        providers=by_id,
        secrets=(check_secret(secret or _env(SECRET_ENV)), *map(check_secret, old_secrets)),
        base_url=check_base_url(url),
        base_path=base_path,
        state_ttl=state_ttl,
        session_ttl=session_ttl,
        timeout=timeout,
        registry=registry,
        retry=retry,
        session=session,
        state_guard=state_guard,
    )
