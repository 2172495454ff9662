"""Fixtures for the TikTok plugin's end-to-end tests: an emulated TikTok and Keyloom instances.

Everything goes through public names: ``keyloom_core``, ``keyloom_tiktok.tiktok`` and the
emulator (``keyloom_tiktok.emulator``, ``keyloom_core.testing.emulator``).

Fixtures (function-scoped unless said otherwise):

``anyio_backend``
    ``"asyncio"`` (session scope); async test modules set ``pytestmark = pytest.mark.anyio``.
``error_status``
    ``"200"`` or ``"4xx"``: every test that starts an emulator runs in both error-status
    modes (OAuth errors with HTTP 200 as TikTok answers them, or with RFC 6749 statuses).
``oauth_error_status(error)``
    The HTTP status an OAuth error of the token or revoke endpoint has in this mode.
``make_emulator(**options)``
    Starts a :class:`RecordingEmulator` (a :class:`TikTokEmulator` that also records every
    request it receives) with *options* (``error_status`` defaults to the fixture's);
    stopped after the test.
``emulator``
    ``make_emulator()``: the default desktop app, form consent, real clock.
``make_keyloom(emulator, *, retry=None, timeout=5.0, base_url=BASE_URL, **tiktok_options)``
    ``define_keyloom(providers=[tiktok(client_id=..., client_secret=...,
    endpoint_origin=emulator.url, scopes=SCOPES, required_scopes=REQUIRED, **tiktok_options)],
    secret=..., base_url=..., autoload=False)``, opened (``async with``) for the test.
``keyloom``
    ``make_keyloom(emulator)``.
``browser``
    An ``aiohttp.ClientSession`` playing the user's browser.
``authorize(url, *, untick=(), tick=(), decision="approve", user=None)``
    GETs the authorization URL without following redirects; on a consent form, ticks and
    unticks scopes and submits it. Returns an :class:`AuthorizeOutcome`: the 302 callback
    query, or the status and offending parameter of TikTok's error page.
``login(keyloom, emulator, *, callback_url=None, drop=(), **consent)``
    ``begin_login`` → ``authorize`` → ``complete_login("tiktok", query, state)``; *drop* removes
    callback parameters first. Raises :class:`AuthorizeRefusedError` (a ``RuntimeError``)
    when TikTok shows an error page instead of redirecting.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import attrs
import pytest
from aiohttp import web
from keyloom_tiktok import tiktok
from keyloom_tiktok.emulator import (
    DEFAULT_CLIENT_KEY,
    DEFAULT_CLIENT_SECRET,
    TOKEN_PATH,
    TikTokEmulator,
)

from keyloom_core import Keyloom, LoginResult, RetryPolicy, define_keyloom
from keyloom_core.testing.emulator import CodeFailure, Handler

KEYLOOM_SECRET = "tiktok-plugin-tests-signing-secret-0123456789"
BASE_URL = "http://127.0.0.1:8000"
CLIENT_KEY = DEFAULT_CLIENT_KEY
CLIENT_SECRET = DEFAULT_CLIENT_SECRET
BASIC = "user.info.basic"
PROFILE = "user.info.profile"
STATS = "user.info.stats"
SCOPES = (BASIC, PROFILE, STATS)
REQUIRED = (BASIC,)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# -- the emulator ----------------------------------------------------------------------------


@attrs.define
class Recorded:
    """One request the emulator received, as seen before faults and handlers ran.

    Attributes:
        method: HTTP method.
        path: Request path.
        query: The query parameters.
        form: The urlencoded form body (empty for other requests).
        status: The status answered, or ``None`` if no answer was produced (cancelled).
        code_used_on_arrival: For code exchanges, whether the code had already been
            redeemed when the request arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    status: int | None = None
    code_used_on_arrival: bool = False


class RecordingEmulator(TikTokEmulator):
    """The TikTok emulator plus a record of every request (outermost middleware)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.requests: list[Recorded] = []

    def build_app(self) -> web.Application:
        app = super().build_app()

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            form: dict[str, str] = {}
            if request.method == "POST" and request.content_type == (
                "application/x-www-form-urlencoded"
            ):
                form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            entry = Recorded(request.method, request.path, dict(request.query), form)
            if request.path == TOKEN_PATH and form.get("grant_type") == "authorization_code":
                found = self.book.inspect_code(form.get("code", ""), client_id="", redirect_uri="")
                entry.code_used_on_arrival = found is CodeFailure.USED
            self.requests.append(entry)
            response = await handler(request)
            entry.status = response.status
            return response

        app.middlewares.insert(0, record)
        return app

    def calls(self, path: str) -> list[Recorded]:
        """The recorded requests to *path*, in order of arrival."""
        return [r for r in self.requests if r.path == path]

    def code_exchanges(self) -> list[Recorded]:
        """The recorded ``grant_type=authorization_code`` token requests."""
        return [
            r for r in self.calls(TOKEN_PATH) if r.form.get("grant_type") == "authorization_code"
        ]


MakeEmulator = Callable[..., Awaitable[RecordingEmulator]]


@pytest.fixture(params=["200", "4xx"], ids=["errors-200", "errors-4xx"])
def error_status(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def oauth_error_status(error_status: str) -> Callable[[str], int]:
    def status(error: str) -> int:
        if error_status == "200":
            return 200
        return 401 if error == "invalid_client" else 400

    return status


@pytest.fixture
async def make_emulator(error_status: str) -> AsyncIterator[MakeEmulator]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(**options: Any) -> RecordingEmulator:
            options.setdefault("error_status", error_status)
            return await stack.enter_async_context(RecordingEmulator(**options))

        yield make


@pytest.fixture
async def emulator(make_emulator: MakeEmulator) -> RecordingEmulator:
    return await make_emulator()


# -- Keyloom ---------------------------------------------------------------------------------


MakeKeyloom = Callable[..., Awaitable[Keyloom]]


@pytest.fixture
async def make_keyloom() -> AsyncIterator[MakeKeyloom]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            emulator: TikTokEmulator,
            *,
            retry: RetryPolicy | None = None,
            timeout: float = 5.0,
            base_url: str = BASE_URL,
            plugins: tuple[object, ...] = (),
            **options: Any,
        ) -> Keyloom:
            options.setdefault("client_id", CLIENT_KEY)
            options.setdefault("client_secret", CLIENT_SECRET)
            options.setdefault("endpoint_origin", emulator.url)
            options.setdefault("scopes", SCOPES)
            options.setdefault("required_scopes", REQUIRED)
            instance = define_keyloom(
                providers=[tiktok(**options)],
                secret=KEYLOOM_SECRET,
                base_url=base_url,
                autoload=False,
                plugins=plugins,
                timeout=timeout,
                retry=retry,
            )
            return await stack.enter_async_context(instance)

        yield make


@pytest.fixture
async def keyloom(make_keyloom: MakeKeyloom, emulator: RecordingEmulator) -> Keyloom:
    return await make_keyloom(emulator)


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


class _ConsentForm(HTMLParser):
    """The consent form: action, the fields a browser would submit, the scope checkboxes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: list[tuple[str, str]] = []
        self.checkboxes: list[tuple[str, str, bool]] = []  # name, value, checked
        self.selects: dict[str, str] = {}
        self._select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        names = {k for k, _ in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and values.get("type") == "hidden" and values.get("name"):
            self.hidden.append((values["name"], values.get("value", "")))
        elif tag == "input" and values.get("type") == "checkbox" and values.get("name"):
            if "disabled" not in names:
                self.checkboxes.append((values["name"], values["value"], "checked" in names))
        elif tag == "select":
            self._select = values.get("name")
        elif (
            tag == "option"
            and self._select is not None
            and ("selected" in names or self._select not in self.selects)
        ):
            self.selects[self._select] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


class AuthorizeRefusedError(RuntimeError):
    """TikTok answered the authorization request with an error page, not a redirect."""

    def __init__(self, status: int, error_param: str | None) -> None:
        super().__init__(f"TikTok refused the authorization request (HTTP {status}): {error_param}")
        self.status = status
        self.error_param = error_param


@attrs.frozen
class AuthorizeOutcome:
    """What the browser ended with after the authorization step.

    Attributes:
        status: The status of the last answer (302 on success).
        location: The ``Location`` of a redirect, or ``None``.
        error_param: The parameter TikTok's error page names, if it showed one.
        consent_form_shown: Whether a consent form was submitted on the way.
        page_url: The TikTok URL the browser was last on (it may carry error markers).
    """

    status: int
    location: str | None
    error_param: str | None = None
    consent_form_shown: bool = False
    page_url: str | None = None

    @property
    def query(self) -> dict[str, str]:
        """The callback query (percent-decoded once), or raise :class:`AuthorizeRefusedError`."""
        if self.status != 302 or self.location is None:
            raise AuthorizeRefusedError(self.status, self.error_param)
        pairs = parse_qsl(urlsplit(self.location).query, keep_blank_values=True)
        assert len({k for k, _ in pairs}) == len(pairs), "a callback parameter is repeated"
        return dict(pairs)


def _error_param(html: str) -> str | None:
    class Finder(HTMLParser):
        found: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "body":
                self.found = dict(attrs).get("data-error-param")

    finder = Finder()
    finder.feed(html)
    return finder.found


Authorize = Callable[..., Awaitable[AuthorizeOutcome]]


@pytest.fixture
def authorize(browser: aiohttp.ClientSession) -> Authorize:
    async def authorize(
        url: str,
        *,
        untick: Iterable[str] = (),
        tick: Iterable[str] = (),
        decision: str = "approve",
        user: str | None = None,
    ) -> AuthorizeOutcome:
        untick, tick = set(untick), set(tick)
        async with browser.get(url, allow_redirects=False) as response:
            status, headers, text = response.status, response.headers, await response.text()
        location = headers.get("Location")
        if status == 302 and location is not None and urlsplit(location).netloc == "":
            # A redirect within TikTok (to its scope error page): a browser follows it.
            url = urljoin(url, location)
            async with browser.get(url, allow_redirects=False) as response:
                status, headers, text = response.status, response.headers, await response.text()
        if status == 302:
            return AuthorizeOutcome(status, headers.get("Location"), page_url=url)
        form = _ConsentForm(text) if status == 200 else None
        if form is None or form.action is None:
            return AuthorizeOutcome(status, None, _error_param(text), page_url=url)
        fields = list(form.hidden)
        for name, value, checked in form.checkboxes:
            if (checked or value in tick) and value not in untick:
                fields.append((name, value))
        selects = dict(form.selects)
        if user is not None:
            selects["user"] = user
        fields.extend(selects.items())
        fields.append(("decision", decision))
        async with browser.post(
            urljoin(url, form.action), data=fields, allow_redirects=False
        ) as response:
            status, headers, text = response.status, response.headers, await response.text()
        if status == 302:
            return AuthorizeOutcome(status, headers.get("Location"), consent_form_shown=True)
        return AuthorizeOutcome(status, None, _error_param(text), consent_form_shown=True)

    return authorize


Login = Callable[..., Awaitable[LoginResult]]


@pytest.fixture
def login(authorize: Authorize) -> Login:
    async def login(
        keyloom: Keyloom,
        emulator: TikTokEmulator,
        *,
        callback_url: str | None = None,
        drop: Iterable[str] = (),
        **consent: Any,
    ) -> LoginResult:
        start = await keyloom.begin_login("tiktok", callback_url=callback_url)
        assert start.url.startswith(emulator.url + "/"), "the login does not go to the emulator"
        outcome = await authorize(start.url, **consent)
        query = outcome.query
        for name in drop:
            query.pop(name, None)
        return await keyloom.complete_login("tiktok", query, start.state)

    return login
