"""The Content Posting API client end to end against the emulator: creator, posts, chunks, status.

Every test signs a real account in through the emulated TikTok (a real aiohttp server on
127.0.0.1), stores its tokens in a token manager, and calls the API through
``keyloom_tiktok.api.TikTokAPI``. The emulator's clock is a ManualClock the tests move.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from keyloom_tiktok.api import (
    ActiveUserCapError,
    AppVersionCheckFailedError,
    CreatorOptionsError,
    DirectPhotoPost,
    DirectPost,
    InternalServerError,
    InvalidPublishIdError,
    PostFailedError,
    PostTimeoutError,
    PrivacyLevelOptionMismatchError,
    PublishIdNotAuthorizedError,
    PublishNotCancellableError,
    PublishStatus,
    RateLimits,
    TikTokAPI,
    TikTokRateLimitedError,
    TooManyPendingSharesError,
    TooManyPostsError,
    UnauditedClientError,
    UploadURLExpiredError,
    UrlOwnershipUnverifiedError,
    UserBannedFromPostingError,
    WebhookEvent,
    WebhookSignatureError,
    error_for,
    mp4_duration,
    verify_webhook,
)
from keyloom_tiktok.emulator import DEFAULT_USERS, EmulatedApp, EmulatedUser
from keyloom_tiktok.emulator_api import (
    CONTENT_INIT_PATH,
    CREATOR_INFO_PATH,
    INBOX_INIT_PATH,
    PRIVATE_OPTIONS,
    PUBLIC_OPTIONS,
    STATUS_PATH,
    UPLOAD_PATH,
    VIDEO_INIT_PATH,
    ContentAPI,
    EmulatedPost,
)

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


MiB = 1024 * 1024


def write_mp4(path: Path, size: int, seconds: float = 12.0) -> Path:
    """A file TikTok's checks read as an MP4 of *seconds* (box headers, then zeros)."""
    mvhd = struct.pack(">B3xIIII", 0, 0, 0, 1000, int(seconds * 1000)) + bytes(80)
    mvhd_box = struct.pack(">I4s", 8 + len(mvhd), b"mvhd") + mvhd
    moov = struct.pack(">I4s", 8 + len(mvhd_box), b"moov") + mvhd_box
    ftyp = struct.pack(">I4s", 16, b"ftyp") + b"isom" + bytes(4)
    pad = size - len(ftyp) - len(moov) - 8
    with path.open("wb") as file:
        file.write(ftyp + moov + struct.pack(">I4s", 8 + pad, b"mdat"))
        file.truncate(size)
    return path


@pytest.fixture
def small_video(tmp_path: Path) -> Path:
    return write_mp4(tmp_path / "small.mp4", 1 * MiB)


@pytest.fixture
def big_video(tmp_path: Path) -> Path:
    return write_mp4(tmp_path / "big.mp4", 12 * MiB + 123)


def calls(account: Account, path: str) -> list[Any]:
    return list(account.emulator.calls(path))


def post_of(account: Account, publish_id: str) -> EmulatedPost:
    return account.content.posts[publish_id]


async def raw_post(account: Account, path: str, body: object) -> tuple[int, dict[str, Any]]:
    grant = await account.manager.grant("tiktok", account.open_id)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            account.emulator.url_for(path),
            json=body,
            headers={"Authorization": f"Bearer {grant.tokens.access_token}"},
        ) as response,
    ):
        return response.status, await response.json()


# -- creator_info ------------------------------------------------------------------------------


async def test_creator_info_reports_the_creators_options(make_account: MakeAccount) -> None:
    account = await make_account()
    info = await account.api.creator_info()
    assert info.nickname == USER.display_name
    assert info.username == USER.username
    assert info.privacy_level_options == PUBLIC_OPTIONS
    assert info.max_video_post_duration_sec == 600
    assert (info.comment_disabled, info.duet_disabled, info.stitch_disabled) == (
        False,
        False,
        False,
    )
    settings = account.content.creator(USER.user_id)
    settings.private = True
    settings.max_video_post_duration_sec = 60
    info = await account.api.creator_info()
    assert info.privacy_level_options == PRIVATE_OPTIONS
    assert info.duet_disabled
    assert info.stitch_disabled
    assert info.max_video_post_duration_sec == 60


async def test_creator_info_needs_video_publish_before_any_call(make_account: MakeAccount) -> None:
    account = await make_account(scopes=("user.info.basic", "video.upload"))
    with pytest.raises(ScopeDeniedError) as caught:
        await account.api.creator_info()
    assert caught.value.missing == {"video.publish"}
    assert calls(account, CREATOR_INFO_PATH) == []


# -- Direct Post from a file -----------------------------------------------------------------


async def test_direct_post_from_a_file_asks_creator_info_then_publishes(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    progress: list[tuple[int, int]] = []
    post = await account.api.upload_video(
        small_video,
        direct=DirectPost(privacy_level="PUBLIC_TO_EVERYONE", title="hello #keyloom"),
        on_progress=lambda sent, total: progress.append((sent, total)),
    )
    assert post.direct
    assert post.publish_id.startswith("v_pub_file~")
    assert post.uploaded_bytes == small_video.stat().st_size
    assert progress == [(MiB, MiB)]
    paths = [r.path for r in account.emulator.requests if r.path.startswith("/v2/post/")]
    assert paths == [CREATOR_INFO_PATH, VIDEO_INIT_PATH]
    emulated = post_of(account, post.publish_id)
    assert (emulated.total_chunk_count, emulated.chunk_size, emulated.puts) == (1, MiB, 1)
    assert emulated.title == "hello #keyloom"

    status = await account.api.status(post.publish_id)
    assert status.status == PublishStatus.PROCESSING_UPLOAD
    assert status.uploaded_bytes == MiB
    account.clock.advance(31)
    final = await account.api.wait(post.publish_id, interval=0.01)
    assert final.status == PublishStatus.PUBLISH_COMPLETE
    assert len(final.post_ids) == 1
    newest = await anext(account.api.videos(limit=1))
    assert newest.id == final.post_ids[0]
    assert newest.title == "hello #keyloom"


async def test_direct_post_forces_the_interactions_the_creator_disabled(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    account.content.creator(USER.user_id).comment_disabled = True
    post = await account.api.upload_video(
        small_video, direct=DirectPost(privacy_level="SELF_ONLY", disable_comment=False)
    )
    assert post_of(account, post.publish_id).privacy_level == "SELF_ONLY"


async def test_privacy_level_outside_the_creators_options_is_refused_before_upload(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    account.content.creator(USER.user_id).private = True
    with pytest.raises(CreatorOptionsError) as caught:
        await account.api.upload_video(
            small_video, direct=DirectPost(privacy_level="PUBLIC_TO_EVERYONE")
        )
    assert caught.value.field == "privacy_level"
    assert caught.value.allowed == PRIVATE_OPTIONS
    assert calls(account, VIDEO_INIT_PATH) == []


async def test_tiktok_refuses_a_privacy_level_mismatch_with_its_code(
    make_account: MakeAccount,
) -> None:
    account = await make_account()
    account.content.creator(USER.user_id).private = True
    status, body = await raw_post(
        account,
        VIDEO_INIT_PATH,
        {
            "post_info": {"privacy_level": "PUBLIC_TO_EVERYONE"},
            "source_info": {
                "source": "PULL_FROM_URL",
                "video_url": "https://media.example.com/a.mp4",
            },
        },
    )
    assert status == 403
    assert body["error"]["code"] == "privacy_level_option_mismatch"
    assert body["error"]["log_id"]
    error = error_for(
        body["error"]["code"],
        body["error"]["message"],
        log_id=body["error"]["log_id"],
        http_status=status,
        endpoint=VIDEO_INIT_PATH,
    )
    assert isinstance(error, PrivacyLevelOptionMismatchError)


async def test_a_video_longer_than_the_creator_may_post_is_refused(
    make_account: MakeAccount, tmp_path: Path
) -> None:
    account = await make_account()
    account.content.creator(USER.user_id).max_video_post_duration_sec = 60
    long_video = write_mp4(tmp_path / "long.mp4", MiB, seconds=95)
    assert mp4_duration(long_video) == pytest.approx(95)
    with pytest.raises(CreatorOptionsError) as caught:
        await account.api.upload_video(long_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    assert caught.value.field == "duration"
    with pytest.raises(CreatorOptionsError):
        await account.api.upload_video(long_video, duration=601)  # the API's 10 minutes
    assert calls(account, VIDEO_INIT_PATH) == calls(account, INBOX_INIT_PATH) == []


async def test_tiktok_checks_the_duration_the_file_declares(
    make_account: MakeAccount, tmp_path: Path
) -> None:
    account = await make_account()
    account.content.creator(USER.user_id).max_video_post_duration_sec = 60
    long_video = write_mp4(tmp_path / "long.mp4", MiB, seconds=95)
    post = await account.api.upload_video(  # the caller's duration is wrong; the file tells
        long_video, direct=DirectPost(privacy_level="SELF_ONLY"), duration=30
    )
    account.clock.advance(31)
    with pytest.raises(PostFailedError) as caught:
        await account.api.wait(post.publish_id, interval=0.01)
    assert caught.value.fail_reason == "duration_check_failed"


async def test_branded_content_cannot_be_private(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    with pytest.raises(CreatorOptionsError) as caught:
        await account.api.upload_video(
            small_video, direct=DirectPost(privacy_level="SELF_ONLY", brand_content_toggle=True)
        )
    assert caught.value.field == "brand_content_toggle"


async def test_direct_post_needs_video_publish_before_any_call(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account(scopes=("user.info.basic", "video.upload"))
    before = len(account.emulator.requests)
    with pytest.raises(ScopeDeniedError) as caught:
        await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    assert caught.value.missing == {"video.publish"}
    assert len(account.emulator.requests) == before


# -- upload to inbox, chunks ---------------------------------------------------------------


async def test_inbox_upload_in_chunks_follows_tiktoks_chunk_plan(
    make_account: MakeAccount, big_video: Path
) -> None:
    account = await make_account()
    progress: list[int] = []
    post = await account.api.upload_video(
        big_video, chunk_size=5 * MiB, on_progress=lambda sent, _: progress.append(sent)
    )
    size = big_video.stat().st_size
    assert not post.direct
    assert post.publish_id.startswith("v_inbox_file~")
    emulated = post_of(account, post.publish_id)
    assert (emulated.video_size, emulated.chunk_size, emulated.total_chunk_count) == (
        size,
        5 * MiB,
        2,
    )
    assert progress == [5 * MiB, size]  # the last chunk absorbs the trailing bytes
    assert emulated.puts == 2
    assert calls(account, CREATOR_INFO_PATH) == []  # inbox drafts need no creator_info

    seen = []
    async with anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(0.05)
            account.clock.advance(31)

        tg.start_soon(later)
        async for status in account.api.statuses(post.publish_id, interval=0.01, max_interval=0.02):
            seen.append(status.status)
    assert seen == [PublishStatus.PROCESSING_UPLOAD, PublishStatus.SEND_TO_USER_INBOX]
    account.content.user_posts(post.publish_id)
    assert (await account.api.status(post.publish_id)).status == PublishStatus.PUBLISH_COMPLETE


async def test_upload_needs_video_upload_before_any_call(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account(scopes=("user.info.basic", "video.list"))
    with pytest.raises(ScopeDeniedError) as caught:
        await account.api.upload_video(small_video)
    assert caught.value.missing == {"video.upload"}
    with pytest.raises(ScopeDeniedError):
        await account.api.status("v_inbox_file~v2.1")
    assert calls(account, INBOX_INIT_PATH) == calls(account, STATUS_PATH) == []


async def test_a_failed_chunk_is_sent_again_without_a_new_post(
    make_account: MakeAccount, big_video: Path
) -> None:
    account = await make_account()
    account.content.fail_puts("503")
    post = await account.api.upload_video(big_video, chunk_size=5 * MiB)
    assert post.uploaded_bytes == big_video.stat().st_size
    assert post_of(account, post.publish_id).puts == 3
    assert [r.status for r in calls(account, UPLOAD_PATH)] == [503, 206, 201]
    assert len(calls(account, INBOX_INIT_PATH)) == 1


async def test_a_chunk_whose_answer_was_lost_resumes_from_the_acknowledged_byte(
    make_account: MakeAccount, big_video: Path
) -> None:
    account = await make_account()
    account.content.fail_puts("503-after")  # kept, but the answer says 503
    post = await account.api.upload_video(big_video, chunk_size=5 * MiB)
    emulated = post_of(account, post.publish_id)
    assert emulated.received == big_video.stat().st_size
    assert [r.status for r in calls(account, UPLOAD_PATH)] == [503, 416, 201]
    assert len(calls(account, INBOX_INIT_PATH)) == 1


async def test_a_dropped_connection_during_a_chunk_is_retried(
    make_account: MakeAccount, big_video: Path
) -> None:
    account = await make_account()
    account.content.fail_puts("reset")
    post = await account.api.upload_video(big_video, chunk_size=5 * MiB)
    assert post_of(account, post.publish_id).received == big_video.stat().st_size
    assert len(calls(account, INBOX_INIT_PATH)) == 1


async def test_an_expired_upload_url_stops_the_upload_without_a_new_post(
    make_account: MakeAccount, big_video: Path
) -> None:
    account = await make_account()
    with pytest.raises(UploadURLExpiredError) as caught:
        await account.api.upload_video(
            big_video, chunk_size=5 * MiB, on_progress=lambda *_: account.clock.advance(3601)
        )
    assert caught.value.uploaded == 5 * MiB
    assert caught.value.http_status == 403
    assert len(calls(account, INBOX_INIT_PATH)) == 1


async def test_the_token_expiring_mid_upload_does_not_break_the_post(
    make_account: MakeAccount, big_video: Path
) -> None:
    account = await make_account(access_token_ttl=600)

    def expire(sent: int, total: int) -> None:
        if sent < total:
            account.clock.advance(700)  # the access token dies between chunks

    post = await account.api.upload_video(big_video, chunk_size=5 * MiB, on_progress=expire)
    assert post.uploaded_bytes == big_video.stat().st_size
    status = await account.api.status(post.publish_id)  # refused once, refreshed, repeated
    assert status.status == PublishStatus.PROCESSING_UPLOAD
    assert status.uploaded_bytes == big_video.stat().st_size
    refreshes = [
        r for r in calls(account, "/v2/oauth/token/") if r.form.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1
    assert [r.status for r in calls(account, STATUS_PATH)] == [401, 200]


async def test_chunk_transfer_rules_at_the_upload_url(make_account: MakeAccount) -> None:
    account = await make_account()
    size = 12 * MiB
    status, body = await raw_post(
        account,
        INBOX_INIT_PATH,
        {
            "source_info": {
                "source": "FILE_UPLOAD",
                "video_size": size,
                "chunk_size": 5 * MiB,
                "total_chunk_count": 2,
            }
        },
    )
    assert status == 200
    url = body["data"]["upload_url"]

    async def put(
        first: int,
        last: int,
        *,
        length: int | None = None,
        total: int = size,
        content_type: str = "video/mp4",
        target: str = url,
    ) -> tuple[int, str | None]:
        data = bytes(length if length is not None else last - first + 1)
        headers = {"Content-Type": content_type, "Content-Range": f"bytes {first}-{last}/{total}"}
        async with (
            aiohttp.ClientSession() as session,
            session.put(target, data=data, headers=headers) as response,
        ):
            return response.status, response.headers.get("Content-Range")

    assert (await put(5 * MiB, size - 1))[0] == 416  # the second chunk first: out of order
    assert (await put(0, 4 * MiB - 1))[0] == 416  # a non-final chunk of the wrong size
    assert (await put(0, 5 * MiB - 1, length=100))[0] == 400  # Content-Length != range
    assert (await put(0, 5 * MiB - 1, total=size + 1))[0] == 400  # wrong total
    assert (await put(0, 5 * MiB - 1, content_type="text/plain"))[0] == 400
    assert (await put(0, 5 * MiB - 1, target=url.replace("upload_token=", "upload_token=x")))[
        0
    ] == 404
    assert await put(0, 5 * MiB - 1) == (206, f"bytes 0-{5 * MiB - 1}/{size}")
    assert (await put(0, 5 * MiB - 1))[0] == 416  # the same chunk again
    assert await put(5 * MiB, size - 1) == (201, f"bytes 0-{size - 1}/{size}")


@pytest.mark.parametrize(
    "source_info",
    [
        {
            "source": "FILE_UPLOAD",
            "video_size": 12 * MiB,
            "chunk_size": 5 * MiB,
            "total_chunk_count": 3,
        },
        {
            "source": "FILE_UPLOAD",
            "video_size": 4 * MiB,
            "chunk_size": 2 * MiB,
            "total_chunk_count": 2,
        },
        {
            "source": "FILE_UPLOAD",
            "video_size": 200 * MiB,
            "chunk_size": 100 * MiB,
            "total_chunk_count": 2,
        },
        {
            "source": "FILE_UPLOAD",
            "video_size": 12 * MiB,
            "chunk_size": 4 * MiB,
            "total_chunk_count": 3,
        },
        {"source": "FILE_UPLOAD"},
        {"source": "CAMERA"},
    ],
)
async def test_init_refuses_a_chunk_plan_against_the_rules(
    make_account: MakeAccount, source_info: dict[str, Any]
) -> None:
    account = await make_account()
    status, body = await raw_post(account, INBOX_INIT_PATH, {"source_info": source_info})
    assert status == 400
    assert body["error"]["code"] == "invalid_param"


# -- caps and audit --------------------------------------------------------------------------


async def test_the_daily_post_cap_blocks_posting_at_creator_info(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    account.content.posts_per_day = 2
    for _ in range(2):
        await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    with pytest.raises(TooManyPostsError) as caught:
        await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    assert caught.value.http_status == 200  # TikTok sends this one with HTTP 200
    assert caught.value.log_id
    assert len(calls(account, VIDEO_INIT_PATH)) == 2
    account.clock.advance(86_400 + 1)
    await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))


async def test_the_pending_draft_cap_blocks_inbox_uploads(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    account.content.pending_share_cap = 2
    first = await account.api.upload_video(small_video)
    await account.api.upload_video(small_video)
    with pytest.raises(TooManyPendingSharesError) as caught:
        await account.api.upload_video(small_video)
    assert caught.value.error == "spam_risk_too_many_pending_share"
    assert caught.value.status == 403
    account.content.user_posts(first.publish_id)  # one draft is no longer pending
    await account.api.upload_video(small_video)


async def test_an_unaudited_client_posts_only_privately_to_private_accounts(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    account.content.unaudited_clients.add(account.emulator.default_app.client_key)
    with pytest.raises(UnauditedClientError):
        await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    account.content.creator(USER.user_id).private = True
    post = await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    account.clock.advance(31)
    final = await account.api.wait(post.publish_id, interval=0.01)
    assert final.post_ids == ()  # private posts never become public


async def test_the_active_creator_cap_of_the_client(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    account.content.active_user_cap = 0
    with pytest.raises(ActiveUserCapError):
        await account.api.creator_info()


async def test_a_banned_creator_cannot_post(make_account: MakeAccount, small_video: Path) -> None:
    account = await make_account()
    account.content.creator(USER.user_id).banned = True
    with pytest.raises(UserBannedFromPostingError):
        await account.api.upload_video(small_video)
    with pytest.raises(UserBannedFromPostingError):
        await account.api.creator_info()


async def test_init_endpoints_are_limited_to_six_a_minute(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account(rate_limits=RateLimits({}))
    account.content.pending_share_cap = 100
    for _ in range(6):
        await account.api.upload_video(small_video)
    with pytest.raises(TikTokRateLimitedError):
        await account.api.upload_video(small_video)
    assert [r.status for r in calls(account, INBOX_INIT_PATH)][-1] == 429


# -- status ----------------------------------------------------------------------------------


async def test_wait_gives_up_at_its_deadline(make_account: MakeAccount, small_video: Path) -> None:
    account = await make_account()
    post = await account.api.upload_video(small_video)
    with pytest.raises(PostTimeoutError) as caught:
        await account.api.wait(post.publish_id, max_wait=0.1, interval=0.02, max_interval=0.04)
    assert caught.value.last_status == PublishStatus.PROCESSING_UPLOAD
    assert caught.value.publish_id == post.publish_id


async def test_wait_raises_the_fail_reason(make_account: MakeAccount, small_video: Path) -> None:
    account = await make_account()
    post = await account.api.upload_video(small_video, direct=DirectPost(privacy_level="SELF_ONLY"))
    account.content.fail_post(post.publish_id, "frame_rate_check_failed")
    account.clock.advance(31)
    with pytest.raises(PostFailedError) as caught:
        await account.api.wait(post.publish_id, interval=0.01)
    assert caught.value.fail_reason == "frame_rate_check_failed"
    assert not caught.value.retryable


async def test_status_of_unknown_and_foreign_posts(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    with pytest.raises(InvalidPublishIdError) as caught:
        await account.api.status("v_inbox_file~v2.000")
    assert caught.value.log_id
    post = await account.api.upload_video(small_video)
    account.content.posts[post.publish_id].user_id = "second-viewer"
    with pytest.raises(PublishIdNotAuthorizedError):
        await account.api.status(post.publish_id)


# -- pull from URL, cancel, photos -----------------------------------------------------------


async def test_pull_from_a_verified_url_downloads_and_can_be_cancelled(
    make_account: MakeAccount,
) -> None:
    account = await make_account()
    post = await account.api.video_from_url("https://media.example.com/clips/a.mp4")
    assert post.publish_id.startswith("v_inbox_url~")
    assert post.upload_url is None
    account.clock.advance(5)
    status = await account.api.status(post.publish_id)
    assert status.status == PublishStatus.PROCESSING_DOWNLOAD
    assert status.downloaded_bytes is not None
    assert status.downloaded_bytes > 0
    await account.api.cancel(post.publish_id)
    with pytest.raises(PostFailedError) as caught:
        await account.api.wait(post.publish_id, interval=0.01)
    assert caught.value.fail_reason == "publish_cancelled"
    assert not caught.value.retryable


async def test_a_download_near_its_end_cannot_be_cancelled(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    post = await account.api.video_from_url(
        "https://cdn.media.example.com/b.mp4".replace("cdn.media", "media"),
        direct=DirectPost(privacy_level="PUBLIC_TO_EVERYONE"),
    )
    account.clock.advance(19)
    with pytest.raises(PublishNotCancellableError):
        await account.api.cancel(post.publish_id)
    uploaded = await account.api.upload_video(small_video)
    with pytest.raises(PublishNotCancellableError):
        await account.api.cancel(uploaded.publish_id)


async def test_pull_from_an_unverified_url_is_refused(make_account: MakeAccount) -> None:
    account = await make_account()
    with pytest.raises(UrlOwnershipUnverifiedError) as caught:
        await account.api.video_from_url("https://elsewhere.example.org/a.mp4")
    assert caught.value.http_status == 403
    account.content.verified_url_prefixes.append("example.org")
    await account.api.video_from_url("https://cdn.example.org/a.mp4")
    with pytest.raises(ValueError, match="https"):
        await account.api.video_from_url("http://media.example.com/a.mp4")


async def test_photo_posts_to_the_inbox_and_directly(make_account: MakeAccount) -> None:
    account = await make_account()
    images = [f"https://media.example.com/photos/{i}.webp" for i in range(3)]
    draft = await account.api.post_photos(images, title="trip", description="three #photos")
    assert draft.publish_id.startswith("p_inbox_url~")
    direct = await account.api.post_photos(
        images,
        direct=DirectPhotoPost(privacy_level="PUBLIC_TO_EVERYONE", title="trip"),
        cover_index=2,
    )
    assert direct.publish_id.startswith("p_pub_url~")
    assert [r.path for r in account.emulator.requests if r.path.startswith("/v2/post/")] == [
        CONTENT_INIT_PATH,
        CREATOR_INFO_PATH,
        CONTENT_INIT_PATH,
    ]
    account.clock.advance(60)
    assert (
        await account.api.wait(draft.publish_id, interval=0.01)
    ).status == PublishStatus.SEND_TO_USER_INBOX
    with pytest.raises(ValueError, match="1 to 35"):
        await account.api.post_photos([])
    with pytest.raises(ValueError, match="cover_index"):
        await account.api.post_photos(images, cover_index=3)
    with pytest.raises(CreatorOptionsError):
        await account.api.post_photos(images, title="x" * 91)


async def test_photo_post_failures(make_account: MakeAccount) -> None:
    account = await make_account()
    with pytest.raises(UrlOwnershipUnverifiedError):
        await account.api.post_photos(["https://unverified.example.net/1.jpg"])
    account.content.creator(USER.user_id).app_too_old = True
    with pytest.raises(AppVersionCheckFailedError):
        await account.api.post_photos(["https://media.example.com/1.jpg"])
    account.content.creator(USER.user_id).private = True
    with pytest.raises(CreatorOptionsError):
        await account.api.post_photos(
            ["https://media.example.com/1.jpg"],
            direct=DirectPhotoPost(privacy_level="PUBLIC_TO_EVERYONE"),
        )


# -- retries -----------------------------------------------------------------------------------


async def test_a_server_error_is_retried_only_where_safe(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    post = await account.api.upload_video(small_video)
    account.content.fail_calls(STATUS_PATH, 500)
    status = await account.api.status(post.publish_id)  # safe to repeat: repeated
    assert status.status == PublishStatus.PROCESSING_UPLOAD
    assert [r.status for r in calls(account, STATUS_PATH)] == [500, 200]

    account.content.fail_calls(INBOX_INIT_PATH, 500)
    with pytest.raises(InternalServerError) as caught:  # TikTok may have acted: not repeated
        await account.api.upload_video(small_video)
    assert caught.value.log_id
    assert [r.status for r in calls(account, INBOX_INIT_PATH)] == [200, 500]

    account.content.fail_calls(INBOX_INIT_PATH, 503)  # 503: TikTok did nothing, retried
    await account.api.upload_video(small_video)
    assert [r.status for r in calls(account, INBOX_INIT_PATH)] == [200, 500, 503, 200]


# -- webhooks ----------------------------------------------------------------------------------


async def test_the_emulator_sends_signed_webhooks_the_client_verifies(
    make_account: MakeAccount, small_video: Path
) -> None:
    account = await make_account()
    secret = account.emulator.default_app.client_secret
    received: list[WebhookEvent] = []

    async def hook(request: web.Request) -> web.Response:
        try:
            event = verify_webhook(
                await request.read(),
                request.headers.get("TikTok-Signature"),
                client_secret=secret,
                clock=account.clock,
            )
        except WebhookSignatureError:
            return web.Response(status=401)
        received.append(event)
        return web.Response()

    app = web.Application()
    app.router.add_post("/tiktok/webhook", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        account.content.webhook_url = str(server.make_url("/tiktok/webhook"))
        post = await account.api.upload_video(
            small_video, direct=DirectPost(privacy_level="PUBLIC_TO_EVERYONE")
        )
        draft = await account.api.upload_video(small_video)
        assert await account.content.deliver_webhooks() == []  # still processing
        account.clock.advance(31)
        assert sorted(await account.content.deliver_webhooks()) == [
            "post.publish.complete",
            "post.publish.inbox_delivered",
            "post.publish.publicly_available",
        ]
        assert await account.content.deliver_webhooks() == []  # each event once
        account.content.webhook_url = "https://example.com/hook"
        with pytest.raises(ValueError, match="loopback"):
            await account.content.deliver_webhooks()
    final = await account.api.status(post.publish_id)
    by_event = {e.event: e for e in received}
    assert by_event["post.publish.complete"].publish_id == post.publish_id
    assert by_event["post.publish.publicly_available"].post_id == final.post_ids[0]
    assert by_event["post.publish.inbox_delivered"].publish_id == draft.publish_id
    assert by_event["post.publish.inbox_delivered"].content["publish_type"] == "INBOX_SHARE"
    assert all(e.user_openid == account.open_id for e in received)
