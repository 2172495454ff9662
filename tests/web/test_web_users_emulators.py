"""End to end over HTTP with the TikTok and GitHub emulators: one user, two providers.

Sign in with TikTok (a new user), link GitHub while signed in (the same user, two
accounts), sign in with GitHub in another browser (the same user); an attacker linking an
account that belongs to someone else gets 409 and nothing moves.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

from keyloom_core import define_keyloom
from keyloom_core.testing.emulator import EmulatorServer
from keyloom_core.users import MemoryAdapter

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def _app(
    keyloom_emulator: Callable[..., EmulatorServer], adapter: MemoryAdapter
) -> AsyncIterator[tuple[str, EmulatorServer, EmulatorServer]]:
    import keyloom_github
    import keyloom_tiktok

    from keyloom_core.web.aiohttp import setup_keyloom

    sock = _socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    tiktok_emulator = keyloom_emulator(
        "tiktok", redirect_uris=[f"{url}/api/auth/oauth/tiktok/callback"]
    )
    github_emulator = keyloom_emulator(
        "github", redirect_uris=[f"{url}/api/auth/oauth/github/callback"]
    )
    async with tiktok_emulator, github_emulator:
        credentials = {"client_id": "keyloom-test-client", "client_secret": "keyloom-test-secret"}
        keyloom = define_keyloom(
            providers=[
                keyloom_tiktok.tiktok(**credentials, endpoint_origin=tiktok_emulator.url),
                keyloom_github.github(**credentials, endpoint_origin=github_emulator.url),
            ],
            plugins=[keyloom_tiktok, keyloom_github],
            autoload=False,
            secret="e2e-secret-" + "x" * 32,
            base_url=url,
            adapter=adapter,
            store="memory://",
        )
        app = web.Application()
        setup_keyloom(app, keyloom)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            yield url, tiktok_emulator, github_emulator
        finally:
            await runner.cleanup()


async def _get(browser: aiohttp.ClientSession, url: str | yarl.URL, **kw: Any) -> Any:
    async with browser.get(url, allow_redirects=False, headers=JSON, **kw) as resp:
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data, resp.headers.get("Location")


async def _sign_in(
    browser: aiohttp.ClientSession, url: str, provider: str, *, link: bool = False
) -> tuple[int, Any]:
    params = {"callbackUrl": "/", **({"link": "1"} if link else {})}
    status, data, location = await _get(
        browser, f"{url}/api/auth/oauth/{provider}/start", params=params
    )
    if status != 302:
        return status, data
    _, _, back = await _get(browser, yarl.URL(location, encoded=True))
    status, data, _ = await _get(browser, yarl.URL(back, encoded=True))
    return status, data


async def _user(browser: aiohttp.ClientSession, url: str) -> Any:
    return (await _get(browser, f"{url}/api/auth/session"))[1]["user"]


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_tiktok_then_github_is_one_user(keyloom_emulator: Any) -> None:
    adapter = MemoryAdapter()
    async with (
        _app(keyloom_emulator, adapter) as (url, _tiktok, _github),
        _browser() as first,
        _browser() as second,
    ):
        assert (await _sign_in(first, url, "tiktok"))[0] == 302
        user = await _user(first, url)
        assert user["emailVerified"] is None  # TikTok has no e-mail
        assert (await _sign_in(first, url, "github", link=True))[0] == 302
        assert (await _user(first, url))["id"] == user["id"]
        _, listing, _ = await _get(first, f"{url}/api/auth/accounts")
        assert sorted(a["provider"] for a in listing["accounts"]) == ["github", "tiktok"]
        assert (await _sign_in(second, url, "github"))[0] == 302
        assert (await _user(second, url))["id"] == user["id"]
    assert len(adapter._users) == 1


async def test_linking_someone_elses_github_is_409(keyloom_emulator: Any) -> None:
    adapter = MemoryAdapter()
    async with _app(keyloom_emulator, adapter) as (url, tiktok, github):
        victim_login = next(iter(github.users))  # type: ignore[attr-defined]
        async with _browser() as victim, _browser() as attacker:
            github.default_user = victim_login  # type: ignore[attr-defined]
            assert (await _sign_in(victim, url, "github"))[0] == 302
            victim_id = (await _user(victim, url))["id"]
            tiktok.default_user = list(tiktok.users)[-1]  # type: ignore[attr-defined]
            assert (await _sign_in(attacker, url, "tiktok"))[0] == 302
            attacker_id = (await _user(attacker, url))["id"]
            # the attacker gets the victim's GitHub account to answer their link attempt
            status, data = await _sign_in(attacker, url, "github", link=True)
            assert (status, data["error"]) == (409, "account_linked_elsewhere")
            assert (await _user(attacker, url))["id"] == attacker_id
            assert (await _user(victim, url))["id"] == victim_id
            _, listing, _ = await _get(attacker, f"{url}/api/auth/accounts")
            assert [a["provider"] for a in listing["accounts"]] == ["tiktok"]
            _, listing, _ = await _get(victim, f"{url}/api/auth/accounts")
            assert [a["provider"] for a in listing["accounts"]] == ["github"]
