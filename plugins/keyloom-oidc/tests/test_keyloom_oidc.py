"""keyloom-oidc: any OpenID provider from its issuer, against the kit's OpenID emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from keyloom_oidc import SPEC, oidc, oidc_spec

from keyloom_core import ConfigurationError, Keyloom, LoginResult, define_keyloom
from keyloom_core._plugins import PluginRegistry
from keyloom_core.testing.oidc import OpenIDEmulator

pytestmark = pytest.mark.anyio

SECRET = "test-signing-secret-0123456789-abcdefghij"
BASE_URL = "https://app.example.com"


@pytest.fixture
async def op() -> AsyncIterator[OpenIDEmulator]:
    redirects = [f"{BASE_URL}/api/auth/oauth/{name}/callback" for name in ("oidc", "acme")]
    async with OpenIDEmulator(client_id="app", redirect_uris=redirects) as emulator:
        yield emulator


def app(*providers: Any) -> Keyloom:
    return define_keyloom(providers=list(providers), secret=SECRET, base_url=BASE_URL)


async def sign_in(keyloom: Keyloom, provider: str) -> LoginResult:
    start = await keyloom.begin_login(provider)
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(start.url, allow_redirects=False) as resp,
    ):
        query = dict(parse_qsl(urlsplit(resp.headers["Location"]).query))
    return await keyloom.complete_login(provider, query, start.state)


def test_plugin_is_installed() -> None:
    registry = PluginRegistry()
    assert "oidc" in registry.providers
    assert registry.providers["oidc"].plugin.distribution == "keyloom-oidc 0.1.0"


async def test_configured_from_the_issuer_alone_and_lazily(op: OpenIDEmulator) -> None:
    keyloom = app(oidc(issuer=op.issuer, client_id="app", client_secret=op.client_secret))
    assert op.discovery_fetches == 0  # configuration does no I/O
    async with keyloom:
        result = await sign_in(keyloom, "oidc")
        assert await keyloom.revoke("oidc", result.tokens)
    assert result.profile.id == "sub-alice"
    assert result.profile.email == "alice@example.com"
    assert op.discovery_fetches == 1
    assert [hint for _, hint in op.revoked] == ["refresh_token", "access_token"]


async def test_from_the_environment(op: OpenIDEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OIDC_ISSUER", op.issuer)
    monkeypatch.setenv("OIDC_CLIENT_ID", "app")
    monkeypatch.setenv("OIDC_CLIENT_SECRET", op.client_secret)
    async with app("oidc") as keyloom:
        assert (await sign_in(keyloom, "oidc")).profile.id == "sub-alice"


async def test_a_provider_plugin_is_a_spec_and_a_factory(op: OpenIDEmulator) -> None:
    acme = oidc_spec(id="acme", name="Acme", issuer=op.issuer, plugin=None)
    async with app(oidc(spec=acme, client_id="app", client_secret=op.client_secret)) as keyloom:
        assert (await sign_in(keyloom, "acme")).provider_id == "acme"
    assert acme.env_prefix == "ACME"


def test_bad_configuration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OIDC_ISSUER", raising=False)
    with pytest.raises(ConfigurationError, match="OIDC_ISSUER"):
        oidc(client_id="a", client_secret="b")
    for issuer in ("http://op.example.com", "https://op.example.com/?tenant=1", "op.example"):
        with pytest.raises(ConfigurationError, match="https"):
            oidc(issuer=issuer, client_id="a", client_secret="b")
    assert SPEC.token_auth_method == "client_secret_basic"
