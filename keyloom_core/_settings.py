"""The frozen configuration of a Keyloom instance, and the checks of its values."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

import attrs

from ._signing import MIN_SECRET_LENGTH
from .errors import ConfigurationError
from .models import Provider

if TYPE_CHECKING:
    import aiohttp

    from ._state import StateGuard
    from .http import RetryPolicy
    from .store._base import Store
    from .store._limits import Network, RateLimits
    from .users._adapter import Adapter

__all__ = [
    "LOOPBACK_HOSTS",
    "SECRET_ENV",
    "SERVER_SESSION_TTL",
    "STATELESS_SESSION_TTL",
    "STORE_ENV",
    "URL_ENVS",
    "Settings",
    "check_base_url",
    "check_secret",
]

SECRET_ENV = "KEYLOOM_SECRET"
URL_ENVS = ("KEYLOOM_URL", "APP_URL")
STORE_ENV = "KEYLOOM_STORE"
#: Absolute lifetime of a server-side session: a working day (OWASP session management).
SERVER_SESSION_TTL = 8 * 3600.0
#: Lifetime of a stateless session cookie (it cannot be revoked before).
STATELESS_SESSION_TTL = 30 * 24 * 3600.0
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_SECRET_HINT = 'Generate one: python -c "import secrets; print(secrets.token_urlsafe(32))"'


def _ascii_url(base_url: str) -> str:
    """*base_url* with an IDNA (``xn--``) host name and a percent-encoded path.

    The URL ends up in ``Location`` headers and redirect URIs, which must be ASCII.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
        port = parts.port
    except (UnicodeError, ValueError):
        msg = f"base_url's host name is not a valid domain name: {base_url!r}"
        raise ConfigurationError(msg) from None
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    netloc += f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    netloc += f":{port}" if port is not None else ""
    path = quote(parts.path, safe="/%:@!$&'()*+,;=-._~")
    url = urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
    if not (url.isascii() and url.isprintable()):
        msg = f"base_url must be printable: {base_url!r}"
        raise ConfigurationError(msg)
    return url


def check_base_url(base_url: str) -> str:
    """Validate the app's public URL; return it without a trailing slash.

    A non-ASCII host name is converted to its IDNA form (``https://例え.example`` becomes
    ``https://xn--r8jz45g.example``) and a non-ASCII path is percent-encoded.
    """
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
    if not (base_url.isascii() and base_url.isprintable()):
        base_url = _ascii_url(base_url)
    return base_url.rstrip("/")


def check_secret(secret: str | None) -> str:
    """Validate the signing secret."""
    if not secret:
        msg = f"no secret: pass secret=... or set {SECRET_ENV}"
        raise ConfigurationError(msg, hint=_SECRET_HINT)
    if len(secret) < MIN_SECRET_LENGTH:
        msg = f"the secret must be at least {MIN_SECRET_LENGTH} characters"
        raise ConfigurationError(msg, hint=_SECRET_HINT)
    return secret


@attrs.frozen
class Settings:
    """What ``define_keyloom`` was given, checked; never changes afterwards.

    Attributes:
        providers: The configured providers by id.
        secrets: The signing secrets, current first (hidden from repr).
        base_url: The app's public URL, without a trailing slash.
        base_path: Where the auth routes live (``/api/auth``).
        state_ttl: Seconds a started login stays valid.
        session_ttl: Seconds a session stays valid.
        timeout: Seconds for one provider call (the plugin's answer and any fallback to
            the built-in one together), retries included.
        retry: The retry policy of provider calls (the HTTP client's default if ``None``).
        session: An app-owned ``aiohttp.ClientSession`` to borrow, if any.
        state_guard: Where used login states are remembered (the store, else in memory).
        store: What the app's processes share (states, sessions, rate limits), if any.
        server_sessions: Whether sessions live in the store (the cookie holds an id).
        session_idle_ttl: Seconds without use that end a server-side session.
        session_touch_interval: Seconds between two writes of a session's last use.
        rate_limits: Inbound limits on the login routes (``None``: off).
        trusted_proxies: Proxies whose ``Forwarded`` / ``X-Forwarded-For`` are believed.
        adapter: Where users and accounts live (:mod:`keyloom_core.users`), if anywhere.
        link_by_email: Which providers may link by verified e-mail (``False``: none).
    """

    providers: Mapping[str, Provider]
    secrets: tuple[str, ...] = attrs.field(repr=False)
    base_url: str
    base_path: str = "/api/auth"
    state_ttl: float = 600.0
    session_ttl: float = 30 * 24 * 3600.0
    timeout: float = 10.0
    retry: RetryPolicy | None = attrs.field(default=None, repr=False)
    session: aiohttp.ClientSession | None = attrs.field(default=None, repr=False, eq=False)
    state_guard: StateGuard | None = attrs.field(default=None, repr=False, eq=False)
    store: Store | None = attrs.field(default=None, eq=False)
    server_sessions: bool = False
    session_idle_ttl: float = 3600.0
    session_touch_interval: float = 300.0
    rate_limits: RateLimits | None = None
    trusted_proxies: tuple[Network, ...] = ()
    adapter: Adapter | None = attrs.field(default=None, eq=False)
    link_by_email: bool | frozenset[str] = False


class ConfiguredBy:
    """Read-only access to a :class:`Settings` under the names a Keyloom instance had.

    Attributes:
        settings: The frozen configuration.
    """

    settings: Settings

    @property
    def providers(self) -> Mapping[str, Provider]:
        """The configured providers by id."""
        return self.settings.providers

    @property
    def base_url(self) -> str:
        """The app's public URL."""
        return self.settings.base_url

    @property
    def base_path(self) -> str:
        """Where the auth routes live (``/api/auth``)."""
        return self.settings.base_path

    @property
    def state_ttl(self) -> float:
        """Seconds a started login stays valid."""
        return self.settings.state_ttl

    @property
    def session_ttl(self) -> float:
        """Seconds a session stays valid."""
        return self.settings.session_ttl

    @property
    def timeout(self) -> float:
        """Seconds for one provider call, fallback and retries included."""
        return self.settings.timeout

    @property
    def secrets(self) -> tuple[str, ...]:
        """The signing secrets, current first."""
        return self.settings.secrets

    @property
    def retry(self) -> RetryPolicy | None:
        """Deprecated: ``settings.retry``."""
        _moved("retry")
        return self.settings.retry

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """Deprecated: ``settings.session`` (the borrowed ``aiohttp.ClientSession``)."""
        _moved("session")
        return self.settings.session

    @property
    def state_guard(self) -> StateGuard | None:
        """Deprecated: ``settings.state_guard``."""
        _moved("state_guard")
        return self.settings.state_guard


def _moved(name: str) -> None:
    warnings.warn(
        f"Keyloom.{name} moved: read keyloom.settings.{name}", DeprecationWarning, stacklevel=3
    )
