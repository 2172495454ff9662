"""Tests of the TikTok Login Kit emulator, driven with a plain aiohttp client.

Every test runs in both error-status modes (``tiktok`` is parametrized): OAuth errors with
HTTP 200, as TikTok answers them, and with RFC 6749 statuses. Section numbers (§A5...) refer
to the TikTok reference audit, where each behaviour is sourced.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import aiohttp
import anyio
import pytest
from keyloom_tiktok.emulator import (
    DEFAULT_CLIENT_KEY,
    EmulatedApp,
    EmulatedUser,
    TikTokEmulator,
    redirect_uri_problem,
)
from keyloom_tiktok.emulator_api import VIDEO_LIST_PATH, ContentAPI

from keyloom_core.testing.emulator import FaultInjector, ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

pytestmark = pytest.mark.anyio

WEB_REDIRECT = "https://app.example.test/api/auth/oauth/tiktok/callback/"
WEB = EmulatedApp(
    client_key="awwebclient",
    client_secret="web-secret",
    redirect_uris=[WEB_REDIRECT],
    app_type="web",
    approved_scopes=["user.info.basic", "user.info.profile", "user.info.stats"],
    name="Web App",
)
DESKTOP = EmulatedApp(
    client_key="awdesktopclient",
    client_secret="desktop-secret",
    redirect_uris=["http://127.0.0.1:*/callback/"],
    app_type="desktop",
)
STATE = "s/t a+t&e=é%"
ALL_BASIC_FIELDS = "open_id,union_id,avatar_url,avatar_url_100,avatar_large_url,display_name"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["200", "4xx"], ids=["errors-200", "errors-4xx"])
def error_status(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def tiktok(clock: ManualClock, error_status: Any) -> AsyncIterator[TikTokEmulator]:
    async with TikTokEmulator(
        clients=[WEB, DESKTOP], consent="approve", clock=clock, error_status=error_status
    ) as emulator:
        yield emulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


# --- helpers -----------------------------------------------------------------------------------


def pkce(encoding: str = "hex") -> tuple[str, str]:
    """Return (verifier, challenge), computed here independently of the emulator kit."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    if encoding == "hex":
        return verifier, digest.hex()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Page:
    """An authorize answer: status, Location query (decoded once) and body."""

    def __init__(self, status: int, headers: Mapping[str, str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text
        self.location = headers.get("Location")

    @property
    def query(self) -> dict[str, str]:
        assert self.location is not None
        parsed = parse_qs(urlsplit(self.location).query, keep_blank_values=True)
        assert all(len(values) == 1 for values in parsed.values())
        return {key: values[0] for key, values in parsed.items()}

    @property
    def raw_query(self) -> str:
        assert self.location is not None
        return urlsplit(self.location).query


async def authorize(
    http: aiohttp.ClientSession,
    tiktok: TikTokEmulator,
    *,
    app: EmulatedApp = WEB,
    path: str = "/v2/auth/authorize/",
    **overrides: str | None,
) -> Page:
    params: dict[str, str | None] = {
        "client_key": app.client_key,
        "response_type": "code",
        "scope": "user.info.basic,user.info.profile",
        "redirect_uri": app.redirect_uris[0].replace("*", "8765"),
        "state": STATE,
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    query = urlencode({k: v for k, v in params.items() if v is not None})
    async with http.get(f"{tiktok.url}{path}?{query}", allow_redirects=False) as response:
        return Page(response.status, response.headers, await response.text())


async def post_form(
    http: aiohttp.ClientSession, url: str, form: Mapping[str, str]
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    async with http.post(url, data=dict(form), allow_redirects=False) as response:
        return response.status, await response.json(), response.headers


async def login(
    http: aiohttp.ClientSession,
    tiktok: TikTokEmulator,
    *,
    app: EmulatedApp = WEB,
    scope: str = "user.info.basic,user.info.profile",
) -> dict[str, Any]:
    """Run authorize + code exchange and return the token response."""
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, app=app, scope=scope, code_challenge=challenge)
    assert page.status == 302, page.text
    status, body, _ = await exchange(http, tiktok, page.query["code"], verifier, app=app)
    assert status == 200, body
    return body


async def exchange(
    http: aiohttp.ClientSession,
    tiktok: TikTokEmulator,
    code: str,
    verifier: str | None,
    /,
    *,
    app: EmulatedApp = WEB,
    **overrides: str | None,
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    form: dict[str, str | None] = {
        "client_key": app.client_key,
        "client_secret": app.client_secret,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": app.redirect_uris[0].replace("*", "8765"),
        "code_verifier": verifier,
    }
    form.update(overrides)
    return await post_form(http, tiktok.token_url, {k: v for k, v in form.items() if v is not None})


async def refresh(
    http: aiohttp.ClientSession, tiktok: TikTokEmulator, token: str, app: EmulatedApp = WEB
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    form = {
        "client_key": app.client_key,
        "client_secret": app.client_secret,
        "grant_type": "refresh_token",
        "refresh_token": token,
    }
    return await post_form(http, tiktok.token_url, form)


async def user_info(
    http: aiohttp.ClientSession,
    tiktok: TikTokEmulator,
    token: str | None,
    fields: str | None = "open_id,display_name",
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    params = {"fields": fields} if fields is not None else {}
    async with http.get(tiktok.profile_url, headers=headers, params=params) as response:
        return response.status, await response.json(), response.headers


class ConsentForm(HTMLParser):
    """Extract the consent form's action, hidden fields, checkboxes and user options."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action = ""
        self.hidden: list[tuple[str, str]] = []
        self.checkboxes: list[dict[str, str | None]] = []
        self.users: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.action = values["action"] or ""
        elif tag == "input" and values.get("type") == "hidden":
            self.hidden.append((values["name"] or "", values["value"] or ""))
        elif tag == "input" and values.get("type") == "checkbox":
            self.checkboxes.append(values)
        elif tag == "option":
            self.users.append(values["value"] or "")


def oauth_status(tiktok: TikTokEmulator, error: str) -> int:
    """The HTTP status of an OAuth error in the emulator's error-status mode (§A5)."""
    if tiktok.error_status == "200":
        return 200
    return 401 if error == "invalid_client" else 400


def assert_oauth_error(
    tiktok: TikTokEmulator,
    status: int,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    error: str,
) -> None:
    assert status == oauth_status(tiktok, error), body
    assert set(body) == {"error", "error_description", "log_id"}
    assert body["error"] == error
    assert re.fullmatch(r"\d{14}[0-9A-F]{20}", body["log_id"])
    assert headers["x-tt-logid"] == body["log_id"]


# --- authorization -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/auth/authorize/", "/v2/auth/authorize"])
async def test_authorize_approve_redirects_with_code_scopes_and_state(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, path: str
) -> None:
    page = await authorize(http, tiktok, path=path)
    assert page.status == 302
    assert page.location is not None
    assert page.location.startswith(WEB_REDIRECT + "?code=")
    assert list(page.query) == ["code", "scopes", "state"]
    assert page.query["scopes"] == "user.info.basic,user.info.profile"
    assert page.query["state"] == STATE


async def test_form_consent_with_an_optional_scope_unticked(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.consent = "form"
    verifier, challenge = pkce()
    page = await authorize(
        http,
        tiktok,
        scope="user.info.basic,user.info.profile,user.info.stats",
        code_challenge=challenge,
    )
    assert page.status == 200
    assert page.location is None
    form = ConsentForm(page.text)
    assert form.action == "/v2/auth/authorize/consent"
    boxes = {box["value"]: box for box in form.checkboxes}
    assert list(boxes) == ["user.info.basic", "user.info.profile", "user.info.stats"]
    assert "disabled" in boxes["user.info.basic"]  # always granted
    assert "name" not in boxes["user.info.basic"]
    assert "disabled" not in boxes["user.info.profile"]
    assert "user.info.profile" in boxes
    assert "user.info.stats" in boxes
    assert form.users == ["emulated-creator", "second-viewer"]
    hidden = dict(form.hidden)
    assert hidden["scope"] == "user.info.basic"
    submitted = [
        *form.hidden,
        ("scope", "user.info.profile"),
        ("user", "second-viewer"),
        ("decision", "approve"),
    ]
    async with http.post(
        tiktok.url_for(form.action), data=submitted, allow_redirects=False
    ) as response:
        assert response.status == 302
        answer = Page(response.status, response.headers, await response.text())
    assert answer.query["scopes"] == "user.info.basic,user.info.profile"
    assert answer.query["state"] == STATE
    status, token, _ = await exchange(http, tiktok, answer.query["code"], verifier)
    assert status == 200
    assert token["scope"] == "user.info.basic,user.info.profile"
    status, body, _ = await user_info(http, tiktok, token["access_token"], "display_name,username")
    assert status == 200
    assert body["data"]["user"] == {"display_name": "Second Viewer", "username": "second.viewer"}
    status, body, _ = await user_info(http, tiktok, token["access_token"], "follower_count")
    assert status == 401
    assert body["error"]["code"] == "scope_not_authorized"

    async with http.post(
        tiktok.url_for(form.action), data=submitted, allow_redirects=False
    ) as response:
        assert response.status == 400  # the pending authorization is used up
        assert response.headers.get("Location") is None


async def test_consent_post_cannot_add_scopes_or_change_the_redirect(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.consent = "form"
    page = await authorize(http, tiktok, scope="user.info.basic")
    form = ConsentForm(page.text)
    submitted = [
        *form.hidden,
        ("scope", "user.info.stats"),
        ("redirect_uri", "https://evil.example/"),
        ("decision", "approve"),
    ]
    async with http.post(
        tiktok.url_for(form.action), data=submitted, allow_redirects=False
    ) as response:
        location = response.headers["Location"]
    assert location.startswith(WEB_REDIRECT + "?")
    assert parse_qs(urlsplit(location).query)["scopes"] == ["user.info.basic"]


async def test_consent_post_with_unknown_request_id(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    data = {"request_id": "forged", "decision": "approve"}
    async with http.post(
        tiktok.url_for("/v2/auth/authorize/consent"), data=data, allow_redirects=False
    ) as response:
        assert response.status == 400
        assert "Location" not in response.headers


async def test_form_deny(tiktok: TikTokEmulator, http: aiohttp.ClientSession) -> None:
    tiktok.consent = "form"
    form = ConsentForm((await authorize(http, tiktok)).text)
    async with http.post(
        tiktok.url_for(form.action),
        data=[*form.hidden, ("decision", "deny")],
        allow_redirects=False,
    ) as response:
        answer = Page(response.status, response.headers, "")
    assert answer.status == 302
    assert answer.query["error"] == "access_denied"
    assert answer.query["error_description"]
    assert answer.query["state"] == STATE
    assert "code" not in answer.query


async def test_consent_mode_deny(tiktok: TikTokEmulator, http: aiohttp.ClientSession) -> None:
    tiktok.consent = "deny"
    page = await authorize(http, tiktok)
    assert page.status == 302
    assert page.location is not None
    assert page.location.startswith(WEB_REDIRECT + "?error=access_denied&error_description=")
    assert page.query["state"] == STATE


async def test_withheld_scopes_never_include_basic(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.withheld_scopes = frozenset({"user.info.stats", "user.info.basic"})
    page = await authorize(http, tiktok, scope="user.info.basic,user.info.stats,user.info.profile")
    assert page.query["scopes"] == "user.info.basic,user.info.profile"


async def test_auto_auth_skips_the_form_unless_disabled(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.consent = "form"
    form = ConsentForm((await authorize(http, tiktok)).text)
    async with http.post(
        tiktok.url_for(form.action),
        data=[*form.hidden, ("scope", "user.info.profile"), ("decision", "approve")],
        allow_redirects=False,
    ) as response:
        assert response.status == 302
    again = await authorize(http, tiktok)
    assert again.status == 302
    assert again.query["scopes"] == "user.info.basic,user.info.profile"
    forced = await authorize(http, tiktok, disable_auto_auth="1")
    assert forced.status == 200
    wider = await authorize(http, tiktok, scope="user.info.basic,user.info.stats")
    assert wider.status == 200


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"client_key": "unknown"}, "client_key"),
        ({"client_key": None, "client_id": WEB.client_key}, "client_key"),
        ({"redirect_uri": WEB_REDIRECT.rstrip("/")}, "redirect_uri"),
        ({"redirect_uri": "https://evil.example/callback/"}, "redirect_uri"),
        ({"redirect_uri": None}, "redirect_uri"),
        ({"code_challenge": None}, "code_challenge"),
        ({"code_challenge_method": "plain"}, "code_challenge_method"),
        ({"code_challenge_method": ""}, "code_challenge_method"),
        ({"client_secret": WEB.client_secret}, "client_secret"),
    ],
)
async def test_bad_requests_get_an_error_page_and_no_redirect(
    tiktok: TikTokEmulator,
    http: aiohttp.ClientSession,
    overrides: dict[str, Any],
    param: str,
) -> None:
    page = await authorize(http, tiktok, **overrides)
    assert page.status == 400
    assert page.location is None
    assert page.headers["Content-Type"].startswith("text/html")
    assert "We couldn&#x27;t log in with TikTok" in page.text
    assert f"<code>{param}</code>" in page.text
    assert f'data-error-param="{param}"' in page.text
    assert WEB.client_secret not in page.text


async def test_desktop_apps_always_need_pkce(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.require_pkce_web = False
    page = await authorize(http, tiktok, app=DESKTOP, code_challenge=None)
    assert page.status == 400
    assert "<code>code_challenge</code>" in page.text


async def test_web_apps_without_pkce_when_not_required(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.require_pkce_web = False
    page = await authorize(http, tiktok, code_challenge=None, code_challenge_method=None)
    assert page.status == 302
    status, body, _ = await exchange(http, tiktok, page.query["code"], None)
    assert status == 200, body


async def test_desktop_wildcard_port(tiktok: TikTokEmulator, http: aiohttp.ClientSession) -> None:
    for port in ("1", "8765", "65535"):
        page = await authorize(
            http, tiktok, app=DESKTOP, redirect_uri=f"http://127.0.0.1:{port}/callback/"
        )
        assert page.status == 302
        assert page.location is not None
        assert page.location.startswith(f"http://127.0.0.1:{port}/callback/?code=")
    for uri in (
        "http://127.0.0.1/callback/",
        "http://127.0.0.1:0/callback/",
        "http://127.0.0.1:80/other/",
        "http://localhost:80/callback/",
        "https://127.0.0.1:80/callback/",
        "http://127.0.0.1:80/callback/?x=1",
    ):
        page = await authorize(http, tiktok, app=DESKTOP, redirect_uri=uri)
        assert page.status == 400, uri
        assert "<code>redirect_uri</code>" in page.text


async def test_code_challenge_without_its_method_means_s256(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A3: TikTok's own SDKs send ``code_challenge`` without ``code_challenge_method``."""
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge, code_challenge_method=None)
    assert page.status == 302, page.text
    status, body, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200, body
    assert body["access_token"].startswith("act.")
    page = await authorize(http, tiktok, code_challenge=challenge, code_challenge_method=None)
    status, body, headers = await exchange(http, tiktok, page.query["code"], "x" * 43)
    assert_oauth_error(tiktok, status, body, headers, "invalid_request")  # still checked


async def test_code_challenge_method_can_be_required(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A3: the knob for the stricter reading of TikTok's desktop doc."""
    tiktok.require_code_challenge_method = True
    page = await authorize(http, tiktok, code_challenge_method=None)
    assert page.status == 400
    assert page.location is None
    assert 'data-error-param="code_challenge_method"' in page.text


@pytest.mark.parametrize(
    "scope",
    [
        "user.info.basic user.info.profile",
        "user.info.basic,user.info.profile ",
        "user.info.basic,user.info.email",  # unknown
        "user.info.basic,video.list",  # known, not approved for WEB
    ],
)
async def test_unknown_or_unapproved_scope_stays_on_tiktoks_error_page(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, scope: str
) -> None:
    """§A1: no redirect to the client; the URL gains ``error=invalid_scope&error_type=scope``."""
    page = await authorize(http, tiktok, scope=scope)
    assert page.status == 302
    assert page.location is not None
    location = urlsplit(page.location)
    assert location.path == "/v2/auth/authorize/"
    assert not location.netloc or page.location.startswith(tiktok.url)
    assert page.query["error"] == "invalid_scope"
    assert page.query["error_type"] == "scope"
    assert page.query["scope"] == scope
    assert page.query["client_key"] == WEB.client_key
    async with http.get(tiktok.url_for(page.location), allow_redirects=False) as response:
        assert response.status == 400
        assert "Location" not in response.headers
        text = await response.text()
    assert "We couldn&#x27;t log in with TikTok" in text
    assert 'data-error-param="scope"' in text


@pytest.mark.parametrize("scope", ["", None])
async def test_a_missing_scope_redirects_with_invalid_request(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, scope: str | None
) -> None:
    page = await authorize(http, tiktok, scope=scope)
    assert page.status == 302
    assert page.location is not None
    assert page.location.startswith(WEB_REDIRECT + "?")
    assert page.query["error"] == "invalid_request"
    assert page.query["error_description"]
    assert page.query["state"] == STATE


async def test_response_type_must_be_code(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    page = await authorize(http, tiktok, response_type="token")
    assert page.query["error"] == "unsupported_response_type"


async def test_state_is_optional(tiktok: TikTokEmulator, http: aiohttp.ClientSession) -> None:
    page = await authorize(http, tiktok, state=None)
    assert page.status == 302
    assert "state" not in page.query


def test_redirect_uri_registration_rules() -> None:
    assert redirect_uri_problem("https://app.example.test/cb/", "web") is None
    assert redirect_uri_problem("http://app.example.test/cb/", "web")
    assert redirect_uri_problem("https://localhost:3000/cb/", "web")
    assert redirect_uri_problem("https://app.example.test/cb/?x=1", "web")
    assert redirect_uri_problem("https://app.example.test/cb/#x", "web")
    assert redirect_uri_problem("https://app.example.test/" + "a" * 600, "web")
    assert redirect_uri_problem("app.example.test/cb", "web")
    assert redirect_uri_problem("http://localhost:3455/callback/", "desktop") is None
    assert redirect_uri_problem("https://127.0.0.1:*/callback/", "desktop") is None
    assert redirect_uri_problem("http://localhost/callback/", "desktop")
    assert redirect_uri_problem("http://example.test:3455/callback/", "desktop")
    assert redirect_uri_problem("ftp://localhost:3455/callback/", "desktop")
    with pytest.raises(ValueError, match="https"):
        EmulatedApp(client_key="k", client_secret="s", redirect_uris=["http://a.test/"])
    with pytest.raises(ValueError, match="1 to 10"):
        EmulatedApp(
            client_key="k",
            client_secret="s",
            redirect_uris=[f"https://a.test/{i}/" for i in range(11)],
        )
    with pytest.raises(ValueError, match="unknown scopes"):
        EmulatedApp(
            client_key="k",
            client_secret="s",
            redirect_uris=["https://a.test/"],
            approved_scopes=["user.info.email"],
        )
    app = EmulatedApp(
        client_key="k", client_secret="s", redirect_uris="https://a.test/", approved_scopes=()
    )
    assert app.approved_scopes == {"user.info.basic"}
    assert "client_secret" not in repr(app)


# --- token endpoint ----------------------------------------------------------------------------


async def test_code_exchange_with_hex_pkce(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A4: TikTok's success body, with the 2026 lifetimes (2 h and 180 days)."""
    verifier, challenge = pkce("hex")
    page = await authorize(http, tiktok, code_challenge=challenge)
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200
    assert list(body) == [
        "access_token",
        "expires_in",
        "open_id",
        "refresh_expires_in",
        "refresh_token",
        "scope",
        "token_type",
    ]
    assert body["access_token"].startswith("act.")
    assert body["refresh_token"].startswith("rft.")
    assert body["expires_in"] == 7_200  # §A4: TikTok's 2026 lifetimes, 2 h
    assert body["refresh_expires_in"] == 15_552_000  # and 180 days
    assert body["scope"] == "user.info.basic,user.info.profile"
    assert body["token_type"] == "Bearer"
    assert body["open_id"] == TikTokEmulator.open_id("emulated-creator", WEB.client_key)
    assert re.fullmatch(r"\d{14}[0-9A-F]{20}", headers["x-tt-logid"])
    assert headers["Cache-Control"] == "no-store"


async def test_open_id_is_stable_per_user_and_client(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    first = await login(http, tiktok)
    second = await login(http, tiktok)
    desktop = await login(http, tiktok, app=DESKTOP)
    assert first["open_id"] == second["open_id"]
    assert first["open_id"] != desktop["open_id"]
    _, web_user, _ = await user_info(http, tiktok, first["access_token"], "open_id,union_id")
    _, desktop_user, _ = await user_info(http, tiktok, desktop["access_token"], "open_id,union_id")
    assert web_user["data"]["user"]["union_id"] == desktop_user["data"]["user"]["union_id"]
    assert web_user["data"]["user"]["open_id"] == first["open_id"]


async def test_base64url_challenge_is_rejected_by_default(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    verifier, challenge = pkce("base64url")
    page = await authorize(http, tiktok, code_challenge=challenge)
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert_oauth_error(tiktok, status, body, headers, "invalid_request")
    assert body["error_description"] == "Code verifier or code challenge is invalid."
    tiktok.pkce_encoding = "either"  # a failed verifier does not use the code up
    status, body, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200, body


async def test_base64url_mode_rejects_hex(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.pkce_encoding = "base64url"
    verifier, challenge = pkce("hex")
    page = await authorize(http, tiktok, code_challenge=challenge)
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert_oauth_error(tiktok, status, body, headers, "invalid_request")
    with pytest.raises(ValueError, match="pkce_encoding"):
        tiktok.pkce_encoding = "plain"  # type: ignore[assignment]


@pytest.mark.parametrize("verifier", [None, "", "wrong" * 10, "short", "a" * 31, "a" * 129])
async def test_missing_or_wrong_verifier(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, verifier: str | None
) -> None:
    page = await authorize(http, tiktok)
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert_oauth_error(tiktok, status, body, headers, "invalid_request")
    assert body["error_description"] == "Code verifier or code challenge is invalid."


@pytest.mark.parametrize("length", [32, 43, 128])
async def test_verifiers_of_32_characters_and_more_are_accepted(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, length: int
) -> None:
    """§A3: TikTok's Android SDK sends 32-character alphanumeric verifiers."""
    verifier = (secrets.token_hex(64) + "A-._~")[-length:]
    challenge = hashlib.sha256(verifier.encode()).hexdigest()
    page = await authorize(http, tiktok, code_challenge=challenge)
    status, body, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200, body


async def test_rfc_verifier_length_is_a_knob(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A3: ``min_verifier_length=43`` applies RFC 7636 and TikTok's desktop doc."""
    tiktok.min_verifier_length = 43
    verifier = secrets.token_hex(16)
    page = await authorize(
        http, tiktok, code_challenge=hashlib.sha256(verifier.encode()).hexdigest()
    )
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert_oauth_error(tiktok, status, body, headers, "invalid_request")
    assert body["error_description"] == "Code verifier or code challenge is invalid."
    with pytest.raises(ValueError, match="min_verifier_length"):
        tiktok.min_verifier_length = 129


async def test_code_replay_is_invalid_grant(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    status, _, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")


async def test_code_expires(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    clock.advance(600)
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")
    assert "expired" in body["error_description"]


async def test_code_ttl_is_configurable(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    tiktok.code_ttl = 30
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    clock.advance(29)
    status, _, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"redirect_uri": WEB_REDIRECT.rstrip("/")}, "invalid_request"),  # §A4
        (
            {"client_key": DESKTOP.client_key, "client_secret": DESKTOP.client_secret},
            "invalid_grant",
        ),
        ({"code": "made-up"}, "invalid_grant"),
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_key": "unknown"}, "invalid_client"),
        ({"client_secret": None}, "invalid_request"),
        ({"client_key": None, "client_id": WEB.client_key}, "invalid_request"),
        ({"code": None}, "invalid_request"),
        ({"redirect_uri": None}, "invalid_request"),
        ({"grant_type": None}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
    ],
)
async def test_token_errors(
    tiktok: TikTokEmulator,
    http: aiohttp.ClientSession,
    overrides: dict[str, Any],
    error: str,
) -> None:
    """§A4/§A5: a redirect-URI mismatch is ``invalid_request``; all come with HTTP 200."""
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier, **overrides)
    assert_oauth_error(tiktok, status, body, headers, error)
    if overrides == {"client_secret": None}:
        assert body["error_description"] == "Client secret is missed in request."
    if overrides == {"redirect_uri": WEB_REDIRECT.rstrip("/")}:
        assert body["error_description"] == (
            "Redirect_uri is not matched with the uri when requesting code."
        )
    status, _, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200  # none of these errors used the code up


async def test_oauth_errors_come_with_http_200_by_default(http: aiohttp.ClientSession) -> None:
    """§A5: TikTok answers token and revoke errors with HTTP 200 and an ``error`` body."""
    async with TikTokEmulator() as emulator:
        assert emulator.error_status == "200"
        wrong = {"client_key": DEFAULT_CLIENT_KEY, "client_secret": "wrong"}
        for url, form in [
            (emulator.token_url, {**wrong, "grant_type": "refresh_token", "refresh_token": "x"}),
            (emulator.token_url, {"client_key": DEFAULT_CLIENT_KEY, "grant_type": "x"}),
            (emulator.revoke_url, {**wrong, "token": "act.x"}),
        ]:
            status, body, _ = await post_form(http, url, form)
            assert status == 200
            assert body["error"] in {"invalid_client", "invalid_request"}
            assert body["log_id"]
        emulator.error_status = "4xx"
        status, body, _ = await post_form(http, emulator.revoke_url, {**wrong, "token": "act.x"})
        assert (status, body["error"]) == (401, "invalid_client")
        with pytest.raises(ValueError, match="error_status"):
            emulator.error_status = "500"  # type: ignore[assignment]


async def test_json_bodies_are_rejected(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A4: a JSON body gets ``invalid_request`` naming the one accepted content type."""
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    payload = {
        "client_key": WEB.client_key,
        "client_secret": WEB.client_secret,
        "code": page.query["code"],
        "grant_type": "authorization_code",
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": verifier,
    }
    async with http.post(tiktok.token_url, json=payload) as response:
        body = await response.json()
        assert_oauth_error(tiktok, response.status, body, response.headers, "invalid_request")
    assert body["error_description"] == (
        "Only `application/x-www-form-urlencoded` is accepted as Content-Type."
    )
    status, _, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200  # the code was not used up


async def test_duplicate_parameters_are_rejected(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    data = [("client_key", WEB.client_key), ("client_key", WEB.client_key), ("client_secret", "x")]
    async with http.post(tiktok.token_url, data=data) as response:
        assert_oauth_error(
            tiktok, response.status, await response.json(), response.headers, "invalid_request"
        )


async def test_refresh_rotates_tokens(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    first = await login(http, tiktok)
    clock.advance(3600)
    status, second, _ = await refresh(http, tiktok, first["refresh_token"])
    assert status == 200
    assert list(second) == list(first)
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["refresh_token"].startswith("rft.")
    assert second["scope"] == first["scope"]
    assert second["open_id"] == first["open_id"]
    status, body, headers = await refresh(http, tiktok, first["refresh_token"])
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")
    status, _, _ = await refresh(http, tiktok, second["refresh_token"])
    assert status == 200
    status, _, _ = await user_info(http, tiktok, first["access_token"])
    assert status == 200  # earlier access tokens live until they expire


async def test_refresh_without_rotation(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    tiktok.rotate_refresh_tokens = False
    first = await login(http, tiktok)
    clock.advance(100)
    for _ in range(2):
        status, body, _ = await refresh(http, tiktok, first["refresh_token"])
        assert status == 200
        assert body["refresh_token"] == first["refresh_token"]
        assert body["refresh_expires_in"] == 15_552_000 - 100


async def test_refresh_failures(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    tiktok.refresh_token_ttl = 1000
    first = await login(http, tiktok)
    assert first["refresh_expires_in"] == 1000
    status, body, headers = await refresh(http, tiktok, first["refresh_token"], app=DESKTOP)
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")
    status, body, headers = await refresh(http, tiktok, "rft.unknown")
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")
    clock.advance(1000)
    status, body, headers = await refresh(http, tiktok, first["refresh_token"])
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")
    assert "expired" in body["error_description"]


async def test_lifetimes_are_configurable(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.access_token_ttl = 86_400  # TikTok's classic page: 24 h and 365 days
    tiktok.refresh_token_ttl = 31_536_000
    body = await login(http, tiktok)
    assert (body["expires_in"], body["refresh_expires_in"]) == (86_400, 31_536_000)


async def test_client_credentials(tiktok: TikTokEmulator, http: aiohttp.ClientSession) -> None:
    form = {
        "client_key": WEB.client_key,
        "client_secret": WEB.client_secret,
        "grant_type": "client_credentials",
    }
    status, body, _ = await post_form(http, tiktok.token_url, form)
    assert status == 200
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["access_token"].startswith("clt.")
    assert body["expires_in"] == 7200
    assert body["token_type"] == "Bearer"
    status, info, _ = await user_info(http, tiktok, body["access_token"])
    assert status == 401
    assert info["error"]["code"] == "access_token_invalid"


# --- revoke ------------------------------------------------------------------------------------


async def test_revoke_kills_access_and_refresh(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    token = await login(http, tiktok)
    form = {
        "client_key": WEB.client_key,
        "client_secret": WEB.client_secret,
        "token": token["access_token"],
    }
    status, body, headers = await post_form(http, tiktok.revoke_url, form)
    assert status == 200
    assert body == {}
    assert "x-tt-logid" in headers
    status, info, _ = await user_info(http, tiktok, token["access_token"])
    assert status == 401
    assert info["error"]["code"] == "access_token_invalid"
    status, body, headers = await refresh(http, tiktok, token["refresh_token"])
    assert_oauth_error(tiktok, status, body, headers, "invalid_grant")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {
                "access_token": "act.x",
                "client_key": WEB.client_key,
                "client_secret": WEB.client_secret,
            },
            "invalid_request",
        ),
        ({"token": "act.x"}, "invalid_request"),
        (
            {"token": "act.x", "client_key": WEB.client_key, "client_secret": "nope"},
            "invalid_client",
        ),
    ],
)
async def test_revoke_errors(
    tiktok: TikTokEmulator,
    http: aiohttp.ClientSession,
    form: dict[str, str],
    error: str,
) -> None:
    """§A5/§A8: revoke errors have the token endpoint's shape and status."""
    status, body, headers = await post_form(http, tiktok.revoke_url, form)
    assert_oauth_error(tiktok, status, body, headers, error)


async def test_revoke_forgets_the_remembered_consent(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A8: after a revoke, auto-auth no longer re-grants silently: consent starts over."""
    tiktok.consent = "form"
    form = ConsentForm((await authorize(http, tiktok)).text)
    async with http.post(
        tiktok.url_for(form.action),
        data=[*form.hidden, ("scope", "user.info.profile"), ("decision", "approve")],
        allow_redirects=False,
    ) as response:
        answer = Page(response.status, response.headers, "")
    verifier = "v" * 43
    again = await authorize(
        http, tiktok, code_challenge=hashlib.sha256(verifier.encode()).hexdigest()
    )
    assert again.status == 302  # remembered consent: no form
    _, token, _ = await exchange(http, tiktok, again.query["code"], verifier)
    assert answer.status == 302
    form_data = {
        "client_key": WEB.client_key,
        "client_secret": WEB.client_secret,
        "token": token["access_token"],
    }
    status, body, _ = await post_form(http, tiktok.revoke_url, form_data)
    assert (status, body) == (200, {})
    after = await authorize(http, tiktok)
    assert after.status == 200  # the consent form again
    assert ConsentForm(after.text).action == "/v2/auth/authorize/consent"


async def test_revoke_can_keep_the_remembered_consent(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """§A8: ``revoke_forgets_consent=False`` keeps the emulator's earlier behaviour."""
    tiktok.revoke_forgets_consent = False
    token = await login(http, tiktok)
    tiktok.consent = "form"
    form_data = {
        "client_key": WEB.client_key,
        "client_secret": WEB.client_secret,
        "token": token["access_token"],
    }
    status, _, _ = await post_form(http, tiktok.revoke_url, form_data)
    assert status == 200
    assert (await authorize(http, tiktok)).status == 302


async def test_revoke_needs_the_owning_client(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    token = await login(http, tiktok)
    form = {
        "client_key": DESKTOP.client_key,
        "client_secret": DESKTOP.client_secret,
        "token": token["access_token"],
    }
    status, body, headers = await post_form(http, tiktok.revoke_url, form)
    assert_oauth_error(tiktok, status, body, headers, "invalid_request")
    status, _, _ = await user_info(http, tiktok, token["access_token"])
    assert status == 200


# --- user info ---------------------------------------------------------------------------------


async def test_user_info_returns_only_requested_fields(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    token = await login(http, tiktok, scope="user.info.basic,user.info.profile,user.info.stats")
    fields = (
        ALL_BASIC_FIELDS
        + ",bio_description,profile_deep_link,is_verified,username,follower_count,following_count,likes_count,video_count"
    )
    status, body, headers = await user_info(http, tiktok, token["access_token"], fields)
    assert status == 200
    assert set(body) == {"data", "error"}
    assert body["error"]["code"] == "ok"
    assert body["error"]["message"] == ""
    assert body["error"]["log_id"] == headers["x-tt-logid"]
    user = body["data"]["user"]
    assert list(user) == fields.split(",")
    assert user["display_name"] == "Emulated Creator"
    assert user["username"] == "emulated.creator"
    assert user["is_verified"] is True
    assert user["follower_count"] == 12_345
    assert "email" not in user
    assert user["avatar_url"].startswith(tiktok.url)
    async with http.get(user["avatar_url_100"]) as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        svg = await response.text()
        assert svg.startswith("<svg")
        assert 'width="100"' in svg
        assert ">EC<" in svg
    async with http.get(tiktok.url_for("/emulator/avatar.svg")) as response:
        assert response.status == 200
    async with http.get(user["profile_deep_link"]) as response:
        assert response.status == 200
        assert "Emulated Creator" in await response.text()
    status, body, _ = await user_info(http, tiktok, token["access_token"], "display_name")
    assert body["data"]["user"] == {"display_name": "Emulated Creator"}


@pytest.mark.parametrize(
    ("fields", "status_code", "code"),
    [
        (None, 400, "invalid_params"),
        ("", 400, "invalid_params"),
        ("open_id,email", 400, "invalid_params"),
        ("open_id,follower_count", 401, "scope_not_authorized"),  # §A9
        ("username", 200, "ok"),  # user.info.profile was granted
    ],
)
async def test_user_info_field_checks(
    tiktok: TikTokEmulator,
    http: aiohttp.ClientSession,
    fields: str | None,
    status_code: int,
    code: str,
) -> None:
    """§A9: a field without its scope is a 401 ``scope_not_authorized``."""
    token = await login(http, tiktok)
    status, body, _ = await user_info(http, tiktok, token["access_token"], fields)
    assert status == status_code
    assert body["error"]["code"] == code
    if code != "ok":
        assert body["data"] == {}
        assert body["error"]["message"]


async def test_user_info_without_basic_scope(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    token = await login(http, tiktok, scope="user.info.profile")
    assert token["scope"] == "user.info.profile"
    status, body, _ = await user_info(http, tiktok, token["access_token"], "username")
    assert status == 401
    assert body["error"]["code"] == "scope_not_authorized"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer act.unknown", "Basic abc", "act.token"])
async def test_user_info_needs_a_valid_bearer(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with http.get(
        tiktok.profile_url, params={"fields": "open_id"}, headers=headers
    ) as response:
        body = await response.json()
        assert response.status == 401
        assert body["error"]["code"] == "access_token_invalid"
        assert body["data"] == {}


async def test_user_info_with_an_expired_token(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    token = await login(http, tiktok)
    clock.advance(86_400)
    status, body, _ = await user_info(http, tiktok, token["access_token"])
    assert status == 401
    assert body["error"]["code"] == "access_token_invalid"


async def test_user_info_rate_limit(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """§A10: 429 ``rate_limit_exceeded`` per app, without ``Retry-After`` unless asked."""
    tiktok.user_info_rate_limit = 3
    web_token = (await login(http, tiktok))["access_token"]
    desktop_token = (await login(http, tiktok, app=DESKTOP))["access_token"]
    for _ in range(3):
        status, _, _ = await user_info(http, tiktok, web_token)
        assert status == 200
    clock.advance(20)
    status, body, headers = await user_info(http, tiktok, web_token)
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["data"] == {}
    assert "Retry-After" not in headers  # §A10: TikTok documents none
    status, _, _ = await user_info(http, tiktok, desktop_token)
    assert status == 200  # limits are per app
    tiktok.rate_limit_retry_after = True
    status, _, headers = await user_info(http, tiktok, web_token)
    assert status == 429
    assert headers["Retry-After"] == "40"
    clock.advance(40)
    status, _, _ = await user_info(http, tiktok, web_token)
    assert status == 200


async def test_user_info_errors_with_http_200_when_asked(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    """Open question of the reference: v2 errors with HTTP 200 (``api_errors_http_200``)."""
    token = await login(http, tiktok)
    tiktok.api_errors_http_200 = True
    status, body, _ = await user_info(http, tiktok, token["access_token"], "follower_count")
    assert status == 200
    assert body["error"]["code"] == "scope_not_authorized"
    assert body["data"] == {}
    assert tiktok.faults is not None
    tiktok.faults.queue("500")
    status, body, _ = await user_info(http, tiktok, token["access_token"])
    assert (status, body["error"]["code"]) == (500, "internal_error")  # faults keep theirs


async def test_the_display_routes_answer_like_user_info(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """One v2 implementation: the token texts, ``Retry-After`` and ``api_errors_http_200``."""
    login_answer = await login(http, tiktok, app=DESKTOP, scope="user.info.basic,video.list")
    api = ContentAPI.of(tiktok)
    api.limits[VIDEO_LIST_PATH] = 1
    tiktok.rate_limit_retry_after = True

    async def video_list(token: str) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        headers = {"Authorization": f"Bearer {token}"}
        url = tiktok.url_for(VIDEO_LIST_PATH)
        async with http.post(url, json={}, headers=headers) as response:
            return response.status, await response.json(), response.headers

    status, body, headers = await video_list(login_answer["access_token"])
    assert (status, body["error"]["code"], headers["Pragma"]) == (200, "ok", "no-cache")
    clock.advance(20)
    status, body, headers = await video_list(login_answer["access_token"])
    assert (status, body["error"]["code"]) == (429, "rate_limit_exceeded")
    assert headers["Retry-After"] == "40"
    tiktok.api_errors_http_200 = True
    status, body, _ = await video_list("act.unknown")
    assert (status, body["error"]["code"]) == (200, "access_token_invalid")
    assert body["error"]["message"] == "Access token is invalid or not found in the request."
    api.fail_calls(VIDEO_LIST_PATH, 503)
    status, body, _ = await video_list(login_answer["access_token"])
    assert (status, body["error"]["code"]) == (503, "internal_error")  # a fault keeps its own


# --- faults ------------------------------------------------------------------------------------


async def token_statuses(
    http: aiohttp.ClientSession, emulator: TikTokEmulator, count: int
) -> list[int]:
    statuses = []
    for _ in range(count):
        async with http.post(emulator.token_url, data={"client_key": "x"}) as response:
            statuses.append(response.status)
            body = await response.json()
            if response.status >= 500:
                assert body["error"] in {"server_error", "temporarily_unavailable"}
                assert "log_id" in body
    return statuses


async def test_fault_injection_is_deterministic_and_counted(http: aiohttp.ClientSession) -> None:
    runs = []
    for _ in range(2):
        faults = FaultInjector(rate=0.5, seed=42, kinds=["500", "503", "429"])
        async with TikTokEmulator(faults=faults) as emulator:
            statuses = await token_statuses(http, emulator, 30)
        assert faults.total == sum(status != 200 for status in statuses)  # errors: 200
        assert faults.counts["500"] == statuses.count(500)
        assert faults.counts["429"] == statuses.count(429)
        runs.append(statuses)
    assert runs[0] == runs[1]
    assert 200 in runs[0]
    assert {500, 503, 429} & set(runs[0])


async def test_faults_spare_the_consent_flow_and_can_change_at_runtime(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    assert tiktok.faults is not None
    tiktok.faults.rate = 1.0
    tiktok.faults.kinds = ["429"]
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    assert page.status == 302
    status, body, headers = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 429
    assert headers["Retry-After"] == "1"
    tiktok.faults.kinds = ["500"]
    status, body, _ = await user_info(http, tiktok, "act.x")
    assert status == 500
    assert body["error"]["code"] == "internal_error"
    tiktok.faults.rate = 0.0
    status, body, _ = await exchange(http, tiktok, page.query["code"], verifier)
    assert status == 200  # the faults happened before the code was touched
    assert tiktok.faults.counts["429"] == 1
    assert tiktok.faults.counts["500"] == 1


async def test_reset_fault_on_the_token_endpoint(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    assert tiktok.faults is not None
    tiktok.faults.queue("reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        await token_statuses(http, tiktok, 1)


# --- code encoding -----------------------------------------------------------------------------


async def test_codes_need_percent_decoding_exactly_once(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    verifier, challenge = pkce()
    page = await authorize(http, tiktok, code_challenge=challenge)
    raw = page.raw_query.split("&")[0].removeprefix("code=")
    for encoded in ("%2A", "%21", "%25"):
        assert encoded in raw
    code = page.query["code"]
    for char in "*!%":
        assert char in code
    assert code == unquote(raw)
    for wrong in (raw, unquote(code)):
        status, body, headers = await exchange(http, tiktok, wrong, verifier)
        assert_oauth_error(tiktok, status, body, headers, "invalid_grant")
    status, _, _ = await exchange(http, tiktok, code, verifier)
    assert status == 200


async def test_plain_codes_when_encoding_is_off(
    tiktok: TikTokEmulator, http: aiohttp.ClientSession
) -> None:
    tiktok.codes_need_encoding = False
    page = await authorize(http, tiktok)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", page.query["code"])


# --- configuration and CLI ---------------------------------------------------------------------


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="default user"):
        TikTokEmulator(default_user="nobody")
    with pytest.raises(ValueError, match="consent"):
        TikTokEmulator(consent="maybe")
    with pytest.raises(ValueError, match="loopback"):
        TikTokEmulator(host="0.0.0.0")  # noqa: S104 - checks that it is refused
    emulator = TikTokEmulator()
    assert emulator.default_app.client_key == DEFAULT_CLIENT_KEY
    assert emulator.default_app.app_type == "desktop"
    assert emulator.faults is not None
    assert emulator.faults.rate == 0


async def test_default_user_and_custom_users(http: aiohttp.ClientSession) -> None:
    user = EmulatedUser(user_id="solo", display_name="Solo <b>", username="solo.user")
    async with TikTokEmulator(users=[user], consent="approve") as emulator:
        app = emulator.default_app
        token = await login(http, emulator, app=app)
        _, body, _ = await user_info(
            http, emulator, token["access_token"], "display_name,avatar_url"
        )
        assert body["data"]["user"]["display_name"] == "Solo <b>"
        async with http.get(body["data"]["user"]["avatar_url"]) as response:
            svg = await response.text()
        assert "<b>" not in svg
        assert "Solo &lt;b&gt;" in svg


async def test_cli_runs_until_sigterm(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [
        sys.executable,
        "-m",
        "keyloom_tiktok.emulator",
        "--port",
        "0",
        "--consent",
        "approve",
        "--client-key",
        "clikey",
        "--client-secret",
        "cli-secret",
        "--fault-rate",
        "0",
        "--seed",
        "1",
        "--error-status",
        "4xx",
    ]
    async with await anyio.open_process(command, env=env, stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        output = ""
        with anyio.fail_after(20):
            while "Ctrl-C" not in output:
                output += (await process.stdout.receive()).decode()
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", output)
        assert url is not None
        assert "client_key:    clikey" in output
        assert "client_secret: cli-secret" in output
        async with http.get(url.group(1) + "/emulator/health") as response:
            assert await response.json() == {"status": "ok"}
        async with http.post(url.group(1) + "/v2/oauth/token/", data={"x": "1"}) as response:
            assert response.status == 400  # --error-status 4xx
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0
