"""``define_keyloom``: an app's one call to configure Keyloom (no I/O happens here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._plugins import PluginRegistry
from ._provider_config import configure_provider, env
from ._settings import (
    SECRET_ENV,
    SERVER_SESSION_TTL,
    STATELESS_SESSION_TTL,
    STORE_ENV,
    URL_ENVS,
    Settings,
    check_base_url,
    check_secret,
)
from .errors import ConfigurationError
from .models import Provider

if TYPE_CHECKING:
    import aiohttp

    from ._keyloom import Keyloom
    from ._state import StateGuard
    from .http import RetryPolicy
    from .store import RateLimits, Store
    from .users._adapter import Adapter

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
    session_ttl: float | None = None,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    session: aiohttp.ClientSession | None = None,
    state_guard: StateGuard | None = None,
    store: Store | str | None = None,
    sessions: Literal["server", "stateless"] | None = None,
    session_idle_ttl: float = 3600.0,
    session_touch_interval: float | None = None,
    rate_limits: RateLimits | bool = True,
    trusted_proxies: Sequence[str] = (),
    adapter: Adapter | None = None,
    link_by_email: bool | Sequence[str] = False,
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
    :param session_ttl: a session's absolute lifetime in seconds: 8 hours for server-side
        sessions, 30 days for stateless ones (which cannot be revoked) by default.
    :param timeout: seconds for one provider call (the plugin's answer and any fallback to
        the built-in one together), retries included.
    :param retry: retry policy for provider calls.
    :param session: an ``aiohttp.ClientSession`` to borrow instead of opening one; create
        it with ``cookie_jar=aiohttp.DummyCookieJar()`` (provider calls are stateless, and
        a cookie kept from one user's login must not travel with the next user's calls).
    :param state_guard: where used login states are remembered (single use); the store
        by default, or process memory when there is no store.
    :param store: what the app's processes share (used states, sessions, rate limits): a
        :class:`~keyloom_core.store.Store` or a URL (``sqlite:///path.db``,
        ``redis://…``, ``memory://``); default ``KEYLOOM_STORE``, else none (one process).
    :param sessions: ``"server"`` (the default with a store: the cookie holds a signed
        session id, the record is in the store; logout and ``revoke_all`` end it on every
        worker) or ``"stateless"`` (the default without one: the whole session is in a
        signed cookie, valid until it expires, whatever happens).
    :param session_idle_ttl: seconds without use that end a server-side session (1 hour).
    :param session_touch_interval: seconds between two writes of a server-side session's
        last use (sliding renewal); default a twelfth of *session_idle_ttl*, at most 5
        minutes.
    :param rate_limits: inbound limits on ``/start`` and ``/callback`` per client address,
        counted in the store: ``True`` for the defaults of
        :class:`~keyloom_core.store.RateLimits` (off without a store), ``False`` for none.
    :param trusted_proxies: addresses or networks of the reverse proxies in front of the
        app; only their ``Forwarded`` / ``X-Forwarded-For`` headers name the client.
    :param adapter: where users and linked accounts live (:mod:`keyloom_core.users`); every
        login then resolves to a user, per the sign-in and linking rules. None by default:
        the session's user is the provider's profile.
    :param link_by_email: let an unknown account join the user with the same e-mail when
        the provider asserts it verified: ``True`` for every provider or a list of provider
        ids; never for TikTok. Off by default.
    :raises ConfigurationError: anything wrong, named.
    :raises PluginError: a plugin failed to load or broke the contract.
    """
    # The runtime pulls in anyio (about 15 ms of a cold start measured with
    # `python -X importtime`); plugin discovery and the command line do without it.
    from ._keyloom import Keyloom  # noqa: PLC0415
    from .store._limits import parse_networks  # noqa: PLC0415

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
    shared = _shared(
        store, sessions, session_ttl, session_idle_ttl, session_touch_interval, rate_limits
    )
    shared["trusted_proxies"] = parse_networks(trusted_proxies)
    settings = Settings(
        providers=by_id,
        secrets=(check_secret(secret or env(SECRET_ENV)), *map(check_secret, old_secrets)),
        base_url=check_base_url(url),
        base_path=base_path,
        state_ttl=state_ttl,
        timeout=timeout,
        retry=retry,
        session=session,
        state_guard=state_guard if state_guard is not None else shared["store"],
        adapter=adapter,
        link_by_email=(
            link_by_email if isinstance(link_by_email, bool) else frozenset(link_by_email)
        ),
        **shared,
    )
    return Keyloom(settings, registry)


def _shared(
    store: Store | str | None,
    sessions: str | None,
    session_ttl: float | None,
    idle_ttl: float,
    touch_interval: float | None,
    rate_limits: RateLimits | bool,
) -> dict[str, Any]:
    """The store-related settings, checked and defaulted."""
    from .store import RateLimits, open_store  # noqa: PLC0415

    if store is None:
        store = env(STORE_ENV) or None
    if isinstance(store, str):
        store = open_store(store)
    if sessions not in {None, "server", "stateless"}:
        msg = "sessions must be 'server' or 'stateless'"
        raise ConfigurationError(msg)
    server = sessions == "server" or (sessions is None and store is not None)
    if server and store is None:
        msg = "server-side sessions need a store"
        raise ConfigurationError(msg, hint="pass store='sqlite:///keyloom.db' or a Redis URL")
    if idle_ttl <= 0 or (session_ttl is not None and session_ttl <= 0):
        msg = "session lifetimes must be positive"
        raise ConfigurationError(msg)
    limits = RateLimits() if rate_limits is True else rate_limits or None
    if limits is not None and store is None:
        if rate_limits is True:
            limits = None
        else:
            msg = "rate limits are counted in a store: pass store=..."
            raise ConfigurationError(msg)
    default_ttl = SERVER_SESSION_TTL if server else STATELESS_SESSION_TTL
    absolute = default_ttl if session_ttl is None else session_ttl
    touch = min(300.0, idle_ttl / 12) if touch_interval is None else touch_interval
    return {
        "store": store,
        "server_sessions": server,
        "session_ttl": absolute,
        "session_idle_ttl": idle_ttl,
        "session_touch_interval": touch,
        "rate_limits": limits,
    }
