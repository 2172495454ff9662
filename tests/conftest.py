"""Shared fixtures: a real RFC 6749 provider on 127.0.0.1 and Keyloom instances that use it.

Fixtures (all function-scoped unless said otherwise):

``anyio_backend``
    ``"asyncio"`` (session scope): aiohttp runs on asyncio only. Async test modules set
    ``pytestmark = pytest.mark.anyio``.
``fake_provider``
    A running :class:`FakeProvider` (``aiohttp.test_utils.TestServer``); ``.url`` is its
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

import base64
import dataclasses
import hashlib
import importlib
import importlib.metadata
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keyloom_core import (
    Keyloom,
    LoginResult,
    LoginStart,
    Provider,
    ProviderSpec,
    configure_provider,
    define_keyloom,
)

KEYLOOM_SECRET = "test-signing-secret-0123456789-abcdefghij"
BASE_URL = "https://app.example.com"
CLIENT_ID = "fake-client"
CLIENT_SECRET = "fake-client-secret-DO-NOT-LEAK-5f2c"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# -- the fake provider -------------------------------------------------------------------


@dataclasses.dataclass
class Grant:
    """What one authorization (and the tokens issued for it) is about."""

    client_id: str
    user: str
    scope: str
    redirect_uri: str = ""
    code_challenge: str = ""


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class FakeProvider:
    """A small RFC 6749 / 7636 / 7009 authorization server.

    Endpoints: ``GET /authorize`` (302 back to ``redirect_uri`` with ``code`` and ``state``),
    ``POST /token`` (``authorization_code`` and ``refresh_token`` grants, ``client_secret_post``
    credentials, S256 PKCE, ``redirect_uri`` equality, single-use codes, rotating refresh
    tokens), ``GET /userinfo`` (bearer) and ``POST /revoke``.

    Attributes:
        url: The server's origin, e.g. ``http://127.0.0.1:40123`` (set once it runs).
        clients: Accepted ``client_id -> client_secret``.
        requests: ``(path, parameters)`` of every request, query or form, in order.
        revoked: Tokens revoked through ``/revoke``.
    """

    def __init__(self) -> None:
        self.url = ""
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.clients = {CLIENT_ID: CLIENT_SECRET}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.revoked: list[str] = []
        self._codes: dict[str, Grant] = {}
        self._access: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_post("/revoke", self.revoke)
        return app

    def calls(self, path: str) -> list[dict[str, str]]:
        """The parameters of every request made to *path*."""
        return [params for seen, params in self.requests if seen == path]

    @staticmethod
    def _error(status: int, error: str, description: str = "") -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    async def _form(self, request: web.Request) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.path, form))
        return form

    def _client_ok(self, form: dict[str, str]) -> bool:
        expected = self.clients.get(form.get("client_id", ""))
        return expected is not None and secrets.compare_digest(
            expected, form.get("client_secret", "")
        )

    async def authorize(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append((request.path, q))
        if q.get("client_id") not in self.clients or q.get("response_type") != "code":
            return self._error(400, "invalid_request", "unknown client or response_type")
        if not q.get("redirect_uri") or not q.get("code_challenge"):
            return self._error(400, "invalid_request", "redirect_uri and PKCE are required")
        if q.get("code_challenge_method") != "S256":
            return self._error(400, "invalid_request", "only S256 PKCE is supported")
        # "_deny", "_grant" and "_user" stand for what the user does on the consent screen.
        if "_deny" in q:
            back = {"error": "access_denied", "error_description": "The user cancelled"}
        else:
            code = "code-" + secrets.token_urlsafe(16)
            self._codes[code] = Grant(
                client_id=q["client_id"],
                user=q.get("_user", "alice"),
                scope=q.get("_grant", q.get("scope", "")),
                redirect_uri=q["redirect_uri"],
                code_challenge=q["code_challenge"],
            )
            back = {"code": code}
        if "state" in q:
            back["state"] = q["state"]
        sep = "&" if "?" in q["redirect_uri"] else "?"
        raise web.HTTPFound(q["redirect_uri"] + sep + urlencode(back))

    def _redeem(self, form: dict[str, str]) -> Grant | str:
        """The grant a token request is for, or why it is refused (``invalid_grant``)."""
        if form["grant_type"] == "refresh_token":
            grant = self._refresh.pop(form.get("refresh_token", ""), None)  # rotation
            if grant is None or grant.client_id != form["client_id"]:
                return "unknown refresh token"
            return grant
        grant = self._codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.client_id != form["client_id"]:
            return "unknown or used code"
        if form.get("redirect_uri") != grant.redirect_uri:
            return "redirect_uri mismatch"
        if s256(form.get("code_verifier", "")) != grant.code_challenge:
            return "PKCE verification failed"
        return grant

    async def token(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if not self._client_ok(form):
            return self._error(401, "invalid_client", "client authentication failed")
        if form.get("grant_type") not in {"authorization_code", "refresh_token"}:
            return self._error(400, "unsupported_grant_type")
        grant = self._redeem(form)
        if isinstance(grant, str):
            return self._error(400, "invalid_grant", grant)
        access = "at-" + secrets.token_urlsafe(16)
        refresh = "rt-" + secrets.token_urlsafe(16)
        self._access[access] = self._refresh[refresh] = grant
        return web.json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": refresh,
                "scope": grant.scope,
            }
        )

    async def userinfo(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.requests.append((request.path, {"authorization": auth}))
        grant = self._access.get(auth.removeprefix("Bearer "))
        if not auth.startswith("Bearer ") or grant is None:
            return self._error(401, "invalid_token", "unknown access token")
        return web.json_response(
            {
                "sub": f"id-{grant.user}",
                "name": grant.user.title(),
                "email": f"{grant.user}@example.com",
                "email_verified": True,
                "picture": f"https://img.example.com/{grant.user}.png",
            }
        )

    async def revoke(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if not self._client_ok(form):
            return self._error(401, "invalid_client", "client authentication failed")
        token = form.get("token", "")
        self._access.pop(token, None)
        self._refresh.pop(token, None)
        self.revoked.append(token)
        return web.Response(status=200)


@pytest.fixture
async def fake_provider() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


# -- Keyloom instances -------------------------------------------------------------------


@pytest.fixture
def fake_spec() -> ProviderSpec:
    return ProviderSpec(
        id="fake",
        name="Fake",
        authorize_url="https://fake.invalid/authorize",
        token_url="https://fake.invalid/token",
        profile_url="https://fake.invalid/userinfo",
        revoke_url="https://fake.invalid/revoke",
        known_scopes={"openid", "profile", "email", "offline"},
        default_scopes={"profile"},
    )


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
