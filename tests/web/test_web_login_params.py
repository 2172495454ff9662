"""The start route forwards the per-login parameters a provider allows, and only those."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import attrs
import pytest

from keyloom_core import Provider, ProviderSpec

pytestmark = pytest.mark.anyio


async def _start(browser: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    async with browser.get(url, allow_redirects=False) as resp:
        if resp.status != 302:
            return resp.status, await resp.json()
        return resp.status, dict(parse_qsl(urlsplit(resp.headers["Location"]).query))


async def test_allowed_parameters_are_forwarded_and_others_dropped(
    serve, browser, make_provider: Callable[..., Provider], fake_spec: ProviderSpec
) -> None:
    provider = make_provider(attrs.evolve(fake_spec, login_params={"prompt", "login_hint"}))
    async with serve(provider) as app:
        status, query = await _start(
            browser,
            app.auth("/oauth/fake/start?callbackUrl=/&prompt=consent&login_hint=al&max_age=0"),
        )
        assert status == 302
        assert (query["prompt"], query["login_hint"]) == ("consent", "al")
        assert "max_age" not in query  # not in this provider's allow-list
        status, body = await _start(browser, app.auth("/oauth/fake/start?prompt=bogus"))
        assert status == 400
        assert body["error"] == "invalid_login_parameter"


async def test_a_provider_without_login_params_starts_as_before(serve, browser) -> None:
    async with serve() as app:
        status, query = await _start(browser, app.auth("/oauth/fake/start?prompt=consent"))
    assert status == 302
    assert "prompt" not in query
    assert "nonce" not in query
