"""``define_keyloom``: an app's one call to configure Keyloom (no I/O happens here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._plugins import PluginRegistry
from ._provider_config import configure_provider, env
from ._settings import SECRET_ENV, URL_ENVS, Settings, check_base_url, check_secret
from .errors import ConfigurationError
from .models import Provider

if TYPE_CHECKING:
    import aiohttp

    from ._keyloom import Keyloom
    from ._state import StateGuard
    from .http import RetryPolicy

__all__ = ["configure_provider", "define_keyloom"]


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

    Everything the instance needs is given here: plugins cannot be added afterwards.

    :param providers: configured providers (``tiktok(...)``) or ids (``"tiktok"``) resolved
        through the installed plugins, which read their credentials from the environment.
    :param secret: signs login state and sessions; default ``KEYLOOM_SECRET``.
    :param base_url: the app's public URL; default ``KEYLOOM_URL`` or ``APP_URL``.
        Redirect URIs are ``{base_url}{base_path}/oauth/{provider}/callback``.
    :param old_secrets: previous secrets, still accepted when verifying (rotation).
    :param plugins: plugin modules or objects to register besides the entry points (a
        :class:`~keyloom_core.tokens.TokenManager`'s ``plugin``, for example).
    :param autoload: load the ``keyloom`` entry points (default: unless
        ``KEYLOOM_DISABLE_PLUGIN_AUTOLOAD=1``).
    :param state_ttl: seconds a started login stays valid.
    :param session_ttl: seconds a session cookie stays valid.
    :param timeout: seconds for one provider call (the plugin's answer and any fallback to
        the built-in one together), retries included.
    :param retry: retry policy for provider calls.
    :param session: an ``aiohttp.ClientSession`` to borrow instead of opening one; create
        it with ``cookie_jar=aiohttp.DummyCookieJar()`` (provider calls are stateless, and
        a cookie kept from one user's login must not travel with the next user's calls).
    :param state_guard: where used login states are remembered (single use); in memory
        by default, shared storage when the app runs as several processes.
    :raises ConfigurationError: anything wrong, named.
    :raises PluginError: a plugin failed to load or broke the contract.
    """
    # The runtime pulls in anyio (about 15 ms of a cold start measured with
    # `python -X importtime`); plugin discovery and the command line do without it.
    from ._keyloom import Keyloom  # noqa: PLC0415

    registry = PluginRegistry(plugins, autoload=autoload)
    by_id: dict[str, Provider] = {}
    for provider in map(registry.resolve, providers):
        if provider.id in by_id:
            msg = f"provider '{provider.id}' is configured twice"
            raise ConfigurationError(msg, provider_id=provider.id)
        registry.pm.hook.validate_scopes(provider=provider)
        by_id[provider.id] = provider
    if not by_id:
        msg = "configure at least one provider"
        raise ConfigurationError(msg)
    url = base_url or next((v for v in map(env, URL_ENVS) if v), None)
    if not url:
        msg = "no base_url: pass base_url=... or set KEYLOOM_URL"
        raise ConfigurationError(msg)
    if not base_path.startswith("/") or base_path.endswith("/"):
        msg = "base_path must start with '/' and not end with one"
        raise ConfigurationError(msg)
    settings = Settings(
        providers=by_id,
        secrets=(check_secret(secret or env(SECRET_ENV)), *map(check_secret, old_secrets)),
        base_url=check_base_url(url),
        base_path=base_path,
        state_ttl=state_ttl,
        session_ttl=session_ttl,
        timeout=timeout,
        retry=retry,
        session=session,
        state_guard=state_guard,
    )
    return Keyloom(settings, registry)
