"""End-to-end TikTok logins through Keyloom's public API against the TikTok emulator."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from keyloom_tiktok import FIELDS_BY_SCOPE
from keyloom_tiktok.emulator import (
    DEFAULT_CLIENT_KEY,
    DEFAULT_CLIENT_SECRET,
    REVOKE_PATH,
    USER_INFO_PATH,
    EmulatedApp,
    TikTokEmulator,
)

from keyloom_core import (
    AccessDeniedError,
    ConfigurationError,
    PluginError,
    ProfileError,
    ReauthenticationRequiredError,
    RevokeError,
    ScopeDeniedError,
    StateError,
    TokenExchangeError,
)
from keyloom_core.testing.emulator import ManualClock, TokenFailure

pytestmark = pytest.mark.anyio

BASE_URL = "http://127.0.0.1:8000"
REDIRECT_URI = f"{BASE_URL}/api/auth/oauth/tiktok/callback"
BASIC, PROFILE, STATS = "user.info.basic", "user.info.profile", "user.info.stats"
SCOPES = frozenset({BASIC, PROFILE, STATS})
DEFAULT_USER = "emulated-creator"
OPEN_ID = TikTokEmulator.open_id(DEFAULT_USER, DEFAULT_CLIENT_KEY)
LOG_ID = re.compile(r"\d{14}[0-9A-F]{20}")


def fields(*scopes: str) -> set[str]:
    return {name for scope in scopes for name in FIELDS_BY_SCOPE[scope]}


def url_params(url: str) -> dict[str, str]:
    parsed = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


def expires_near(value: float | None, seconds: int, before: float, after: float) -> bool:
    return value is not None and before + seconds <= value <= after + seconds


# -- a complete login --------------------------------------------------------------------------


async def test_full_grant_gives_the_tiktok_profile_tokens_and_scopes(
    keyloom: Any, emulator: Any, login: Any
) -> None:
    before = time.time()
    result = await login(keyloom, emulator, callback_url="/dashboard?tab=1")
    after = time.time()

    profile = result.profile
    assert profile.provider_id == "tiktok"
    assert profile.id == OPEN_ID == profile.raw["open_id"]
    assert profile.name == "Emulated Creator" == profile.raw["display_name"]
    assert profile.image == profile.raw["avatar_url"]
    assert profile.image == emulator.url_for(f"/emulator/avatar/{DEFAULT_USER}.svg")
    assert profile.email is None
    assert profile.email_verified is False
    assert set(profile.raw) == fields(BASIC, PROFILE, STATS)
    assert profile.raw["username"] == "emulated.creator"
    assert profile.raw["follower_count"] == 12_345
    assert profile.extra == {}

    assert result.granted_scopes == SCOPES
    assert result.requested_scopes == SCOPES
    assert result.callback_url == "/dashboard?tab=1"

    tokens = result.tokens
    assert tokens.scopes == SCOPES
    assert tokens.account_id == OPEN_ID
    assert tokens.token_type == "Bearer"
    assert tokens.access_token.startswith("act.")
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.startswith("rft.")
    assert expires_near(tokens.expires_at, 7_200, before, after)
    assert expires_near(tokens.refresh_expires_at, 15_552_000, before, after)
    assert tokens.access_token not in repr(result)
    assert tokens.refresh_token not in repr(result)


async def test_the_code_exchange_and_profile_request_use_tiktoks_dialect(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    start = await keyloom.begin_login("tiktok")
    outcome = await authorize(start.url)
    assert outcome.consent_form_shown
    raw_code = parse_qs(urlsplit(outcome.location).query)["code"][0]
    assert outcome.location.startswith(REDIRECT_URI + "?")
    assert "%" in urlsplit(outcome.location).query.split("&")[0]  # the code arrives encoded
    await keyloom.complete_login("tiktok", outcome.query, start.state)

    (exchange,) = emulator.code_exchanges()
    assert exchange.status == 200
    assert exchange.form["code"] == raw_code  # percent-decoded exactly once
    assert exchange.form["client_key"] == DEFAULT_CLIENT_KEY
    assert exchange.form["client_secret"] == DEFAULT_CLIENT_SECRET
    assert "client_id" not in exchange.form
    assert exchange.form["redirect_uri"] == REDIRECT_URI
    assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", exchange.form["code_verifier"])
    assert not exchange.code_used_on_arrival

    (info,) = emulator.calls(USER_INFO_PATH)
    assert info.method == "GET"
    assert info.status == 200
    assert info.query["fields"].split(",") == [
        f for s in (BASIC, PROFILE, STATS) for f in FIELDS_BY_SCOPE[s]
    ]


async def test_authorization_url_shape(keyloom: Any, emulator: Any) -> None:
    start = await keyloom.begin_login("tiktok")
    parts = urlsplit(start.url)
    assert f"{parts.scheme}://{parts.netloc}" == emulator.url
    assert parts.path == "/v2/auth/authorize/"
    params = url_params(start.url)
    assert params["client_key"] == DEFAULT_CLIENT_KEY
    assert "client_id" not in params
    assert params["response_type"] == "code"
    assert params["scope"] == ",".join(sorted(SCOPES))
    assert " " not in params["scope"]
    assert re.fullmatch(r"[0-9a-f]{64}", params["code_challenge"])
    assert params["code_challenge_method"] == "S256"
    assert params["redirect_uri"] == REDIRECT_URI
    assert len(params["state"]) >= 16
    assert params["state"] != start.state
    assert "client_secret" not in params
    assert DEFAULT_CLIENT_SECRET not in start.url
    assert "disable_auto_auth" not in params
    assert start.expires_at > time.time()

    again = url_params((await keyloom.begin_login("tiktok")).url)
    assert again["state"] != params["state"]
    assert again["code_challenge"] != params["code_challenge"]


async def test_disable_auto_auth_shows_the_consent_screen_every_time(
    make_keyloom: Any, emulator: Any, login: Any, authorize: Any
) -> None:
    auto = await make_keyloom(emulator)
    await login(auto, emulator)
    start = await auto.begin_login("tiktok")
    outcome = await authorize(start.url)
    assert not outcome.consent_form_shown  # TikTok's auto-auth: already granted
    await auto.complete_login("tiktok", outcome.query, start.state)

    forced = await make_keyloom(emulator, disable_auto_auth=True)
    start = await forced.begin_login("tiktok")
    assert url_params(start.url)["disable_auto_auth"] == "1"
    outcome = await authorize(start.url)
    assert outcome.consent_form_shown
    result = await forced.complete_login("tiktok", outcome.query, start.state)
    assert result.profile.id == OPEN_ID


async def test_the_user_picked_on_the_consent_screen_is_the_one_signed_in(
    keyloom: Any, emulator: Any, login: Any
) -> None:
    result = await login(keyloom, emulator, user="second-viewer")
    assert result.profile.id == TikTokEmulator.open_id("second-viewer", DEFAULT_CLIENT_KEY)
    assert result.profile.id != OPEN_ID
    assert result.profile.name == "Second Viewer"


async def test_a_registered_fixed_redirect_uri_is_used_for_both_steps(
    make_keyloom: Any, emulator: Any, login: Any
) -> None:
    fixed = "http://127.0.0.1:8765/callback/"
    keyloom = await make_keyloom(emulator, redirect_uri=fixed)
    start = await keyloom.begin_login("tiktok")
    assert url_params(start.url)["redirect_uri"] == fixed
    result = await login(keyloom, emulator)
    assert result.profile.id == OPEN_ID
    assert [e.form["redirect_uri"] for e in emulator.code_exchanges()] == [fixed]


async def test_a_loopback_redirect_uri_given_to_begin_login_is_used_for_both_steps(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    loopback = "http://127.0.0.1:53682/callback/"
    start = await keyloom.begin_login("tiktok", redirect_uri=loopback)
    assert url_params(start.url)["redirect_uri"] == loopback
    outcome = await authorize(start.url)
    assert outcome.location.startswith(loopback + "?")
    result = await keyloom.complete_login("tiktok", outcome.query, start.state)
    assert result.profile.id == OPEN_ID
    assert [e.form["redirect_uri"] for e in emulator.code_exchanges()] == [loopback]


async def test_a_scope_without_profile_fields_asks_only_for_the_basic_fields(
    make_keyloom: Any, emulator: Any, login: Any
) -> None:
    keyloom = await make_keyloom(emulator, scopes=[BASIC, "video.list"])
    result = await login(keyloom, emulator)
    assert result.granted_scopes == {BASIC, "video.list"}
    assert set(result.profile.raw) == fields(BASIC)


async def test_a_scope_tiktok_has_not_approved_stops_at_tiktoks_error_page(
    make_emulator: Any, make_keyloom: Any, login: Any, authorize: Any
) -> None:
    """TikTok never redirects back for an unapproved scope: the user sees its error page."""
    app = EmulatedApp(
        client_key="awreviewpending",
        client_secret="review-pending-secret",
        redirect_uris=["http://127.0.0.1:*/api/auth/oauth/tiktok/callback"],
        app_type="desktop",
        approved_scopes=[BASIC, PROFILE],
    )
    emulator = await make_emulator(clients=[app], consent="approve")
    keyloom = await make_keyloom(
        emulator, client_id=app.client_key, client_secret=app.client_secret
    )
    start = await keyloom.begin_login("tiktok")
    outcome = await authorize(start.url)
    assert outcome.status == 400
    assert outcome.location is None
    assert outcome.error_param == "scope"
    page = url_params(outcome.page_url)
    assert (page["error"], page["error_type"]) == ("invalid_scope", "scope")
    assert page["scope"] == url_params(start.url)["scope"]
    with pytest.raises(RuntimeError, match=r"HTTP 400\): scope"):
        await login(keyloom, emulator)
    assert emulator.code_exchanges() == []
    assert emulator.book.sizes()["codes"] == 0


async def test_approved_scopes_catch_an_unapproved_scope_at_configuration(
    make_emulator: Any, make_keyloom: Any
) -> None:
    """The plugin's answer to that error page: name the approved scopes, fail at start-up."""
    emulator = await make_emulator()
    with pytest.raises(ConfigurationError, match=STATS):
        await make_keyloom(emulator, approved_scopes=[PROFILE])


# -- partial grants ----------------------------------------------------------------------------


async def test_optional_scope_unticked_on_the_consent_form_is_left_out(
    keyloom: Any, emulator: Any, login: Any
) -> None:
    result = await login(keyloom, emulator, untick=[STATS])
    assert result.granted_scopes == {BASIC, PROFILE}
    assert STATS not in result.granted_scopes
    assert result.requested_scopes == SCOPES
    assert result.tokens.scopes == {BASIC, PROFILE}
    assert set(result.profile.raw) == fields(BASIC, PROFILE)
    assert not set(result.profile.raw) & fields(STATS)
    (info,) = emulator.calls(USER_INFO_PATH)
    assert set(info.query["fields"].split(",")) == fields(BASIC, PROFILE)


async def test_two_optional_scopes_unticked_leave_only_the_basic_profile(
    keyloom: Any, emulator: Any, login: Any
) -> None:
    result = await login(keyloom, emulator, untick=[STATS, PROFILE])
    assert result.granted_scopes == {BASIC}
    assert set(result.profile.raw) == fields(BASIC)
    assert result.profile.name == "Emulated Creator"


async def test_optional_scope_withheld_by_the_user_is_left_out(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    emulator = await make_emulator(consent="approve", withheld_scopes=[PROFILE])
    keyloom = await make_keyloom(emulator)
    result = await login(keyloom, emulator)
    assert result.granted_scopes == {BASIC, STATS}
    assert set(result.profile.raw) == fields(BASIC, STATS)
    assert "username" not in result.profile.raw


async def test_required_scope_unticked_is_refused_before_the_code_is_redeemed(
    make_keyloom: Any, emulator: Any, login: Any
) -> None:
    keyloom = await make_keyloom(emulator, required_scopes=[BASIC, STATS])
    with pytest.raises(ScopeDeniedError) as info:
        await login(keyloom, emulator, untick=[STATS])
    assert info.value.missing == {STATS}
    assert STATS in str(info.value)
    assert info.value.provider_id == "tiktok"
    assert emulator.code_exchanges() == []
    assert emulator.book.sizes()["access_tokens"] == 0


async def test_required_scope_missing_from_the_token_answer_revokes_the_issued_token(
    make_keyloom: Any, emulator: Any, login: Any
) -> None:
    keyloom = await make_keyloom(emulator, required_scopes=[BASIC, STATS])
    with pytest.raises(ScopeDeniedError) as info:
        # Without the callback's "scopes", only the token answer tells what was granted.
        await login(keyloom, emulator, untick=[STATS], drop=["scopes"])
    assert info.value.missing == {STATS}
    (exchange,) = emulator.code_exchanges()
    assert exchange.status == 200
    (revoke,) = emulator.calls(REVOKE_PATH)
    assert revoke.status == 200
    assert revoke.form["client_key"] == DEFAULT_CLIENT_KEY
    token = revoke.form["token"]
    assert token.startswith("act.")
    assert emulator.book.lookup_access(token) is TokenFailure.REVOKED
    sizes = emulator.book.sizes()
    assert sizes["access_tokens"] == 0
    assert sizes["refresh_tokens"] == 0
    assert emulator.calls(USER_INFO_PATH) == []


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["consent-mode", "cancel-button"])
async def test_user_denies(make_emulator: Any, make_keyloom: Any, login: Any, how: str) -> None:
    emulator = await make_emulator(consent="deny" if how == "consent-mode" else "form")
    keyloom = await make_keyloom(emulator)
    with pytest.raises(AccessDeniedError) as info:
        await login(keyloom, emulator, decision="deny")
    assert info.value.error == "access_denied"
    assert info.value.description == "The user denied the authorization request."
    assert info.value.provider_id == "tiktok"
    assert emulator.code_exchanges() == []


async def test_wrong_client_secret_is_invalid_client_with_a_log_id(
    make_keyloom: Any, emulator: Any, login: Any, oauth_error_status: Any
) -> None:
    """§A4/§A5: ``invalid_client`` comes with HTTP 200 from TikTok; it is still an error."""
    wrong = "not-the-registered-secret-8d1f"
    keyloom = await make_keyloom(emulator, client_secret=wrong)
    with pytest.raises(TokenExchangeError) as info:
        await login(keyloom, emulator)
    error = info.value
    assert error.error == "invalid_client"
    assert error.http_status == oauth_error_status("invalid_client")
    assert error.log_id is not None
    assert LOG_ID.fullmatch(error.log_id)
    assert error.log_id in str(error)
    assert wrong not in str(error)
    assert wrong not in repr(error)
    assert emulator.calls(USER_INFO_PATH) == []


@pytest.mark.parametrize(
    "redirect_uri",
    [
        f"{REDIRECT_URI}/",  # one trailing slash too many
        "http://127.0.0.1:8000/auth/tiktok/callback",
        "http://127.0.0.1/api/auth/oauth/tiktok/callback",  # desktop apps need a port
    ],
)
async def test_unregistered_redirect_uri_stops_at_tiktoks_error_page(
    make_keyloom: Any, emulator: Any, login: Any, authorize: Any, redirect_uri: str
) -> None:
    keyloom = await make_keyloom(emulator, redirect_uri=redirect_uri)
    start = await keyloom.begin_login("tiktok")
    assert url_params(start.url)["redirect_uri"] == redirect_uri
    outcome = await authorize(start.url)
    assert outcome.status == 400
    assert outcome.location is None
    assert outcome.error_param == "redirect_uri"
    with pytest.raises(RuntimeError, match=r"HTTP 400\): redirect_uri"):
        await login(keyloom, emulator)
    assert emulator.book.sizes()["codes"] == 0


# -- replays and expiry ------------------------------------------------------------------------


async def test_replayed_callback_is_refused_by_the_state_guard(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    start = await keyloom.begin_login("tiktok")
    query = (await authorize(start.url)).query
    await keyloom.complete_login("tiktok", query, start.state)
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("tiktok", query, start.state)
    assert info.value.reason == "replayed"
    assert len(emulator.code_exchanges()) == 1


async def test_a_callback_after_the_state_expired_is_refused_before_the_code_is_redeemed(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    start = await keyloom.begin_login("tiktok")
    query = (await authorize(start.url)).query
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("tiktok", query, start.state, now=start.expires_at + 1)
    assert info.value.reason == "expired"
    assert emulator.code_exchanges() == []


async def test_a_double_submitted_callback_redeems_the_code_once(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    start = await keyloom.begin_login("tiktok")
    query = (await authorize(start.url)).query
    results: list[Any] = []
    errors: list[Exception] = []

    async def complete() -> None:
        try:
            results.append(await keyloom.complete_login("tiktok", query, start.state))
        except StateError as error:
            errors.append(error)

    async with anyio.create_task_group() as group:
        group.start_soon(complete)
        group.start_soon(complete)
    assert len(results) == 1
    assert [getattr(e, "reason", None) for e in errors] == ["replayed"]
    assert len(emulator.code_exchanges()) == 1


async def test_a_callback_for_another_browsers_sign_in_is_refused(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    victim = await keyloom.begin_login("tiktok")
    attacker = await keyloom.begin_login("tiktok")
    query = (await authorize(attacker.url)).query  # the attacker's code, planted on the victim
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("tiktok", query, victim.state)
    assert info.value.reason == "mismatch"
    assert emulator.code_exchanges() == []


async def test_a_code_redeemed_twice_at_the_token_endpoint_is_invalid_grant(
    keyloom: Any, emulator: Any, authorize: Any
) -> None:
    first = await keyloom.begin_login("tiktok")
    query = (await authorize(first.url)).query
    second = await keyloom.begin_login("tiktok")
    await keyloom.complete_login("tiktok", query, first.state)
    # The first callback's code, under a second sign-in's valid state.
    replay = {**query, "state": url_params(second.url)["state"]}
    with pytest.raises(TokenExchangeError) as info:
        await keyloom.complete_login("tiktok", replay, second.state)
    assert info.value.error == "invalid_grant"
    assert info.value.description == "Authorization code has been used."
    assert info.value.log_id is not None
    assert LOG_ID.fullmatch(info.value.log_id)
    assert [e.code_used_on_arrival for e in emulator.code_exchanges()] == [False, True]


@pytest.mark.parametrize(("wait", "expired"), [(599.0, False), (601.0, True)])
async def test_authorization_code_expiry(
    make_emulator: Any, make_keyloom: Any, authorize: Any, wait: float, expired: bool
) -> None:
    clock = ManualClock(time.time())
    emulator = await make_emulator(consent="approve", clock=clock, code_ttl=600.0)
    keyloom = await make_keyloom(emulator)
    start = await keyloom.begin_login("tiktok")
    query = (await authorize(start.url)).query
    clock.advance(wait)
    if not expired:
        result = await keyloom.complete_login("tiktok", query, start.state)
        assert result.profile.id == OPEN_ID
        return
    with pytest.raises(TokenExchangeError) as info:
        await keyloom.complete_login("tiktok", query, start.state)
    assert info.value.error == "invalid_grant"
    assert info.value.description == "Authorization code is expired."


# -- PKCE --------------------------------------------------------------------------------------


async def test_hex_challenge_against_a_base64url_provider_is_refused(
    make_emulator: Any, make_keyloom: Any, login: Any, oauth_error_status: Any
) -> None:
    emulator = await make_emulator(consent="approve", pkce_encoding="base64url")
    keyloom = await make_keyloom(emulator)
    with pytest.raises(TokenExchangeError) as info:
        await login(keyloom, emulator)
    assert info.value.error == "invalid_request"
    assert info.value.description == "Code verifier or code challenge is invalid."
    assert info.value.http_status == oauth_error_status("invalid_request")


async def test_base64url_pkce_option_works_against_a_base64url_provider(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    emulator = await make_emulator(consent="approve", pkce_encoding="base64url")
    keyloom = await make_keyloom(emulator, pkce_encoding="base64url")
    start = await keyloom.begin_login("tiktok")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", url_params(start.url)["code_challenge"])
    result = await login(keyloom, emulator)
    assert result.profile.id == OPEN_ID


async def test_base64url_challenge_against_the_default_hex_provider_is_refused(
    make_keyloom: Any, emulator: Any, login: Any
) -> None:
    keyloom = await make_keyloom(emulator, pkce_encoding="base64url")
    with pytest.raises(TokenExchangeError) as info:
        await login(keyloom, emulator)
    assert info.value.error == "invalid_request"
    assert info.value.description == "Code verifier or code challenge is invalid."


# -- tokens after the login --------------------------------------------------------------------


async def test_refresh_rotates_the_refresh_token_with_lifetimes_from_the_answer(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    emulator = await make_emulator(
        consent="approve", access_token_ttl=7_200, refresh_token_ttl=15_552_000
    )
    keyloom = await make_keyloom(emulator)
    before = time.time()
    result = await login(keyloom, emulator)
    after = time.time()
    old = result.tokens
    assert expires_near(old.expires_at, 7_200, before, after)
    assert expires_near(old.refresh_expires_at, 15_552_000, before, after)

    before = time.time()
    new = await keyloom.refresh("tiktok", old)
    after = time.time()
    assert new.access_token != old.access_token
    assert new.access_token.startswith("act.")
    assert new.refresh_token is not None
    assert new.refresh_token != old.refresh_token
    assert new.refresh_token.startswith("rft.")
    assert expires_near(new.expires_at, 7_200, before, after)
    assert expires_near(new.refresh_expires_at, 15_552_000, before, after)
    assert new.scopes == SCOPES
    assert new.account_id == OPEN_ID

    with pytest.raises(ReauthenticationRequiredError) as info:
        await keyloom.refresh("tiktok", old)
    assert info.value.error == "invalid_grant"
    assert info.value.description == "Refresh token has been revoked or rotated."

    profile = await keyloom.fetch_profile("tiktok", new)
    assert profile.id == OPEN_ID
    newer = await keyloom.refresh("tiktok", new)
    assert newer.refresh_token not in {old.refresh_token, new.refresh_token}


async def test_refresh_without_rotation_keeps_the_refresh_token_and_its_expiry(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    clock = ManualClock(time.time())
    emulator = await make_emulator(consent="approve", rotate_refresh_tokens=False, clock=clock)
    keyloom = await make_keyloom(emulator)
    old = (await login(keyloom, emulator)).tokens
    clock.advance(1_000)
    new = await keyloom.refresh("tiktok", old)
    assert new.access_token != old.access_token
    assert new.refresh_token == old.refresh_token
    # TikTok reports the remaining lifetime, so the absolute expiry is 1000 s earlier here
    # than the emulator's own clock says; what matters is that it came from the answer.
    assert old.refresh_expires_at is not None
    assert new.refresh_expires_at is not None
    assert abs((old.refresh_expires_at - 1_000) - new.refresh_expires_at) <= 2
    again = await keyloom.refresh("tiktok", old)
    assert again.refresh_token == old.refresh_token


async def test_an_expired_access_token_is_refreshed_and_then_reads_the_profile(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    clock = ManualClock(time.time())
    emulator = await make_emulator(consent="approve", clock=clock, access_token_ttl=7_200)
    keyloom = await make_keyloom(emulator)
    tokens = (await login(keyloom, emulator)).tokens
    clock.advance(7_200)
    with pytest.raises(ProfileError) as info:
        await keyloom.fetch_profile("tiktok", tokens)
    assert info.value.error == "access_token_invalid"
    assert info.value.description is not None
    assert "expired" in info.value.description
    fresh = await keyloom.refresh("tiktok", tokens)
    assert (await keyloom.fetch_profile("tiktok", fresh)).id == OPEN_ID


async def test_an_expired_refresh_token_requires_signing_in_again(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    clock = ManualClock(time.time())
    emulator = await make_emulator(consent="approve", clock=clock, refresh_token_ttl=86_400)
    keyloom = await make_keyloom(emulator)
    tokens = (await login(keyloom, emulator)).tokens
    clock.advance(86_400)
    with pytest.raises(ReauthenticationRequiredError) as info:
        await keyloom.refresh("tiktok", tokens)
    assert info.value.error == "invalid_grant"
    assert info.value.description == "Refresh token is expired."


async def test_revoked_tokens_no_longer_read_the_profile(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    emulator = await make_emulator(consent="approve")
    keyloom = await make_keyloom(emulator)
    tokens = (await login(keyloom, emulator)).tokens
    assert await keyloom.revoke("tiktok", tokens) is True
    (revoke,) = emulator.calls(REVOKE_PATH)
    assert revoke.form["token"] == tokens.access_token
    with pytest.raises(ProfileError) as info:
        await keyloom.fetch_profile("tiktok", tokens)
    assert info.value.error == "access_token_invalid"
    assert info.value.http_status == 401
    assert info.value.log_id is not None
    assert LOG_ID.fullmatch(info.value.log_id)
    with pytest.raises(ReauthenticationRequiredError):
        await keyloom.refresh("tiktok", tokens)


# -- profile_overrides -------------------------------------------------------------------------


async def test_profile_overrides_are_applied_last(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    seen: list[Any] = []

    def overrides(profile: Any) -> dict[str, Any]:
        seen.append(profile)
        return {
            "name": f"{profile.name} (@{profile.raw['username']})",
            "image": None,
            "username": profile.raw["username"],
            "verified": profile.raw["is_verified"],
        }

    emulator = await make_emulator(consent="approve")
    keyloom = await make_keyloom(emulator, profile_overrides=overrides)
    result = await login(keyloom, emulator)
    profile = result.profile
    # The override saw the plugin's finished profile, and its answer won.
    assert seen[0].name == "Emulated Creator"
    assert seen[0].image is not None
    assert profile.name == "Emulated Creator (@emulated.creator)"
    assert profile.image is None
    assert profile.id == OPEN_ID
    assert profile.email is None
    assert profile.extra == {"username": "emulated.creator", "verified": True}
    assert profile.to_user()["username"] == "emulated.creator"
    assert profile.raw["display_name"] == "Emulated Creator"

    again = await keyloom.fetch_profile("tiktok", result.tokens)
    assert again.name == profile.name
    assert again.extra == profile.extra


async def test_a_failing_profile_override_is_a_plugin_error(
    make_emulator: Any, make_keyloom: Any, login: Any
) -> None:
    def overrides(profile: Any) -> dict[str, Any]:
        return {"email": profile.raw["email"]}  # TikTok never sends one

    emulator = await make_emulator(consent="approve")
    keyloom = await make_keyloom(emulator, profile_overrides=overrides)
    with pytest.raises(PluginError) as info:
        await login(keyloom, emulator)
    assert info.value.plugin == "profile_overrides"
    assert "KeyError" in str(info.value)


# -- errors in a 200 body ----------------------------------------------------------------------


async def test_a_revoke_tiktok_refuses_is_a_revoke_error_and_the_tokens_still_work(
    make_keyloom: Any, emulator: Any, login: Any, oauth_error_status: Any
) -> None:
    """§A5/§A8: ``revoke()`` is ``True`` only when TikTok confirmed it, 200 or not."""
    keyloom = await make_keyloom(emulator)
    tokens = (await login(keyloom, emulator)).tokens
    wrong = "not-the-registered-secret-77a0"
    misconfigured = await make_keyloom(emulator, client_secret=wrong)
    with pytest.raises(RevokeError) as info:
        await misconfigured.revoke("tiktok", tokens)
    error = info.value
    assert error.error == "invalid_client"
    assert error.http_status == oauth_error_status("invalid_client")
    assert error.log_id is not None
    assert LOG_ID.fullmatch(error.log_id)
    assert wrong not in str(error)
    (revoke,) = emulator.calls(REVOKE_PATH)
    assert revoke.status == oauth_error_status("invalid_client")
    assert (await keyloom.fetch_profile("tiktok", tokens)).id == OPEN_ID  # nothing revoked
    assert await keyloom.revoke("tiktok", tokens) is True


@pytest.mark.parametrize("http_200", [False, True], ids=["documented-401", "http-200"])
async def test_a_profile_field_without_its_scope_is_scope_not_authorized(
    make_emulator: Any, make_keyloom: Any, login: Any, http_200: bool
) -> None:
    """§A9: TikTok answers 401 ``scope_not_authorized``; with HTTP 200 it is the same error."""
    emulator = await make_emulator(consent="approve", api_errors_http_200=http_200)
    keyloom = await make_keyloom(emulator, scopes=[BASIC], required_scopes=[BASIC])
    tokens = (await login(keyloom, emulator)).tokens
    claimed = attrs.evolve(tokens, scopes=frozenset({BASIC, STATS}))  # more than was granted
    with pytest.raises(ProfileError) as info:
        await keyloom.fetch_profile("tiktok", claimed)
    error = info.value
    assert error.error == "scope_not_authorized"
    assert error.http_status == (200 if http_200 else 401)
    assert error.description is not None
    assert STATS in error.description
    assert error.log_id is not None
    assert LOG_ID.fullmatch(error.log_id)


async def test_an_oauth_error_body_from_user_info_is_a_profile_error(
    make_keyloom: Any, emulator: Any, login: Any
) -> None:
    """A flat RFC 6749 error body with HTTP 200 names its error, not ``ok``."""
    keyloom = await make_keyloom(emulator)
    tokens = (await login(keyloom, emulator)).tokens
    body = {"error": "invalid_token", "error_description": "Expired.", "log_id": "L0G"}

    async def user_info(request: web.Request) -> web.Response:
        del request
        return web.json_response(body)

    app = web.Application()
    app.router.add_get(USER_INFO_PATH, user_info)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        elsewhere = await make_keyloom(emulator, endpoint_origin=str(server.make_url("")))
        with pytest.raises(ProfileError) as info:
            await elsewhere.fetch_profile("tiktok", tokens)
    finally:
        await server.close()
    error = info.value
    assert (error.error, error.description, error.log_id) == ("invalid_token", "Expired.", "L0G")
    assert error.http_status == 200
