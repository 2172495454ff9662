"""Shared fixtures: a real RFC 6749 provider on 127.0.0.1 and Keyloom instances that use it.

Fixtures (all function-scoped unless said otherwise):

``anyio_backend``
    ``"asyncio"`` (session scope): aiohttp runs on asyncio only. Async test modules set
    ``pytestmark = pytest.mark.anyio``.
``fake_provider``
    A running :class:`FakeProvider`, the emulator kit's generic server; ``.url`` is its
    origin. It records what it was sent, so tests can assert on the real requests.
``fake_spec``
    The :class:`ProviderSpec` of the provider ``fake`` (scopes ``openid profile email
    offline``, default ``profile``), with placeholder endpoints.
``make_provider(spec=fake_spec, **options)``
    ``configure_provider(spec, endpoint_origin=fake_provider.url, client_id=...,
    client_secret=..., **options)``: a provider whose endpoints are the fake's.
``make_keyloom(*providers, **options)``
    ``define_keyloom(...)`` with :data:`KEYLOOM_SECRET`, :data:`BASE_URL`, ``autoload=False``
    and, when no provider is given, ``make_provider()``. Not opened: use ``async with``.
``keyloom``
    ``make_keyloom()``, opened for the test.
``authorize(start, *, user="alice", grant=None, deny=False)``
    Plays the browser: GETs ``start.url`` without following the redirect and returns the
    query of the ``Location`` it was sent to (``code`` and ``state``, or ``error``).
    *grant* (space-separated) is what the user ticks on the consent screen; *deny* cancels.
``login(keyloom, provider_id="fake", *, callback_url=None, **consent)``
    A whole login: ``begin_login`` → ``authorize`` → ``complete_login``; returns the
    :class:`LoginResult`.
``fixture_plugins``
    Makes the test distributions of ``tests/fixtures`` discoverable (``keyloom-testplugin``,
    ``keyloom-brokenplugin``, ``keyloom-dupplugin``, ``keyloom-misspelledplugin``), or skips
    the test. nox installs them
    into the folder named by ``KEYLOOM_FIXTURE_PLUGINS``, which this puts on ``sys.path``
    for the test only; ``pip install -e tests/fixtures/keyloom-*`` works too.
``testplugin``
    The same for ``keyloom-testplugin`` alone; returns the imported ``keyloom_testplugin``
    module (provider ``testprov``, whose endpoints have the fake provider's paths).

The credentials the fake accepts are ``fake_provider.client_id`` / ``.client_secret``.
``make_keyloom`` passes ``autoload=False``: the broken and duplicate test plugins, where they
are installed, would otherwise be part of every test.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web

from keyloom_core import (
    Keyloom,
    LoginResult,
    LoginStart,
    Provider,
    ProviderSpec,
    configure_provider,
    define_keyloom,
)
from keyloom_core.testing.authserver import AuthorizationServer
from keyloom_core.testing.emulator import AccessToken, GrantBook

KEYLOOM_SECRET = "test-signing-secret-0123456789-abcdefghij"
BASE_URL = "https://app.example.com"
CLIENT_ID = "fake-client"
CLIENT_SECRET = "fake-client-secret-DO-NOT-LEAK-5f2c"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# -- the fake provider -------------------------------------------------------------------


FAKE_SPEC = ProviderSpec(
    id="fake",
    name="Fake",
    authorize_url="https://fake.invalid/authorize",
    token_url="https://fake.invalid/token",
    profile_url="https://fake.invalid/userinfo",
    revoke_url="https://fake.invalid/revoke",
    known_scopes={"openid", "profile", "email", "offline"},
    default_scopes={"profile"},
)


class FakeProvider(AuthorizationServer):
    """The fake provider: the kit's generic server, speaking RFC 6749 / 7636 / 7009 as is.

    Any redirect URI is accepted; the authorization request's ``_user``, ``_grant`` and
    ``_deny`` parameters stand for what the user does on the consent screen.

    Attributes:
        url: The server's origin, e.g. ``http://127.0.0.1:40123`` (set once it runs).
        clients: Accepted ``client_id -> client_secret``.
        requests: ``(path, parameters)`` of every request, query or form, in order.
        revoked: Tokens revoked through ``/revoke``.
    """

    spec = FAKE_SPEC

    def __init__(self) -> None:
        super().__init__(clients=[], consent="approve", faults=None)
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        self.clients = _AnyRedirect({CLIENT_ID: CLIENT_SECRET})  # type: ignore[assignment]
        self.book = GrantBook(
            access_ttl=self.access_ttl,
            access_prefix="at-",
            refresh_prefix="rt-",
            code_factory=lambda: "code-" + secrets.token_urlsafe(16),
        )
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.revoked: list[str] = []

    def calls(self, path: str) -> list[dict[str, str]]:
        """The parameters of every request made to *path*."""
        return [params for seen, params in self.requests if seen == path]

    def build_app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "POST":
                params = {k: str(v) for k, v in (await request.post()).items()}
            elif request.path == "/userinfo":
                params = {"authorization": request.headers.get("Authorization", "")}
            else:
                params = dict(request.query)
            self.requests.append((request.path, params))
            return await handler(request)

        app = super().build_app()
        app.middlewares.append(record)
        return app

    def refused(self, params: Mapping[str, str]) -> web.Response | None:
        if params.get("client_id") in self.clients and params.get("redirect_uri"):
            return None
        return self.error_answer(400, "invalid_request", "unknown client or redirect_uri")

    def redirect_error(self, pending: Any, error: str) -> web.Response:
        params = {
            "error": error,
            "error_description": "The user cancelled",
            **self._state(pending.params),
        }
        return self.back(pending.redirect_uri, params)

    def grant(self, pending: Any, user_id: str, scopes: Sequence[str]) -> web.Response:
        del user_id, scopes  # the consent-screen parameters say
        if "_deny" in pending.params:
            return self.redirect_error(pending, "access_denied")
        user = pending.params.get("_user", "alice")
        granted = pending.params.get("_grant", pending.params.get("scope", "")).split()
        return super().grant(pending, user, granted)

    def token_answer(self, client: Any, pair: Any) -> Mapping[str, Any]:
        answer = dict(super().token_answer(client, pair))
        del answer["refresh_expires_in"]  # this provider does not say
        return answer

    def knows_user(self, user_id: str) -> bool:
        return bool(user_id)

    def profile(self, token: AccessToken) -> Mapping[str, Any]:
        user = str(token.user_id)
        return {
            "sub": f"id-{user}",
            "name": user.title(),
            "email": f"{user}@example.com",
            "email_verified": True,
            "picture": f"https://img.example.com/{user}.png",
        }

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        response = await super().revoke(request)
        if response.status == 200:
            self.revoked.append(str((await request.post()).get("token", "")))
        return response


class _AnyRedirect(dict[str, str]):
    """``client_id -> secret``, each client accepting any redirect URI."""

    def get(self, key: str, default: Any = None) -> Any:
        secret = super().get(key)
        return default if secret is None else _Client(key, secret)


@dataclasses.dataclass
class _Client:
    client_id: str
    secret: str

    def secret_matches(self, secret: str) -> bool:
        return secrets.compare_digest(self.secret, secret)

    def accepts_redirect_uri(self, uri: str) -> bool:
        return bool(uri)


@pytest.fixture
async def fake_provider() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as fake:
        yield fake


# -- Keyloom instances -------------------------------------------------------------------


@pytest.fixture
def fake_spec() -> ProviderSpec:
    return FAKE_SPEC


@pytest.fixture
def make_provider(fake_provider: FakeProvider, fake_spec: ProviderSpec) -> Callable[..., Provider]:
    def make(spec: ProviderSpec | None = None, **options: Any) -> Provider:
        options.setdefault("client_id", fake_provider.client_id)
        options.setdefault("client_secret", fake_provider.client_secret)
        return configure_provider(spec or fake_spec, endpoint_origin=fake_provider.url, **options)

    return make


@pytest.fixture
def make_keyloom(make_provider: Callable[..., Provider]) -> Callable[..., Keyloom]:
    def make(*providers: Provider | str, **options: Any) -> Keyloom:
        options.setdefault("secret", KEYLOOM_SECRET)
        options.setdefault("base_url", BASE_URL)
        options.setdefault("autoload", False)
        return define_keyloom(providers=list(providers) or [make_provider()], **options)

    return make


@pytest.fixture
async def keyloom(make_keyloom: Callable[..., Keyloom]) -> AsyncIterator[Keyloom]:
    async with make_keyloom() as instance:
        yield instance


Authorize = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def authorize() -> Authorize:
    async def authorize(
        start: LoginStart, *, user: str = "alice", grant: str | None = None, deny: bool = False
    ) -> dict[str, str]:
        consent = {"_user": user}
        if grant is not None:
            consent["_grant"] = grant
        if deny:
            consent["_deny"] = "1"
        url = f"{start.url}&{urlencode(consent)}"
        async with (
            aiohttp.ClientSession() as browser,
            browser.get(url, allow_redirects=False) as resp,
        ):
            assert resp.status == 302, await resp.text()
            location = resp.headers["Location"]
        return dict(parse_qsl(urlsplit(location).query))

    return authorize


@pytest.fixture
def login(authorize: Authorize) -> Callable[..., Awaitable[LoginResult]]:
    async def login(
        keyloom: Keyloom,
        provider_id: str = "fake",
        *,
        callback_url: str | None = None,
        **consent: Any,
    ) -> LoginResult:
        start = await keyloom.begin_login(provider_id, callback_url=callback_url)
        query = await authorize(start, **consent)
        return await keyloom.complete_login(provider_id, query, start.state)

    return login


# -- the test plugin distributions (tests/fixtures) -----------------------------------------

FIXTURE_DISTS = (
    "keyloom-testplugin",
    "keyloom-brokenplugin",
    "keyloom-dupplugin",
    "keyloom-misspelledplugin",
)


def _require_distributions(monkeypatch: pytest.MonkeyPatch, *dists: str) -> None:
    site = os.environ.get("KEYLOOM_FIXTURE_PLUGINS")
    if site:
        monkeypatch.syspath_prepend(site)
    missing = []
    for dist in dists:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        hint = " ".join(f"-e tests/fixtures/{d}" for d in missing)
        pytest.skip(
            f"test plugin(s) {', '.join(missing)} not installed (pip install {hint}, or set "
            "KEYLOOM_FIXTURE_PLUGINS to a folder they were installed into with --target)"
        )


@pytest.fixture
def fixture_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_distributions(monkeypatch, *FIXTURE_DISTS)


@pytest.fixture
def testplugin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    _require_distributions(monkeypatch, "keyloom-testplugin")
    return importlib.import_module("keyloom_testplugin")
