"""Users over HTTP, both integrations: sign in, link while signed in, unlink, the 409.

Two providers on the fake server stand for TikTok (no e-mail) and GitHub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import yarl

from keyloom_core import Provider, ProviderSpec
from keyloom_core.users import MemoryAdapter

pytestmark = pytest.mark.anyio

JSON = {"Accept": "application/json"}


async def call(
    browser: aiohttp.ClientSession,
    method: str,
    url: str | yarl.URL,
    *,
    headers: dict[str, str] | None = None,
    params: Any = None,
) -> tuple[int, Any, dict[str, str]]:
    async with browser.request(
        method, url, headers=headers, params=params, allow_redirects=False
    ) as resp:
        data: Any = None
        if resp.headers.get("Content-Type", "").startswith("application/json"):
            data = await resp.json()
        return resp.status, data, dict(resp.headers)


async def sign_in(
    browser: aiohttp.ClientSession, srv: Any, provider: str, user: str, *, link: bool = False
) -> tuple[int, Any]:
    params = {"callbackUrl": "/", **({"link": "1"} if link else {})}
    status, data, headers = await call(
        browser, "GET", srv.auth(f"/oauth/{provider}/start"), params=params, headers=JSON
    )
    if status != 302:
        return status, data
    at_provider = yarl.URL(headers["Location"], encoded=True).update_query({"_user": user})
    _, _, back = await call(browser, "GET", at_provider)
    status, data, _ = await call(
        browser, "GET", yarl.URL(back["Location"], encoded=True), headers=JSON
    )
    return status, data


async def session_user(browser: aiohttp.ClientSession, srv: Any) -> Any:
    _, data, _ = await call(browser, "GET", srv.auth("/session"), headers=JSON)
    return data["user"]


async def csrf(browser: aiohttp.ClientSession, srv: Any) -> dict[str, str]:
    _, data, _ = await call(browser, "GET", srv.auth("/csrf"), headers=JSON)
    return {**JSON, "x-keyloom-csrf": data["csrfToken"]}


@pytest.fixture
def providers(make_provider: Callable[..., Provider], fake_spec: ProviderSpec) -> list[Provider]:
    def spec(provider_id: str) -> ProviderSpec:
        return ProviderSpec(
            id=provider_id,
            name=provider_id.title(),
            authorize_url=fake_spec.authorize_url,
            token_url=fake_spec.token_url,
            profile_url=fake_spec.profile_url,
            revoke_url=fake_spec.revoke_url,
            known_scopes=fake_spec.known_scopes,
            default_scopes=fake_spec.default_scopes,
        )

    no_email = make_provider(
        spec("tiktok"), profile_overrides=lambda _p: {"email": None, "email_verified": False}
    )
    return [no_email, make_provider(spec("github"))]


@pytest.mark.parametrize("store", [None, "memory://"])
async def test_sign_in_link_and_sign_in_elsewhere(
    serve: Any, providers: list[Provider], store: str | None
) -> None:
    adapter = MemoryAdapter()
    jar = aiohttp.CookieJar(unsafe=True)
    other_jar = aiohttp.CookieJar(unsafe=True)
    async with (
        serve(*providers, adapter=adapter, store=store) as srv,
        aiohttp.ClientSession(cookie_jar=jar) as browser,
        aiohttp.ClientSession(cookie_jar=other_jar) as other,
    ):
        # TikTok first: a new user, in the JavaScript data model
        assert (await sign_in(browser, srv, "tiktok", "alice"))[0] == 302
        user = await session_user(browser, srv)
        assert user["email"] is None
        assert user["emailVerified"] is None
        assert {"createdAt", "updatedAt", "name", "image"} <= set(user)
        # link GitHub while signed in: the same user, two accounts
        assert (await sign_in(browser, srv, "github", "alice", link=True))[0] == 302
        assert (await session_user(browser, srv))["id"] == user["id"]
        status, data, _ = await call(browser, "GET", srv.auth("/accounts"), headers=JSON)
        assert status == 200
        assert [a["provider"] for a in data["accounts"]] == ["github", "tiktok"]
        # GitHub in another browser: the same user
        assert (await sign_in(other, srv, "github", "alice"))[0] == 302
        assert (await session_user(other, srv))["id"] == user["id"]
        # unlinking needs the CSRF token; the last account cannot go
        url = srv.auth("/accounts/unlink")
        github = {"provider": "github", "providerAccountId": "id-alice"}
        assert (await call(browser, "POST", url, params=github, headers=JSON))[0] == 403
        status, _, _ = await call(
            browser, "POST", url, params=github, headers=await csrf(browser, srv)
        )
        assert status == 200
        tiktok = {"provider": "tiktok", "providerAccountId": "id-alice"}
        status, data, _ = await call(
            browser, "POST", url, params=tiktok, headers=await csrf(browser, srv)
        )
        assert (status, data["error"]) == (409, "last_account")
        assert [a.provider for a in await adapter.list_accounts(user["id"])] == ["tiktok"]


async def test_linking_someone_elses_account_is_409_and_nothing_moves(
    serve: Any, providers: list[Provider]
) -> None:
    adapter = MemoryAdapter()
    async with (
        serve(*providers, adapter=adapter) as srv,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as victim,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as attacker,
    ):
        await sign_in(victim, srv, "github", "victim")
        victim_id = (await session_user(victim, srv))["id"]
        await sign_in(attacker, srv, "tiktok", "mallory")
        attacker_id = (await session_user(attacker, srv))["id"]
        status, data = await sign_in(attacker, srv, "github", "victim", link=True)
        assert status == 409
        assert data["error"] == "account_linked_elsewhere"
        holder = await adapter.get_user_by_account("github", "id-victim")
        assert holder is not None
        assert holder.id == victim_id
        assert [a.provider for a in await adapter.list_accounts(attacker_id)] == ["tiktok"]
        assert (await session_user(attacker, srv))["id"] == attacker_id  # still themselves


async def test_link_and_accounts_need_a_signed_in_browser(
    serve: Any, providers: list[Provider], browser: aiohttp.ClientSession
) -> None:
    async with serve(*providers, adapter=MemoryAdapter()) as srv:
        status, data = await sign_in(browser, srv, "github", "alice", link=True)
        assert (status, data["error"]) == (401, "sign_in_required")
        status, data, _ = await call(browser, "GET", srv.auth("/accounts"), headers=JSON)
        assert (status, data["error"]) == (401, "sign_in_required")


async def test_without_an_adapter_the_user_routes_say_so(
    serve: Any, providers: list[Provider], browser: aiohttp.ClientSession
) -> None:
    async with serve(*providers) as srv:
        await sign_in(browser, srv, "github", "alice")
        assert (await session_user(browser, srv))["id"] == "id-alice"  # the profile, as before
        status, data, _ = await call(browser, "GET", srv.auth("/accounts"), headers=JSON)
        assert (status, data["error"]) == (400, "linking_error")
        status, data = await sign_in(browser, srv, "github", "alice", link=True)
        assert status == 400


async def test_a_deleted_user_is_signed_out(
    serve: Any, providers: list[Provider], browser: aiohttp.ClientSession
) -> None:
    async with serve(*providers, adapter=MemoryAdapter()) as srv:
        await sign_in(browser, srv, "github", "alice")
        user = await session_user(browser, srv)
        assert srv.keyloom.users is not None
        assert await srv.keyloom.users.delete(user["id"])
        assert await session_user(browser, srv) is None
