"""The demo's linked accounts over plain HTTP: sign in with TikTok, link GitHub, unlink.

The same steps as the browser test (``tests/test_browser.py``), without a browser: both
emulators run embedded, the client follows redirects and approves the consent pages.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

from keyloom_core.cli import demo
from keyloom_core.cli._democheck import consent
from keyloom_core.cli.demo import DemoSite, demo_site

pytest.importorskip("keyloom_tiktok")
pytest.importorskip("keyloom_github")

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def site() -> AsyncIterator[DemoSite]:
    async with demo_site(port=0, emulator=True, store="memory://") as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield client


async def _sign_in(site: DemoSite, http: aiohttp.ClientSession, provider: str = "tiktok") -> str:
    status, path, page = await consent(
        http, f"{site.url}/api/auth/oauth/{provider}/start?callbackUrl=/dashboard"
    )
    assert (status, path) == (200, "/dashboard")
    return page


async def _link(site: DemoSite, http: aiohttp.ClientSession, provider: str) -> str:
    start = f"{site.url}/api/auth/oauth/{provider}/start?link=1&callbackUrl=/dashboard"
    status, path, page = await consent(http, start)
    assert (status, path) == (200, "/dashboard")
    return page


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as answer:
        assert answer.status == 200
        return await answer.json()


async def _unlink(
    site: DemoSite,
    http: aiohttp.ClientSession,
    provider: str,
    account_id: str,
    *,
    csrf: bool = True,
) -> tuple[int, dict[str, Any]]:
    headers = {}
    if csrf:
        headers["x-keyloom-csrf"] = (await _get(http, f"{site.url}/api/auth/csrf"))["csrfToken"]
    async with http.post(
        f"{site.url}/api/auth/accounts/unlink",
        params={"provider": provider, "providerAccountId": account_id},
        headers=headers,
    ) as answer:
        return answer.status, await answer.json()


def _code(page: str, element_id: str) -> str:
    found = re.search(rf"<code id={element_id}>([^<]*)</code>", page)
    assert found is not None, element_id
    return found.group(1)


async def test_the_dashboard_lists_accounts_and_offers_to_link_github(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    assert site.linkable == ("github",)
    page = await _sign_in(site, http)
    assert "<section id=accounts>" in page
    assert 'data-link="github">Link GitHub</button>' in page
    user_id, open_id = _code(page, "user-id"), _code(page, "account-id")
    accounts = (await _get(http, f"{site.url}/api/auth/accounts"))["accounts"]
    assert [(a["provider"], a["providerAccountId"], a["userId"]) for a in accounts] == [
        ("tiktok", open_id, user_id)
    ]
    session = await _get(http, f"{site.url}/api/auth/session")
    assert session["user"]["id"] == user_id
    assert session["user"]["name"] == "Emulated Creator"


async def test_link_github_then_unlink_it(site: DemoSite, http: aiohttp.ClientSession) -> None:
    first = await _sign_in(site, http)
    user_id = _code(first, "user-id")
    linked = await _link(site, http, "github")
    # the same user, now signed in with GitHub; the TikTok dashboard stays (its account)
    assert _code(linked, "user-id") == user_id
    assert "Signed in with GitHub" in linked
    assert "<section id=tiktok>" in linked
    assert "id=tt-stats" in linked
    accounts = (await _get(http, f"{site.url}/api/auth/accounts"))["accounts"]
    assert sorted(a["provider"] for a in accounts) == ["github", "tiktok"]
    assert {a["userId"] for a in accounts} == {user_id}
    github = next(a["providerAccountId"] for a in accounts if a["provider"] == "github")

    # unlinking needs the CSRF header
    assert (await _unlink(site, http, "github", github, csrf=False))[0] == 403
    assert await _unlink(site, http, "github", github) == (200, {"ok": True})
    accounts = (await _get(http, f"{site.url}/api/auth/accounts"))["accounts"]
    assert [a["provider"] for a in accounts] == ["tiktok"]
    # the last one is refused, with a reason the page shows
    status, body = await _unlink(site, http, "tiktok", accounts[0]["providerAccountId"])
    assert status == 409
    assert body["error"] == "last_account"
    assert "only account" in body["message"]
    # an account that is not the user's
    status, body = await _unlink(site, http, "github", "someone-else")
    assert (status, body["error"]) == (404, "account_not_found")


async def test_two_unlinks_at_once_leave_one_account(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    await _sign_in(site, http)
    await _link(site, http, "github")
    accounts = (await _get(http, f"{site.url}/api/auth/accounts"))["accounts"]
    statuses: list[int] = []

    async def unlink(account: dict[str, Any]) -> None:
        status, _ = await _unlink(site, http, account["provider"], account["providerAccountId"])
        statuses.append(status)

    async with anyio.create_task_group() as tasks:
        for account in accounts:
            tasks.start_soon(unlink, account)
    assert sorted(statuses) == [200, 409]
    left = (await _get(http, f"{site.url}/api/auth/accounts"))["accounts"]
    assert len(left) == 1


async def test_linking_a_github_account_another_user_holds_is_refused(site: DemoSite) -> None:
    jar = aiohttp.CookieJar
    async with (
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as owner,
        aiohttp.ClientSession(cookie_jar=jar(unsafe=True)) as other,
    ):
        # the GitHub account's own user, then a TikTok user who tries to link it
        await _sign_in(site, owner, "github")
        await _sign_in(site, other, "tiktok")
        start = f"{site.url}/api/auth/oauth/github/start?link=1&callbackUrl=/dashboard"
        status, path, page = await consent(other, start)
        assert status == 409
        assert path == "/api/auth/oauth/github/callback"
        assert "account_linked_elsewhere" in page
        mine = (await _get(other, f"{site.url}/api/auth/accounts"))["accounts"]
        assert [a["provider"] for a in mine] == ["tiktok"]


async def test_no_link_button_without_a_linkable_plugin(
    monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    monkeypatch.setattr(demo, "LINKABLE", ("tiktok", "not-installed"))
    async with demo_site(port=0, emulator=True, store="memory://") as site:
        assert site.linkable == ()
        assert set(site.keyloom.providers) == {"tiktok"}
        page = await _sign_in(site, http)
    assert "<section id=accounts>" in page  # the accounts are listed all the same
    assert "data-link=" not in page


async def test_a_session_whose_user_is_gone_is_signed_out(
    site: DemoSite, http: aiohttp.ClientSession
) -> None:
    # as after a restart with a kept session store: the demo keeps its users in memory
    page = await _sign_in(site, http)
    users = site.keyloom.users
    assert users is not None
    assert await users.adapter.delete_user(_code(page, "user-id"))
    async with http.get(f"{site.url}/dashboard") as answer:
        assert answer.status == 200
        assert answer.url.path == "/"
        assert "id=signin" in await answer.text()


def test_demo_check_links_and_unlinks_github(capsys: pytest.CaptureFixture[str]) -> None:
    from keyloom_core.cli import main

    assert main(["demo", "--check", "--port", "0", "--store", "memory://"]) == 0
    out = capsys.readouterr().out
    assert "demo check passed: signed in as 'Emulated Creator'" in out
    assert "linked GitHub and unlinked it" in out
