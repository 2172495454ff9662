"""Value objects shared by the core, the plugins and the apps (all immutable)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import attrs

from .errors import KeyloomError, PluginError

if TYPE_CHECKING:
    from .users._model import User

__all__ = [
    "AuthorizationRequest",
    "LoginResult",
    "LoginStart",
    "Profile",
    "ProfileOverrides",
    "Provider",
    "ProviderSpec",
    "RevokeEncoding",
    "RevokeMethod",
    "TokenAuthMethod",
    "TokenSet",
    "parse_scopes",
]

PROVIDER_ID_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"

_SCOPE_SPLIT = re.compile(r"[,\s]+")

PkceEncoding = Literal["base64url", "hex"]
#: How the client authenticates at the token endpoint (RFC 7591 §2 names).
TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
TOKEN_AUTH_METHODS: tuple[TokenAuthMethod, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "none",
)
#: The HTTP methods a revocation request may use (RFC 7009: ``POST``).
RevokeMethod = Literal["POST", "DELETE"]
#: How a revocation request's body is encoded (RFC 7009: ``form``).
RevokeEncoding = Literal["form", "json"]


def parse_scopes(value: str | Iterable[str] | None) -> frozenset[str]:
    """Split a provider's scope string (or pass an iterable through) into a set of scopes.

    Commas and white space both separate, so a provider that answers ``"a,b"`` and one
    that answers ``"a b"`` read alike.
    """
    if value is None:
        return frozenset()
    if isinstance(value, str):  # the parts have no white space left to strip
        return frozenset(filter(None, _SCOPE_SPLIT.split(value)))
    return frozenset(p.strip() for p in value if p and p.strip())


def _scopes(value: Iterable[str] | str) -> frozenset[str]:
    return parse_scopes(value)


def _names(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


#: The profile fields a provider may read from fields of other names (see ``profile_fields``).
PROFILE_ALIASES: Final = frozenset({"id", "name", "image"})


def _aliases(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    pairs = tuple(sorted(dict(value).items()))
    if unknown := sorted(k for k, _ in pairs if k not in PROFILE_ALIASES):
        msg = f"profile_fields can name {', '.join(sorted(PROFILE_ALIASES))}, not {unknown}"
        raise ValueError(msg)
    return pairs


def _implied(value: Mapping[str, str | Iterable[str]]) -> Mapping[str, frozenset[str]]:
    return MappingProxyType({wide: parse_scopes(narrow) - {wide} for wide, narrow in value.items()})


#: Headers a request sets itself: the client's credentials and the body's type.
_OWN_HEADERS = frozenset({"authorization", "content-type"})


def _headers(value: Mapping[str, str]) -> Mapping[str, str]:
    if taken := sorted(name for name in value if name.lower() in _OWN_HEADERS):
        msg = f"api_headers cannot set {', '.join(taken)}: each request sets it itself"
        raise ValueError(msg)
    return MappingProxyType(dict(value))


def _algorithms(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _with_origin(url: str, origin: str) -> str:
    parts = urlsplit(url)
    new = urlsplit(origin)
    return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))


@attrs.frozen
class ProviderSpec:
    """What a provider *is*: its endpoints, scopes and OAuth dialect. Plugins register these.

    Attributes:
        id: Short lowercase id used in URLs, e.g. ``"example"``.
        name: Display name, e.g. ``"Example"``.
        authorize_url: The authorization endpoint.
        token_url: The token endpoint.
        profile_url: The user-info endpoint, if any.
        revoke_url: The token revocation endpoint, if any. ``{client_id}`` in it stands for
            the app's client id (URL-quoted), for providers that put it in the path.
        known_scopes: Every scope the provider understands; empty means "not checked".
        implied_scopes: Scopes that include others, as ``{"wide": "narrow other"}``:
            configuring a provider that requests a wide scope and one it includes is a
            ``ConfigurationError`` (providers that keep only the wider one in the token
            would fail every login's scope check).
        default_scopes: Scopes requested when the app names none.
        scope_separator: How the provider joins scopes in URLs (``" "`` in RFC 6749).
        client_id_param: The name of the client id parameter (RFC 6749: ``client_id``).
        pkce_encoding: How the S256 challenge is encoded: RFC 7636 ``base64url`` or ``hex``.
        env_prefix: Credentials are read from ``{env_prefix}_CLIENT_ID`` / ``_CLIENT_SECRET``.
        emulator: ``"module:Class"`` of a local emulator of this provider, if the plugin ships one.
        plugin: The module holding the provider's hooks; registered automatically when a
            provider built from this spec is configured and its plugin was not loaded.
        account_id_field: The token answer's field naming the user, if the provider sends
            one (read into ``TokenSet.account_id``; TikTok sends ``open_id``).
        refresh_expires_field: The token answer's field holding the refresh token's
            lifetime in seconds (``refresh_expires_in`` unless the provider names it
            otherwise).
        log_id_header: The response header carrying the provider's request id, kept on
            errors as ``log_id`` for support requests (``None``: the provider sends none).
        token_auth_method: How the client authenticates at the token and revocation
            endpoints: ``client_secret_post`` (the secret in the form body, the default),
            ``client_secret_basic`` (HTTP Basic, RFC 6749 §2.3.1) or ``none`` (a public
            client: PKCE only, no secret).
        revoke_refresh_token: Revocation also revokes the refresh token (RFC 7009, with
            ``token_type_hint``).
        revoke_method: The revocation request's HTTP method: ``POST`` (RFC 7009) or
            ``DELETE``.
        revoke_encoding: The revocation request's body: ``form`` (RFC 7009) or ``json``.
        revoke_token_param: The body field carrying the token (RFC 7009: ``token``).
        revoke_auth_method: How the client authenticates at the revocation endpoint, when
            not as at the token endpoint (RFC 8414's ``revocation_endpoint_auth_method``;
            ``None``: ``token_auth_method``). Any 2xx answer without an error body
            confirms the revocation.
        api_headers: Headers the provider's API wants on every call (a version or media
            type): the built-in user-info (OpenID UserInfo too) and revocation requests
            send them, and a plugin's own API calls pass ``provider.spec.api_headers``.
            Read-only; ``Authorization`` and ``Content-Type`` are refused (each request
            sets them itself).
        issuer: The OpenID Connect issuer. With it, the ``openid`` scope switches on OpenID
            Connect (ID token, ``nonce``, RFC 9207 ``iss``), and empty endpoints are read
            from ``{issuer}/.well-known/openid-configuration`` on first use.
        id_token_algorithms: The JWS algorithms accepted on ID tokens (never ``none``).
        login_params: Per-login authorization parameters an app may pass to
            ``begin_login`` (and the start route forwards), e.g. ``prompt``.
        reauth_errors: Refresh error codes that, besides RFC 6749's ``invalid_grant``, mean
            the refresh token is dead: the refresh raises
            :class:`~keyloom_core.errors.ReauthenticationRequiredError` for them too.
        profile_fields: For the built-in ``fetch_profile``, the user-info fields to read
            when the standard one is missing or empty, by profile field (``id``, ``name``,
            ``image``): ``{"name": "username", "image": "avatar"}`` reads ``username``
            when there is no ``name``. Never the e-mail, whose verification the provider
            must assert.
    """

    id: str = attrs.field(validator=attrs.validators.matches_re(PROVIDER_ID_PATTERN))
    name: str
    authorize_url: str
    token_url: str
    profile_url: str | None = None
    revoke_url: str | None = None
    known_scopes: frozenset[str] = attrs.field(default=frozenset(), converter=_scopes)
    implied_scopes: Mapping[str, frozenset[str]] = attrs.field(
        factory=dict, converter=_implied, hash=False
    )
    default_scopes: frozenset[str] = attrs.field(default=frozenset(), converter=_scopes)
    scope_separator: str = " "
    client_id_param: str = "client_id"
    pkce_encoding: PkceEncoding = attrs.field(
        default="base64url", validator=attrs.validators.in_(("base64url", "hex"))
    )
    env_prefix: str = attrs.field()
    emulator: str | None = None
    plugin: str | None = None
    account_id_field: str | None = None
    refresh_expires_field: str = "refresh_expires_in"
    log_id_header: str | None = None
    token_auth_method: TokenAuthMethod = attrs.field(
        default="client_secret_post", validator=attrs.validators.in_(TOKEN_AUTH_METHODS)
    )
    revoke_refresh_token: bool = False
    revoke_method: RevokeMethod = attrs.field(
        default="POST", validator=attrs.validators.in_(("POST", "DELETE"))
    )
    revoke_encoding: RevokeEncoding = attrs.field(
        default="form", validator=attrs.validators.in_(("form", "json"))
    )
    revoke_token_param: str = "token"
    revoke_auth_method: TokenAuthMethod | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.in_(TOKEN_AUTH_METHODS)),
    )
    api_headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers, hash=False)
    issuer: str | None = None
    id_token_algorithms: tuple[str, ...] = attrs.field(
        default=("RS256", "PS256", "ES256", "EdDSA"), converter=_algorithms
    )
    login_params: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    reauth_errors: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    profile_fields: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_aliases)

    @id_token_algorithms.validator
    def _check_algorithms(self, _: object, value: tuple[str, ...]) -> None:
        if not value or any(a.lower() == "none" or a.startswith("HS") for a in value):
            msg = "id_token_algorithms must be asymmetric JWS algorithms, never 'none'"
            raise ValueError(msg)

    @env_prefix.default
    def _env_prefix_default(self) -> str:
        return self.id.upper().replace("-", "_")

    def with_endpoint_origin(self, origin: str) -> ProviderSpec:
        """Return a copy whose endpoints live at *origin* (e.g. a local emulator's URL)."""
        return attrs.evolve(
            self,
            authorize_url=self.authorize_url and _with_origin(self.authorize_url, origin),
            token_url=self.token_url and _with_origin(self.token_url, origin),
            profile_url=self.profile_url and _with_origin(self.profile_url, origin),
            revoke_url=self.revoke_url and _with_origin(self.revoke_url, origin),
            issuer=self.issuer and _with_origin(self.issuer, origin),
        )


ProfileOverrides = Callable[["Profile"], Mapping[str, Any]]


@attrs.frozen
class Provider:
    """A configured provider: a :class:`ProviderSpec` plus the app's credentials and choices.

    Build it with a plugin's factory or :func:`keyloom_core.configure_provider`.

    Attributes:
        spec: The provider's description.
        client_id: The app's client id (some providers call it the client key).
        client_secret: The app's client secret; never shown in reprs, logs or errors.
        scopes: The scopes the app requests.
        required_scopes: The requested scopes a login cannot do without.
        approved_scopes: The scopes the provider's app review approved, if the app says.
        profile_overrides: ``fn(profile) -> dict`` applied last to every profile.
        redirect_uri: A fixed redirect URI; by default it is derived from the app's base URL.
        options: Provider-specific settings, read by the provider's plugin.
    """

    spec: ProviderSpec
    client_id: str
    client_secret: str = attrs.field(repr=False)
    scopes: frozenset[str] = attrs.field(converter=_scopes)
    required_scopes: frozenset[str] = attrs.field(converter=_scopes)
    approved_scopes: frozenset[str] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_scopes)
    )
    profile_overrides: ProfileOverrides | None = attrs.field(default=None, eq=False, repr=False)
    redirect_uri: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)

    @property
    def id(self) -> str:
        """The provider id."""
        return self.spec.id

    @property
    def optional_scopes(self) -> frozenset[str]:
        """Requested scopes the user may decline without failing the login."""
        return self.scopes - self.required_scopes

    def apply_overrides(self, profile: Profile) -> Profile:
        """*profile* with the app's ``profile_overrides`` applied (itself if there are none).

        :raises PluginError: ``profile_overrides`` raised (a ``KeyloomError`` goes as is).
        """
        if self.profile_overrides is None:
            return profile
        try:
            return profile.with_overrides(self.profile_overrides(profile))
        except KeyloomError:
            raise
        except Exception as exc:
            msg = f"profile_overrides raised {type(exc).__name__}"
            raise PluginError(msg, plugin="profile_overrides", provider_id=self.id) from exc


@attrs.frozen
class AuthorizationRequest:
    """Everything a plugin needs to build an authorization URL.

    Attributes:
        redirect_uri: Where the provider sends the user back; echo it byte for byte.
        state: The opaque anti-CSRF value the provider must echo.
        scopes: The scopes to request, in a stable order.
        code_challenge: The PKCE challenge, already encoded per ``spec.pkce_encoding``.
        code_challenge_method: Always ``"S256"``.
        nonce: The OpenID Connect ``nonce`` to send, when the login is an OpenID one.
        extra: Per-login parameters (``prompt``, ``login_hint``…), already allow-listed.
    """

    redirect_uri: str
    state: str
    scopes: tuple[str, ...]
    code_challenge: str
    code_challenge_method: str = "S256"
    nonce: str | None = attrs.field(default=None, repr=False)
    extra: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)


_MAX_LIFETIME = 10**10  # seconds; anything longer is not a lifetime
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, as a header needs


def _as_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value) < 20:
        number = int(value.strip())
    if number is None:
        msg = f"{name} is not a number"
        raise TypeError(msg)
    if not 0 <= number <= _MAX_LIFETIME:
        msg = f"{name} is out of range"
        raise ValueError(msg)
    return number


def _token(value: object, name: str) -> str | None:
    token = _opt_str(value, name)
    if token is not None and not _TOKEN_CHARS.fullmatch(token):
        msg = f"{name} has characters a token cannot have, or is too long"
        raise ValueError(msg)
    return token


_JWS_CHARS = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")


def _id_token(value: object) -> str | None:
    token = _opt_str(value, "id_token") or None
    if token is not None and (len(token) > 16384 or not _JWS_CHARS.fullmatch(token)):
        msg = "id_token is not a compact JWS"
        raise ValueError(msg)
    return token


def _opt_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"{name} is not a string"
        raise TypeError(msg)
    return value


@attrs.frozen
class TokenSet:
    """Tokens from a provider, with absolute expiry times (epoch seconds).

    Attributes:
        access_token: The bearer token (hidden from repr).
        token_type: Usually ``"Bearer"``.
        expires_at: When the access token expires, or ``None`` if the provider did not say.
        refresh_token: The refresh token, if any (hidden from repr).
        refresh_expires_at: When the refresh token expires, if the provider said.
        scopes: The scopes the provider says were granted, if it said.
        account_id: The provider's id for the user, if the token answer carries one
            (in the field ``ProviderSpec.account_id_field`` names).
        id_token: The OpenID Connect ID token, validated when received (hidden from repr,
            never logged).
    """

    access_token: str = attrs.field(repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None
    refresh_token: str | None = attrs.field(default=None, repr=False)
    refresh_expires_at: float | None = None
    scopes: frozenset[str] | None = None
    account_id: str | None = None
    id_token: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_response(
        cls,
        data: object,
        *,
        now: float | None = None,
        previous: TokenSet | None = None,
        account_id_field: str | None = None,
        refresh_expires_field: str = "refresh_expires_in",
    ) -> TokenSet:
        """Parse an RFC 6749 token answer; :class:`TypeError` / :class:`ValueError` if invalid.

        Lifetimes come from the answer (``expires_in`` and *refresh_expires_field*), never
        assumed. On refresh, pass *previous*: a provider that does not rotate refresh tokens
        keeps the old one, and an answer without ``scope`` keeps the old scopes.

        :param account_id_field: the field naming the user, if the provider sends one.
        :param refresh_expires_field: the field holding the refresh token's lifetime.
        """
        if not isinstance(data, Mapping):
            msg = "token response is not a JSON object"
            raise TypeError(msg)
        access = _token(data.get("access_token"), "access_token")
        if not access:
            msg = "token response has no access_token"
            raise ValueError(msg)
        now = time.time() if now is None else now
        expires_in = _as_int(data.get("expires_in"), "expires_in")
        refresh_in = _as_int(data.get(refresh_expires_field), refresh_expires_field)
        refresh = _token(data.get("refresh_token") or None, "refresh_token")
        scope = _opt_str(data.get("scope"), "scope")
        token_type = _opt_str(data.get("token_type"), "token_type") or "Bearer"
        account = (
            _opt_str(data.get(account_id_field), account_id_field) if account_id_field else None
        )
        id_token = _id_token(data.get("id_token"))
        refresh_expires_at = now + refresh_in if refresh_in is not None else None
        scopes = parse_scopes(scope) if scope is not None else None
        if previous is not None:
            if refresh is None:
                refresh = previous.refresh_token
                refresh_expires_at = refresh_expires_at or previous.refresh_expires_at
            scopes = previous.scopes if scopes is None else scopes
            account = account or previous.account_id
            id_token = id_token or previous.id_token
        return cls(
            access_token=access,
            token_type=token_type,
            expires_at=now + expires_in if expires_in is not None else None,
            refresh_token=refresh,
            refresh_expires_at=refresh_expires_at,
            scopes=scopes,
            account_id=account,
            id_token=id_token,
        )

    def expires_within(self, seconds: float, *, now: float | None = None) -> bool:
        """Whether the access token expires within *seconds* (``False`` if no expiry is known)."""
        if self.expires_at is None:
            return False
        return self.expires_at - seconds <= (time.time() if now is None else now)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, for an app's own storage (it contains the tokens)."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token,
            "refresh_expires_at": self.refresh_expires_at,
            "scopes": sorted(self.scopes) if self.scopes is not None else None,
            "account_id": self.account_id,
            **({"id_token": self.id_token} if self.id_token is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenSet:
        """Read back what :meth:`to_dict` wrote."""
        scopes = data.get("scopes")
        return cls(
            access_token=data["access_token"],
            token_type=data.get("token_type") or "Bearer",
            expires_at=data.get("expires_at"),
            refresh_token=data.get("refresh_token"),
            refresh_expires_at=data.get("refresh_expires_at"),
            scopes=frozenset(scopes) if scopes is not None else None,
            account_id=data.get("account_id"),
            id_token=data.get("id_token"),
        )


@attrs.frozen
class Profile:
    """A user's profile, normalised across providers.

    Attributes:
        provider_id: Which provider it came from.
        id: The provider's stable id for the user.
        name: Display name, if any.
        email: E-mail address, if the provider gives a verified one.
        email_verified: Whether the provider says the e-mail is verified.
        image: Avatar URL, if any.
        raw: The provider's own user object, as received.
        extra: Extra fields added by ``profile_overrides``.
    """

    provider_id: str
    id: str
    name: str | None = None
    email: str | None = None
    email_verified: bool = False
    image: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False, repr=False)
    extra: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Profile:
        """Apply a ``profile_overrides`` answer: known fields replace, others land in ``extra``."""
        known = {"id", "name", "email", "email_verified", "image"}
        changes = {k: v for k, v in overrides.items() if k in known}
        extra = {**self.extra, **{k: v for k, v in overrides.items() if k not in known}}
        return attrs.evolve(self, **changes, extra=extra)

    def to_user(self) -> dict[str, Any]:
        """The user object of the Keyloom HTTP protocol (``id``, ``name``, ``email``…)."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "emailVerified": self.email_verified,
            "image": self.image,
            **self.extra,
        }


@attrs.frozen
class LoginStart:
    """The start of a login: send the user to ``url``; keep ``state`` client-side (a cookie).

    Attributes:
        url: The provider's authorization URL.
        state: Signed, self-contained login state to hand back to ``complete_login``.
        expires_at: When the login state stops being accepted.
    """

    url: str
    state: str = attrs.field(repr=False)
    expires_at: float


@attrs.frozen
class LoginResult:
    """A completed login.

    Attributes:
        provider_id: The provider used.
        profile: The normalised profile (``profile_overrides`` applied).
        tokens: The provider's tokens; store them server-side, never in a cookie.
        granted_scopes: What the user actually granted.
        requested_scopes: What was asked for.
        callback_url: The safe, same-origin path to send the user to.
        user: The app's user this login is, when an adapter is configured
            (:mod:`keyloom_core.users`); ``None`` otherwise.
    """

    provider_id: str
    profile: Profile
    tokens: TokenSet
    granted_scopes: frozenset[str]
    requested_scopes: frozenset[str]
    callback_url: str
    user: User | None = None

    def session_user(self) -> dict[str, Any]:
        """The session's user object: the adapter's user, else the provider's profile."""
        if self.user is not None:
            return self.user.to_json()
        user = self.profile.to_user()
        user["id"] = str(user["id"])
        return user
