"""Client authentication, refresh-token revocation and OpenID Connect in the built-in behaviour.

Against the kit's OpenID emulator (keyloom_core.testing.oidc), a real server on 127.0.0.1
that can be told to lie: forged, mis-addressed or stale ID tokens, a foreign callback
``iss``, UserInfo for another user, key rotation. The same behaviour is checked against an
independent certified provider in tests/oidc/.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import attrs
import jwt
import pytest

from keyloom_core import (
    ConfigurationError,
    Keyloom,
    LoginResult,
    ProfileError,
    ProviderSpec,
    TokenExchangeError,
    TokenSet,
    configure_provider,
    define_keyloom,
)
from keyloom_core.oidc import (
    DiscoveryError,
    IdTokenError,
    IdTokenRules,
    IssuerMismatchError,
    LoginParameterError,
    nonce_for,
    validate_id_token,
)
from keyloom_core.testing.oidc import OpenIDEmulator, SigningKey

pytestmark = pytest.mark.anyio

SECRET = "test-signing-secret-0123456789-abcdefghij"
BASE_URL = "https://app.example.com"
REDIRECT = f"{BASE_URL}/api/auth/oauth/op/callback"
CLIENT_SECRET = "s3cret with spaces+plus%and:colon-DO-NOT-LEAK"


def op_spec(**changes: Any) -> ProviderSpec:
    spec = ProviderSpec(
        id="op",
        name="Example OP",
        authorize_url="",
        token_url="",
        issuer="https://op.invalid",
        token_auth_method="client_secret_basic",
        revoke_refresh_token=True,
        default_scopes="openid profile email",
        login_params={"prompt", "login_hint", "max_age"},
    )
    return attrs.evolve(spec, **changes)


@pytest.fixture
async def op() -> AsyncIterator[OpenIDEmulator]:
    async with OpenIDEmulator(
        client_id="client:one", client_secret=CLIENT_SECRET, redirect_uris=[REDIRECT]
    ) as emulator:
        yield emulator


def make(op: OpenIDEmulator, **changes: Any) -> Keyloom:
    options = {k: changes.pop(k) for k in ("client_secret", "scopes") if k in changes}
    options.setdefault("client_secret", op.client_secret)
    provider = configure_provider(
        op_spec(**changes), client_id=op.client_id, endpoint_origin=op.url, **options
    )
    return define_keyloom(providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False)


async def browse(url: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as browser, browser.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return dict(parse_qsl(urlsplit(resp.headers["Location"]).query))


async def login(keyloom: Keyloom, **params: str) -> LoginResult:
    start = await keyloom.begin_login("op", params=params or None)
    return await keyloom.complete_login("op", await browse(start.url), start.state)


# -- client authentication ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
async def test_each_client_auth_method_signs_in_refreshes_and_revokes(
    op: OpenIDEmulator, method: str
) -> None:
    op.auth_method = method  # type: ignore[assignment]
    secret = {"client_secret": ""} if method == "none" else {}
    async with make(op, token_auth_method=method, **secret) as keyloom:
        result = await login(keyloom)
        assert result.profile.id == "sub-alice"
        fresh = await keyloom.refresh("op", result.tokens)
        assert fresh.refresh_token != result.tokens.refresh_token
        assert await keyloom.revoke("op", fresh)
    assert not op.is_active(fresh.access_token)
    assert not op.is_active(fresh.refresh_token or "")


async def test_basic_credentials_are_form_encoded_before_base64(op: OpenIDEmulator) -> None:
    # RFC 6749 §2.3.1: "client:one" and a secret with spaces, "+", "%" and ":" survive only
    # if each is form-urlencoded first; the emulator decodes them the same way.
    async with make(op) as keyloom:
        assert (await login(keyloom)).profile.id == "sub-alice"


async def test_a_basic_only_server_refuses_post_credentials(op: OpenIDEmulator) -> None:
    async with make(op, token_auth_method="client_secret_post") as keyloom:
        with pytest.raises(TokenExchangeError) as caught:
            await login(keyloom)
    assert caught.value.error == "invalid_client"
    assert CLIENT_SECRET not in str(caught.value)


def test_a_public_client_needs_no_secret_and_others_do() -> None:
    spec = op_spec(token_auth_method="none")
    assert configure_provider(spec, client_id="x").client_secret == ""
    with pytest.raises(ConfigurationError, match="client secret"):
        configure_provider(op_spec(), client_id="x")
    with pytest.raises(ValueError, match="token_auth_method"):
        op_spec(token_auth_method="private_key_jwt")


async def test_revocation_revokes_the_refresh_token_first_with_hints(op: OpenIDEmulator) -> None:
    async with make(op) as keyloom:
        tokens = (await login(keyloom)).tokens
        assert await keyloom.revoke("op", tokens)
    assert op.revoked == [(tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")]


# -- OpenID Connect ----------------------------------------------------------------------


async def test_openid_login_validates_the_id_token_and_keeps_it_hidden(
    op: OpenIDEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make(op) as keyloom:
        start = await keyloom.begin_login("op")
        callback = await browse(start.url)
        sent = op.last_authorize
        result = await keyloom.complete_login("op", callback, start.state)
    assert sent["nonce"]
    assert sent["scope"] == "email openid profile"
    assert result.profile.id == "sub-alice"
    assert result.profile.email == "alice@example.com"
    assert result.profile.email_verified
    assert result.tokens.id_token
    assert result.tokens.id_token not in repr(result) + caplog.text
    assert TokenSet.from_dict(result.tokens.to_dict()) == result.tokens


async def test_the_nonce_is_derived_from_the_pkce_verifier_and_unique(op: OpenIDEmulator) -> None:
    async with make(op) as keyloom:
        first = await keyloom.begin_login("op")
        second = await keyloom.begin_login("op")
    nonces = [dict(parse_qsl(urlsplit(s.url).query))["nonce"] for s in (first, second)]
    assert nonces[0] != nonces[1]
    assert nonce_for("a" * 43) != nonce_for("b" * 43)
    assert len(nonces[0]) == 43


async def test_an_unverified_email_is_not_taken(op: OpenIDEmulator) -> None:
    op.users["alice"] = {"name": "Alice", "email": "alice@example.com", "email_verified": False}
    async with make(op) as keyloom:
        profile = (await login(keyloom)).profile
    assert profile.email is None
    assert not profile.email_verified


@pytest.mark.parametrize(
    ("claims", "check"),
    [
        ({"aud": "someone-else"}, "aud"),
        ({"aud": ["client:one", "other"], "azp": "other"}, "azp"),
        ({"iss": "https://evil.example"}, "iss"),
        ({"nonce": "replayed-nonce"}, "nonce"),
        ({"exp": int(time.time()) - 3600}, "exp"),
        ({"iat": int(time.time()) + 3600}, "iat"),
        ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash"),
        ({"sub": ""}, "sub"),
    ],
)
async def test_a_tampered_id_token_fails_the_login(
    op: OpenIDEmulator, claims: dict[str, Any], check: str
) -> None:
    op.id_token_claims = claims
    async with make(op) as keyloom:
        with pytest.raises(IdTokenError, match=check) as caught:
            await login(keyloom)
    assert caught.value.status == 502


async def test_an_id_token_signed_with_a_foreign_key_fails(op: OpenIDEmulator) -> None:
    op.sign_with = attrs.evolve(SigningKey.generate(), kid=op.key.kid)  # same kid, other key
    async with make(op) as keyloom:
        with pytest.raises(IdTokenError, match="signature"):
            await login(keyloom)


async def test_an_id_token_with_an_unpublished_kid_fails_after_one_refetch(
    op: OpenIDEmulator,
) -> None:
    op.sign_with = SigningKey.generate()
    async with make(op) as keyloom:
        with pytest.raises(IdTokenError, match="unknown key"):
            await login(keyloom)
    assert op.jwks_fetches == 2


async def test_key_rotation_refetches_the_key_set_once(op: OpenIDEmulator) -> None:
    async with make(op) as keyloom:
        await login(keyloom)
        await login(keyloom)
        assert op.jwks_fetches == 1  # cached
        op.rotate_key()
        assert (await login(keyloom)).profile.id == "sub-alice"
        assert op.jwks_fetches == 2
        await login(keyloom)
    assert op.jwks_fetches == 2
    assert op.discovery_fetches == 1


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


def test_alg_none_and_symmetric_algorithms_are_refused() -> None:
    key = SigningKey.generate()
    rules = IdTokenRules(issuer="https://op", client_id="c", algorithms=("RS256",))
    claims = {"iss": "https://op", "aud": "c", "sub": "u", "iat": time.time(), "exp": 2e9}
    with pytest.raises(IdTokenError, match="algorithm"):
        validate_id_token(_forge({"alg": "none", "kid": key.kid}, claims), [key.jwk()], rules)
    # HS256 keyed with the public key's text: the classic confusion attack
    hs = jwt.encode(claims, "public-key-text-used-as-an-hmac-secret", algorithm="HS256", headers={"kid": key.kid})
    with pytest.raises(IdTokenError, match="algorithm"):
        validate_id_token(hs, [key.jwk()], rules)
    with pytest.raises(ValueError, match="never 'none'"):
        op_spec(id_token_algorithms=("RS256", "none"))
    with pytest.raises(ValueError, match="leeway"):
        IdTokenRules(issuer="i", client_id="c", algorithms=("RS256",), leeway=3600)


def test_clock_skew_is_bounded() -> None:
    key = SigningKey.generate()
    rules = IdTokenRules(issuer="https://op", client_id="c", algorithms=("RS256",), leeway=60)
    claims = {"iss": "https://op", "aud": "c", "sub": "u", "iat": 1000, "exp": 1300}
    token = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
    assert validate_id_token(token, [key.jwk()], rules, now=1359)["sub"] == "u"
    with pytest.raises(IdTokenError, match="exp"):
        validate_id_token(token, [key.jwk()], rules, now=1360)
    assert validate_id_token(token, [key.jwk()], rules, now=941)["sub"] == "u"
    with pytest.raises(IdTokenError, match="iat"):
        validate_id_token(token, [key.jwk()], rules, now=939)


async def test_a_foreign_callback_issuer_is_refused(op: OpenIDEmulator) -> None:
    op.callback_iss = "https://evil.example"
    async with make(op) as keyloom:
        with pytest.raises(IssuerMismatchError) as caught:
            await login(keyloom)
    assert caught.value.status == 400


async def test_a_missing_callback_issuer_is_refused_when_advertised(op: OpenIDEmulator) -> None:
    op.callback_iss = None
    async with make(op) as keyloom:
        with pytest.raises(IssuerMismatchError, match="no issuer"):
            await login(keyloom)


async def test_userinfo_for_another_subject_fails_the_login(op: OpenIDEmulator) -> None:
    op.userinfo_claims = {"sub": "sub-mallory"}
    async with make(op) as keyloom:
        with pytest.raises(ProfileError) as caught:
            await login(keyloom)
    assert caught.value.error == "sub_mismatch"


async def test_refresh_validates_the_new_id_token_and_keeps_the_subject(
    op: OpenIDEmulator,
) -> None:
    async with make(op) as keyloom:
        tokens = (await login(keyloom)).tokens
        fresh = await keyloom.refresh("op", tokens)
        assert fresh.id_token
        assert fresh.id_token != tokens.id_token
        op.id_token_claims = {"sub": "sub-mallory"}
        with pytest.raises(IdTokenError, match="sub"):
            await keyloom.refresh("op", fresh)


async def test_per_login_parameters_are_allow_listed(op: OpenIDEmulator) -> None:
    async with make(op) as keyloom:
        await login(keyloom, prompt="consent", login_hint="alice@example.com", max_age="0")
        sent = op.last_authorize
        assert (sent["prompt"], sent["login_hint"], sent["max_age"]) == (
            "consent",
            "alice@example.com",
            "0",
        )
        for bad in ({"response_mode": "form_post"}, {"prompt": "bogus"}, {"max_age": "-1"}):
            with pytest.raises(LoginParameterError) as caught:
                await keyloom.begin_login("op", params=bad)
            assert caught.value.status == 400


@pytest.mark.parametrize("auth_time", [None, "too old"])
async def test_max_age_requires_a_recent_auth_time(op: OpenIDEmulator, auth_time: Any) -> None:
    async with make(op) as keyloom:
        assert (await login(keyloom, max_age="60")).profile.id == "sub-alice"
        op.id_token_claims = {"auth_time": None if auth_time is None else time.time() - 3600}
        assert (await login(keyloom)).profile.id == "sub-alice"  # no max_age: not checked
        with pytest.raises(IdTokenError, match="auth_time" if auth_time is None else "max_age"):
            await login(keyloom, max_age="60")


async def test_configuration_does_no_io_and_discovery_is_checked(op: OpenIDEmulator) -> None:
    missing = make(op, issuer="https://op.invalid/tenant")  # no I/O: nothing fails yet
    other = define_keyloom(  # the document names the issuer without the trailing slash
        providers=[
            configure_provider(
                op_spec(issuer=op.url + "/"), client_id=op.client_id, client_secret="x"
            )
        ],
        secret=SECRET,
        base_url=BASE_URL,
        autoload=False,
    )
    assert op.discovery_fetches == 0
    async with missing:
        with pytest.raises(DiscoveryError) as caught:
            await missing.begin_login("op")
        assert caught.value.http_status == 404
    async with other:
        with pytest.raises(DiscoveryError, match="another issuer"):
            await other.begin_login("op")
    assert op.discovery_fetches == 1


async def test_without_the_openid_scope_no_id_token_is_required(op: OpenIDEmulator) -> None:
    async with make(op, scopes="profile", default_scopes="profile") as keyloom:
        start = await keyloom.begin_login("op")
        assert "nonce" not in dict(parse_qsl(urlsplit(start.url).query))
        result = await keyloom.complete_login("op", await browse(start.url), start.state)
    assert result.tokens.id_token is None
    assert result.profile.id == "sub-alice"


# -- the guide's Google plugin -----------------------------------------------------------


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-provider.md"


async def test_the_guides_google_plugin_signs_in_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("keyloom_oidc")
    section = GUIDE.read_text(encoding="utf-8").split("## 12. OpenID providers")[1]
    source = section.split("```python\n")[1].split("```")[0]
    stated = re.search(r"(\d+) lines", section)
    assert stated
    assert int(stated.group(1)) == len(source.rstrip("\n").splitlines())
    (tmp_path / "keyloom_google.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "keyloom_google", raising=False)
    plugin = importlib.import_module("keyloom_google")
    redirect = f"{BASE_URL}/api/auth/oauth/google/callback"
    try:
        async with OpenIDEmulator(client_id="g", redirect_uris=[redirect]) as google:
            provider = plugin.google(
                client_id="g", client_secret=google.client_secret, endpoint_origin=google.url
            )
            assert provider.spec.issuer == google.issuer  # accounts.google.com, emulated
            keyloom = define_keyloom(
                providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False
            )
            assert keyloom.registry.owner("google") is plugin  # registered through spec.plugin
            async with keyloom:
                start = await keyloom.begin_login("google", params={"access_type": "offline"})
                callback = await browse(start.url)
                result = await keyloom.complete_login("google", callback, start.state)
    finally:
        sys.modules.pop("keyloom_google", None)
    assert google.last_authorize["access_type"] == "offline"
    assert result.profile.email == "alice@example.com"


async def test_discovery_that_never_answers_is_a_timeout_at_the_start() -> None:
    import anyio
    import anyio.abc

    from keyloom_core import ProviderTimeoutError

    async def silent(stream: Any) -> None:
        async with stream:
            await anyio.sleep(30)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610  (not Django)
    spec = ProviderSpec(
        id="mute",
        name="Mute",
        authorize_url="",
        token_url="",
        issuer=f"http://127.0.0.1:{port}",
        default_scopes=("openid",),
    )
    provider = configure_provider(spec, client_id="c", client_secret="s", scopes=["openid"])
    keyloom = define_keyloom(
        providers=[provider], secret=SECRET, base_url=BASE_URL, autoload=False, timeout=0.3
    )
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        async with keyloom:
            started = time.monotonic()
            with pytest.raises(ProviderTimeoutError, match="discovery"):
                await keyloom.begin_login("mute")
        assert time.monotonic() - started < 2
        tg.cancel_scope.cancel()
