"""The one typed error tree of Keyloom.

Every error carries a short machine-readable ``code`` (used in JSON error bodies), an
HTTP ``status`` suitable for a web answer, an optional troubleshooting ``hint`` and the
``provider_id`` it concerns. Messages never contain tokens, codes or client secrets.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "AccessDeniedError",
    "AuthorizationError",
    "ConfigurationError",
    "InvalidCallbackError",
    "InvalidRedirectError",
    "KeyloomError",
    "NetworkError",
    "PluginError",
    "ProfileError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "ReauthenticationRequiredError",
    "RevokeError",
    "ScopeDeniedError",
    "StateError",
    "TokenExchangeError",
    "TokenRefreshError",
    "UnknownProviderError",
]

HINT_REDIRECT_URI = (
    "The redirect URI must match a registered one byte for byte: same scheme (https outside "
    "localhost), host, port, path and trailing slash, and no query or fragment."
)
HINT_SCOPE_REVIEW = (
    "Request only scopes your app has been approved for, or submit the scope for review in "
    "the provider's developer portal."
)


class KeyloomError(Exception):
    """Root of every error Keyloom raises.

    Attributes:
        code: Short machine-readable code, e.g. ``"invalid_state"``.
        status: HTTP status a web integration answers with.
        hint: A troubleshooting hint for developers, or ``None``.
        provider_id: The provider concerned, or ``None``.
    """

    code: str = "keyloom_error"
    status: int = 500
    default_hint: str | None = None

    def __init__(
        self,
        message: str,
        *,
        provider_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider_id = provider_id
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        prefix = f"[{self.provider_id}] " if self.provider_id else ""
        return f"{prefix}{self.message}"


class ConfigurationError(KeyloomError):
    """The configuration is wrong; raised at start-up, before any user is involved."""

    code = "configuration_error"


class PluginError(KeyloomError):
    """A plugin is broken: it failed to load, broke the hook contract or raised unexpectedly.

    Attributes:
        plugin: The plugin's name, the same however it was loaded: its entry point's name
            when a distribution declares it (as ``keyloom providers`` and the
            ``KEYLOOM_*_PLUGINS`` switches name it), else its registration name.
        distribution: The distribution that ships it, with its version, when known.
        entry_point: The entry point as declared (``name = module``), when known.
    """

    code = "plugin_error"

    def __init__(
        self,
        message: str,
        *,
        plugin: str | None = None,
        distribution: str | None = None,
        entry_point: str | None = None,
        provider_id: str | None = None,
    ) -> None:
        super().__init__(message, provider_id=provider_id)
        self.plugin = plugin
        self.distribution = distribution
        self.entry_point = entry_point


class UnknownProviderError(KeyloomError, LookupError):
    """No configured provider has this id."""

    code = "unknown_provider"
    status = 404


class AuthorizationError(KeyloomError):
    """The login callback cannot be accepted; safe to show to the user."""

    code = "authorization_error"
    status = 400


class InvalidCallbackError(AuthorizationError):
    """The callback request lacks ``code`` or ``state``, or is malformed."""

    code = "invalid_callback"


class StateError(AuthorizationError):
    """The OAuth state is missing, forged, expired, replayed or meant for another provider.

    Attributes:
        reason: One of ``missing``, ``malformed``, ``signature``, ``expired``, ``replayed``,
            ``provider``, ``mismatch``.
    """

    code = "invalid_state"

    def __init__(self, message: str, *, reason: str, provider_id: str | None = None) -> None:
        super().__init__(message, provider_id=provider_id, hint="Start the sign-in again.")
        self.reason = reason


class InvalidRedirectError(AuthorizationError):
    """A ``callback_url`` is not a same-origin path (an open redirect attempt)."""

    code = "invalid_callback_url"


class AccessDeniedError(AuthorizationError):
    """The user cancelled the sign-in, or the provider refused it on the consent screen.

    Attributes:
        error: The provider's error code (``access_denied`` for a cancelled consent).
        description: The provider's description, if any.
    """

    code = "access_denied"
    status = 403

    def __init__(
        self,
        message: str,
        *,
        error: str = "access_denied",
        description: str | None = None,
        provider_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider_id=provider_id, hint=hint)
        self.error = error
        self.description = description


class ScopeDeniedError(AuthorizationError):
    """The user granted fewer scopes than the app requires.

    Attributes:
        missing: The required scopes that were not granted.
    """

    code = "scope_denied"
    status = 403

    def __init__(self, missing: Iterable[str], *, provider_id: str | None = None) -> None:
        self.missing = frozenset(missing)
        names = ", ".join(sorted(self.missing))
        super().__init__(
            f"required scopes were not granted: {names}",
            provider_id=provider_id,
            hint="Sign in again and leave the required permissions ticked.",
        )


class ProviderError(KeyloomError):
    """The provider answered with an error, or with something that is not a valid answer.

    Attributes:
        error: The provider's error code (e.g. ``invalid_grant``), if it gave one.
        description: The provider's error description, if any.
        log_id: The provider's request/log id, for its support, if any.
        http_status: The provider's HTTP status, if a response arrived.
    """

    code = "provider_error"
    status = 502

    def __init__(
        self,
        message: str,
        *,
        provider_id: str | None = None,
        error: str | None = None,
        description: str | None = None,
        log_id: str | None = None,
        http_status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider_id=provider_id, hint=hint)
        self.error = error
        self.description = description
        self.log_id = log_id
        self.http_status = http_status

    def __str__(self) -> str:
        text = super().__str__()
        if self.error:
            text += f" ({self.error}"
            text += f": {self.description})" if self.description else ")"
        if self.log_id:
            text += f" [log_id {self.log_id}]"
        return text


class TokenExchangeError(ProviderError):
    """Exchanging the authorization code for tokens failed."""

    code = "token_exchange_failed"


class TokenRefreshError(ProviderError):
    """Refreshing an access token failed."""

    code = "token_refresh_failed"


class ReauthenticationRequiredError(TokenRefreshError):
    """The refresh token is no longer valid (``invalid_grant``): the user must sign in again."""

    code = "reauthentication_required"
    status = 401


class RevokeError(ProviderError):
    """Revoking a token failed."""

    code = "revoke_failed"


class ProfileError(ProviderError):
    """Fetching or reading the user's profile failed."""

    code = "profile_failed"


class RateLimitedError(ProviderError):
    """The provider rate-limited the call and retries were exhausted.

    Attributes:
        retry_after: Seconds the provider asked to wait, if it said.
    """

    code = "rate_limited"
    status = 503

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider_id: str | None = None,
        error: str | None = None,
        log_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(
            message,
            provider_id=provider_id,
            error=error,
            log_id=log_id,
            http_status=http_status,
            hint="The provider is limiting requests; try again shortly.",
        )
        self.retry_after = retry_after


class NetworkError(ProviderError):
    """The provider could not be reached, or the connection broke."""

    code = "provider_unreachable"
    status = 503


class ProviderTimeoutError(NetworkError, TimeoutError):
    """The provider did not answer in time."""

    code = "provider_timeout"
    status = 504
