"""The login flow end to end against the fake provider of conftest.py (a real local server)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import anyio
import anyio.abc
import attrs
import pytest

from keyloom_core import (
    AccessDeniedError,
    AuthorizationRequest,
    InvalidCallbackError,
    InvalidRedirectError,
    Keyloom,
    KeyloomError,
    LoginResult,
    PluginError,
    Profile,
    ProfileError,
    Provider,
    ProviderError,
    ProviderSpec,
    ProviderTimeoutError,
    ReauthenticationRequiredError,
    ScopeDeniedError,
    StateError,
    TokenExchangeError,
    TokenSet,
    UnknownProviderError,
    configure_provider,
    hookimpl,
)
from keyloom_core.oauth2 import default_authorize_params
from keyloom_core.pkce import s256_challenge

pytestmark = pytest.mark.anyio

Login = Callable[..., Awaitable[LoginResult]]
Authorize = Callable[..., Awaitable[dict[str, str]]]
MakeKeyloom = Callable[..., Keyloom]
MakeProvider = Callable[..., Provider]


class Recorder:
    """A plugin that records the broadcast login events."""

    def __init__(self) -> None:
        self.succeeded: list[tuple[Provider, LoginResult]] = []
        self.failed: list[tuple[str, KeyloomError, dict[str, str]]] = []

    @hookimpl
    async def login_succeeded(self, provider: Provider, result: LoginResult) -> None:
        self.succeeded.append((provider, result))

    @hookimpl
    async def login_failed(
        self, provider_id: str, error: KeyloomError, context: dict[str, str]
    ) -> None:
        self.failed.append((provider_id, error, context))


# -- the happy path ----------------------------------------------------------------------


async def test_full_login(keyloom: Keyloom, fake_provider: Any, login: Login) -> None:
    before = time.time()
    result = await login(keyloom, callback_url="/dashboard?tab=1#top")

    assert result.provider_id == "fake"
    assert result.callback_url == "/dashboard?tab=1#top"
    assert result.profile.id == "id-alice"
    assert result.profile.name == "Alice"
    assert result.profile.email == "alice@example.com"
    assert result.profile.email_verified is True
    assert result.profile.image == "https://img.example.com/alice.png"
    assert result.profile.raw["sub"] == "id-alice"
    assert result.tokens.access_token.startswith("at-")
    assert result.tokens.refresh_token.startswith("rt-")
    assert result.tokens.token_type == "Bearer"
    assert before + 3600 <= result.tokens.expires_at <= time.time() + 3600
    assert result.granted_scopes == result.requested_scopes == {"profile"}

    # what the provider was actually sent
    [authorize] = fake_provider.calls("/authorize")
    [token] = fake_provider.calls("/token")
    redirect = "https://app.example.com/api/auth/oauth/fake/callback"
    assert authorize["redirect_uri"] == token["redirect_uri"] == redirect
    assert authorize["client_id"] == token["client_id"] == fake_provider.client_id
    assert token["client_secret"] == fake_provider.client_secret
    assert token["grant_type"] == "authorization_code"
    assert authorize["code_challenge"] == s256_challenge(token["code_verifier"])
    assert fake_provider.calls("/userinfo") == [
        {"authorization": f"Bearer {result.tokens.access_token}"}
    ]


async def test_authorization_url(keyloom: Keyloom, make_provider: MakeProvider) -> None:
    now = 1_700_000_000.0
    start = await keyloom.begin_login("fake", now=now)
    parts = urlsplit(start.url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}"
        == keyloom.providers["fake"].spec.authorize_url
    )
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert query["scope"] == "profile"
    # the URL carries a nonce; the signed state (holding the verifier) stays with the browser
    assert query["state"] != start.state
    assert start.state not in start.url
    assert start.expires_at == now + keyloom.state_ttl
    assert start.state not in repr(start)


async def test_scopes_are_joined_in_a_stable_order(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider
) -> None:
    keyloom = make_keyloom(make_provider(scopes=["profile", "openid", "email"]))
    start = await keyloom.begin_login("fake")
    assert parse_qs(urlsplit(start.url).query)["scope"] == ["email openid profile"]


async def test_every_login_gets_its_own_state_and_verifier(keyloom: Keyloom) -> None:
    first = await keyloom.begin_login("fake")
    second = await keyloom.begin_login("fake")
    q1, q2 = parse_qs(urlsplit(first.url).query), parse_qs(urlsplit(second.url).query)
    assert q1["state"] != q2["state"]
    assert q1["code_challenge"] != q2["code_challenge"]


async def test_redirect_uri_override(
    keyloom: Keyloom, fake_provider: Any, authorize: Authorize
) -> None:
    loopback = "http://127.0.0.1:8765/callback"
    start = await keyloom.begin_login("fake", redirect_uri=loopback)
    query = await authorize(start)
    await keyloom.complete_login("fake", query, start.state)
    assert fake_provider.calls("/authorize")[0]["redirect_uri"] == loopback
    assert fake_provider.calls("/token")[0]["redirect_uri"] == loopback


async def test_open_redirect_is_refused_before_the_provider_is_involved(
    keyloom: Keyloom,
) -> None:
    with pytest.raises(InvalidRedirectError):
        await keyloom.begin_login("fake", callback_url="//evil.com")
    assert (await keyloom.begin_login("fake", callback_url=None)).url


async def test_unknown_provider(keyloom: Keyloom) -> None:
    with pytest.raises(UnknownProviderError):
        await keyloom.begin_login("nope")
    with pytest.raises(UnknownProviderError):
        await keyloom.complete_login("nope", {"code": "c", "state": "s"}, "x.y")


# -- the state ---------------------------------------------------------------------------


async def _started(
    keyloom: Keyloom, authorize: Authorize, *, deny: bool = False, **begin: Any
) -> tuple[str, dict[str, str]]:
    """Begin a login and play the browser; return the stored state and the callback query."""
    start = await keyloom.begin_login("fake", **begin)
    return start.state, await authorize(start, deny=deny)


async def test_tampered_state(keyloom: Keyloom, authorize: Authorize, fake_provider: Any) -> None:
    state, query = await _started(keyloom, authorize)
    tampered = state[:20] + ("A" if state[20] != "A" else "B") + state[21:]  # sealed or signed
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("fake", query, tampered)
    assert info.value.reason == "signature"
    assert info.value.code == "invalid_state"
    assert fake_provider.calls("/token") == []


async def test_expired_state(keyloom: Keyloom, authorize: Authorize) -> None:
    started = 1_700_000_000.0
    state, query = await _started(keyloom, authorize, now=started)
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("fake", query, state, now=started + keyloom.state_ttl + 1)
    assert info.value.reason == "expired"


async def test_state_just_before_expiry_is_accepted(keyloom: Keyloom, authorize: Authorize) -> None:
    started = time.time() - keyloom.state_ttl + 30
    state, query = await _started(keyloom, authorize, now=started)
    assert (await keyloom.complete_login("fake", query, state)).profile.id == "id-alice"


async def test_replayed_callback(
    keyloom: Keyloom, authorize: Authorize, fake_provider: Any
) -> None:
    state, query = await _started(keyloom, authorize)
    await keyloom.complete_login("fake", query, state)
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("fake", query, state)
    assert info.value.reason == "replayed"
    assert len(fake_provider.calls("/token")) == 1


async def test_concurrent_replay_succeeds_once(keyloom: Keyloom, authorize: Authorize) -> None:
    state, query = await _started(keyloom, authorize)
    outcomes: list[object] = []

    async def attempt() -> None:
        try:
            outcomes.append(await keyloom.complete_login("fake", query, state))
        except StateError as exc:
            outcomes.append(exc.reason)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(attempt)
    assert sum(isinstance(o, LoginResult) for o in outcomes) == 1
    assert sorted(o for o in outcomes if isinstance(o, str)) == ["replayed"] * 4


async def test_state_of_another_provider(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    authorize: Authorize,
) -> None:
    other = make_provider(attrs.evolve(fake_spec, id="other", name="Other"))
    async with make_keyloom(make_provider(), other) as keyloom:
        state, query = await _started(keyloom, authorize)
        with pytest.raises(StateError) as info:
            await keyloom.complete_login("other", query, state)
        assert info.value.reason == "provider"
        assert info.value.provider_id == "other"


async def test_echoed_state_mismatch(keyloom: Keyloom, authorize: Authorize) -> None:
    state, query = await _started(keyloom, authorize)
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("fake", {**query, "state": "not-the-nonce"}, state)
    assert info.value.reason == "mismatch"


async def test_callbacks_of_two_logins_cannot_be_swapped(
    keyloom: Keyloom, authorize: Authorize
) -> None:
    # a login CSRF: the attacker's callback delivered to the victim's browser
    victim_state, _ = await _started(keyloom, authorize, callback_url="/victim")
    _, attacker_query = await _started(keyloom, authorize)
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("fake", attacker_query, victim_state)
    assert info.value.reason == "mismatch"


@pytest.mark.parametrize("where", ["stored", "stored-empty", "echoed"])
async def test_missing_state(keyloom: Keyloom, authorize: Authorize, where: str) -> None:
    state, query = await _started(keyloom, authorize)
    if where == "stored":
        stored: str | None = None
    elif where == "stored-empty":
        stored = ""
    else:
        stored = state
        del query["state"]
    with pytest.raises(StateError) as info:
        await keyloom.complete_login("fake", query, stored)
    assert info.value.reason == "missing"


async def test_state_signed_by_another_instance(
    make_keyloom: MakeKeyloom, authorize: Authorize, login: Login
) -> None:
    first = make_keyloom()
    second = make_keyloom(secret="another-secret-of-at-least-32-chars!!")
    async with first, second:
        state, query = await _started(first, authorize)
        with pytest.raises(StateError) as info:
            await second.complete_login("fake", query, state)
        assert info.value.reason == "signature"
        assert (await first.complete_login("fake", query, state)).profile.id == "id-alice"


async def test_old_secret_still_verifies_after_rotation(
    make_keyloom: MakeKeyloom, authorize: Authorize
) -> None:
    before = make_keyloom()
    state, query = await _started(before, authorize)
    after = make_keyloom(
        secret="the-new-secret-of-at-least-32-chars!!!", old_secrets=[before.secrets[0]]
    )
    async with after:
        assert (await after.complete_login("fake", query, state)).profile.id == "id-alice"


# -- callback errors ---------------------------------------------------------------------


async def test_access_denied(keyloom: Keyloom, authorize: Authorize, fake_provider: Any) -> None:
    state, query = await _started(keyloom, authorize, deny=True)
    with pytest.raises(AccessDeniedError) as info:
        await keyloom.complete_login("fake", query, state)
    assert info.value.error == "access_denied"
    assert info.value.description == "The user cancelled"
    assert info.value.status == 403
    assert fake_provider.calls("/token") == []


async def test_other_callback_error_is_a_provider_error(
    keyloom: Keyloom, authorize: Authorize
) -> None:
    state, query = await _started(keyloom, authorize)
    query = {"state": query["state"], "error": "server_error", "error_description": "down"}
    with pytest.raises(ProviderError) as info:
        await keyloom.complete_login("fake", query, state)
    assert (info.value.error, info.value.description) == ("server_error", "down")


async def test_callback_without_code(keyloom: Keyloom, authorize: Authorize) -> None:
    state, query = await _started(keyloom, authorize)
    del query["code"]
    with pytest.raises(InvalidCallbackError):
        await keyloom.complete_login("fake", query, state)


async def test_oversized_callback_parameter(keyloom: Keyloom, authorize: Authorize) -> None:
    state, query = await _started(keyloom, authorize)
    with pytest.raises(InvalidCallbackError, match="too long"):
        await keyloom.complete_login("fake", {**query, "junk": "x" * 10_000}, state)


async def test_code_refused_by_the_provider(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, authorize: Authorize
) -> None:
    async with make_keyloom(make_provider(client_secret="wrong-secret")) as keyloom:
        state, query = await _started(keyloom, authorize)
        with pytest.raises(TokenExchangeError) as info:
            await keyloom.complete_login("fake", query, state)
    assert info.value.error == "invalid_client"
    assert info.value.http_status == 401
    assert "wrong-secret" not in str(info.value)


# -- scopes ------------------------------------------------------------------------------


async def test_required_scope_declined(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_provider: Any, login: Login
) -> None:
    provider = make_provider(scopes=["profile", "email"], required_scopes=["profile", "email"])
    async with make_keyloom(provider) as keyloom:
        with pytest.raises(ScopeDeniedError) as info:
            await login(keyloom, grant="profile")
    assert info.value.missing == {"email"}
    assert "email" in str(info.value)
    # the half-granted tokens were revoked, and no profile was fetched with them
    assert len(fake_provider.revoked) == 1
    assert fake_provider.revoked[0].startswith("at-")
    assert fake_provider.calls("/userinfo") == []


async def test_optional_scope_declined(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    async with make_keyloom(make_provider(scopes=["profile", "email"])) as keyloom:
        result = await login(keyloom, grant="profile")
    assert result.granted_scopes == {"profile"}
    assert result.requested_scopes == {"profile", "email"}


async def test_scopes_reported_in_the_callback_are_checked(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, authorize: Authorize, fake_provider: Any
) -> None:
    provider = make_provider(scopes=["profile", "email"], required_scopes=["email"])
    async with make_keyloom(provider) as keyloom:
        state, query = await _started(keyloom, authorize)
        with pytest.raises(ScopeDeniedError):
            await keyloom.complete_login("fake", {**query, "scope": "profile"}, state)
    assert fake_provider.calls("/token") == []


class NeedsEmail:
    """A plugin's own scope policy: every login needs ``email``."""

    @hookimpl
    def check_granted_scopes(self, granted: frozenset[str]) -> list[str]:
        return [] if "email" in granted else ["email"]


class SeesPolicies:
    """A wrapper around the scope policies (the dispatcher then leaves them to pluggy)."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    @hookimpl(wrapper=True)
    def check_granted_scopes(self) -> Any:
        results = yield
        self.seen.append(results)
        return results


async def test_a_plugin_s_scope_policy_adds_to_the_core_s(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    provider = make_provider(scopes=["profile", "email"], required_scopes=["profile"])
    async with make_keyloom(provider, plugins=[NeedsEmail()]) as keyloom:
        with pytest.raises(ScopeDeniedError) as info:
            await login(keyloom, grant="profile")
        assert info.value.missing == {"email"}
        assert (await login(keyloom)).granted_scopes == {"profile", "email"}


async def test_scope_policies_run_inside_a_plugin_s_wrapper(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    provider = make_provider(scopes=["profile", "email"], required_scopes=["profile"])
    wrapper = SeesPolicies()
    async with make_keyloom(provider, plugins=[NeedsEmail(), wrapper]) as keyloom:
        with pytest.raises(ScopeDeniedError) as info:
            await login(keyloom, grant="profile")
    assert info.value.missing == {"email"}
    assert wrapper.seen  # the wrapper saw the policies' answers


async def test_a_scope_policy_registered_after_a_login_is_consulted(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    provider = make_provider(scopes=["profile", "email"], required_scopes=["profile"])
    async with make_keyloom(provider) as keyloom:
        assert (await login(keyloom, grant="profile")).granted_scopes == {"profile"}
        keyloom.registry.pm.register(NeedsEmail())  # the dispatcher's list is made again
        with pytest.raises(ScopeDeniedError) as info:
            await login(keyloom, grant="profile")
        assert info.value.missing == {"email"}


# -- profile overrides -------------------------------------------------------------------


async def test_profile_overrides(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    def overrides(profile: Any) -> dict[str, Any]:
        return {"name": profile.name.upper(), "role": "admin", "tiktok_id": profile.raw["sub"]}

    async with make_keyloom(make_provider(profile_overrides=overrides)) as keyloom:
        result = await login(keyloom)
    assert result.profile.name == "ALICE"
    assert result.profile.extra == {"role": "admin", "tiktok_id": "id-alice"}
    user = result.profile.to_user()
    assert user["role"] == "admin"
    assert user["id"] == "id-alice"


async def test_failing_profile_overrides(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    def overrides(profile: Any) -> dict[str, Any]:
        raise KeyError("nope")

    async with make_keyloom(make_provider(profile_overrides=overrides)) as keyloom:
        with pytest.raises(PluginError, match="profile_overrides") as info:
            await login(keyloom)
    assert isinstance(info.value.__cause__, KeyError)


# -- broadcast hooks ---------------------------------------------------------------------


async def test_login_succeeded_receives_the_result(make_keyloom: MakeKeyloom, login: Login) -> None:
    recorder = Recorder()
    async with make_keyloom(plugins=[recorder]) as keyloom:
        result = await login(keyloom)
    [(provider, seen)] = recorder.succeeded
    assert provider is keyloom.providers["fake"]
    assert seen is result
    assert recorder.failed == []


async def test_login_failed_receives_error_and_context(
    make_keyloom: MakeKeyloom, authorize: Authorize
) -> None:
    recorder = Recorder()
    async with make_keyloom(plugins=[recorder]) as keyloom:
        _, query = await _started(keyloom, authorize)
        with pytest.raises(StateError) as info:
            await keyloom.complete_login("fake", query, None)
        state2, denied = await _started(keyloom, authorize, deny=True)
        with pytest.raises(AccessDeniedError) as denied_info:
            await keyloom.complete_login("fake", denied, state2)
    assert recorder.succeeded == []
    assert recorder.failed == [
        ("fake", info.value, {"stage": "callback", "reason": "missing"}),
        ("fake", denied_info.value, {"stage": "callback", "reason": "access_denied"}),
    ]


async def test_login_failed_names_the_stage(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, authorize: Authorize
) -> None:
    recorder = Recorder()
    async with make_keyloom(make_provider(client_secret="wrong"), plugins=[recorder]) as keyloom:
        state, query = await _started(keyloom, authorize)
        with pytest.raises(TokenExchangeError):
            await keyloom.complete_login("fake", query, state)
    [(provider_id, error, context)] = recorder.failed
    assert provider_id == "fake"
    assert isinstance(error, TokenExchangeError)
    assert context["stage"] == "token"


async def test_login_succeeded_veto(make_keyloom: MakeKeyloom, login: Login) -> None:
    class Banned:
        @hookimpl
        async def login_succeeded(self, result: LoginResult) -> None:
            if result.profile.id == "id-mallory":
                raise AccessDeniedError("this account is suspended", error="suspended")

    recorder = Recorder()
    async with make_keyloom(plugins=[recorder, Banned()]) as keyloom:
        assert (await login(keyloom, user="alice")).profile.id == "id-alice"
        with pytest.raises(AccessDeniedError, match="suspended") as info:
            await login(keyloom, user="mallory")
    assert [r.profile.id for _, r in recorder.succeeded] == ["id-alice"]
    [(_, error, context)] = recorder.failed
    assert error is info.value
    assert context["stage"] == "login_succeeded"


async def test_login_succeeded_crash_fails_the_login(
    make_keyloom: MakeKeyloom, login: Login
) -> None:
    class Crashing:
        @hookimpl
        async def login_succeeded(self) -> None:
            raise RuntimeError("database is down")

    async with make_keyloom(plugins=[Crashing()]) as keyloom:
        with pytest.raises(PluginError, match="Crashing") as info:
            await login(keyloom)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "database is down" not in str(info.value)


@pytest.mark.parametrize("failure", [AccessDeniedError("suspended"), RuntimeError("db down")])
async def test_a_refused_login_gives_its_tokens_back(
    make_keyloom: MakeKeyloom, login: Login, fake_provider: Any, failure: Exception
) -> None:
    class Refusing:
        @hookimpl
        async def login_succeeded(self) -> None:
            raise failure

    async with make_keyloom(plugins=[Refusing()]) as keyloom:
        with pytest.raises((AccessDeniedError, PluginError)):
            await login(keyloom)
    assert len(fake_provider.revoked) == 1
    assert fake_provider.revoked[0].startswith("at-")


async def test_a_failing_login_failed_hook_is_ignored(
    make_keyloom: MakeKeyloom, authorize: Authorize
) -> None:
    class Broken:
        @hookimpl
        async def login_failed(self) -> None:
            raise RuntimeError("monitoring is down")

    recorder = Recorder()
    # pluggy calls the plugin registered last first: Broken runs before Recorder
    async with make_keyloom(plugins=[recorder, Broken()]) as keyloom:
        state, query = await _started(keyloom, authorize)
        with pytest.raises(StateError):
            await keyloom.complete_login("fake", {**query, "state": "x"}, state)
    # the app sees the real error, and the other monitoring plugins still hear about it
    assert [type(e) for _, e, _ in recorder.failed] == [StateError]


# -- tokens ------------------------------------------------------------------------------


async def test_refresh_rotates_tokens(keyloom: Keyloom, login: Login, fake_provider: Any) -> None:
    result = await login(keyloom)
    fresh = await keyloom.refresh("fake", result.tokens)
    assert fresh.access_token != result.tokens.access_token
    assert fresh.refresh_token != result.tokens.refresh_token
    assert fresh.scopes == {"profile"}
    [refresh] = [c for c in fake_provider.calls("/token") if c["grant_type"] == "refresh_token"]
    assert refresh["refresh_token"] == result.tokens.refresh_token
    assert refresh["client_secret"] == fake_provider.client_secret
    assert (await keyloom.fetch_profile("fake", fresh)).id == "id-alice"

    # the rotated-out refresh token is dead: the user must sign in again
    with pytest.raises(ReauthenticationRequiredError) as info:
        await keyloom.refresh("fake", result.tokens)
    assert info.value.error == "invalid_grant"
    assert info.value.status == 401


async def test_refresh_without_a_refresh_token(keyloom: Keyloom, fake_provider: Any) -> None:
    with pytest.raises(ReauthenticationRequiredError):
        await keyloom.refresh("fake", TokenSet(access_token="at-x"))
    assert fake_provider.calls("/token") == []


async def test_revoke(keyloom: Keyloom, login: Login, fake_provider: Any) -> None:
    result = await login(keyloom)
    assert await keyloom.revoke("fake", result.tokens) is True
    assert fake_provider.revoked == [result.tokens.access_token]
    assert fake_provider.calls("/revoke")[0]["client_secret"] == fake_provider.client_secret
    with pytest.raises(ProfileError) as info:
        await keyloom.fetch_profile("fake", result.tokens)
    assert info.value.http_status == 401
    assert info.value.error == "invalid_token"


async def test_revoke_without_an_endpoint(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec
) -> None:
    provider = make_provider(attrs.evolve(fake_spec, revoke_url=None))
    async with make_keyloom(provider) as keyloom:
        assert await keyloom.revoke("fake", TokenSet(access_token="at-x")) is False


# -- timeouts ----------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["authorize_params", "fetch_profile"])
async def test_a_slow_plugin_times_out(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    login: Login,
    hook: str,
) -> None:
    spec = attrs.evolve(fake_spec, id="slow")

    class Slow:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

    async def slow(self: object) -> None:
        await anyio.sleep(5)

    setattr(Slow, hook, hookimpl(slow))  # an awaited authorize_params gets the timeout too
    async with make_keyloom(make_provider(spec), plugins=[Slow()], timeout=0.2) as keyloom:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match=hook):
            await login(keyloom, "slow")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("plain", [True, False], ids=["def", "async def"])
async def test_authorize_params_may_be_a_plain_function(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    login: Login,
    plain: bool,
) -> None:
    spec = attrs.evolve(fake_spec, id="plain")
    seen: list[str] = []

    def params(
        self: object, provider: Provider, request: AuthorizationRequest
    ) -> Mapping[str, str]:
        seen.append(request.state)
        return {**default_authorize_params(provider, request), "hint": "yes"}

    async def awaited(
        self: object, provider: Provider, request: AuthorizationRequest
    ) -> Mapping[str, str]:
        return params(self, provider, request)

    class Plain:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

    setattr(Plain, "authorize_params", hookimpl(params if plain else awaited))  # noqa: B010
    async with make_keyloom(make_provider(spec), plugins=[Plain()]) as keyloom:
        start = await keyloom.begin_login("plain")
        assert "&hint=yes" in start.url
        assert f"state={seen[0]}" in start.url
        result = await login(keyloom, "plain")
    assert result.profile.id


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (None, None),  # the built-in parameters, from a plain function too
        (["not", "a", "mapping"], "returned list from hook 'authorize_params'"),
        (ZeroDivisionError, "'Plain' failed in hook 'authorize_params': ZeroDivisionError"),
    ],
    ids=["none", "wrong type", "raises"],
)
async def test_a_plain_authorize_params_is_checked_like_an_awaited_one(
    make_keyloom: MakeKeyloom,
    make_provider: MakeProvider,
    fake_spec: ProviderSpec,
    answer: object,
    error: str | None,
) -> None:
    spec = attrs.evolve(fake_spec, id="plain")

    class Plain:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        def authorize_params(self) -> object:
            if answer is ZeroDivisionError:
                raise ZeroDivisionError
            return answer

    async with make_keyloom(make_provider(spec), plugins=[Plain()]) as keyloom:
        if error is None:
            start = await keyloom.begin_login("plain")
            assert "?client_id=fake-client&response_type=code&" in start.url
            return
        with pytest.raises(PluginError, match=re.escape(error)) as info:
            await keyloom.begin_login("plain")
    assert info.value.plugin == "Plain"
    assert info.value.provider_id == "plain"


async def test_every_provider_call_gets_the_whole_timeout(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    # Two calls of 0.6 x timeout each: the login takes longer than one timeout, and
    # succeeds, because the deadline is per call, not per login.
    spec = attrs.evolve(fake_spec, id="steady")

    class Steady:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self, code: str) -> TokenSet:
            await anyio.sleep(0.3)
            return TokenSet(access_token=f"at-{code[:8]}", scopes=frozenset({"profile"}))

        @hookimpl
        async def fetch_profile(self, provider: Provider) -> Profile:
            await anyio.sleep(0.3)
            return Profile(provider_id=provider.id, id="steady-user")

    async with make_keyloom(make_provider(spec), plugins=[Steady()], timeout=0.5) as keyloom:
        started = time.monotonic()
        result = await login(keyloom, "steady")
    assert result.profile.id == "steady-user"
    assert time.monotonic() - started > 0.5


async def test_a_swallowed_deadline_still_times_out(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    # A plugin that catches the cancellation and answers anyway is still cut off: the
    # exchange overran its deadline, so its answer is not used.
    spec = attrs.evolve(fake_spec, id="stubborn")
    calls: list[str] = []

    class Stubborn:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self) -> TokenSet:
            with contextlib.suppress(BaseException):
                await anyio.sleep(5)
            return TokenSet(access_token="late")

        @hookimpl
        async def fetch_profile(self) -> None:
            calls.append("fetch_profile")

    async with make_keyloom(make_provider(spec), plugins=[Stubborn()], timeout=0.2) as keyloom:
        with pytest.raises(ProviderTimeoutError, match="exchange_code"):
            await login(keyloom, "stubborn")
    assert calls == []


async def test_cancelling_a_login_from_outside_is_not_a_timeout(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    spec = attrs.evolve(fake_spec, id="parked")
    entered = anyio.Event()
    failures: list[str] = []

    class Parked:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self) -> None:
            entered.set()
            await anyio.sleep(5)

        @hookimpl
        async def login_failed(self, error: Exception) -> None:
            failures.append(type(error).__name__)

    async with make_keyloom(make_provider(spec), plugins=[Parked()], timeout=3) as keyloom:
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(login, keyloom, "parked")
                await entered.wait()
                outer.cancel()
    assert outer.cancelled_caught
    assert failures == []


async def test_a_cancelled_caller_wins_over_a_deadline_that_struck_too(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    # Both the caller's scope and the call's deadline expire while the plugin is shielded:
    # the caller's cancellation is not turned into a timeout, and nobody hears of a failure.
    spec = attrs.evolve(fake_spec, id="shielded")
    failures: list[str] = []

    class Shielded:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self) -> None:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.5)

        @hookimpl
        async def login_failed(self, error: Exception) -> None:
            failures.append(type(error).__name__)

    async with make_keyloom(make_provider(spec), plugins=[Shielded()], timeout=0.2) as keyloom:
        with anyio.move_on_after(0.25) as caller:
            await login(keyloom, "shielded")
        assert caller.cancelled_caught
        assert failures == []
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


async def test_every_timeout_leaves_the_task_uncancelled(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    spec = attrs.evolve(fake_spec, id="stalled")

    class Stalled:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def exchange_code(self) -> None:
            await anyio.sleep(5)

    async with make_keyloom(make_provider(spec), plugins=[Stalled()], timeout=0.1) as keyloom:
        for _ in range(3):
            with pytest.raises(ProviderTimeoutError, match="exchange_code"):
                await login(keyloom, "stalled")
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


async def test_a_refresh_that_swallowed_its_deadline_times_out(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec
) -> None:
    spec = attrs.evolve(fake_spec, id="lingering")

    class Lingering:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def refresh_token(self) -> TokenSet:
            with contextlib.suppress(BaseException):
                await anyio.sleep(5)
            return TokenSet(access_token="late")

    async with make_keyloom(make_provider(spec), plugins=[Lingering()], timeout=0.2) as keyloom:
        stale = TokenSet(access_token="old", refresh_token="rt")
        with pytest.raises(ProviderTimeoutError, match="refresh_token"):
            await keyloom.refresh("lingering", stale)


class Converting:
    """Turns any cancellation of its token calls into a TimeoutError, as some clients do."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        self.failures: list[str] = []

    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(self.spec)

    @hookimpl
    async def exchange_code(self) -> None:
        try:
            await anyio.sleep(5)
        except BaseException:
            raise TimeoutError("the client's own timeout") from None

    @hookimpl
    async def login_failed(self, error: Exception) -> None:
        self.failures.append(type(error).__name__)


async def test_an_outside_cancellation_turned_into_a_timeout_stays_a_cancellation(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, fake_spec: ProviderSpec, login: Login
) -> None:
    plugin = Converting(attrs.evolve(fake_spec, id="converting"))
    async with make_keyloom(make_provider(plugin.spec), plugins=[plugin], timeout=5) as keyloom:
        with anyio.move_on_after(0.2) as caller:
            await login(keyloom, "converting")
        assert caller.cancelled_caught
        with pytest.raises(TimeoutError) as info:
            async with asyncio.timeout(0.2):
                await login(keyloom, "converting")
        assert not isinstance(info.value, ProviderTimeoutError)
        assert plugin.failures == []
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0


async def test_the_fallback_shares_the_call_s_budget(
    make_keyloom: MakeKeyloom, fake_spec: ProviderSpec
) -> None:
    # The owner defers after most of the budget; the built-in then meets a server that
    # never answers: the one call still ends at one timeout, not two.
    async def silent(stream: Any) -> None:
        async with stream:
            await anyio.sleep(30)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610  (not Django)
    spec = attrs.evolve(fake_spec, id="deferring")
    silent_provider = configure_provider(
        spec, client_id="c", client_secret="s", endpoint_origin=f"http://127.0.0.1:{port}"
    )

    class Deferring:
        @hookimpl
        def register_providers(self, register: Any) -> None:
            register(spec)

        @hookimpl
        async def refresh_token(self) -> None:
            await anyio.sleep(0.3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        async with make_keyloom(silent_provider, plugins=[Deferring()], timeout=0.4) as kl:
            started = time.monotonic()
            with pytest.raises(ProviderTimeoutError, match="refresh_token"):
                await kl.refresh("deferring", TokenSet(access_token="a", refresh_token="r"))
            took = time.monotonic() - started
        tg.cancel_scope.cancel()
    assert 0.35 < took < 0.65


# -- instances and sessions --------------------------------------------------------------


async def test_several_instances_in_one_process(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login
) -> None:
    shop = make_keyloom(base_url="https://shop.example.com")
    blog = make_keyloom(
        make_provider(scopes=["profile", "email"]),
        base_url="https://blog.example.com",
        secret="blog-secret-blog-secret-blog-secret!!",
    )
    results: dict[str, LoginResult] = {}

    async def run(name: str, keyloom: Keyloom, user: str) -> None:
        async with keyloom:
            results[name] = await login(keyloom, user=user)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "shop", shop, "alice")
        tg.start_soon(run, "blog", blog, "bob")
    assert results["shop"].profile.id == "id-alice"
    assert results["blog"].profile.id == "id-bob"
    assert results["blog"].granted_scopes == {"profile", "email"}
    assert shop.redirect_uri(shop.providers["fake"]).startswith("https://shop.example.com/")
    assert blog.redirect_uri(blog.providers["fake"]).startswith("https://blog.example.com/")


async def test_borrowed_session_is_left_open(make_keyloom: MakeKeyloom, login: Login) -> None:
    async with aiohttp.ClientSession() as session:
        keyloom = make_keyloom(session=session)
        async with keyloom:
            assert keyloom.http.session is session
            await login(keyloom)
        assert not session.closed
        async with keyloom:  # and it can be opened again
            await login(keyloom)
        assert not session.closed


async def test_owned_session_is_closed(make_keyloom: MakeKeyloom, login: Login) -> None:
    keyloom = make_keyloom()
    with pytest.raises(RuntimeError, match="async with"):
        keyloom.http  # noqa: B018
    async with keyloom:
        session = keyloom.http.session
        async with keyloom:  # nested use shares the session
            assert keyloom.http.session is session
        assert not session.closed
        await login(keyloom)
    assert session.closed
    with pytest.raises(RuntimeError, match="async with"):
        keyloom.http  # noqa: B018


async def test_login_needs_an_open_instance(
    make_keyloom: MakeKeyloom, authorize: Authorize
) -> None:
    keyloom = make_keyloom()
    state, query = await _started(keyloom, authorize)  # starting needs no HTTP
    with pytest.raises(RuntimeError, match="async with"):
        await keyloom.complete_login("fake", query, state)


async def test_revoking_on_failure_still_works_with_a_warning(
    make_keyloom: MakeKeyloom, make_provider: MakeProvider, login: Login, fake_provider: Any
) -> None:
    async with make_keyloom(make_provider()) as keyloom:
        tokens = (await login(keyloom)).tokens
        with pytest.warns(DeprecationWarning, match="revoke_refused"), pytest.raises(KeyError):
            async with keyloom.revoking_on_failure("fake", tokens):
                raise KeyError("refused")
    assert len(fake_provider.calls("/revoke")) == 1
