"""TikTok's rules where the emulator rides on the kit's AuthorizationServer hooks.

The consent request's lifetime (``consent_ttl``), the consent decision (``decide``: withheld
scopes and auto-auth), the callback's ``scopes`` (``callback_params``), the conformance
convention (``for_client``) and the command line (``add_arguments``, ``client_options``,
``server_options``, ``describe``).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from keyloom_tiktok.emulator import EmulatedApp, TikTokEmulator

from keyloom_core.testing.authserver import AuthorizationServer
from keyloom_core.testing.emulator import ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

REDIRECT = "https://app.example.test/callback/"
APP = EmulatedApp(
    client_key="awkitclient",
    client_secret="kit-secret",
    redirect_uris=[REDIRECT],
    approved_scopes=["user.info.profile", "user.info.stats"],
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


class _Hidden(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self.action = ""
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.action = values.get("action") or ""
        if tag == "input" and values.get("type") == "hidden":
            self.fields.append((values.get("name") or "", values.get("value") or ""))


async def _authorize(
    http: aiohttp.ClientSession, tiktok: TikTokEmulator, **extra: str
) -> tuple[int, str, dict[str, list[str]]]:
    challenge = hashlib.sha256(secrets.token_urlsafe(48).encode()).hexdigest()
    params = {
        "client_key": APP.client_key,
        "response_type": "code",
        "scope": "user.info.basic,user.info.profile,user.info.stats",
        "redirect_uri": REDIRECT,
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    url = f"{tiktok.authorize_url}?{urlencode(params)}"
    async with http.get(url, allow_redirects=False) as response:
        location = response.headers.get("Location", "")
        query = parse_qs(urlsplit(location).query)
        return response.status, await response.text(), query


async def test_it_is_the_kits_server_reading_the_plugins_spec() -> None:
    assert issubclass(TikTokEmulator, AuthorizationServer)
    emulator = TikTokEmulator()
    assert emulator.routes["authorize"] == "/v2/auth/authorize/"
    assert emulator.routes["profile"] == "/v2/user/info/"
    assert emulator.default_client_id() == "awkeyloomemulator"


async def test_a_consent_request_expires_after_consent_ttl(
    http: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    async with TikTokEmulator(clients=[APP], clock=clock, consent_ttl=30) as tiktok:
        status, page, _ = await _authorize(http, tiktok)
        assert status == 200
        form = _Hidden(page)
        clock.advance(31)
        data = [*form.fields, ("decision", "approve")]
        async with http.post(tiktok.url_for(form.action), data=data, allow_redirects=False) as r:
            assert r.status == 400
            assert "Location" not in r.headers
        _, page, _ = await _authorize(http, tiktok)
        form = _Hidden(page)
        clock.advance(29)
        async with http.post(
            tiktok.url_for(form.action),
            data=[*form.fields, ("decision", "approve")],
            allow_redirects=False,
        ) as r:
            assert r.status == 302
            query = parse_qs(urlsplit(r.headers["Location"]).query)
        assert query["scopes"] == ["user.info.basic"]  # nothing ticked: basic only
        assert list(query) == ["code", "scopes", "state"]


async def test_approve_withholds_scopes_and_a_remembered_consent_skips_the_form(
    http: aiohttp.ClientSession,
) -> None:
    options: dict[str, Any] = {"clients": [APP], "withheld_scopes": ["user.info.stats"]}
    async with TikTokEmulator(consent="approve", **options) as tiktok:
        status, _, query = await _authorize(http, tiktok)
        assert status == 302
        assert query["scopes"] == ["user.info.basic,user.info.profile"]
        tiktok.consent = "form"
        status, _, query = await _authorize(http, tiktok, scope="user.info.profile")
        assert status == 302  # auto-auth: every scope was granted before
        assert query["scopes"] == ["user.info.profile"]
        status, _, _ = await _authorize(http, tiktok)
        assert status == 200  # user.info.stats was withheld: the form again
        tiktok.auto_auth = False
        status, _, _ = await _authorize(http, tiktok, scope="user.info.profile")
        assert status == 200
        tiktok.consent = "deny"
        status, _, query = await _authorize(http, tiktok)
        assert (status, query["error"]) == (302, ["access_denied"])
        assert query["error_description"] == ["The user denied the authorization request."]


def test_for_client_registers_a_desktop_or_web_app_approved_for_the_scopes() -> None:
    loopback = TikTokEmulator.for_client(
        "awone", "s1", ["http://127.0.0.1:*/callback/"], ["user.info.stats"]
    )
    assert loopback.default_app.app_type == "desktop"
    assert "user.info.stats" in loopback.default_app.approved_scopes
    web = TikTokEmulator.for_client("awtwo", "s2", [REDIRECT], [], error_status="4xx")
    assert web.default_app.app_type == "web"
    assert web.default_app.approved_scopes == frozenset({"user.info.basic"})
    assert web.error_status == "4xx"


def test_command_line_options_reach_the_app_and_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        TikTokEmulator.main(["--app-type", "web"])
    assert exited.value.code == 2
    assert "web apps need at least one --redirect-uri" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        TikTokEmulator.main(["--help"])
    usage = capsys.readouterr().out
    for option in ("--client-key", "--redirect-uri", "--pkce-encoding", "--no-rotation"):
        assert option in usage
    args = ["--no-rotation", "--pkce-encoding", "either", "--error-status", "4xx"]
    parsed = _parse(args)
    options = TikTokEmulator.server_options(parsed)
    assert options["rotate_refresh_tokens"] is False
    assert options["pkce_encoding"] == "either"
    emulator = TikTokEmulator(**options)
    assert emulator.error_status == "4xx"
    app = TikTokEmulator.make_client("awcli", "s", ["http://localhost:*/cb/"])
    assert app.app_type == "desktop"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redirect-uri", action="append", default=[])
    TikTokEmulator.add_arguments(parser)
    return parser.parse_args(argv)


async def test_describe_lists_the_endpoints_and_the_redirect_uris() -> None:
    async with TikTokEmulator(clients=[APP]) as tiktok:
        lines = tiktok.describe()
    assert any(line.strip().startswith("authorize:") for line in lines)
    assert any("user info:" in line for line in lines)
    assert f"  redirect URI:  {REDIRECT}" in lines
    assert "  app type:      web" in lines


def test_the_old_grants_name_warns_and_names_book() -> None:
    emulator = TikTokEmulator()
    with pytest.warns(DeprecationWarning, match=r"TikTokEmulator\.grants is deprecated; use book"):
        assert emulator.grants is emulator.book


async def test_the_old_user_info_url_name_warns_and_names_profile_url() -> None:
    async with TikTokEmulator() as tiktok:
        with pytest.warns(
            DeprecationWarning, match=r"user_info_url is deprecated; use profile_url"
        ):
            assert tiktok.user_info_url == tiktok.profile_url == tiktok.url_for("/v2/user/info/")


def test_field_scopes_moved_to_the_api_module_and_the_old_name_warns() -> None:
    from keyloom_tiktok import emulator, emulator_api

    with pytest.warns(DeprecationWarning, match=r"use keyloom_tiktok\.emulator_api\.FIELD_SCOPES"):
        assert emulator.FIELD_SCOPES is emulator_api.FIELD_SCOPES
    assert emulator_api.FIELD_SCOPES["follower_count"] == "user.info.stats"
    assert emulator.USER_INFO_PATH == emulator_api.USER_INFO_PATH == "/v2/user/info/"


def test_a_misspelt_option_names_the_intended_one() -> None:
    with pytest.raises(TypeError, match=r"'pkce_encodng' \(did you mean 'pkce_encoding'\?\)"):
        TikTokEmulator(pkce_encodng="either")


def test_ttl_and_rate_limit_options_reach_the_book_and_the_limiter() -> None:
    emulator = TikTokEmulator(access_token_ttl=60, code_ttl=5, user_info_rate_limit=None)
    assert (emulator.book.access_ttl, emulator.book.code_ttl) == (60, 5)
    assert (emulator.book.refresh_ttl, emulator.rate_limiter.limit) == (15_552_000, None)
    assert TikTokEmulator().rate_limiter.limit == 600
