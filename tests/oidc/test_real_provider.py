"""The built-in OAuth 2.0 / OpenID Connect behaviour against panva's oidc-provider.

An independent, OpenID Certified server (see conftest.py) on 127.0.0.1: discovery, JWKS,
client authentication, ID tokens, RFC 9207 ``iss``, refresh rotation and revocation are its,
not ours. Where it must be made to misbehave, a proxy re-signs its ID tokens with its own key
(so only the claim under test is wrong), or the kit's emulator plays the other provider.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from oidckit import BASE_URL, CALLBACK, CLIENT_IDS, CLIENT_SECRET, Browser, RealProvider

from keyloom_core import (
    Keyloom,
    LoginResult,
    ProviderSpec,
    ReauthenticationRequiredError,
    TokenExchangeError,
    configure_provider,
    define_keyloom,
)
from keyloom_core.oidc import IdTokenError, IssuerMismatchError, id_token_claims
from keyloom_core.testing.oidc import OpenIDEmulator

pytestmark = pytest.mark.anyio

SECRET = "test-signing-secret-0123456789-abcdefghij"


def spec(op: RealProvider, **changes: Any) -> ProviderSpec:
    base = ProviderSpec(
        id="op",
        name="oidc-provider",
        authorize_url="",
        token_url="",
        issuer=op.issuer,
        token_auth_method="client_secret_basic",
        revoke_refresh_token=True,
        id_token_algorithms=("RS256",),
        default_scopes="openid profile email",
        login_params={"prompt", "login_hint", "max_age"},
    )
    return attrs.evolve(base, **changes)


def keyloom_for(op: RealProvider, method: str = "client_secret_basic", **changes: Any) -> Keyloom:
    scopes = changes.pop("scopes", None)
    provider = configure_provider(
        spec(op, token_auth_method=method, **changes),
        client_id=CLIENT_IDS["client_secret_basic" if len(op.methods) == 1 else method],
        client_secret="" if method == "none" else CLIENT_SECRET,
        scopes=scopes,
        required_scopes="openid",
    )
    return define_keyloom(providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False)


async def sign_in(keyloom: Keyloom, browser: Browser, **params: str) -> LoginResult:
    start = await keyloom.begin_login("op", params=params or None)
    return await keyloom.complete_login("op", await browser(start.url), start.state)


async def userinfo_status(op: RealProvider, access_token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{op.issuer}/me", headers={"Authorization": f"Bearer {access_token}"}) as r,
    ):
        return r.status


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
async def test_login_with_each_client_auth_method(
    op: RealProvider, browser: Browser, method: str
) -> None:
    async with keyloom_for(op, method) as keyloom:
        result = await sign_in(keyloom, browser)
    assert result.profile.id == "alice"
    assert result.profile.name == "Alice Liddell"
    assert result.profile.email == "alice@example.com"
    claims = id_token_claims(result.tokens.id_token or "")
    assert claims["iss"] == op.issuer
    assert claims["aud"] == CLIENT_IDS[method]


async def test_a_basic_only_server_refuses_post_and_takes_basic(
    tmp_path: Path, browser: Browser
) -> None:
    # RFC 6749 §2.3.1: Basic is the method every server must support; body credentials
    # are optional, and this server does not take them (what the core used to send).
    basic_only = RealProvider(tmp_path, methods=("client_secret_basic",))
    basic_only.start()
    try:
        async with keyloom_for(basic_only, "client_secret_post") as keyloom:
            with pytest.raises(TokenExchangeError) as caught:
                await sign_in(keyloom, browser)
        assert caught.value.error in {"invalid_client", "invalid_request"}
        assert CLIENT_SECRET not in str(caught.value)
        async with keyloom_for(basic_only, scopes="openid offline_access") as keyloom:
            tokens = (await sign_in(keyloom, browser, prompt="consent")).tokens
            fresh = await keyloom.refresh("op", tokens)
            assert await keyloom.revoke("op", fresh)
    finally:
        basic_only.stop()


async def test_offline_access_needs_prompt_consent_then_refresh_rotates(
    op: RealProvider, browser: Browser
) -> None:
    async with keyloom_for(op, scopes="openid profile email offline_access") as keyloom:
        without = await sign_in(keyloom, browser)
        assert without.tokens.refresh_token is None  # offline_access dropped without consent
        with_consent = await sign_in(keyloom, browser, prompt="consent")
        tokens = with_consent.tokens
        assert tokens.refresh_token
        fresh = await keyloom.refresh("op", tokens)
        assert fresh.refresh_token
        assert fresh.refresh_token != tokens.refresh_token  # rotated
        assert id_token_claims(fresh.id_token or "")["sub"] == "alice"
        with pytest.raises(ReauthenticationRequiredError):  # the old one is spent
            await keyloom.refresh("op", tokens)
    async with aiohttp.ClientSession() as session, session.get(f"{op.issuer}/_test/prompts") as r:
        prompts = await r.json()
    assert any(p["name"] == "consent" and "offline_access" in p["scope"] for p in prompts)


async def test_max_age_and_login_hint_reach_the_provider(op: RealProvider, browser: Browser) -> None:
    async with keyloom_for(op) as keyloom:
        await sign_in(keyloom, browser)  # the browser now has a session at the provider
        before = time.time()
        result = await sign_in(keyloom, browser, max_age="0", login_hint="alice")
    claims = id_token_claims(result.tokens.id_token or "")
    assert claims["auth_time"] >= int(before)  # max_age=0: a fresh sign-in, not the session
    async with aiohttp.ClientSession() as session, session.get(f"{op.issuer}/_test/prompts") as r:
        last = (await r.json())[-1]
    assert last["name"] == "login"  # asked again although the browser had a session
    assert "no_session" not in last["reasons"]
    assert last["login_hint"] == "alice"


async def test_logout_revokes_both_tokens(op: RealProvider, browser: Browser) -> None:
    async with keyloom_for(op, scopes="openid offline_access") as keyloom:
        tokens = (await sign_in(keyloom, browser, prompt="consent")).tokens
        assert tokens.refresh_token
        assert await userinfo_status(op, tokens.access_token) == 200
        assert await keyloom.revoke("op", tokens)
        assert await userinfo_status(op, tokens.access_token) == 401
        with pytest.raises(ReauthenticationRequiredError):
            await keyloom.refresh("op", tokens)


async def test_key_rotation_with_a_new_kid(op: RealProvider, browser: Browser) -> None:
    async with keyloom_for(op) as keyloom:
        first = await sign_in(keyloom, browser)
        old_kid = jwt.get_unverified_header(first.tokens.id_token or "")["kid"]
        op.rotate()  # same issuer and port, a new signing key only
        second = await sign_in(keyloom, browser)
    new_kid = jwt.get_unverified_header(second.tokens.id_token or "")["kid"]
    assert new_kid == op.kid != old_kid


# -- a tampering proxy in front of the real token endpoint -------------------------------

Tamper = Callable[[str], str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resign(op: RealProvider, **claims: Any) -> Tamper:
    """Re-sign the ID token with the provider's own key after changing *claims*."""

    def tamper(token: str) -> str:
        body = {**id_token_claims(token), **claims}
        return jwt.encode(body, op.key, algorithm="RS256", headers={"kid": op.kid})

    return tamper


def forge_payload(token: str) -> str:
    """Change the subject but keep the provider's signature."""
    header, _, signature = token.split(".")
    body = {**id_token_claims(token), "sub": "mallory"}
    return f"{header}.{_b64(json.dumps(body).encode())}.{signature}"


@pytest.fixture
async def proxy(op: RealProvider) -> AsyncIterator[dict[str, Any]]:
    state: dict[str, Any] = {"tamper": None}

    async def token(request: web.Request) -> web.Response:
        headers = {
            k: v for k, v in request.headers.items() if k in {"Authorization", "Content-Type"}
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{op.issuer}/token", data=await request.read(), headers=headers) as r,
        ):
            data = await r.json()
        if "id_token" in data and state["tamper"] is not None:
            data["id_token"] = state["tamper"](data["id_token"])
        return web.json_response(data, status=r.status)

    app = web.Application()
    app.router.add_post("/token", token)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state["url"] = str(server.make_url("/token"))
    try:
        yield state
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("tamper", "check"),
    [
        (lambda _op: forge_payload, "signature"),
        (lambda op: resign(op, aud="someone-else"), "aud"),
        (lambda op: resign(op, iss="http://127.0.0.1:1"), "iss"),
        (lambda op: resign(op, nonce="another-login"), "nonce"),
        (lambda op: resign(op, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), "exp"),
    ],
)
async def test_a_tampered_id_token_is_refused(
    op: RealProvider,
    browser: Browser,
    proxy: dict[str, Any],
    tamper: Callable[[RealProvider], Tamper],
    check: str,
) -> None:
    async with keyloom_for(op, token_url=proxy["url"]) as keyloom:
        proxy["tamper"] = None
        assert (await sign_in(keyloom, browser)).profile.id == "alice"  # the proxy is honest
        proxy["tamper"] = tamper(op)
        with pytest.raises(IdTokenError, match=check):
            await sign_in(keyloom, browser)


async def test_a_callback_from_another_issuer_is_refused(
    op: RealProvider, browser: Browser
) -> None:
    """RFC 9207 mix-up: a login started with one provider is answered by the real one."""
    async with OpenIDEmulator(
        client_id="mixup-client", redirect_uris=[CALLBACK.format("mixup")]
    ) as other:
        provider = configure_provider(
            ProviderSpec(
                id="mixup",
                name="Other",
                authorize_url="",
                token_url="",
                issuer=other.issuer,
                token_auth_method="client_secret_basic",
                default_scopes="openid",
            ),
            client_id="mixup-client",
            client_secret=other.client_secret,
        )
        keyloom = define_keyloom(
            providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False
        )
        async with keyloom:
            start = await keyloom.begin_login("mixup")
            # the attacker sends the user to the real provider with this login's parameters
            query = start.url.split("?", 1)[1].replace("mixup-client", CLIENT_IDS["none"])
            callback = await browser(f"{op.issuer}/auth?{query}")
            assert callback["iss"] == op.issuer
            assert callback["code"]
            with pytest.raises(IssuerMismatchError):
                await keyloom.complete_login("mixup", callback, start.state)
