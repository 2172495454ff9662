"""GitHub specifics of the plugin and of its emulator, beyond the conformance suite."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
import anyio
import attrs
import pytest
from keyloom_github import SPEC, github
from keyloom_github.emulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    EmulatedEmail,
    EmulatedOAuthApp,
    EmulatedUser,
    GitHubEmulator,
    callback_matches,
    normalise_scopes,
)

from keyloom_core import (
    AccessDeniedError,
    ConfigurationError,
    Keyloom,
    LoginResult,
    ProfileError,
    ReauthenticationRequiredError,
    RevokeError,
    TokenExchangeError,
    define_keyloom,
)

pytestmark = pytest.mark.anyio

BASE_URL = "https://app.example.test"
REDIRECT = f"{BASE_URL}/api/auth/oauth/github/callback"
SECRET = "github-test-signing-secret-0123456789abcdef"
APP = EmulatedOAuthApp(client_id="Ov23litest", client_secret="gh-secret", callback_urls=[REDIRECT])
NO_NAME = EmulatedUser(
    id=7,
    login="no-name",
    emails=(
        EmulatedEmail(email="old@example.test", primary=True, verified=False),
        EmulatedEmail(email="new@example.test", verified=True, visibility="public"),
    ),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def emulator() -> AsyncIterator[GitHubEmulator]:
    async with GitHubEmulator(clients=[APP], consent="approve") as server:
        yield server


def make_keyloom(emulator: GitHubEmulator, **options: Any) -> Keyloom:
    options.setdefault("client_id", APP.client_id)
    options.setdefault("client_secret", APP.client_secret)
    provider = github(endpoint_origin=emulator.url, **options)
    return define_keyloom(providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False)


async def callback_query(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as browser, browser.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return dict(parse_qsl(urlsplit(resp.headers["Location"]).query))


async def login(emulator: GitHubEmulator, **options: Any) -> LoginResult:
    async with make_keyloom(emulator, **options) as keyloom:
        start = await keyloom.begin_login("github")
        query = await callback_query(start.url)
        return await keyloom.complete_login("github", query, start.state)


# -- the provider ---------------------------------------------------------------------------


async def test_authorize_url_speaks_plain_oauth(emulator: GitHubEmulator) -> None:
    async with make_keyloom(emulator, scopes=["read:user", "gist"]) as keyloom:
        start = await keyloom.begin_login("github")
    url = urlsplit(start.url)
    assert url.path == "/login/oauth/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["client_id"] == APP.client_id
    assert query["scope"] == "gist read:user"
    assert query["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])  # base64url
    assert query["redirect_uri"] == REDIRECT


async def test_email_is_the_primary_verified_one(emulator: GitHubEmulator) -> None:
    result = await login(emulator)
    assert result.profile.email == "octocat@users.example.test"
    assert result.profile.email_verified
    assert result.profile.name == "Keyloom Octocat"
    assert result.profile.id == "1000001"
    assert result.granted_scopes == {"read:user", "user:email"}


async def test_no_email_when_the_primary_is_not_verified(emulator: GitHubEmulator) -> None:
    emulator.users[NO_NAME.login] = NO_NAME
    emulator.default_user = NO_NAME.login
    result = await login(emulator)
    assert result.profile.email is None  # the verified address is not the primary one
    assert not result.profile.email_verified
    assert result.profile.name == "no-name"  # no display name: the login
    assert result.profile.raw["email"] == "new@example.test"


@pytest.mark.parametrize(
    ("scopes", "email"),
    [(["read:user"], None), (["user"], "octocat@users.example.test")],
)
async def test_email_needs_an_email_scope(
    emulator: GitHubEmulator, scopes: list[str], email: str | None
) -> None:
    result = await login(emulator, scopes=scopes)
    assert result.profile.email == email
    assert result.granted_scopes == set(scopes)


async def test_errors_sent_with_http_200_are_typed(emulator: GitHubEmulator) -> None:
    with pytest.raises(TokenExchangeError) as caught:
        await login(emulator, client_secret="not-the-secret")
    assert caught.value.error == "incorrect_client_credentials"
    assert caught.value.http_status == 200
    assert "not-the-secret" not in str(caught.value)

    async with make_keyloom(emulator) as keyloom:
        start = await keyloom.begin_login("github")
        query = await callback_query(start.url)
        query["code"] = "0" * 20
        with pytest.raises(TokenExchangeError) as caught:
            await keyloom.complete_login("github", query, start.state)
    assert caught.value.error == "bad_verification_code"


async def test_a_denied_consent(emulator: GitHubEmulator) -> None:
    emulator.consent = "deny"
    with pytest.raises(AccessDeniedError):
        await login(emulator)


async def test_classic_tokens_have_no_refresh(emulator: GitHubEmulator) -> None:
    result = await login(emulator)
    assert result.tokens.refresh_token is None
    assert result.tokens.expires_at is None  # classic OAuth tokens do not expire
    async with make_keyloom(emulator) as keyloom:
        with pytest.raises(ReauthenticationRequiredError):
            await keyloom.refresh("github", result.tokens)


async def test_expiring_tokens_refresh_and_rotate() -> None:
    app = EmulatedOAuthApp(
        client_id="Iv1.app",
        client_secret="app-secret",
        callback_urls=[REDIRECT],
        expiring_tokens=True,
    )
    async with GitHubEmulator(clients=[app], consent="approve") as emulator:
        result = await login(emulator, client_id=app.client_id, client_secret=app.client_secret)
        tokens = result.tokens
        assert tokens.access_token.startswith("ghu_")
        assert tokens.refresh_token is not None
        assert tokens.refresh_token.startswith("ghr_")
        assert tokens.expires_at is not None
        keyloom = make_keyloom(emulator, client_id=app.client_id, client_secret=app.client_secret)
        async with keyloom:
            new = await keyloom.refresh("github", tokens)
            assert new.refresh_token not in {None, tokens.refresh_token}
            with pytest.raises(ReauthenticationRequiredError) as caught:
                await keyloom.refresh("github", tokens)
            assert caught.value.error == "bad_refresh_token"


async def test_revoke(emulator: GitHubEmulator) -> None:
    result = await login(emulator)
    async with make_keyloom(emulator) as keyloom:
        assert await keyloom.revoke("github", result.tokens) is True
        with pytest.raises(ProfileError) as caught:
            await keyloom.fetch_profile("github", result.tokens)
        assert caught.value.http_status == 401
        with pytest.raises(RevokeError) as revoke_error:
            await keyloom.revoke("github", result.tokens)
        assert revoke_error.value.http_status == 404


def test_scope_policy() -> None:
    def configure(scopes: list[str]) -> None:
        provider = github(client_id="id", client_secret="secret", scopes=scopes)
        define_keyloom(providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False)

    configure(["read:user", "repo"])
    with pytest.raises(ConfigurationError, match="'user' includes user:email"):
        configure(["user", "user:email"])
    with pytest.raises(ConfigurationError, match="admin:everything"):
        configure(["read:user", "admin:everything"])
    assert SPEC.default_scopes == {"read:user", "user:email"}
    assert SPEC.default_scopes <= SPEC.known_scopes


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_CLIENT_ID", "env-id")
    monkeypatch.setenv("GITHUB_CLIENT_SECRET", "env-secret")
    provider = github()
    assert (provider.client_id, provider.client_secret) == ("env-id", "env-secret")
    assert "env-secret" not in repr(provider)


# -- the emulator ---------------------------------------------------------------------------


def test_scope_normalisation() -> None:
    assert normalise_scopes(["user", "user:email", "gist", "nope", "gist"]) == ("user", "gist")
    assert normalise_scopes(["read:org", "admin:org"]) == ("admin:org",)


@pytest.mark.parametrize(
    ("candidate", "accepted"),
    [
        ("http://example.com/path", True),
        ("http://example.com/path/subdir/other", True),
        ("http://oauth.example.com/path", True),
        ("http://example.com/bar", False),
        ("http://example.com/", False),
        ("http://example.com:8080/path", False),
        ("http://example.org", False),
        ("https://example.com/path", False),
        ("http://example.com/path#frag", False),
    ],
)
def test_callback_url_rules(candidate: str, accepted: bool) -> None:
    assert callback_matches("http://example.com/path", candidate) is accepted


def test_loopback_callbacks_accept_any_port() -> None:
    assert callback_matches("http://127.0.0.1/callback", "http://127.0.0.1:8123/callback")
    assert not callback_matches("http://127.0.0.1/callback", "http://127.0.0.1:8123/other")


async def test_token_answers_are_form_encoded_without_accept_json(emulator: GitHubEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        form = {"client_id": APP.client_id, "client_secret": "wrong", "code": "x"}
        async with http.post(emulator.token_url, data=form) as response:
            assert response.status == 200
            assert response.content_type == "application/x-www-form-urlencoded"
            answer = dict(parse_qsl(await response.text()))
    assert answer["error"] == "incorrect_client_credentials"


async def test_redirect_mismatch_goes_to_the_registered_callback(emulator: GitHubEmulator) -> None:
    params = {"client_id": APP.client_id, "redirect_uri": "https://evil.example/cb", "state": "s"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(emulator.authorize_url, params=params, allow_redirects=False) as response,
    ):
        location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["error"] == "redirect_uri_mismatch"
    assert query["state"] == "s"


async def test_consent_form_then_auto_approval(emulator: GitHubEmulator) -> None:
    emulator.consent = "form"
    params = {"client_id": APP.client_id, "scope": "read:user", "state": "s"}
    async with aiohttp.ClientSession() as http:
        async with http.get(emulator.authorize_url, params=params) as response:
            page = await response.text()
        assert response.status == 200
        request_id = re.search(r'name="request_id" value="([^"]+)"', page)
        assert request_id is not None
        form = {"request_id": request_id.group(1), "decision": "approve"}
        async with http.post(
            emulator.url_for("/login/oauth/authorize/consent"), data=form, allow_redirects=False
        ) as response:
            assert response.status == 302
            assert "code=" in response.headers["Location"]
        async with http.get(emulator.authorize_url, params=params, allow_redirects=False) as again:
            assert again.status == 302  # already authorized: no form


async def test_emails_need_a_scope(emulator: GitHubEmulator) -> None:
    result = await login(emulator, scopes=["read:user"])
    headers = {"Authorization": f"Bearer {result.tokens.access_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(emulator.url_for("/user/emails"), headers=headers) as response,
    ):
        assert response.status == 404
        assert response.headers["X-OAuth-Scopes"] == "read:user"


def test_for_client_and_expected_profile() -> None:
    emulator = GitHubEmulator.for_client("cid", "sec", [REDIRECT], ["read:user"], consent="deny")
    assert emulator.default_app.callback_urls == (REDIRECT,)
    assert emulator.consent == "deny"
    assert GitHubEmulator.for_client(
        "c", "s", [REDIRECT], [], expiring_tokens=True
    ).default_app.expiring_tokens
    assert GitHubEmulator.invalid_client_error == "incorrect_client_credentials"
    assert GitHubEmulator.invalid_grant_error == "bad_verification_code"


async def test_cli_runs_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [sys.executable, "-m", "keyloom_github.emulator", "--consent", "approve"]
    async with await anyio.open_process(command, env=env, stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        output = ""
        with anyio.fail_after(20):
            while "Ctrl-C" not in output:
                output += (await process.stdout.receive()).decode()
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", output)
        assert url is not None
        assert f"client_id:     {DEFAULT_CLIENT_ID}" in output
        assert f"client_secret: {DEFAULT_CLIENT_SECRET}" in output
        async with (
            aiohttp.ClientSession() as http,
            http.get(url.group(1) + "/emulator/health") as r,
        ):
            assert await r.json() == {"status": "ok"}
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await process.wait() == 0


# -- the names the emulator had before it was built on the kit ------------------------------


def test_grants_and_token_lifetimes_are_the_book_s() -> None:
    emulator = GitHubEmulator()
    with pytest.warns(DeprecationWarning, match=r"GitHubEmulator\.grants is deprecated; use book$"):
        assert emulator.grants is emulator.book
    lifetimes = {"access_token_ttl": 28_800, "refresh_token_ttl": 15_897_600, "code_ttl": 600}
    for name, value in lifetimes.items():
        new = f"book.{name.replace('_token', '')}"
        with pytest.warns(DeprecationWarning, match=rf"GitHubEmulator\.{name} .*use {new}"):
            assert getattr(emulator, name) == value
        with pytest.warns(DeprecationWarning, match=name):
            setattr(emulator, name, 5)
    assert (emulator.book.access_ttl, emulator.book.refresh_ttl, emulator.book.code_ttl) == (
        5,
        5,
        5,
    )


async def test_the_old_constructor_keywords_still_work() -> None:
    app = attrs.evolve(APP, expiring_tokens=True)
    with pytest.warns(
        DeprecationWarning, match=r"(access|refresh)_token_ttl is deprecated; use book"
    ):
        emulator = GitHubEmulator(
            clients=[app], consent="approve", access_token_ttl=120, refresh_token_ttl=900
        )
    async with emulator:
        result = await login(emulator)
    assert result.tokens.expires_at is not None
    assert 100 < result.tokens.expires_at - time.time() <= 120
    assert result.tokens.refresh_expires_at is not None
    assert 880 < result.tokens.refresh_expires_at - time.time() <= 900


async def test_require_pkce_and_default_user_are_constructor_options() -> None:
    with pytest.raises(ValueError, match="unknown default user 'nobody'"):
        GitHubEmulator(default_user="nobody")
    emulator = GitHubEmulator(default_user="unverified-dev", require_pkce=True)
    assert emulator.default_user == "unverified-dev"
    params = {"client_id": DEFAULT_CLIENT_ID, "redirect_uri": "http://127.0.0.1:5/cb", "state": "s"}
    emulator.consent = "approve"
    async with emulator, aiohttp.ClientSession() as http:
        assert emulator.expected_profile(DEFAULT_CLIENT_ID, ["user:email"])["email"] is None
        url = emulator.authorize_url
        async with http.get(url, params=params, allow_redirects=False) as response:
            query = dict(parse_qsl(urlsplit(response.headers["Location"]).query))
    assert query == {"error": "invalid_request", "state": "s"}  # no PKCE challenge


async def test_users_keep_their_profile_fields() -> None:
    user = EmulatedUser(
        id=9,
        login="full-profile",
        name="Full Profile",
        emails=(EmulatedEmail(email="full@example.test", primary=True, visibility="public"),),
        bio="Bio",
        company="@keyloom",
        location="Loopback",
        public_repos=8,
        followers=42,
        following=7,
    )
    assert user.public_email == "full@example.test"
    with pytest.raises(ValueError, match="login"):
        EmulatedUser(id=1, login="not a login!")
    async with GitHubEmulator(clients=[APP], users=[user], consent="approve") as emulator:
        result = await login(emulator)
        assert result.profile.raw["avatar_url"] == emulator.avatar_url(user)
    fields = ("bio", "company", "location", "public_repos", "followers", "following")
    assert {k: result.profile.raw[k] for k in fields} == {
        "bio": "Bio",
        "company": "@keyloom",
        "location": "Loopback",
        "public_repos": 8,
        "followers": 42,
        "following": 7,
    }
    assert result.profile.raw["login"] == "full-profile"
    assert result.profile.raw["email"] == "full@example.test"


async def test_user_url_revoke_url_and_api_paths(emulator: GitHubEmulator) -> None:
    with pytest.warns(DeprecationWarning, match=r"user_url is deprecated; use profile_url"):
        assert emulator.user_url == emulator.url_for("/user") == emulator.profile_url
    result = await login(emulator)
    with pytest.warns(DeprecationWarning, match=r"revoke_url is deprecated; use revocation_url"):
        url = emulator.revoke_url(APP.client_id)
    assert url == emulator.revocation_url(APP.client_id)
    assert url == emulator.url_for(f"/applications/{APP.client_id}/token")
    assert emulator.is_api_path(urlsplit(url).path)
    assert GitHubEmulator.api_paths >= {"/user", "/user/emails"}
    basic = base64.b64encode(f"{APP.client_id}:{APP.client_secret}".encode()).decode()
    auth = {"Authorization": f"Basic {basic}"}
    body = {"access_token": result.tokens.access_token}
    async with aiohttp.ClientSession() as http:
        assert emulator.faults is not None
        emulator.faults.queue("503")
        async with http.delete(url, json=body, headers=auth) as response:
            assert response.status == 503  # faults apply to revocation
        async with http.delete(url, json=body, headers=auth) as response:
            assert response.status == 204


def test_implied_scopes_keeps_its_old_shape() -> None:
    from keyloom_github import IMPLIED_SCOPES
    from keyloom_github import emulator as module

    with pytest.warns(
        DeprecationWarning, match=r"IMPLIED_SCOPES is deprecated; use keyloom_github"
    ):
        old = module.IMPLIED_SCOPES
    assert old["user"] == frozenset({"read:user", "user:email", "user:follow"})
    assert set(old) == set(IMPLIED_SCOPES)


def test_an_app_s_callback_urls_are_its_redirect_uris() -> None:
    assert APP.callback_urls == APP.redirect_uris == (REDIRECT,)
    with pytest.raises(ValueError, match=r"callback_urls|redirect_uris"):
        EmulatedOAuthApp(client_id="a", client_secret="b", callback_urls=[])
    assert attrs.evolve(APP, callback_urls=["http://x.test/cb"]).callback_urls == (
        "http://x.test/cb",
    )


def test_the_plugin_refresh_hook_name_still_imports_with_a_warning() -> None:
    import keyloom_github

    from keyloom_core import oauth2

    with pytest.warns(DeprecationWarning, match=r"keyloom_core\.oauth2\.refresh_token"):
        assert keyloom_github.refresh_token is oauth2.refresh_token
    assert "refresh_token" not in dir(keyloom_github)  # so no second refresh hook


def test_the_hooks_the_spec_replaced_still_import_with_a_warning() -> None:
    import keyloom_github

    from keyloom_core import oauth2

    with pytest.warns(DeprecationWarning, match=r"revoke_token is deprecated; use keyloom_core\."):
        from keyloom_github import revoke_token
    assert revoke_token is oauth2.revoke_token  # it follows SPEC's revoke_* fields
    with pytest.warns(DeprecationWarning, match=r"use ProviderSpec\.implied_scopes"):
        from keyloom_github import validate_scopes
    with pytest.raises(ConfigurationError, match="'repo' includes public_repo"):
        validate_scopes(github(client_id="id", client_secret="s", scopes="repo public_repo"))
    assert not {"revoke_token", "validate_scopes"} & set(dir(keyloom_github))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = keyloom_github.nope
