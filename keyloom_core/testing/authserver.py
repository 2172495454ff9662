"""One generic fake authorization server that reads its dialect from a :class:`ProviderSpec`.

:class:`AuthorizationServer` is a complete RFC 6749 (authorization code and refresh grants),
RFC 7636 (S256 PKCE) and RFC 7009 (revocation) server on 127.0.0.1, with a user-info route.
It takes every provider-specific detail from its :attr:`~AuthorizationServer.spec`:

- the routes: the paths of ``authorize_url``, ``token_url``, ``profile_url`` and
  ``revoke_url``;
- the client id parameter (``client_id_param``) and the scope separator
  (``scope_separator``), in requests and answers;
- the PKCE challenge encoding (``pkce_encoding``);
- how clients authenticate (``token_auth_method``: form body, HTTP Basic or none);
- the token answer's account and refresh-lifetime fields (``account_id_field``,
  ``refresh_expires_field``);
- the revocation route's method (``revoke_method``), and for a provider's own revocation
  handler the body (``revoke_encoding``, ``revoke_token_param``) and the client's
  authentication (``revoke_auth_method``): :meth:`~AuthorizationServer.revocation_body`,
  :meth:`~AuthorizationServer.revoking_client`;
- the scopes that include others (``implied_scopes``):
  :meth:`~AuthorizationServer.narrowest_scopes`.

A provider's emulator is a subclass that sets :attr:`~AuthorizationServer.spec` and overrides
only what its provider does differently::

    class ExampleEmulator(AuthorizationServer):
        spec = SPEC

    if __name__ == "__main__":
        raise SystemExit(ExampleEmulator.main())

The emulated user answers authorization requests as :attr:`~EmulatorServer.consent` says:
``"approve"`` or ``"deny"`` at once, or ``"form"``, a small consent page. Fault injection
(``faults=``, a :class:`~keyloom_core.testing.emulator.FaultInjector`) and rate limiting
(``rate_limit=``, a :class:`~keyloom_core.testing.emulator.SlidingWindowLimiter`) are
optional constructor keywords, for the tests that need them.

A subclass declares its own options in its class body, not in a constructor: each
:class:`Setting` (checked on every change, possibly kept in another attribute, possibly
with a command-line flag) and each annotated attribute with a default is a keyword of the
constructor; any other keyword is a :class:`TypeError` naming the closest option.

The token and revocation routes name each refusal with a typed reason (a
:class:`RequestFailure`, or the code's :class:`~keyloom_core.testing.emulator.CodeFailure` or
token's :class:`~keyloom_core.testing.emulator.TokenFailure`) that one hook,
:meth:`~AuthorizationServer.token_error`, renders: the ``error`` from
:meth:`~AuthorizationServer.token_error_code` (or the table
:attr:`~AuthorizationServer.token_error_codes`), the description from
:attr:`~AuthorizationServer.token_error_descriptions`, the status from
:attr:`~AuthorizationServer.error_status`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import enum
import functools
import hashlib
import hmac
import inspect
import logging
import operator
import re
import secrets
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    Protocol,
    TypeAlias,
    TypeVar,
    final,
    overload,
)
from urllib.parse import SplitResult, quote, unquote_plus, urlencode, urlsplit

import attrs
from aiohttp import web

from keyloom_core._deprecation import deprecated_module_names
from keyloom_core.models import ProviderSpec

from .emulator import (
    AccessToken,
    AuthorizationCode,
    CodeFailure,
    EmulatorServer,
    FaultInjector,
    GrantBook,
    Handler,
    PendingRequests,
    PkceEncoding,
    ScopeOption,
    SlidingWindowLimiter,
    TokenFailure,
    TokenPair,
    UserOption,
    add_emulator_arguments,
    consent_page,
    emulator_main,
    emulator_options,
    html_response,
    message_page,
)

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "AVATAR_PATH",
    "CONSENT_PATH",
    "DEFAULT_CALLBACK",
    "AuthorizationServer",
    "Client",
    "DeprecatedAlias",
    "EndpointFailure",
    "PendingAuthorization",
    "RedirectUriParts",
    "RedirectUriPolicy",
    "RegisteredClient",
    "RequestFailure",
    "Setting",
    "client_factory",
    "deprecated_module_names",
    "redirect_uri_matches",
    "split_redirect_uri",
]

logger = logging.getLogger(__name__)

#: Where the consent form posts its answer.
CONSENT_PATH: Final = "/emulator/consent"
#: The emulated user's avatar (a real provider's would be on a CDN).
AVATAR_PATH: Final = "/emulator/avatar.svg"
#: The redirect URI registered by default: where ``keyloom login`` listens.
DEFAULT_CALLBACK: Final = "http://127.0.0.1:8765/callback/"

_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_VERIFIER_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~]+")
_AVATAR: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    '<rect width="64" height="64" fill="#2f6feb"/></svg>'
)


class RegisteredClient(Protocol):
    """What the server needs of a registered client (:class:`Client` is one)."""

    @property
    def client_id(self) -> str:
        """The client's id."""
        ...

    def secret_matches(self, secret: str) -> bool:
        """Whether *secret* is the client's secret (in constant time)."""
        ...

    def accepts_redirect_uri(self, uri: str) -> bool:
        """Whether *uri* is one of the client's registered redirect URIs."""
        ...


@attrs.frozen
class RedirectUriParts:
    """A redirect URI as :func:`split_redirect_uri` reads it, each part as written."""

    #: The scheme (``https``).
    scheme: str
    #: The host (an IPv6 address keeps its brackets).
    host: str
    #: The port: digits, ``*`` (any port) or ``None`` (none written).
    port: str | None
    #: Everything after the host and port: the path, then any query and fragment.
    path: str


def split_redirect_uri(uri: str) -> RedirectUriParts | None:
    """*uri*'s parts, or ``None`` if it is not absolute or has user info (``user@``).

    Unlike :func:`urllib.parse.urlsplit`, it takes ``*`` as a port (any port).
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme:
        return None
    authority, slash, path = rest.partition("/")
    if not authority or "@" in authority:
        return None
    if authority.startswith("["):
        inner, bracket, after = authority.partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        host, port = inner + "]", (after[1:] if after else None)
    else:
        host, colon, port_text = authority.partition(":")
        port = port_text if colon else None
    return RedirectUriParts(scheme, host, port, slash + path)


def _valid_port(port: str | None) -> bool:
    return port is not None and port.isdigit() and 0 < int(port) < 65536


def redirect_uri_matches(
    registered: str,
    candidate: str,
    *,
    subpaths: bool = False,
    subdomains: bool = False,
    any_loopback_port: bool = False,
) -> bool:
    """Whether *candidate* is the *registered* redirect URI: exactly, or on any port for ``*``.

    A registered ``*`` port (``http://127.0.0.1:*/callback``) matches any valid port with
    the same scheme, host and path; a candidate with a query or fragment matches only
    exactly. The switches loosen the rule for providers that match more broadly (the
    scheme must still be the same and a fragment is never accepted):

    :param subpaths: The registered path or any path below it; any query.
    :param subdomains: The registered host or any subdomain of it.
    :param any_loopback_port: Any port where the registered host is a loopback one
        (``127.0.0.1``, ``::1``, ``localhost``).
    """
    if candidate == registered:
        return True
    if subpaths or subdomains or any_loopback_port:
        return _loosely_matches(registered, candidate, subpaths, subdomains, any_loopback_port)
    pattern = split_redirect_uri(registered)
    if pattern is None or pattern.port != "*" or "?" in candidate or "#" in candidate:
        return False
    actual = split_redirect_uri(candidate)
    return (
        actual is not None
        and _valid_port(actual.port)
        and (actual.scheme, actual.host, actual.path)
        == (pattern.scheme, pattern.host, pattern.path)
    )


def _same_port(got: SplitResult, want: SplitResult) -> bool:
    try:
        return got.port == want.port
    except ValueError:  # not a valid port
        return False


def _loosely_matches(
    registered: str, candidate: str, subpaths: bool, subdomains: bool, any_loopback_port: bool
) -> bool:
    want, got = urlsplit(registered), urlsplit(candidate)
    if got.fragment or got.scheme != want.scheme or not got.hostname or not want.hostname:
        return False
    if got.hostname != want.hostname and not (
        subdomains and got.hostname.endswith("." + want.hostname)
    ):
        return False
    if not (any_loopback_port and want.hostname in _LOOPBACK_HOSTS) and not _same_port(got, want):
        return False
    if not subpaths:
        return (got.path, got.query) == (want.path, want.query)
    base = want.path.rstrip("/")
    return got.path in {want.path, base} or got.path.startswith(base + "/")


def client_factory(client_type: type[Any]) -> Any:
    """A ``make_client`` classmethod for an attrs client class such as a :class:`Client` subclass.

    ``make_client = client_factory(MyClient)`` in an :class:`AuthorizationServer` subclass
    builds a *client_type* from the id, secret and redirect URIs; its other fields are
    keywords (by their aliases), which :meth:`AuthorizationServer.for_client` passes on.
    """
    fields = attrs.fields(client_type)
    aliases = {field.name: field.alias for field in fields}

    def make_client(
        cls: type,
        /,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        **options: Any,
    ) -> Any:
        del cls
        given = {"client_id": client_id, "client_secret": client_secret}
        return client_type(
            **{aliases[k]: v for k, v in given.items()},
            **{aliases["redirect_uris"]: redirect_uris},
            **options,
        )

    known = {"client_id", "client_secret", "redirect_uris"}
    signature = inspect.signature(make_client)
    own = [
        inspect.Parameter(
            field.alias or field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if field.default is attrs.NOTHING else field.default,
        )
        for field in fields
        if field.name not in known
    ]
    positional = list(signature.parameters.values())[:-1]
    make_client.__signature__ = signature.replace(parameters=[*positional, *own])  # type: ignore[attr-defined]
    make_client.__doc__ = f"A {client_type.__name__}; its other fields are keywords."
    return classmethod(make_client)


@attrs.frozen(kw_only=True)
class RedirectUriPolicy:
    """What a provider's developer portal lets a client register as a redirect URI.

    ``RedirectUriPolicy(schemes=("https",), loopback="forbidden").problem(uri)`` says why
    *uri* would be refused, or ``None``. A port of ``*`` (any port) is valid only on a
    loopback host.

    Attributes:
        schemes: The allowed schemes.
        loopback: Whether the host must be (``"required"``), must not be (``"forbidden"``)
            or may be (``"allowed"``) one of :attr:`loopback_hosts`.
        loopback_hosts: The hosts that count as loopback (as written; IPv6 in brackets).
        port_required: Whether a port (or ``*``) must be written.
        static: Whether a query string and a fragment are refused.
        max_length: The length a URI must stay under, if limited.
        kind: Who the rules are for, named in the problems (``"desktop apps"``).
    """

    schemes: tuple[str, ...] = ("https",)
    loopback: Literal["required", "forbidden", "allowed"] = "allowed"
    loopback_hosts: tuple[str, ...] = ("127.0.0.1", "[::1]", "localhost")
    port_required: bool = False
    static: bool = False
    max_length: int | None = None
    kind: str = ""

    def problem(self, uri: str) -> str | None:
        """Why *uri* may not be registered under these rules, or ``None``."""
        if self.max_length is not None and len(uri) >= self.max_length:
            return f"must be shorter than {self.max_length} characters"
        if self.static and ("?" in uri or "#" in uri):
            return "must be static: no query string or fragment"
        parts = split_redirect_uri(uri)
        if parts is None or any(char.isspace() for char in uri):
            return "must be an absolute URL"
        return self._parts_problem(parts)

    def _parts_problem(self, parts: RedirectUriParts) -> str | None:
        whom = f" for {self.kind}" if self.kind else ""
        hosts = " or ".join(sorted(self.loopback_hosts))
        on_loopback = parts.host.lower() in self.loopback_hosts
        if parts.scheme not in self.schemes:
            return f"must use {' or '.join(self.schemes)}{whom}"
        if self.loopback != "allowed" and on_loopback != (self.loopback == "required"):
            return f"must {'not ' if on_loopback else ''}be on {hosts}{whom}"
        if parts.port is None:
            return f"must have a port (or * for any port){whom}" if self.port_required else None
        if not (_valid_port(parts.port) or (parts.port == "*" and on_loopback)):
            return "has an invalid port"
        return None


def _uris(values: Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


@attrs.frozen(kw_only=True)
class Client:
    """A client registered with the server.

    Attributes:
        client_id: The client's id.
        client_secret: The client's secret (hidden from repr).
        redirect_uris: The registered redirect URIs (:func:`redirect_uri_matches`: exactly,
            or on any port where the port is ``*``; a subclass may loosen the rule with
            :attr:`redirect_uri_rules`).
        name: The name the consent page shows.
    """

    #: The switches of :func:`redirect_uri_matches` (``subpaths``, ``subdomains``,
    #: ``any_loopback_port``) that :meth:`accepts_redirect_uri` applies; none by default.
    redirect_uri_rules: ClassVar[Mapping[str, bool]] = {}

    client_id: str = attrs.field(validator=attrs.validators.min_len(1))
    client_secret: str = attrs.field(repr=False)
    redirect_uris: tuple[str, ...] = attrs.field(default=(DEFAULT_CALLBACK,), converter=_uris)
    name: str = "Keyloom Test App"

    def secret_matches(self, secret: str) -> bool:
        """Whether *secret* is the client's secret (in constant time)."""
        return hmac.compare_digest(secret.encode(), self.client_secret.encode())

    def accepts_redirect_uri(self, uri: str) -> bool:
        """Whether *uri* matches one of :attr:`redirect_uris` (:func:`redirect_uri_matches`)."""
        rules = self.redirect_uri_rules
        return any(redirect_uri_matches(known, uri, **rules) for known in self.redirect_uris)


@attrs.frozen(kw_only=True)
class PendingAuthorization:
    """An authorization request waiting for the user's answer on the consent page.

    Attributes:
        request_id: The id the consent form posts back.
        client_id: The requesting client.
        redirect_uri: Where the answer goes.
        scopes: The requested scopes, as :meth:`AuthorizationServer.requested_scopes` read them.
        params: Every parameter of the request.
        expires_at: When the request may no longer be answered.
    """

    request_id: str = attrs.field(repr=False)
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    params: Mapping[str, str] = attrs.field(repr=False)
    expires_at: float


class RequestFailure(enum.Enum):
    """Why the token or revocation route refused a request (besides a code's or token's own)."""

    CONTENT_TYPE = "content_type"
    """The body is not ``application/x-www-form-urlencoded`` (only if strict)."""
    MALFORMED = "malformed"
    """A parameter is repeated, or a required one missing (only if strict)."""
    SECRET_MISSING = "secret_missing"
    """The client id came without the client secret (only if strict)."""
    INVALID_CLIENT = "invalid_client"
    """The client is unknown or its secret wrong."""
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    """The ``grant_type`` is not one the server offers."""
    INVALID_VERIFIER = "invalid_verifier"
    """The PKCE ``code_verifier`` is malformed or does not match the challenge."""
    UNKNOWN_USER = "unknown_user"
    """The code's user may no longer sign in."""
    FOREIGN_TOKEN = "foreign_token"
    """The token to revoke was issued to another client (RFC 7009 §2.1)."""


#: Every reason the token and revocation routes give for a refusal.
EndpointFailure: TypeAlias = RequestFailure | CodeFailure | TokenFailure


def _path(url: str | None) -> str | None:
    return urlsplit(url).path or "/" if url else None


def _matches(route: str, path: str) -> bool:
    """Whether *path* is *route*, whose ``{name}`` segments match any value."""
    parts = ("[^/]+" if p[:1] == "{" else re.escape(p) for p in route.rstrip("/").split("/"))
    return re.fullmatch("/".join(parts), path.rstrip("/")) is not None


# -- deprecated names ----------------------------------------------------------------------


@final
class DeprecatedAlias:
    """An attribute's old name: reading or setting it warns and uses *target* instead.

    ``grants = DeprecatedAlias("book")`` in a class body keeps ``server.grants`` working; a
    dotted *target* (``"book.access_ttl"``) reaches into an attribute. The
    :class:`DeprecationWarning` names the replacement. :class:`AuthorizationServer`'s
    constructor also accepts the old name as a keyword.

    :param target: The attribute (path) that replaces the old name.
    """

    def __init__(self, target: str) -> None:
        """Forward to *target*."""
        self.target = target
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        """Remember the old name, for the warning."""
        self.name = name

    def _warn(self, instance: object) -> None:
        message = f"{type(instance).__name__}.{self.name} is deprecated; use {self.target}"
        warnings.warn(message, DeprecationWarning, stacklevel=3)

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        """The target's value (the alias itself on the class)."""
        if instance is None:
            return self
        self._warn(instance)
        return operator.attrgetter(self.target)(instance)

    def __set__(self, instance: object, value: object) -> None:
        """Set the target."""
        self._warn(instance)
        head, _, last = self.target.rpartition(".")
        setattr(operator.attrgetter(head)(instance) if head else instance, last, value)


T = TypeVar("T")


@final
class Setting(Generic[T]):
    """A constructor option that stays a settable attribute, checked on every change.

    ``pkce_encoding = Setting("hex", choices=("hex", "base64url"))`` in a class body makes
    ``pkce_encoding=`` a keyword of :class:`AuthorizationServer`'s constructor and checks
    each value set later the same way (a :class:`ValueError` names what is allowed). With
    *at* (``Setting(7200, at="book.access_ttl")``) the value lives in another attribute,
    which the constructor sets to *default* (after :meth:`AuthorizationServer.setup`). With
    *flag*, :meth:`AuthorizationServer.main` offers it on the command line: ``--flag VALUE``
    of *default*'s type (one of *choices*, if any), or, for a boolean, a switch that sets
    the opposite of *default* (``Setting(default=True, flag="--no-rotation")``).

    :param default: The value until one is set.
    :param at: A dotted attribute path that holds the value instead (``"book.code_ttl"``).
    :param choices: The allowed values, if limited.
    :param bounds: The smallest and the largest allowed value, if limited.
    :param convert: Applied to each value before the checks (``frozenset``, say).
    :param flag: The command-line option, if any.
    :param help_text: The command-line option's help.
    """

    def __init__(
        self,
        default: T,
        *,
        at: str = "",
        choices: Iterable[T] = (),
        bounds: tuple[float, float] | None = None,
        convert: Callable[[Any], T] | None = None,
        flag: str = "",
        help_text: str = "",
    ) -> None:
        """Declare the option; its name is the attribute's."""
        self.default = default
        self.at = at
        self.choices = tuple(choices)
        self.bounds = bounds
        self.convert = convert
        self.flag = flag
        self.help_text = help_text
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        """Remember the option's name."""
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Setting[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> T | Setting[T]:
        """The value (the setting itself on the class)."""
        if instance is None:
            return self
        if self.at:
            return operator.attrgetter(self.at)(instance)  # type: ignore[no-any-return]
        return instance.__dict__.get(self.name, self.default)  # type: ignore[no-any-return]

    def __set__(self, instance: object, value: T) -> None:
        """Convert and check *value*, then store it."""
        if self.convert is not None:
            value = self.convert(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}")
        self._check_type(value)
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:  # type: ignore[operator]
            low, high = self.bounds
            raise ValueError(f"{self.name} must be between {low:g} and {high:g}")
        if not self.at:
            instance.__dict__[self.name] = value
            return
        head, _, last = self.at.rpartition(".")
        setattr(operator.attrgetter(head)(instance) if head else instance, last, value)

    def _check_type(self, value: object) -> None:
        """A yes/no setting takes a bool; a number (or ``None``), any number but a bool."""
        if isinstance(self.default, bool):
            wrong = not isinstance(value, bool)
        elif isinstance(self.default, int | float) or self.bounds is not None:
            wrong = value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            )
        else:
            return
        if wrong:
            kind = "True or False" if isinstance(self.default, bool) else "a number"
            raise TypeError(f"{self.name} must be {kind}, not {type(value).__name__}")

    def add_argument(self, parser: argparse.ArgumentParser) -> None:
        """Add :attr:`flag` to *parser* (its value lands in ``args.<name>``)."""
        help_text = self.help_text or None
        if isinstance(self.default, bool):
            action = "store_false" if self.default else "store_true"
            parser.add_argument(self.flag, dest=self.name, action=action, help=help_text)
            return
        parser.add_argument(
            self.flag,
            dest=self.name,
            type=str if self.default is None else type(self.default),
            default=self.default,
            choices=self.choices or None,
            help=help_text,
        )


def _settings(cls: type) -> dict[str, Setting[Any]]:
    found: dict[str, Setting[Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            found.pop(name, None)
            if isinstance(value, Setting):
                found[name] = value
    return found


_SERVER_KEYWORDS: Final = frozenset(inspect.signature(EmulatorServer.__init__).parameters) - {
    "self"
}


class AuthorizationServer(EmulatorServer):
    """A fake RFC 6749 / 7636 / 7009 authorization server speaking :attr:`spec`'s dialect.

    Subclasses set :attr:`spec` and override only their provider's quirks, for example
    :attr:`user`, :meth:`profile`, :meth:`token_answer`, :meth:`error_body`, the token
    errors' tables (:attr:`token_error_codes`, :attr:`token_error_descriptions`) and
    :attr:`error_status`, :meth:`requested_scopes`, :meth:`check_authorization` or a route
    handler.

    :param clients: The registered clients; by default :meth:`default_clients`.
    :param rate_limit: An optional limiter of the token, profile and revocation routes,
        keyed by route; a request over the limit gets status 429, ``rate_limited`` and a
        ``Retry-After`` header.
    :param options: :class:`~keyloom_core.testing.emulator.EmulatorServer`'s (``host``,
        ``port``, ``consent``, ``clock``, ``faults``...), and those :meth:`option_names`
        lists (the class's declared options). ``faults`` defaults to an idle
        :class:`~keyloom_core.testing.emulator.FaultInjector`, so tests can queue faults.
    """

    #: The provider this server fakes; every subclass sets it.
    spec: ClassVar[ProviderSpec]
    #: The signed-in user, as the default :meth:`profile` answers it.
    user: ClassVar[Mapping[str, str]] = {
        "sub": "1001",
        "name": "Emulated User",
        "email": "user@example.test",
    }
    #: The HTTP status of token errors (RFC 6749 §5.2: 400; a wrong client secret always
    #: gets 401 unless this is 200). Some providers answer errors with 200.
    error_status: int = 400
    #: Access token lifetime in seconds.
    access_ttl: ClassVar[float] = 3600.0
    #: The token endpoint's ``error`` for an unknown, expired or used refresh token.
    invalid_refresh_error: ClassVar[str] = "invalid_grant"
    #: The built-in client's id and secret (default: ``keyloom-{id}-emulator`` and that plus
    #: ``-secret``).
    builtin_client: ClassVar[tuple[str, str] | None] = None
    #: The grant of a token request without ``grant_type`` (``None``: refused).
    default_grant_type: ClassVar[str | None] = None
    #: The ``error`` of a token or revocation refusal, where it is not
    #: :meth:`token_error_code`'s default.
    token_error_codes: ClassVar[Mapping[EndpointFailure, str]] = {}
    #: The ``error_description`` of each refusal (default: the ``error`` in words).
    token_error_descriptions: ClassVar[Mapping[EndpointFailure, str]] = {}
    #: Whether the token and revocation routes read requests strictly: only
    #: ``application/x-www-form-urlencoded``, each parameter once, every required one present,
    #: client credentials only where ``spec.token_auth_method`` says.
    strict_requests: ClassVar[bool] = False
    #: The lifetime of client-credentials tokens (RFC 6749 §4.4; ``None``: no such grant).
    client_token_ttl: float | None = None
    #: The prefix of client-credentials token values.
    client_token_prefix: ClassVar[str] = ""
    #: The shortest PKCE code verifier accepted (RFC 7636: 43).
    min_verifier_length: int = 43
    #: Whether codes carry characters the client must percent-decode from the callback
    #: exactly once (:meth:`new_code`).
    codes_need_encoding: bool = False
    #: Whether revoking a live access token forgets the user's remembered consent.
    revoke_forgets_consent: bool = False
    #: Whether a refresh returns a new refresh token and kills the old one (RFC 6749 §6).
    rotate_refresh_tokens: bool = True
    #: Whether authorization requests must carry a PKCE challenge (an instance may change it).
    require_pkce: bool = True
    #: Where the consent page posts its answer.
    consent_path: ClassVar[str] = CONSENT_PATH
    #: Whether a user who already granted every requested scope skips the consent page.
    remember_consent: ClassVar[bool] = False
    #: Seconds an authorization request waits for the consent page's answer.
    consent_ttl: float = 600.0
    #: The built-in client's registered redirect URIs.
    default_redirect_uris: ClassVar[tuple[str, ...]] = (DEFAULT_CALLBACK,)
    #: Whether authorization requests must say ``response_type=code`` (else it is implied).
    require_response_type: ClassVar[bool] = True
    #: Whether the consent page lets the user untick requested scopes (else all or nothing).
    partial_consent: ClassVar[bool] = True
    #: Scopes the user cannot decline: locked on the consent page, always granted.
    required_scopes: ClassVar[frozenset[str]] = frozenset()
    #: Scopes the emulated user declines: withheld at once with ``consent="approve"``, and
    #: unticked on the consent page (never a :attr:`required_scopes` one).
    withheld_scopes = Setting[frozenset[str]](frozenset(), convert=lambda v: frozenset(_uris(v)))
    #: The consent page's text under each scope.
    scope_descriptions: ClassVar[Mapping[str, str]] = {}
    #: The ``error_description`` an authorization error's redirect carries, by ``error``
    #: (none: the redirect has no description).
    redirect_error_descriptions: ClassVar[Mapping[str, str]] = {}
    #: Refresh token lifetime in seconds.
    refresh_ttl: ClassVar[float] = 31_536_000.0
    #: The prefixes of access and refresh token values (e.g. ``("at_", "rt_")``).
    token_prefixes: ClassVar[tuple[str, str]] = ("", "")
    #: The revocation route's HTTP method; ``None``: ``spec.revoke_method`` (RFC 7009:
    #: ``POST``). :meth:`revoke` handles it.
    revoke_method: ClassVar[str | None] = None
    #: Whether an authorization request may leave out ``redirect_uri``: the client's first
    #: registered one is used then (RFC 6749 §3.1.2.3).
    redirect_uri_optional: ClassVar[bool] = False
    #: The attribute of a user that :meth:`user_key` reads.
    user_key_attribute: ClassVar[str] = "id"
    #: The :meth:`make_client` keyword that gets :meth:`for_client`'s *scopes* (the scopes a
    #: client was approved for, where the provider reviews them); ``None``: none does.
    client_scopes_option: ClassVar[str | None] = None
    #: The users who may sign in, by default (:meth:`user_key` names each; the first is
    #: :attr:`default_user`); none: only :attr:`user`.
    default_users: ClassVar[tuple[Any, ...]] = ()
    #: Boolean fields of the client type that :meth:`main` offers as switches
    #: (``expiring_tokens``: ``--expiring-tokens``), with their help.
    client_flags: ClassVar[Mapping[str, str]] = {}
    #: Whether the token route answers form-encoded unless the request's ``Accept`` names
    #: JSON (as some older OAuth 2.0 providers do); else always JSON.
    form_encoded_answers: ClassVar[bool] = False
    #: The ``error_description`` of the ``access_denied`` that a grant of no scope is
    #: (a user who unticked every scope); ``None``: such a grant is issued.
    no_scope_denial: ClassVar[str | None] = None
    #: Whether the revocation route is the provider's own API rather than RFC 7009's
    #: :meth:`revoke`: :meth:`revoke_by_api` answers it.
    revocation_api: ClassVar[bool] = False
    #: The ``error`` with which an authorization request whose redirect URI the client did
    #: not register is sent to the client's first registered one; ``None``: an error page.
    redirect_uri_mismatch_error: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        clients: Iterable[RegisteredClient] | None = None,
        rate_limit: SlidingWindowLimiter | None = None,
        users: Iterable[Any] | None = None,
        default_user: str | None = None,
        require_pkce: bool | None = None,
        **options: Any,
    ) -> None:
        """Register *clients* and *users*; nothing listens until started.

        *users* default to :attr:`default_users`, *default_user* (a :meth:`user_key`) to the
        first, *require_pkce* to the class's. The other keywords are
        :class:`~keyloom_core.testing.emulator.EmulatorServer`'s or name one of
        :meth:`option_names` (a :class:`Setting`, an annotated attribute with a default, or a
        :class:`DeprecatedAlias`, which warns), set after :meth:`setup`.

        :raises TypeError: for any other keyword, naming the valid ones (and the closest).
        """
        declared = self.option_names()
        named = {k: options.pop(k) for k in list(options) if k in declared}
        if unknown := sorted(set(options) - _SERVER_KEYWORDS):
            raise TypeError(self._unknown_options(unknown))
        options.setdefault("faults", FaultInjector())
        super().__init__(**options)
        chosen = self.default_clients() if clients is None else clients
        self.clients: dict[str, RegisteredClient] = {c.client_id: c for c in chosen}
        self.rate_limit = rate_limit
        chosen_users = self.default_users if users is None else users
        self.users: dict[str, Any] = {self.user_key(user): user for user in chosen_users}
        self.default_user = default_user or next(iter(self.users), self.user["sub"])
        if self.users and self.default_user not in self.users:
            raise ValueError(f"unknown default user {self.default_user!r}")
        if require_pkce is not None:
            self.require_pkce = require_pkce
        access_prefix, refresh_prefix = self.token_prefixes
        self.book = GrantBook(
            clock=self.clock,
            access_ttl=self.access_ttl,
            refresh_ttl=self.refresh_ttl,
            access_prefix=access_prefix,
            refresh_prefix=refresh_prefix,
            code_factory=self.new_code,
        )
        self.pending = PendingRequests[PendingAuthorization](self.clock)
        self.granted: dict[tuple[str, str], frozenset[str]] = {}
        spec = self.spec
        self.routes = {
            "authorize": _path(spec.authorize_url),
            "token": _path(spec.token_url),
            "profile": _path(spec.profile_url),
            "revoke": _path(spec.revoke_url),
        }
        self.setup()
        for name, setting in _settings(type(self)).items():
            if setting.at and name not in named:
                setattr(self, name, setting.default)
        for name, value in named.items():
            setattr(self, name, value)

    def setup(self) -> None:
        """Build what the options reach (a :class:`Setting`'s ``at``); called before they are set.

        The clients, users, :attr:`book` and :attr:`clock` exist by then. Nothing here.
        """

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The constructor's keywords besides its own and ``EmulatorServer``'s.

        Each :class:`Setting` and :class:`DeprecatedAlias` of the class, and each attribute
        annotated (not ``ClassVar``) and given a default in a class body.
        """
        names = {n for n, v in inspect.getmembers(cls) if isinstance(v, Setting | DeprecatedAlias)}
        for klass in cls.__mro__:
            for name, annotation in inspect.get_annotations(klass).items():
                declared = name in vars(klass) and not name.startswith("_")
                if declared and not str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                    names.add(name)
        return frozenset(names)

    @classmethod
    def _unknown_options(cls, unknown: Sequence[str]) -> str:
        own = set(inspect.signature(AuthorizationServer.__init__).parameters) - {"self", "options"}
        names = cls.option_names() | _SERVER_KEYWORDS | own
        old = {
            n for n in names if isinstance(inspect.getattr_static(cls, n, None), DeprecatedAlias)
        }
        valid = sorted(names - old)
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        given = ", ".join(repr(name) for name in unknown)
        return f"{cls.__name__}() got unknown options {given}{hint}; valid: {', '.join(valid)}"

    # -- the conformance convention and the clients ---------------------------------------

    @classmethod
    def default_client_id(cls) -> str:
        """The built-in client's id: :attr:`builtin_client`'s, or ``keyloom-{id}-emulator``."""
        return cls.builtin_client[0] if cls.builtin_client else f"keyloom-{cls.spec.id}-emulator"

    @classmethod
    def default_client_secret(cls) -> str:
        """The built-in client's secret (a local test value)."""
        return cls.builtin_client[1] if cls.builtin_client else f"{cls.default_client_id()}-secret"

    @classmethod
    def make_client(
        cls, client_id: str, client_secret: str, redirect_uris: Sequence[str]
    ) -> RegisteredClient:
        """A :class:`Client`; a subclass with its own client type builds it here.

        ``make_client = client_factory(MyClient)`` does for an attrs subclass of
        :class:`Client` (:func:`client_factory`).
        """
        return Client(client_id=client_id, client_secret=client_secret, redirect_uris=redirect_uris)

    @classmethod
    def default_clients(cls) -> list[RegisteredClient]:
        """The built-in client, with :attr:`default_redirect_uris` registered."""
        uris = list(cls.default_redirect_uris)
        return [cls.make_client(cls.default_client_id(), cls.default_client_secret(), uris)]

    @classmethod
    def for_client(
        cls,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        scopes: Iterable[str],
        **options: Any,
    ) -> Self:
        """A server where one client is registered (any scope may be requested).

        The *options* :meth:`make_client` names go to it, the others to the constructor;
        *scopes* go to it as :attr:`client_scopes_option` (if set).
        """
        names = set(inspect.signature(cls.make_client).parameters)
        own = {k: options.pop(k) for k in list(options) if k in names}
        if cls.client_scopes_option is not None:
            own.setdefault(cls.client_scopes_option, scopes)
        client = cls.make_client(client_id, client_secret, redirect_uris, **own)
        return cls(clients=[client], **options)

    def expected_profile(self, client_id: str, scopes: Iterable[str]) -> Mapping[str, Any]:
        """The :attr:`user` as the core normalises the default :meth:`profile`."""
        del client_id
        email = self.user.get("email") if "email" in set(scopes) else None
        return {
            "id": self.user["sub"],
            "name": self.user.get("name"),
            "email": email,
            "image": self.avatar_url(self.user),
        }

    def avatar_url(self, user: Any) -> str:
        """Absolute URL of *user*'s avatar: the kit's one, served by the server, for everyone."""
        del user
        return self.url_for(AVATAR_PATH)

    @property
    def authorize_url(self) -> str:
        """Absolute URL of the authorization route (only while started)."""
        return self.url_for(self.routes["authorize"] or "/")

    @property
    def token_url(self) -> str:
        """Absolute URL of the token route (only while started)."""
        return self.url_for(self.routes["token"] or "/")

    @property
    def profile_url(self) -> str:
        """Absolute URL of the profile route (only while started)."""
        return self.url_for(self.routes["profile"] or "/")

    def revocation_url(self, client_id: str | None = None) -> str:
        """Absolute URL of the revocation route (only while started).

        A ``{client_id}`` segment of the spec's ``revoke_url`` becomes *client_id*
        (URL-quoted; by default the first registered client's).
        """
        client_id = self.default_app.client_id if client_id is None else client_id
        path = (self.routes["revoke"] or "/").replace("{client_id}", quote(client_id, safe=""))
        return self.url_for(path)

    @property
    def default_app(self) -> Any:
        """The first registered client (typed ``Any``: a subclass's client type)."""
        return next(iter(self.clients.values()))

    # -- quirks a subclass may override ---------------------------------------------------

    def requested_scopes(self, raw: str) -> tuple[str, ...]:
        """The scopes of the ``scope`` parameter, split on ``spec.scope_separator``, each once."""
        return tuple(dict.fromkeys(s for s in raw.split(self.spec.scope_separator) if s))

    @classmethod
    def narrowest_scopes(cls, scopes: Iterable[str]) -> tuple[str, ...]:
        """*scopes* as a provider that keeps only the wider of nested scopes grants them.

        Each once, in order, only known ones (``spec.known_scopes``, unless empty) and
        without those another one includes (``spec.implied_scopes``). For a provider like
        GitHub, whose :meth:`requested_scopes` returns these.
        """
        known = cls.spec.known_scopes
        wanted = list(dict.fromkeys(s for s in scopes if not known or s in known))
        implied = {s for scope in wanted for s in cls.spec.implied_scopes.get(scope, ())}
        return tuple(s for s in wanted if s not in implied)

    def check_authorization(self, params: Mapping[str, str]) -> str | None:
        """Return an RFC 6749 §4.1.2.1 error code for an approved request, or ``None``.

        ``response_type=code`` (implied if absent, unless :attr:`require_response_type`); an
        S256 PKCE challenge, if sent (required unless :attr:`require_pkce` is false).
        """
        challenge = params.get("code_challenge")
        if challenge and params.get("code_challenge_method") != "S256":
            return "invalid_request"
        implied = "" if self.require_response_type else "code"
        if (self.require_pkce and not challenge) or params.get("response_type", implied) != "code":
            return "invalid_request"
        return None

    def profile(self, token: AccessToken) -> Mapping[str, Any]:
        """The profile route's JSON for *token*: OpenID-style claims, ``email`` if granted."""
        answer: dict[str, Any] = {
            "sub": self.user["sub"],
            "name": self.user.get("name"),
            "picture": self.url_for(AVATAR_PATH),
        }
        if "email" in token.scopes and "email" in self.user:
            answer |= {"email": self.user["email"], "email_verified": True}
        return answer

    def new_code(self) -> str:
        """A new authorization code value: 32 random URL-safe bytes.

        With :attr:`codes_need_encoding`, it also has ``*``, ``!``, ``~`` and a ``%xx``
        sequence that a second decoding would change.
        """
        base = secrets.token_urlsafe(32)
        if not self.codes_need_encoding:
            return base
        return f"{base[:16]}*{base[16:32]}!{secrets.token_hex(2)}~%{secrets.token_hex(1)}"

    def issue(self, client: RegisteredClient, code: AuthorizationCode) -> TokenPair:
        """The token pair for an exchanged *code*."""
        return self.book.issue_tokens(
            client_id=client.client_id, user_id=code.user_id, scopes=code.scopes
        )

    def refresh(self, client: RegisteredClient, refresh_token: str) -> TokenPair | TokenFailure:
        """The new pair for *refresh_token* (RFC 6749 §6), or why there is none.

        The refresh token rotates unless :attr:`rotate_refresh_tokens` is false.
        """
        return self.book.refresh(
            refresh_token, client_id=client.client_id, rotate=self.rotate_refresh_tokens
        )

    def token_answer(self, client: RegisteredClient, pair: TokenPair) -> Mapping[str, Any]:
        """The token endpoint's JSON for a new *pair* (RFC 6749 §5.1, in the spec's fields)."""
        del client
        now = self.clock()
        answer: dict[str, Any] = {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in(now),
            "refresh_token": pair.refresh_token,
            "scope": self.spec.scope_separator.join(pair.scopes),
        }
        if (refresh_in := pair.refresh_expires_in(now)) is not None:
            answer[self.spec.refresh_expires_field] = refresh_in
        if self.spec.account_id_field:
            answer[self.spec.account_id_field] = pair.user_id
        return answer

    def error_body(self, error: str, description: str = "") -> Mapping[str, Any]:
        """An error's JSON (RFC 6749 §5.2 shape), on every route."""
        return {"error": error, "error_description": description or error.replace("_", " ")}

    def answer(
        self, request: web.Request, body: Mapping[str, Any], status: int = 200
    ) -> web.Response:
        """The token endpoint's answer: *body* as JSON, or a form (:attr:`form_encoded_answers`)."""
        headers = {"Cache-Control": "no-store"}
        if not self.form_encoded_answers or "json" in request.headers.get("Accept", ""):
            return web.json_response(dict(body), status=status, headers=headers)
        text = urlencode({k: "" if v is None else str(v) for k, v in body.items()})
        return web.Response(text=text, status=status, content_type=_FORM_TYPE, headers=headers)

    def error_answer(self, status: int, error: str, description: str = "") -> web.Response:
        """An error of the profile or revocation route: :meth:`error_body` as JSON."""
        return web.json_response(dict(self.error_body(error, description)), status=status)

    # -- routes --------------------------------------------------------------------------

    def is_api_path(self, path: str) -> bool:
        """Whether *path* is the token, profile or revocation route or in :attr:`api_paths`.

        Faults and the rate limit apply there. A ``{name}`` segment of a route (a spec URL
        such as ``/apps/{client_id}/token``) matches any value.
        """
        routes = [p for k, p in self.routes.items() if p and k != "authorize"]
        return super().is_api_path(path) or any(_matches(p, path) for p in routes)

    def add_routes(self, app: web.Application) -> None:
        """The spec's routes, the consent form's answer and the avatar."""
        revoke_method = self.revoke_method or self.spec.revoke_method
        add: dict[str, tuple[Callable[[str, Handler], object], Handler]] = {
            "authorize": (app.router.add_get, self.authorize),
            "token": (app.router.add_post, self.token),
            "profile": (app.router.add_get, self.userinfo),
            "revoke": (functools.partial(app.router.add_route, revoke_method), self.revoke),
        }
        for name, path in self.routes.items():
            if path is not None:
                method, handler = add[name]
                method(path, self.limited(handler))
        app.router.add_post(self.consent_path, self.consent_answer)
        app.router.add_get(AVATAR_PATH, self.avatar)

    def limited(self, handler: Handler) -> Handler:
        """*handler* behind :attr:`rate_limit` (when there is one)."""

        async def limited(request: web.Request) -> web.StreamResponse:
            wait = None if self.rate_limit is None else self.rate_limit.hit(request.path)
            if wait is not None and self.is_api_path(request.path):
                response = self.error_answer(429, "rate_limited")
                response.headers["Retry-After"] = str(max(1, round(wait)))
                return response
            return await handler(request)

        return limited

    def redirect_uri(self, client: RegisteredClient, params: Mapping[str, str]) -> str:
        """Where an authorization request's answer goes: its ``redirect_uri``.

        Without one, the client's first registered URI if :attr:`redirect_uri_optional`.
        """
        given = params.get("redirect_uri", "")
        if given or not self.redirect_uri_optional:
            return given
        return next(iter(getattr(client, "redirect_uris", ())), "")

    def refused(self, params: Mapping[str, str]) -> web.Response | None:
        """An error page, never a redirect, for an unknown client or redirect URI.

        With :attr:`redirect_uri_mismatch_error`, an unregistered redirect URI is instead
        sent back to the client's first registered one with that error.
        """
        client = self.clients.get(params.get(self.spec.client_id_param, ""))
        if client is not None and client.accepts_redirect_uri(self.redirect_uri(client, params)):
            return None
        registered = next(iter(getattr(client, "redirect_uris", ())), None)
        if self.redirect_uri_mismatch_error and registered is not None:
            error = {"error": self.redirect_uri_mismatch_error, **self._state(params)}
            return self.back(registered, error)
        param = self.spec.client_id_param if client is None else "redirect_uri"
        page = message_page(
            title="Error", heading=f"Invalid {param}", attributes={"error-param": param}
        )
        return html_response(page, status=400)

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """Answer as :attr:`consent` says, or show the consent page."""
        params = dict(request.query)
        if (refused := self.refused(params)) is not None:
            return refused
        client_id = params[self.spec.client_id_param]
        pending = PendingAuthorization(
            request_id=secrets.token_urlsafe(24),
            client_id=client_id,
            redirect_uri=self.redirect_uri(self.clients[client_id], params),
            scopes=self.requested_scopes(params.get("scope", "")),
            params=params,
            expires_at=self.clock() + self.consent_ttl,
        )
        return self.decide(pending)

    def decide(self, pending: PendingAuthorization) -> web.StreamResponse:
        """The user's answer to *pending* as :attr:`consent` says, or the consent page."""
        client_id = pending.client_id
        if self.consent == "deny":
            return self.redirect_error(pending, "access_denied")
        if self.consent == "approve":
            required, withheld = self.required_scopes, self.withheld_scopes
            kept = [s for s in pending.scopes if s in required or s not in withheld]
            return self.grant(pending, self.default_user, kept)
        before = self.granted.get((client_id, self.default_user), frozenset())
        remembered = self.remembers_consent(pending) and before.issuperset(pending.scopes)
        if remembered and (client_id, self.default_user) in self.granted:
            return self.grant(pending, self.default_user, pending.scopes)
        self.pending.add(pending)
        return html_response(self.consent_html(pending))

    def remembers_consent(self, pending: PendingAuthorization) -> bool:
        """Whether *pending* may skip the consent page for scopes granted before."""
        del pending
        return self.remember_consent

    def consent_page_options(self, pending: PendingAuthorization) -> Mapping[str, Any]:
        """More keywords of the consent page (its title, notice, labels...; none here)."""
        del pending
        return {}

    def consent_html(self, pending: PendingAuthorization) -> str:
        """The consent page for *pending* (its scopes ticked, the user picker if any)."""
        client = self.clients[pending.client_id]
        return consent_page(
            app_name=getattr(client, "name", pending.client_id),
            action=self.consent_path,
            scopes=[
                ScopeOption(
                    s,
                    description=self.scope_descriptions.get(s, ""),
                    required=not self.partial_consent or s in self.required_scopes,
                    checked=s not in self.withheld_scopes,
                )
                for s in pending.scopes
            ],
            hidden={"request_id": pending.request_id},
            provider_name=self.spec.name,
            users=self.user_options(),
            selected_user=self.default_user,
            **self.consent_page_options(pending),
        )

    def add_client(self, client: RegisteredClient) -> None:
        """Register (or replace) *client*."""
        self.clients[client.client_id] = client

    def add_user(self, user: Any) -> None:
        """Add (or replace) *user* in :attr:`users` (known by its :meth:`user_key`)."""
        self.users[self.user_key(user)] = user

    def user_options(self) -> list[UserOption]:
        """The consent page's user picker: :attr:`users` (none: :attr:`user` signs in)."""
        return [UserOption(key, self.user_label(user)) for key, user in self.users.items()]

    def knows_user(self, user_id: str) -> bool:
        """Whether *user_id* may sign in (the consent page's picker is checked against it)."""
        return user_id in self.users if self.users else user_id == self.default_user

    @classmethod
    def user_key(cls, user: Any) -> str:
        """The id :attr:`users` knows *user* by, and codes and tokens record.

        Its :attr:`user_key_attribute` (``id``), or the user itself if it has none.
        """
        return str(getattr(user, cls.user_key_attribute, user))

    @classmethod
    def user_label(cls, user: Any) -> str:
        """How the consent page's picker shows *user*: its ``name``, else its :meth:`user_key`."""
        return str(getattr(user, "name", None) or cls.user_key(user))

    def consented_scopes(
        self, pending: PendingAuthorization, form: Mapping[str, Any]
    ) -> tuple[str, ...]:
        """The scopes the answer grants: those left ticked (all, unless :attr:`partial_consent`)."""
        ticked = set(form.get("scope", ())) if self.partial_consent else set(pending.scopes)
        return tuple(s for s in pending.scopes if s in ticked or s in self.required_scopes)

    async def consent_answer(self, request: web.Request) -> web.StreamResponse:
        """The consent page's answer: ``request_id``, ``decision``, ticked scopes, ``user``."""
        form = await request.post()
        request_id = form.get("request_id")
        pending = self.pending.take(request_id) if isinstance(request_id, str) else None
        if pending is None:
            text = "This authorization request expired or was already answered."
            return html_response(message_page(title="Error", heading=text), status=400)
        if form.get("decision") != "approve":
            return self.redirect_error(pending, "access_denied")
        user = str(form.get("user") or self.default_user)
        if not self.knows_user(user):
            return html_response(message_page(title="Error", heading="Unknown user"), status=400)
        fields = {"scope": [str(v) for v in form.getall("scope", [])]}
        return self.grant(pending, user, self.consented_scopes(pending, fields))

    def back(self, uri: str, params: Mapping[str, str]) -> web.Response:
        """A 302 to *uri* with *params* added to its query."""
        separator = "&" if "?" in uri else "?"
        location = f"{uri}{separator}{urlencode(params, quote_via=quote)}"
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})

    def redirect_error(
        self, pending: PendingAuthorization, error: str, description: str | None = None
    ) -> web.Response:
        """Send the user back with *error* (RFC 6749 §4.1.2.1) and the request's ``state``.

        The ``error_description`` is *description*, else :attr:`redirect_error_descriptions`'
        (none if empty).
        """
        if description is None:
            description = self.redirect_error_descriptions.get(error, "")
        described = {"error_description": description} if description else {}
        return self.back(
            pending.redirect_uri, {"error": error, **described, **self._state(pending.params)}
        )

    @staticmethod
    def _state(params: Mapping[str, str]) -> dict[str, str]:
        return {"state": params["state"]} if "state" in params else {}

    def grant(
        self, pending: PendingAuthorization, user_id: str, scopes: Sequence[str]
    ) -> web.Response:
        """Issue a code for *user_id* and *scopes* and send the user back (RFC 6749 §4.1.2).

        With :attr:`no_scope_denial`, granting no scope is a denial instead.
        """
        if not scopes and self.no_scope_denial is not None:
            return self.redirect_error(pending, "access_denied", self.no_scope_denial)
        if (error := self.check_authorization(pending.params)) is not None:
            return self.redirect_error(pending, error)
        logger.info("authorization granted to client %s", pending.client_id)
        key = (pending.client_id, user_id)
        self.granted[key] = self.granted.get(key, frozenset()) | set(scopes)
        challenge = pending.params.get("code_challenge") or None
        code = self.book.issue_code(
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            user_id=user_id,
            scopes=scopes,
            code_challenge=challenge,
            code_challenge_method="S256" if challenge else None,
        )
        return self.back(pending.redirect_uri, self.callback_params(pending, code))

    def callback_params(
        self, pending: PendingAuthorization, code: AuthorizationCode
    ) -> dict[str, str]:
        """The query a granted request's redirect carries: ``code`` and ``state``."""
        return {"code": code.code, **self._state(pending.params)}

    @staticmethod
    def basic_credentials(request: web.Request) -> tuple[str, str] | None:
        """The id and secret of the request's ``Authorization: Basic`` header, if any.

        Both are form-urlencoded before the base64 (RFC 6749 §2.3.1), so they are decoded.
        """
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, colon, secret = decoded.partition(":")
        if scheme.lower() != "basic" or not colon:
            return None
        return unquote_plus(client_id), unquote_plus(secret)

    def client_of(self, request: web.Request, form: Mapping[str, str]) -> RegisteredClient | None:
        """The authenticated client, as ``spec.token_auth_method`` says, or ``None``."""
        method, basic = self.spec.token_auth_method, self.basic_credentials(request)
        client_id = form.get(self.spec.client_id_param, "")
        secret: str | None = form.get("client_secret", "")
        basic_wins = basic and method != "none" and not self.strict_requests  # RFC 6749 §2.3.1
        if method == "client_secret_basic" or basic_wins:
            client_id, secret = basic or ("", "")
        elif method == "none":
            secret = None
        client = self.clients.get(client_id)
        if client is None or (secret is not None and not client.secret_matches(secret)):
            return None
        return client

    def authenticate(
        self, request: web.Request, form: Mapping[str, str]
    ) -> RegisteredClient | RequestFailure:
        """:meth:`client_of`, or why there is none (if strict, a missing id or secret)."""
        if self.strict_requests and self.spec.token_auth_method == "client_secret_post":
            if not form.get(self.spec.client_id_param):
                return RequestFailure.MALFORMED
            if not form.get("client_secret"):
                return RequestFailure.SECRET_MISSING
        return self.client_of(request, form) or RequestFailure.INVALID_CLIENT

    async def read_form(self, request: web.Request) -> dict[str, str] | RequestFailure:
        """The request's form (if :attr:`strict_requests`, only a form, each parameter once)."""
        if self.strict_requests and request.content_type != _FORM_TYPE:
            return RequestFailure.CONTENT_TYPE
        form = await request.post()
        if self.strict_requests and any(
            len(values := form.getall(key)) != 1 or not isinstance(values[0], str) for key in form
        ):
            return RequestFailure.MALFORMED
        return {k: str(v) for k, v in form.items()}

    async def client_request(
        self, request: web.Request
    ) -> tuple[RegisteredClient, dict[str, str]] | RequestFailure:
        """The authenticated client and form of a token or revocation request, or why not."""
        form = await self.read_form(request)
        if isinstance(form, RequestFailure):
            return form
        client = self.authenticate(request, form)
        return client if isinstance(client, RequestFailure) else (client, form)

    async def token(self, request: web.Request) -> web.StreamResponse:
        """RFC 6749 §4.1.3, §4.4 and §6: the code, client-credentials and refresh grants."""
        found = await self.client_request(request)
        if isinstance(found, RequestFailure):
            return self.token_error(request, found)
        client, form = found
        grant = form.get("grant_type") or self.default_grant_type or ""
        grants = {
            "authorization_code": self.exchange_code,
            "refresh_token": self.refresh_grant,
            "client_credentials": self.client_credentials,
        }
        handler = grants.get(grant)
        if handler is None or (grant == "client_credentials" and self.client_token_ttl is None):
            missing = self.strict_requests and not grant
            failure = RequestFailure.MALFORMED if missing else RequestFailure.UNSUPPORTED_GRANT_TYPE
            return self.token_error(request, failure)
        answer = handler(client, form)
        if isinstance(answer, enum.Enum):
            return self.token_error(request, answer)
        return self.answer(request, answer)

    def exchange_code(
        self, client: RegisteredClient, form: Mapping[str, str]
    ) -> Mapping[str, Any] | EndpointFailure:
        """The ``authorization_code`` grant's answer (RFC 6749 §4.1.3), or why there is none."""
        where = {"client_id": client.client_id, "redirect_uri": form.get("redirect_uri", "")}
        if self.strict_requests and not (form.get("code") and where["redirect_uri"]):
            return RequestFailure.MALFORMED
        code = self.book.inspect_code(form.get("code", ""), **where)
        if not isinstance(code, AuthorizationCode):
            return code
        if not self.verifier_ok(code, form.get("code_verifier", "")):
            return RequestFailure.INVALID_VERIFIER
        if not self.knows_user(code.user_id or ""):
            return RequestFailure.UNKNOWN_USER
        self.book.consume_code(code.code, **where)
        return self.token_answer(client, self.issue(client, code))

    def refresh_grant(
        self, client: RegisteredClient, form: Mapping[str, str]
    ) -> Mapping[str, Any] | EndpointFailure:
        """The ``refresh_token`` grant's answer (RFC 6749 §6), or why there is none."""
        refresh_token = form.get("refresh_token", "")
        if self.strict_requests and not refresh_token:
            return RequestFailure.MALFORMED
        pair = self.refresh(client, refresh_token)
        return pair if isinstance(pair, TokenFailure) else self.token_answer(client, pair)

    def client_credentials(
        self, client: RegisteredClient, form: Mapping[str, str]
    ) -> Mapping[str, Any]:
        """A client-credentials token (RFC 6749 §4.4), living :attr:`client_token_ttl`."""
        del form
        pair = self.book.issue_tokens(
            client_id=client.client_id,
            user_id=None,
            scopes=(),
            refresh=False,
            access_ttl=self.client_token_ttl,
            access_prefix=self.client_token_prefix,
        )
        expires_in = pair.expires_in(self.clock())
        return {"access_token": pair.access_token, "expires_in": expires_in, "token_type": "Bearer"}

    @property
    def pkce_encodings(self) -> tuple[PkceEncoding, ...]:
        """The challenge encodings the token route accepts: ``spec.pkce_encoding``."""
        return (self.spec.pkce_encoding,)

    def verifier_ok(self, code: AuthorizationCode, verifier: str) -> bool:
        """Whether *verifier* is well formed and matches *code*'s S256 challenge, if it has one."""
        if code.code_challenge is None:
            return True
        if not (
            self.min_verifier_length <= len(verifier) <= 128 and _VERIFIER_CHARS.fullmatch(verifier)
        ):
            return False
        digest = hashlib.sha256(verifier.encode()).digest()
        encoded = {"hex": digest.hex(), "base64url": base64.urlsafe_b64encode(digest).decode()}
        expected = code.code_challenge.encode()
        return any(
            hmac.compare_digest(encoded[e].rstrip("=").encode(), expected)
            for e in self.pkce_encodings
        )

    def token_error_code(self, failure: EndpointFailure) -> str:
        """The ``error`` for *failure*: :attr:`token_error_codes`, else RFC 6749 §5.2's.

        A code's failures, a bad verifier or an unknown user give :attr:`invalid_grant_error`,
        a refresh token's :attr:`invalid_refresh_error`, a client's :attr:`invalid_client_error`.
        """
        if failure in self.token_error_codes:
            return self.token_error_codes[failure]
        if isinstance(failure, TokenFailure):
            return self.invalid_refresh_error
        grant = (RequestFailure.INVALID_VERIFIER, RequestFailure.UNKNOWN_USER)
        if isinstance(failure, CodeFailure) or failure in grant:
            return self.invalid_grant_error
        if failure is RequestFailure.INVALID_CLIENT:
            return self.invalid_client_error
        if failure is RequestFailure.UNSUPPORTED_GRANT_TYPE:
            return "unsupported_grant_type"
        return "invalid_request"

    def token_error_status(self, failure: EndpointFailure) -> int:
        """The HTTP status of *failure*: :attr:`error_status`, 401 for a client's (unless 200)."""
        if self.error_status == 200 or failure is not RequestFailure.INVALID_CLIENT:
            return self.error_status
        return 401

    def token_error(self, request: web.Request, failure: EndpointFailure) -> web.Response:
        """The token or revocation route's answer to *failure*, through :meth:`answer`."""
        description = self.token_error_descriptions.get(failure, "")
        body = self.error_body(self.token_error_code(failure), description)
        return self.answer(request, body, self.token_error_status(failure))

    def authorized(self, request: web.Request) -> AccessToken | TokenFailure:
        """The live access token of the ``Authorization: Bearer`` header, or why there is none.

        A token whose user may not sign in (:meth:`knows_user`) is ``UNKNOWN``.
        """
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return TokenFailure.UNKNOWN
        record = self.book.lookup_access(value.strip())
        if isinstance(record, AccessToken) and not self.knows_user(record.user_id or ""):
            return TokenFailure.UNKNOWN
        return record

    async def userinfo(self, request: web.Request) -> web.StreamResponse:
        """The profile route: :meth:`profile` of the bearer token, or 401 ``invalid_token``."""
        record = self.authorized(request)
        if isinstance(record, TokenFailure):
            return self.error_answer(401, "invalid_token")
        return web.json_response(dict(self.profile(record)), headers=self.profile_headers(record))

    def profile_headers(self, token: AccessToken) -> Mapping[str, str]:
        """Extra headers of the profile route's answer for *token* (none)."""
        del token
        return {}

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """RFC 7009: revoke the token's grant; an unknown token is not an error.

        A token of another client is refused; with :attr:`revoke_forgets_consent`, revoking a
        live access token also forgets its user's consent to the client.
        """
        if self.revocation_api:
            return await self.revoke_by_api(request)
        found = await self.client_request(request)
        if isinstance(found, RequestFailure):
            return self.token_error(request, found)
        client, form = found
        token = form.get("token", "")
        if self.strict_requests and not token:
            return self.token_error(request, RequestFailure.MALFORMED)
        live = self.book.lookup_access(token)
        if self.book.revoke(token, client_id=client.client_id) is TokenFailure.CLIENT_MISMATCH:
            return self.token_error(request, RequestFailure.FOREIGN_TOKEN)
        if self.revoke_forgets_consent and isinstance(live, AccessToken) and live.user_id:
            self.granted.pop((client.client_id, live.user_id), None)
        return self.answer(request, {})

    async def revoke_by_api(self, request: web.Request) -> web.StreamResponse:
        """Revoke an access token as the spec declares its own revocation API.

        The body is :meth:`revocation_body`'s, the client :meth:`revoking_client`'s: 204 when
        revoked, 401 for a client that is not authenticated, 404 for a token that is not a
        live access token of the client (with :attr:`revoke_forgets_consent`, the user's
        consent is forgotten too).
        """
        body = await self.revocation_body(request)
        client = self.revoking_client(request, body)
        if client is None:
            return self.error_answer(401, "invalid_client", "Requires authentication")
        found = self.book.lookup_access(body.get(self.spec.revoke_token_param, ""))
        if isinstance(found, TokenFailure) or found.client_id != client.client_id:
            return self.error_answer(404, "invalid_token", "Not Found")
        self.book.revoke(found.token, client_id=client.client_id)
        if self.revoke_forgets_consent and found.user_id:
            self.granted.pop((client.client_id, found.user_id), None)
        return web.Response(status=204)

    async def revocation_body(self, request: web.Request) -> dict[str, str]:
        """The revocation request's body as ``spec.revoke_encoding`` says: JSON or a form.

        Only its string values; a body that is not one (malformed JSON, another content
        type) is empty, so the token in ``spec.revoke_token_param`` is missing.
        """
        if self.spec.revoke_encoding == "form":
            form = await request.post() if request.content_type == _FORM_TYPE else {}
            return {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            body = await request.json() if request.content_type == "application/json" else {}
        except (ValueError, RecursionError):  # not JSON (or not UTF-8, or too deep)
            body = {}
        if not isinstance(body, dict):
            return {}
        return {k: v for k, v in body.items() if isinstance(v, str)}

    def revoking_client(
        self, request: web.Request, body: Mapping[str, str]
    ) -> RegisteredClient | None:
        """The client authenticated as ``spec.revoke_auth_method`` says, or ``None``.

        ``None`` also if the route has a ``{client_id}`` segment naming another client.
        """
        method = self.spec.revoke_auth_method or self.spec.token_auth_method
        if method == "client_secret_basic":
            client_id, secret = self.basic_credentials(request) or ("", "")
        else:
            client_id = body.get(self.spec.client_id_param, "")
            secret = body.get("client_secret", "")
        client = self.clients.get(client_id)
        if client is None or (method != "none" and not client.secret_matches(secret)):
            return None
        in_path = request.match_info.get("client_id", client_id)
        return client if in_path == client_id else None

    async def avatar(self, request: web.Request) -> web.StreamResponse:
        """A one-colour SVG avatar."""
        del request
        return web.Response(text=_AVATAR, content_type="image/svg+xml")

    # -- command line --------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the ``flag`` of each :class:`Setting` to :meth:`main`'s options.

        And a switch for each of :attr:`client_flags`. A subclass with options of its own
        adds them after calling this.
        """
        for setting in _settings(cls).values():
            if setting.flag:
                setting.add_argument(parser)
        for name, help_text in cls.client_flags.items():
            flag = "--" + name.replace("_", "-")
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)

    @classmethod
    def client_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Keywords for :meth:`make_client` from the options: each of :attr:`client_flags`."""
        return {name: getattr(args, name) for name in cls.client_flags}

    @classmethod
    def server_options(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Constructor keywords from the options: each :class:`Setting` with a ``flag``."""
        return {n: getattr(args, n) for n, s in _settings(cls).items() if s.flag and n in args}

    def describe(self) -> list[str]:
        """The lines :meth:`main` prints under the URL: the routes, the redirect URIs."""
        lines = [f"  authorize:  {self.authorize_url}", f"  token:      {self.token_url}"]
        if self.routes["revoke"]:
            lines.append(f"  revoke:     {self.revocation_url()}")
        if self.routes["profile"]:
            lines.append(f"  user info:  {self.profile_url}")
        uris = getattr(self.default_app, "redirect_uris", ())
        return [*lines, *(f"  redirect URI:  {uri}" for uri in uris)]

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """Serve until Ctrl-C: ``python -m your_plugin.emulator [--consent form] ...``.

        The options are :func:`~keyloom_core.testing.emulator.add_emulator_arguments`'s (the
        client id option named after ``spec.client_id_param``), ``--redirect-uri`` and
        :meth:`add_arguments`'.
        """
        spec = cls.spec
        parser = argparse.ArgumentParser(prog=f"python -m {cls.__module__}")
        option = "--" + spec.client_id_param.replace("_", "-")
        add_emulator_arguments(
            parser,
            client_id=cls.default_client_id(),
            client_secret=cls.default_client_secret(),
            client_id_option=option,
        )
        default = getattr(cls.default_clients()[0], "redirect_uris", [DEFAULT_CALLBACK])
        parser.add_argument(
            "--redirect-uri",
            action="append",
            default=[],
            help=f"a registered redirect URI (repeatable; default {', '.join(default)})",
        )
        cls.add_arguments(parser)

        def build(args: argparse.Namespace) -> AuthorizationServer:
            uris = args.redirect_uri or default
            client = cls.make_client(
                args.client_id, args.client_secret, uris, **cls.client_options(args)
            )
            return cls(clients=[client], **cls.server_options(args), **emulator_options(args))

        def describe(server: AuthorizationServer) -> list[str]:
            return server.describe()

        return emulator_main(f"{spec.name} emulator", parser, build, describe, argv)
