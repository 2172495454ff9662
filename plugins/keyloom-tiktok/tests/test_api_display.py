"""The Display API client end to end against the emulator: user info, video list and query.

Every test signs a real account in through the emulated TikTok (a real aiohttp server on
127.0.0.1), stores its tokens in a token manager, and calls the API through
``keyloom_tiktok.api.TikTokAPI``. The emulator's clock is a ManualClock the tests move.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import attrs
import pytest
from keyloom_tiktok.api import (
    RateLimits,
    TikTokAPI,
    TikTokRateLimitedError,
    UserInfo,
)
from keyloom_tiktok.emulator import DEFAULT_USERS, EmulatedApp, EmulatedUser
from keyloom_tiktok.emulator_api import VIDEO_LIST_PATH, VIDEO_QUERY_PATH, ContentAPI

from keyloom_core import ScopeDeniedError
from keyloom_core.testing.emulator import ManualClock
from keyloom_core.tokens import MemoryTokenStore, TokenManager

pytestmark = pytest.mark.anyio

ALL_SCOPES = (
    "user.info.basic",
    "user.info.profile",
    "user.info.stats",
    "video.list",
    "video.upload",
    "video.publish",
)
USER = DEFAULT_USERS[0]


@attrs.define
class Account:
    emulator: Any
    keyloom: Any
    manager: TokenManager
    api: TikTokAPI
    open_id: str
    clock: ManualClock

    @property
    def content(self) -> ContentAPI:
        return ContentAPI.of(self.emulator)


MakeAccount = Callable[..., Awaitable[Account]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def make_account(
    make_emulator: Any, make_keyloom: Any, login: Any, clock: ManualClock
) -> MakeAccount:
    async def make(
        scopes: tuple[str, ...] = ALL_SCOPES,
        users: tuple[EmulatedUser, ...] | None = None,
        rate_limits: RateLimits | None = None,
        **options: Any,
    ) -> Account:
        app = attrs.evolve(EmulatedApp.default(), approved_scopes=ALL_SCOPES)
        emulator = await make_emulator(
            clients=[app], consent="approve", clock=clock, users=users, **options
        )
        manager = TokenManager(MemoryTokenStore())
        keyloom = await make_keyloom(emulator, scopes=scopes, plugins=(manager.plugin,))
        manager.bind(keyloom)
        result = await login(keyloom, emulator)
        api = TikTokAPI.for_account(
            keyloom, manager, result.profile.id, rate_limits=rate_limits or RateLimits()
        )
        return Account(emulator, keyloom, manager, api, result.profile.id, clock)

    return make


def api_calls(account: Account, path: str) -> int:
    return len(account.emulator.calls(path))


async def test_user_info_has_every_granted_field_stats_included(make_account: MakeAccount) -> None:
    account = await make_account()
    me = await account.api.user_info()
    assert isinstance(me, UserInfo)
    assert me.open_id == account.open_id
    assert me.display_name == USER.display_name
    assert me.username == USER.username
    assert me.is_verified is True
    assert me.has_stats
    assert (me.follower_count, me.following_count, me.likes_count, me.video_count) == (
        USER.follower_count,
        USER.following_count,
        USER.likes_count,
        USER.video_count,
    )
    fields = account.emulator.calls("/v2/user/info/")[-1].query["fields"].split(",")
    assert {"follower_count", "likes_count", "username", "display_name"} <= set(fields)


async def test_user_info_asks_only_for_fields_the_granted_scopes_allow(
    make_account: MakeAccount,
) -> None:
    account = await make_account(scopes=("user.info.basic",))
    me = await account.api.user_info()
    assert me.display_name == USER.display_name
    assert me.follower_count is None
    assert me.username is None
    assert not me.has_stats
    fields = set(account.emulator.calls("/v2/user/info/")[-1].query["fields"].split(","))
    assert fields == {
        "open_id",
        "union_id",
        "avatar_url",
        "avatar_url_100",
        "avatar_large_url",
        "display_name",
    }


async def test_user_info_field_without_its_scope_is_refused_before_any_call(
    make_account: MakeAccount,
) -> None:
    account = await make_account(scopes=("user.info.basic",))
    before = api_calls(account, "/v2/user/info/")
    with pytest.raises(ScopeDeniedError) as caught:
        await account.api.user_info(fields=["display_name", "follower_count"])
    assert caught.value.missing == {"user.info.stats"}
    assert api_calls(account, "/v2/user/info/") == before
    with pytest.raises(ValueError, match="unknown user fields"):
        await account.api.user_info(fields=["avatar_url_200"])


async def test_video_list_pages_through_the_whole_seeded_catalogue(
    make_account: MakeAccount,
) -> None:
    account = await make_account()
    me = await account.api.user_info()
    videos = [video async for video in account.api.videos()]
    assert len(videos) == me.video_count == 42
    assert len({v.id for v in videos}) == 42
    times = [v.create_time for v in videos]
    assert all(a is not None and b is not None and a > b for a, b in itertools.pairwise(times))
    assert sum(v.like_count or 0 for v in videos) == me.likes_count
    assert api_calls(account, VIDEO_LIST_PATH) == math.ceil(42 / 20)
    first = videos[0]
    assert first.title
    assert first.share_url
    assert first.embed_link
    assert first.cover_image_url
    assert first.view_count is not None
    assert first.view_count >= (first.like_count or 0)


async def test_video_list_is_stable_per_user(make_account: MakeAccount) -> None:
    one = await make_account()
    ids_one = [v.id async for v in one.api.videos(limit=5)]
    two = await make_account()
    ids_two = [v.id async for v in two.api.videos(limit=5)]
    assert ids_one == ids_two
    assert len(ids_one) == 5


async def test_video_list_keeps_going_through_short_pages(make_account: MakeAccount) -> None:
    account = await make_account()
    account.content.hide_every = 3
    pages = [page async for page in account.api.video_pages(page_size=10)]
    assert [len(p.videos) for p in pages][:4] == [7, 7, 6, 7]
    assert [p.has_more for p in pages] == [True, True, True, True, False]
    assert sum(len(p.videos) for p in pages) == 42 - 14
    assert api_calls(account, VIDEO_LIST_PATH) == 5


async def test_video_list_with_no_videos_stops_at_once(make_account: MakeAccount) -> None:
    empty = EmulatedUser(user_id="new-creator", display_name="New Creator", username="new.creator")
    account = await make_account(users=(empty,))
    pages = [page async for page in account.api.video_pages()]
    assert len(pages) == 1
    assert pages[0].videos == ()
    assert pages[0].has_more is False


async def test_video_list_page_size_is_checked(make_account: MakeAccount) -> None:
    account = await make_account()
    with pytest.raises(ValueError, match="page_size"):
        async for _ in account.api.video_pages(page_size=21):
            pass
    assert api_calls(account, VIDEO_LIST_PATH) == 0


async def test_video_query_batches_ids_by_twenty_and_drops_foreign_ones(
    make_account: MakeAccount,
) -> None:
    account = await make_account()
    videos = [v async for v in account.api.videos()]
    wanted = [v.id for v in reversed(videos)] + ["7000000000000000001", "not-mine"]
    found = await account.api.query_videos(wanted)
    assert [v.id for v in found] == [v.id for v in reversed(videos)]
    calls = account.emulator.calls(VIDEO_QUERY_PATH)
    assert len(calls) == math.ceil(44 / 20)
    assert await account.api.query_videos([]) == []


async def test_cover_urls_expire_after_six_hours_and_query_renews_them(
    make_account: MakeAccount,
) -> None:
    account = await make_account()
    video = await anext(account.api.videos(limit=1))
    assert video.cover_image_url is not None
    assert video.cover_expires_at == pytest.approx(account.clock() + 6 * 3600, abs=2)
    async with aiohttp.ClientSession() as browser:
        async with browser.get(video.cover_image_url) as response:
            assert response.status == 200
        account.clock.advance(6 * 3600 + 1)
        async with browser.get(video.cover_image_url) as response:
            assert response.status == 403
        (fresh,) = await account.api.query_videos([video.id])
        assert fresh.cover_image_url != video.cover_image_url
        assert fresh.cover_image_url is not None
        async with browser.get(fresh.cover_image_url) as response:
            assert response.status == 200


async def test_video_list_needs_its_scope_before_any_call(make_account: MakeAccount) -> None:
    account = await make_account(scopes=("user.info.basic", "user.info.stats"))
    with pytest.raises(ScopeDeniedError) as caught:
        async for _ in account.api.videos():
            pass
    assert caught.value.missing == {"video.list"}
    with pytest.raises(ScopeDeniedError):
        await account.api.query_videos(["1"])
    assert api_calls(account, VIDEO_LIST_PATH) == api_calls(account, VIDEO_QUERY_PATH) == 0


async def expire_stored_token(account: Account) -> None:
    """Time passes for the token manager: the stored access token is now due."""
    grant = await account.manager.grant("tiktok", account.open_id)
    await account.manager.store.put(
        "tiktok",
        account.open_id,
        attrs.evolve(grant.tokens, expires_at=time.time() - 1),
        scopes=grant.granted_scopes,
    )


async def test_an_expired_token_is_refreshed_before_the_call(make_account: MakeAccount) -> None:
    account = await make_account()
    account.clock.advance(86_400 + 10)
    await expire_stored_token(account)
    me = await account.api.user_info()
    assert me.open_id == account.open_id
    refreshes = [
        r
        for r in account.emulator.calls("/v2/oauth/token/")
        if r.form.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1


async def test_a_refused_token_is_refreshed_once_and_the_call_repeated(
    make_account: MakeAccount,
) -> None:
    account = await make_account()
    # TikTok's clock says the token expired; the stored expiry says it is still fresh.
    account.clock.advance(86_400 + 10)
    me = await account.api.user_info()
    assert me.open_id == account.open_id
    statuses = [r.status for r in account.emulator.calls("/v2/user/info/")]
    assert statuses[-2:] == [401, 200]
    refreshes = [
        r
        for r in account.emulator.calls("/v2/oauth/token/")
        if r.form.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1
    assert (await account.api.user_info()).open_id == account.open_id  # the new token works
    refreshes = [
        r
        for r in account.emulator.calls("/v2/oauth/token/")
        if r.form.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1


async def test_a_token_still_refused_after_one_refresh_is_a_typed_error(
    make_account: MakeAccount,
) -> None:
    from keyloom_tiktok.api import AccessTokenInvalidError

    account = await make_account()
    account.emulator.access_token_ttl = 0  # every token TikTok issues is dead at once
    account.clock.advance(86_400 + 10)
    with pytest.raises(AccessTokenInvalidError) as caught:
        await account.api.user_info()
    assert caught.value.error == "access_token_invalid"
    assert caught.value.log_id
    statuses = [r.status for r in account.emulator.calls("/v2/user/info/")]
    assert statuses[-2:] == [401, 401]


async def test_calls_are_paced_within_the_endpoint_limit(make_account: MakeAccount) -> None:
    limits = RateLimits({"video_list": (2, 60.0, False)}, max_wait=0.0)
    account = await make_account(rate_limits=limits)
    pages = account.api.video_pages(page_size=5)
    assert len((await anext(pages)).videos) == 5
    assert len((await anext(pages)).videos) == 5
    with pytest.raises(TikTokRateLimitedError) as caught:
        await anext(pages)
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60
    assert api_calls(account, VIDEO_LIST_PATH) == 2


async def test_tiktoks_rate_limit_answer_is_a_typed_error(make_account: MakeAccount) -> None:
    account = await make_account(rate_limits=RateLimits({}))
    account.content.limits[VIDEO_LIST_PATH] = 1
    await anext(account.api.video_pages())
    with pytest.raises(TikTokRateLimitedError) as caught:
        await anext(account.api.video_pages())
    assert caught.value.error == "rate_limit_exceeded"
    assert caught.value.status == 429
