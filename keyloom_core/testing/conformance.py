"""A ready conformance suite for Keyloom provider plugins, run against their own emulator.

In a plugin's tests, subclass :class:`ProviderConformance` (in a class named ``Test…``)::

    from keyloom_core.testing.conformance import ProviderConformance

    class TestGitHubConformance(ProviderConformance):
        provider_id = "github"

and pytest runs one test per check. Each check that talks to the provider starts the
plugin's own emulator on 127.0.0.1, found through ``ProviderSpec.emulator``
(``"module:Class"``) and built with the kit's convention
(:meth:`keyloom_core.testing.emulator.EmulatorServer.for_client`), then drives a real
:class:`keyloom_core.Keyloom` through it, playing the browser itself.

The checks (:data:`CHECKS`, in order):

``discoverable``
    The ``keyloom`` entry point of an installed distribution offers the provider, and its
    spec names an emulator that follows the convention.
``authorize_url``
    The authorization URL is the spec's, and carries the client id, ``response_type=code``,
    the requested scopes, the state, the redirect URI and the PKCE S256 challenge, and no
    secret.
``code_exchange``
    A consented login completes: tokens (with a future expiry, if any) and granted scopes.
``profile``
    The profile is normalised (``id``, ``name``, ``email``, ``image``) as the emulator
    expects (:meth:`~keyloom_core.testing.emulator.EmulatorServer.expected_profile`).
``refresh``
    Refresh returns working tokens and a dead refresh token raises
    :class:`~keyloom_core.ReauthenticationRequiredError` (or, with no refresh token,
    refresh asks to sign in again).
``revoke``
    Revocation makes the tokens useless, or the plugin says it cannot revoke.
``wrong_secret``
    A wrong client secret raises :class:`~keyloom_core.TokenExchangeError` carrying the
    provider's error code, without the secret in its text.
``access_denied``
    A user who refuses consent gives :class:`~keyloom_core.AccessDeniedError`.
``replayed_code``
    A code used twice is refused by the provider: :class:`~keyloom_core.TokenExchangeError`
    with its error code.
``scope_policy``
    Unknown scopes, and scopes outside ``approved_scopes``, are refused at configuration.
``provider_faults``
    A provider failure (HTTP 500, a body that is not JSON) is a typed
    :class:`~keyloom_core.ProviderError`, never a crash of the plugin.
``secrets_hidden``
    No client secret, code or token appears in logs or reprs during a login.

Without pytest, :func:`run_conformance` runs the checks and returns a
:class:`ConformanceReport`; each check is also a public ``async def check_…(session)``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlsplit

import anyio
import attrs

from .._config import define_keyloom
from .._keyloom import MemoryStateGuard
from .._plugins import PluginRegistry, RegisteredProvider
from ..errors import (
    AccessDeniedError,
    ConfigurationError,
    PluginError,
    ProviderError,
    ReauthenticationRequiredError,
    TokenExchangeError,
)
from ..models import LoginResult, LoginStart, Profile, Provider, ProviderSpec, parse_scopes
from ..pkce import s256_challenge
from .emulator import EmulatorServer

if TYPE_CHECKING:
    import aiohttp

    from .._keyloom import Keyloom

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "ConformanceError",
    "ConformanceReport",
    "ConformanceSession",
    "ConformanceTarget",
    "ProviderConformance",
    "check_access_denied",
    "check_authorize_url",
    "check_code_exchange",
    "check_discoverable",
    "check_profile",
    "check_provider_faults",
    "check_refresh",
    "check_replayed_code",
    "check_revoke",
    "check_scope_policy",
    "check_secrets_hidden",
    "check_wrong_secret",
    "load_emulator_class",
    "open_session",
    "run_check",
    "run_conformance",
]

#: The app's public URL during checks; the redirect URI is the Keyloom default under it.
BASE_URL = "https://conformance.keyloom.test"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
E = TypeVar("E", bound=Exception)


class ConformanceError(AssertionError):
    """A provider plugin does not behave as Keyloom expects.

    Attributes:
        check: The name of the failed check.
    """

    def __init__(self, message: str, *, check: str = "") -> None:
        super().__init__(message)
        self.check = check


def _fail(message: str) -> ConformanceError:
    return ConformanceError(message)


def _scope_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(sorted(parse_scopes(value)))


@attrs.frozen(kw_only=True)
class ConformanceTarget:
    """The provider under test and how to configure it.

    Attributes:
        provider_id: The provider's id, e.g. ``"github"``.
        scopes: Scopes to request; the spec's defaults when ``None``.
        client_id: The client id registered with the emulator.
        client_secret: The client secret; a random one when ``None``.
        plugin: A plugin object to register explicitly instead of discovering the installed
            entry points (the ``discoverable`` check still looks for an entry point).
        provider_options: Extra keyword arguments for the provider's factory.
        emulator_options: Extra keyword arguments for the emulator's ``for_client``.
        unknown_scope: A scope name the provider does not know.
        timeout: Seconds one check may take.
    """

    provider_id: str
    scopes: tuple[str, ...] | None = attrs.field(default=None, converter=_scope_tuple)
    client_id: str = "keyloom-conformance-client"
    client_secret: str | None = attrs.field(default=None, repr=False)
    plugin: object | None = attrs.field(default=None, eq=False, repr=False)
    provider_options: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    emulator_options: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    unknown_scope: str = "keyloom-conformance.unknown-scope"
    timeout: float = 30.0


def _find_provider(target: ConformanceTarget) -> tuple[PluginRegistry, RegisteredProvider]:
    if target.plugin is not None:
        registry = PluginRegistry([target.plugin], autoload=False)
    else:
        registry = PluginRegistry(autoload=True, strict=False)
    registered = registry.providers.get(target.provider_id)
    if registered is None:
        raise _fail(str(registry.missing(target.provider_id)))
    return registry, registered


def load_emulator_class(spec: ProviderSpec) -> type[EmulatorServer]:
    """Import the emulator named by ``spec.emulator`` (``"module:Class"``).

    :raises ConformanceError: no emulator is named, it cannot be imported, or it is not
        an :class:`EmulatorServer`.
    """
    if not spec.emulator:
        msg = f"{spec.name}: ProviderSpec.emulator is not set (expected 'module:Class')"
        raise _fail(msg)
    module_name, sep, attr = spec.emulator.partition(":")
    if not sep or not module_name or not attr:
        raise _fail(f"{spec.name}: ProviderSpec.emulator {spec.emulator!r} is not 'module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        msg = f"{spec.name}: cannot import the emulator {spec.emulator!r}: {exc}"
        raise _fail(msg) from exc
    if not (isinstance(cls, type) and issubclass(cls, EmulatorServer)):
        raise _fail(f"{spec.name}: {spec.emulator!r} is not an EmulatorServer subclass")
    return cls


@attrs.define
class ConformanceSession:
    """Everything one check works with: the plugin, a running emulator and an open Keyloom.

    Attributes:
        target: What is tested.
        registered: The provider as its plugin registered it.
        client_secret: The secret registered with the emulator.
        redirect_uri: The redirect URI registered with the emulator.
        signing_secret: Keyloom's signing secret.
        emulator: The running emulator (``None`` for checks that need none).
        browser: The HTTP session that plays the browser.
        keyloom: An open Keyloom configured with the provider (``None`` without emulator).
    """

    target: ConformanceTarget
    registered: RegisteredProvider
    client_secret: str = attrs.field(repr=False)
    redirect_uri: str
    signing_secret: str = attrs.field(repr=False)
    emulator: EmulatorServer | None = None
    browser: aiohttp.ClientSession | None = attrs.field(default=None, repr=False)
    keyloom: Keyloom | None = attrs.field(default=None, repr=False)

    @property
    def spec(self) -> ProviderSpec:
        """The provider's spec."""
        return self.registered.spec

    @property
    def provider_id(self) -> str:
        """The provider's id."""
        return self.registered.spec.id

    @property
    def plugin(self) -> object:
        """The plugin object that owns the provider's hooks."""
        return self.registered.plugin.plugin

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes requested during the checks."""
        return self.target.scopes or tuple(sorted(self.spec.default_scopes))

    def running_emulator(self) -> EmulatorServer:
        """The emulator (checks that call this are run with one)."""
        if self.emulator is None:
            raise RuntimeError("this check runs without an emulator")
        return self.emulator

    def open_keyloom(self) -> Keyloom:
        """The open Keyloom of the session."""
        if self.keyloom is None:
            raise RuntimeError("this check runs without an emulator")
        return self.keyloom

    def configure(self, **options: Any) -> Provider:
        """Build the provider with the plugin's factory, pointed at the emulator.

        *options* override the session's (``client_secret=``, ``scopes=``…).
        """
        kwargs: dict[str, Any] = {
            "client_id": self.target.client_id,
            "client_secret": self.client_secret,
            **self.target.provider_options,
        }
        if self.target.scopes is not None:
            kwargs["scopes"] = self.target.scopes
        if self.emulator is not None:
            kwargs["endpoint_origin"] = self.emulator.url
        kwargs.update(options)
        provider = self.registered.factory(**kwargs)
        if not isinstance(provider, Provider):
            raise _fail(f"the factory of '{self.provider_id}' did not return a Provider")
        return provider

    def define(self, provider: Provider | None = None, **options: Any) -> Keyloom:
        """A Keyloom (not opened) with *provider* (default :meth:`configure`) and this secret."""
        return define_keyloom(
            providers=[provider or self.configure()],
            secret=self.signing_secret,
            base_url=BASE_URL,
            plugins=[self.plugin],
            autoload=False,
            **options,
        )

    async def authorize(self, start: LoginStart) -> dict[str, str]:
        """Play the browser: follow *start* to the emulator and return the callback query."""
        if self.browser is None:
            raise RuntimeError("this check runs without an emulator")
        async with self.browser.get(start.url, allow_redirects=False) as response:
            location = response.headers.get("Location")
            status = response.status
            text = await response.text() if location is None else ""
        if status not in _REDIRECT_STATUSES or not location:
            param = re.search(r'data-error-param="([^"]*)"', text)
            detail = f" (its error page names '{param.group(1)}')" if param else ""
            msg = (
                f"the {self.spec.name} emulator answered the authorization request with "
                f"HTTP {status} instead of redirecting back{detail}"
            )
            raise _fail(msg)
        if location.split("?", 1)[0] != self.redirect_uri:
            raise _fail(f"the emulator redirected to {location.split('?', 1)[0]!r}")
        return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))

    async def login(
        self, keyloom: Keyloom | None = None
    ) -> tuple[LoginResult, LoginStart, dict[str, str]]:
        """A whole login through the emulator; returns the result, the start and the query."""
        keyloom = keyloom or self.open_keyloom()
        start = await keyloom.begin_login(self.provider_id)
        query = await self.authorize(start)
        if "error" in query:
            msg = f"the emulator refused the login: {query['error']}"
            raise _fail(f"{msg} ({query.get('error_description', '')})")
        result = await keyloom.complete_login(self.provider_id, query, start.state)
        return result, start, query


@contextlib.asynccontextmanager
async def open_session(
    target: ConformanceTarget, *, emulator: bool = True
) -> AsyncIterator[ConformanceSession]:
    """Find the provider and, with *emulator*, start its emulator and open a Keyloom on it."""
    _, registered = _find_provider(target)
    session = ConformanceSession(
        target=target,
        registered=registered,
        client_secret=target.client_secret or "cs-" + secrets.token_urlsafe(24),
        redirect_uri=f"{BASE_URL}/api/auth/oauth/{registered.spec.id}/callback",
        signing_secret=secrets.token_urlsafe(32),
    )
    if not emulator:
        yield session
        return
    import aiohttp  # noqa: PLC0415  (only checks that talk to a provider need it)

    cls = load_emulator_class(registered.spec)
    try:
        server = cls.for_client(
            target.client_id,
            session.client_secret,
            [session.redirect_uri],
            session.scopes,
            **{"consent": "approve", **target.emulator_options},
        )
    except NotImplementedError as exc:
        raise _fail(f"{cls.__name__} does not implement EmulatorServer.for_client") from exc
    async with (
        server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=target.timeout)) as browser,
    ):
        session.emulator = server
        session.browser = browser
        session.keyloom = session.define()
        async with session.keyloom:
            yield session


# -- the checks ------------------------------------------------------------------------------


async def check_discoverable(session: ConformanceSession) -> None:
    """An installed distribution's ``keyloom`` entry point offers the provider."""
    registry = PluginRegistry(autoload=True, strict=False)
    found = registry.providers.get(session.target.provider_id)
    if found is None:
        msg = (
            f"no installed distribution offers '{session.target.provider_id}' through the "
            f"'keyloom' entry-point group: {registry.missing(session.target.provider_id)}"
        )
        raise _fail(msg)
    info = found.plugin
    if not info.entry_point or not info.distribution:
        raise _fail(f"'{found.spec.id}' was not loaded from an entry point ({info.describe()})")
    if found.spec.plugin and found.spec.plugin != getattr(info.plugin, "__name__", None):
        msg = (
            f"ProviderSpec.plugin is {found.spec.plugin!r} but the entry point loads "
            f"{getattr(info.plugin, '__name__', info.plugin)!r}"
        )
        raise _fail(msg)
    cls = load_emulator_class(found.spec)
    base = getattr(EmulatorServer.for_client, "__func__", None)
    if getattr(cls.for_client, "__func__", None) is base:
        raise _fail(f"{cls.__name__} does not implement EmulatorServer.for_client")


async def check_authorize_url(session: ConformanceSession) -> None:
    """The authorization URL carries state, PKCE (S256), the redirect URI and the scopes."""
    keyloom = session.open_keyloom()
    provider = keyloom.provider(session.provider_id)
    start = await keyloom.begin_login(session.provider_id)
    url, expected = urlsplit(start.url), urlsplit(provider.spec.authorize_url)
    if (url.scheme, url.netloc, url.path) != (expected.scheme, expected.netloc, expected.path):
        raise _fail(f"the authorization URL is not at {provider.spec.authorize_url}")
    values = parse_qs(url.query, keep_blank_values=True)
    if repeated := sorted(k for k, v in values.items() if len(v) > 1):
        raise _fail(f"the authorization URL repeats {', '.join(repeated)}")
    query = {k: v[0] for k, v in values.items()}
    payload = keyloom.states.read(start.state)
    spec = provider.spec
    wanted = {
        "state": payload["n"],
        "redirect_uri": session.redirect_uri,
        "code_challenge": s256_challenge(payload["v"], spec.pkce_encoding),
        "code_challenge_method": "S256",
        spec.client_id_param: provider.client_id,
        "response_type": "code",
    }
    for name, value in wanted.items():
        if name not in query:
            raise _fail(f"the authorization URL has no {name}")
        if query[name] != value:
            raise _fail(f"the authorization URL's {name} is {query[name]!r}, not {value!r}")
    scope = query.get("scope", "")
    if parse_scopes(scope) != provider.scopes:
        raise _fail(
            f"the authorization URL asks for scopes {scope!r}, not {sorted(provider.scopes)}"
        )
    if len(provider.scopes) > 1 and spec.scope_separator not in scope:
        raise _fail(f"the scopes are not joined with the spec's separator {spec.scope_separator!r}")
    leaked = [k for k in ("client_secret", "code_verifier") if k in query]
    if leaked or session.client_secret in start.url or payload["v"] in start.url:
        raise _fail("the authorization URL carries a secret (client secret or PKCE verifier)")


async def check_code_exchange(session: ConformanceSession) -> None:
    """A consented login completes with tokens and the granted scopes."""
    result, _, query = await session.login()
    if not query.get("code"):
        raise _fail("the emulator's callback has no code")
    tokens = result.tokens
    if not tokens.access_token:
        raise _fail("the login gave no access token")
    if tokens.expires_at is not None and tokens.expires_at <= time.time():
        raise _fail("the access token is already expired")
    provider = session.open_keyloom().provider(session.provider_id)
    if missing := provider.required_scopes - result.granted_scopes:
        raise _fail(f"granted scopes lack required ones: {sorted(missing)}")


def _shown(value: object) -> str:
    return repr(value) if value is not None else "None"


async def check_profile(session: ConformanceSession) -> None:
    """The profile is normalised: ``id``, ``name``, ``email`` and ``image`` as expected."""
    result, _, _ = await session.login()
    profile = result.profile
    if not isinstance(profile, Profile) or profile.provider_id != session.provider_id:
        raise _fail(f"the profile's provider_id is not '{session.provider_id}'")
    if not isinstance(profile.id, str) or not profile.id:
        raise _fail("the profile has no id")
    if profile.image is not None and urlsplit(profile.image).scheme not in {"http", "https"}:
        raise _fail(f"the profile image {profile.image!r} is not an absolute URL")
    if profile.email is not None and ("@" not in profile.email or not profile.email_verified):
        raise _fail("the profile has an e-mail that is not marked verified")
    if not isinstance(profile.raw, Mapping) or not profile.raw:
        raise _fail("the profile keeps no raw provider data")
    expected = session.running_emulator().expected_profile(
        session.target.client_id, result.granted_scopes
    )
    for name, value in (expected or {}).items():
        actual = getattr(profile, name)
        if actual != value:
            raise _fail(f"the profile's {name} is {_shown(actual)}, expected {_shown(value)}")
    again = await session.open_keyloom().fetch_profile(session.provider_id, result.tokens)
    if (again.id, again.name, again.email, again.image) != (
        profile.id,
        profile.name,
        profile.email,
        profile.image,
    ):
        raise _fail("fetching the profile again gives another profile")


async def check_refresh(session: ConformanceSession) -> None:
    """Refresh gives working tokens; a dead refresh token asks the user to sign in again."""
    keyloom = session.open_keyloom()
    result, _, _ = await session.login()
    tokens = result.tokens
    if not tokens.refresh_token:
        try:
            await keyloom.refresh(session.provider_id, tokens)
        except ReauthenticationRequiredError:
            return
        raise _fail("refresh without a refresh token did not ask to sign in again")
    new = await keyloom.refresh(session.provider_id, tokens)
    if not new.access_token or not new.refresh_token:
        raise _fail("the refreshed token set has no access token or lost its refresh token")
    profile = await keyloom.fetch_profile(session.provider_id, new)
    if profile.id != result.profile.id:
        raise _fail("the refreshed access token belongs to another user")
    if new.refresh_token != tokens.refresh_token:  # rotated: the old one must be dead
        try:
            await keyloom.refresh(session.provider_id, tokens)
        except ReauthenticationRequiredError:
            return
        except ProviderError as exc:
            msg = (
                f"a rotated-out refresh token raised {type(exc).__name__} ({exc.error}), "
                "not ReauthenticationRequiredError"
            )
            raise _fail(msg) from exc
        raise _fail("the rotated-out refresh token still works")


async def check_revoke(session: ConformanceSession) -> None:
    """Revocation makes the tokens useless (or the plugin says it cannot revoke)."""
    keyloom = session.open_keyloom()
    result, _, _ = await session.login()
    revoked = await keyloom.revoke(session.provider_id, result.tokens)
    if revoked is False:
        return
    try:
        await keyloom.fetch_profile(session.provider_id, result.tokens)
    except ProviderError:
        return
    raise _fail("revoke returned True but the access token still works")


async def _refused(
    call: Awaitable[object], error: type[E], *, what: str, accepted: str, code: str | None = None
) -> E:
    """Await *call*, which must raise *error* (with the provider error *code*, if given).

    Return the error; fail the check if *call* succeeds (*accepted* says so) or raises
    anything else (named after *what*).
    """
    try:
        await call
    except error as exc:
        if code is not None and getattr(exc, "error", None) != code:
            msg = f"the error code is {getattr(exc, 'error', None)!r}, not {code!r}"
            raise _fail(msg) from exc
        return exc
    except Exception as exc:
        msg = f"{what} raised {type(exc).__name__}, not {error.__name__}"
        raise _fail(msg) from exc
    raise _fail(accepted)


async def check_wrong_secret(session: ConformanceSession) -> None:
    """A wrong client secret raises TokenExchangeError with the provider's error code."""
    wrong = "wrong-" + secrets.token_urlsafe(16)
    emulator = session.running_emulator()
    async with session.define(session.configure(client_secret=wrong)) as keyloom:
        start = await keyloom.begin_login(session.provider_id)
        query = await session.authorize(start)
        exc = await _refused(
            keyloom.complete_login(session.provider_id, query, start.state),
            TokenExchangeError,
            what="a wrong client secret",
            accepted="the login succeeded with a wrong client secret",
            code=emulator.invalid_client_error,
        )
    if wrong in f"{exc} {exc!r} {exc.description}":
        raise _fail("the error shows the client secret") from exc


async def check_access_denied(session: ConformanceSession) -> None:
    """A user who refuses consent gives AccessDeniedError."""
    keyloom = session.open_keyloom()
    session.running_emulator().consent = "deny"
    start = await keyloom.begin_login(session.provider_id)
    query = await session.authorize(start)
    await _refused(
        keyloom.complete_login(session.provider_id, query, start.state),
        AccessDeniedError,
        what="a refused consent",
        accepted="the login succeeded although the user refused",
    )


async def check_replayed_code(session: ConformanceSession) -> None:
    """A code used twice is refused by the provider with TokenExchangeError."""
    emulator = session.running_emulator()
    _, start, query = await session.login()
    # Another app process (its own state guard) receives the same callback again.
    async with session.define(state_guard=MemoryStateGuard()) as other:
        await _refused(
            other.complete_login(session.provider_id, query, start.state),
            TokenExchangeError,
            what="a replayed code",
            accepted="a replayed authorization code was accepted",
            code=emulator.invalid_grant_error,
        )


async def check_scope_policy(session: ConformanceSession) -> None:
    """Unknown scopes, and scopes outside ``approved_scopes``, are refused at configuration."""
    spec = session.spec
    if not spec.known_scopes:
        raise _fail("ProviderSpec.known_scopes is empty: unknown scopes cannot be refused")
    if not spec.default_scopes or not spec.default_scopes <= spec.known_scopes:
        raise _fail("ProviderSpec.default_scopes must be a non-empty subset of known_scopes")
    unknown = session.target.unknown_scope
    if unknown in spec.known_scopes:
        raise _fail(f"the provider claims to know the scope {unknown!r}")
    cases: list[tuple[str, dict[str, Any]]] = [
        (unknown, {"scopes": [*session.scopes, unknown]}),
    ]
    for extra in sorted(spec.known_scopes - set(session.scopes)):
        requested = [*session.scopes, extra]
        try:  # a scope the plugin accepts when approval is not checked
            session.define(session.configure(scopes=requested))
        except ConfigurationError:
            continue
        cases.append((extra, {"scopes": requested, "approved_scopes": session.scopes}))
        break
    for scope, options in cases:
        try:
            session.define(session.configure(**options))
        except ConfigurationError as exc:
            if scope not in str(exc):
                raise _fail(f"the configuration error does not name {scope!r}: {exc}") from exc
            continue
        raise _fail(f"configuring the scope {scope!r} ({', '.join(options)}) was accepted")


async def check_provider_faults(session: ConformanceSession) -> None:
    """Provider failures become typed ProviderErrors, never plugin crashes."""
    emulator, keyloom = session.running_emulator(), session.open_keyloom()
    if emulator.faults is None:
        raise _fail("the emulator has no fault injector")
    start = await keyloom.begin_login(session.provider_id)
    query = await session.authorize(start)
    emulator.faults.queue("500")
    await _refused(
        keyloom.complete_login(session.provider_id, query, start.state),
        ProviderError,
        what="HTTP 500 at the token endpoint",
        accepted="the login succeeded although the token endpoint failed",
    )
    result, _, _ = await session.login()
    emulator.faults.queue("malformed_json")
    await _refused(
        keyloom.fetch_profile(session.provider_id, result.tokens),
        ProviderError,
        what="a profile answer that is not JSON",
        accepted="a profile answer that is not JSON was accepted",
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def check_secrets_hidden(session: ConformanceSession) -> None:
    """No client secret, code or token appears in logs or reprs during a login."""
    root = logging.getLogger()
    capture, level = _Capture(), root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        result, start, query = await session.login()
        await session.open_keyloom().fetch_profile(session.provider_id, result.tokens)
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
    tokens = result.tokens
    keyloom = session.open_keyloom()
    shown = "\n".join(
        [
            *capture.lines,
            repr(result),
            repr(tokens),
            repr(start),
            repr(keyloom),
            repr(keyloom.provider(session.provider_id)),
        ]
    )
    values = {
        "client secret": session.client_secret,
        "access token": tokens.access_token,
        "refresh token": tokens.refresh_token,
        "authorization code": query.get("code"),
    }
    for what, value in values.items():
        if value and value in shown:
            raise _fail(f"the {what} appears in a log record or a repr")


# -- running -----------------------------------------------------------------------------------


@attrs.frozen
class Check:
    """One conformance check.

    Attributes:
        name: Short name (``"authorize_url"``).
        run: The check; raises :class:`ConformanceError` when the plugin fails it.
        needs_emulator: Whether the check talks to the provider's emulator.
    """

    name: str
    run: Callable[[ConformanceSession], Awaitable[None]] = attrs.field(repr=False)
    needs_emulator: bool = True

    @property
    def description(self) -> str:
        """The first line of the check's docstring."""
        return (self.run.__doc__ or "").strip().splitlines()[0]


#: Every check, in the order they run.
CHECKS: Mapping[str, Check] = {
    c.name: c
    for c in (
        Check("discoverable", check_discoverable, needs_emulator=False),
        Check("authorize_url", check_authorize_url),
        Check("code_exchange", check_code_exchange),
        Check("profile", check_profile),
        Check("refresh", check_refresh),
        Check("revoke", check_revoke),
        Check("wrong_secret", check_wrong_secret),
        Check("access_denied", check_access_denied),
        Check("replayed_code", check_replayed_code),
        Check("scope_policy", check_scope_policy, needs_emulator=False),
        Check("provider_faults", check_provider_faults),
        Check("secrets_hidden", check_secrets_hidden),
    )
}


@attrs.frozen
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: The check's name.
        passed: Whether the plugin passed it.
        message: Why it failed (empty when it passed).
    """

    name: str
    passed: bool
    message: str = ""


@attrs.frozen
class ConformanceReport:
    """The outcome of a conformance run.

    Attributes:
        provider_id: The provider tested.
        results: One result per check, in order.
    """

    provider_id: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> dict[str, str]:
        """The failed checks' messages by name."""
        return {r.name: r.message for r in self.results if not r.passed}

    def __str__(self) -> str:
        lines = [f"conformance of '{self.provider_id}':"]
        for r in self.results:
            detail = f": {r.message}" if r.message else ""
            lines.append(f"  {'✓' if r.passed else '✗'} {r.name}{detail}")
        return "\n".join(lines)


async def run_check(target: ConformanceTarget, name: str) -> None:
    """Run the check *name* against *target* in a fresh session.

    :raises ConformanceError: the plugin fails the check.
    :raises KeyError: there is no such check.
    """
    check = CHECKS[name]
    try:
        with anyio.fail_after(target.timeout):
            async with open_session(target, emulator=check.needs_emulator) as session:
                await check.run(session)
    except ConformanceError as exc:
        exc.check = exc.check or name
        raise
    except TimeoutError as exc:
        raise ConformanceError(f"the check took over {target.timeout:g}s", check=name) from exc
    except PluginError as exc:
        raise ConformanceError(f"the plugin failed: {exc}", check=name) from exc


async def _run_all(target: ConformanceTarget, names: Sequence[str]) -> ConformanceReport:
    results = []
    for name in names:
        try:
            await run_check(target, name)
        except ConformanceError as exc:
            results.append(CheckResult(name, passed=False, message=str(exc)))
        except Exception as exc:
            results.append(CheckResult(name, passed=False, message=f"{type(exc).__name__}: {exc}"))
        else:
            results.append(CheckResult(name, passed=True))
    return ConformanceReport(target.provider_id, tuple(results))


def run_conformance(
    target: ConformanceTarget | str, names: Iterable[str] | None = None
) -> ConformanceReport:
    """Run checks (all by default) against *target*, each in a fresh session; never raises.

    Starts its own event loop: call it from synchronous code.
    """
    if isinstance(target, str):
        target = ConformanceTarget(provider_id=target)
    chosen = list(CHECKS) if names is None else list(names)
    if unknown := [n for n in chosen if n not in CHECKS]:
        raise KeyError(f"unknown checks: {', '.join(unknown)}")
    return anyio.run(_run_all, target, chosen, backend="asyncio")


# -- pytest ------------------------------------------------------------------------------------


class ProviderConformance:
    """Base class of a plugin's conformance tests: one test per check of :data:`CHECKS`.

    Subclass it in a test module, in a class whose name starts with ``Test``, and set
    :attr:`provider_id`. Each test starts the plugin's emulator on 127.0.0.1 and runs one
    check in its own event loop, so no async test plugin is needed. To skip a check, set
    its test to ``None`` (``test_refresh = None``) and say why.

    Attributes:
        provider_id: The provider to test.
        scopes: Scopes to request (default: the spec's default scopes).
        client_id: The client id registered with the emulator.
        client_secret: The client secret (default: a random one).
        plugin: A plugin object to test without discovering entry points.
        provider_options: Extra keyword arguments for the provider's factory.
        emulator_options: Extra keyword arguments for the emulator's ``for_client``.
        timeout: Seconds one check may take.
    """

    provider_id: ClassVar[str] = ""
    scopes: ClassVar[Sequence[str] | None] = None
    client_id: ClassVar[str] = "keyloom-conformance-client"
    client_secret: ClassVar[str | None] = None
    plugin: ClassVar[object | None] = None
    provider_options: ClassVar[Mapping[str, Any]] = {}
    emulator_options: ClassVar[Mapping[str, Any]] = {}
    timeout: ClassVar[float] = 30.0

    @classmethod
    def conformance_target(cls) -> ConformanceTarget:
        """The :class:`ConformanceTarget` described by the class attributes."""
        if not cls.provider_id:
            msg = f"{cls.__name__} must set provider_id"
            raise TypeError(msg)
        return ConformanceTarget(
            provider_id=cls.provider_id,
            scopes=cls.scopes,
            client_id=cls.client_id,
            client_secret=cls.client_secret,
            plugin=cls.plugin,
            provider_options=dict(cls.provider_options),
            emulator_options=dict(cls.emulator_options),
            timeout=cls.timeout,
        )

    def run_check(self, name: str) -> None:
        """Run one check; a failure raises :class:`ConformanceError` (an AssertionError)."""
        anyio.run(run_check, self.conformance_target(), name, backend="asyncio")

    def test_discoverable(self) -> None:
        """The plugin is found through its entry point and names its emulator."""
        self.run_check("discoverable")

    def test_authorize_url(self) -> None:
        """The authorization URL carries state, PKCE, the redirect URI and the scopes."""
        self.run_check("authorize_url")

    def test_code_exchange(self) -> None:
        """A consented login completes with tokens."""
        self.run_check("code_exchange")

    def test_profile(self) -> None:
        """The profile is normalised as the emulator expects."""
        self.run_check("profile")

    def test_refresh(self) -> None:
        """Refresh works, and a dead refresh token asks to sign in again."""
        self.run_check("refresh")

    def test_revoke(self) -> None:
        """Revocation makes the tokens useless."""
        self.run_check("revoke")

    def test_wrong_secret(self) -> None:
        """A wrong client secret is a TokenExchangeError with the provider's code."""
        self.run_check("wrong_secret")

    def test_access_denied(self) -> None:
        """A refused consent is an AccessDeniedError."""
        self.run_check("access_denied")

    def test_replayed_code(self) -> None:
        """A replayed code is a TokenExchangeError with the provider's code."""
        self.run_check("replayed_code")

    def test_scope_policy(self) -> None:
        """Unknown and unapproved scopes are refused at configuration."""
        self.run_check("scope_policy")

    def test_provider_faults(self) -> None:
        """Provider failures are typed ProviderErrors."""
        self.run_check("provider_faults")

    def test_secrets_hidden(self) -> None:
        """No secret or token shows in logs or reprs."""
        self.run_check("secrets_hidden")
