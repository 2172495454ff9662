"""The pure parts of the TikTok API client: chunk plans, webhooks, error codes, models."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from keyloom_tiktok.api import (
    ERROR_CLASSES,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    AccessTokenInvalidError,
    ChunkPlan,
    InternalServerError,
    PostingBlockedError,
    PostStatus,
    TikTokAPIError,
    TikTokRateLimitedError,
    Video,
    WebhookSignatureError,
    content_type_for,
    error_for,
    sign_webhook,
    verify_webhook,
)

from keyloom_core import ProviderError, RateLimitedError

MB = 1024 * 1024

# -- chunk plans -------------------------------------------------------------------------------


def test_tiktoks_worked_example() -> None:
    plan = ChunkPlan.for_size(50_000_123, 10_000_000)
    assert plan == ChunkPlan(50_000_123, 10_000_000, 5)
    assert list(plan.ranges()) == [
        (0, 9_999_999),
        (10_000_000, 19_999_999),
        (20_000_000, 29_999_999),
        (30_000_000, 39_999_999),
        (40_000_000, 50_000_122),
    ]
    assert plan.as_source_info() == {
        "source": "FILE_UPLOAD",
        "video_size": 50_000_123,
        "chunk_size": 10_000_000,
        "total_chunk_count": 5,
    }


@pytest.mark.parametrize(
    ("size", "chunk", "expected"),
    [
        (1, 10 * MB, (1, 1)),
        (5 * MB - 1, 10 * MB, (5 * MB - 1, 1)),  # under 5 MB: one chunk of its size
        (5 * MB - 1, MIN_CHUNK_SIZE, (5 * MB - 1, 1)),
        (12 * MB, 16 * MB, (12 * MB, 1)),  # fits one chunk
        (12 * MB, 5 * MB, (5 * MB, 2)),  # the last chunk absorbs 2 MB
        (12 * MB, 1 * MB, (MIN_CHUNK_SIZE, 2)),  # clamped up to 5 MiB
        (300 * MB, 100 * MB, (MAX_CHUNK_SIZE, 4)),  # clamped down to 64,000,000
        (4 * 1024 * MB, 5 * MB, (MIN_CHUNK_SIZE, 819)),  # 4 GiB: within 1000 chunks
    ],
)
def test_chunk_plans_follow_the_rules(size: int, chunk: int, expected: tuple[int, int]) -> None:
    plan = ChunkPlan.for_size(size, chunk)
    assert (plan.chunk_size, plan.total_chunk_count) == expected
    ranges = list(plan.ranges())
    assert len(ranges) == plan.total_chunk_count <= 1000
    assert ranges[0][0] == 0
    assert ranges[-1][1] == size - 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
    if size >= MIN_CHUNK_SIZE and plan.total_chunk_count > 1:
        assert MIN_CHUNK_SIZE <= plan.chunk_size <= MAX_CHUNK_SIZE
        assert all(last - first + 1 == plan.chunk_size for first, last in ranges[:-1])
        assert ranges[-1][1] - ranges[-1][0] + 1 < 2 * plan.chunk_size


@pytest.mark.parametrize("size", [0, -1, 4 * 1024 * MB + 1])
def test_chunk_plan_refuses_impossible_sizes(size: int) -> None:
    with pytest.raises(ValueError, match=r"empty|4 GB"):
        ChunkPlan.for_size(size)


def test_content_types_by_suffix(tmp_path: Path) -> None:
    assert content_type_for(tmp_path / "a.MP4") == "video/mp4"
    assert content_type_for(tmp_path / "a.mov") == "video/quicktime"
    assert content_type_for(tmp_path / "a.webm") == "video/webm"
    with pytest.raises(ValueError, match=r"\.avi"):
        content_type_for(tmp_path / "a.avi")


# -- errors --------------------------------------------------------------------------------------

DOCUMENTED = [
    "access_token_invalid",
    "internal_error",
    "invalid_file_upload",
    "invalid_params",
    "rate_limit_exceeded",
    "scope_not_authorized",
    "scope_permission_missed",
    "invalid_param",
    "app_version_check_failed",
    "spam_risk_too_many_posts",
    "spam_risk_user_banned_from_posting",
    "spam_risk_too_many_pending_share",
    "reached_active_user_cap",
    "unaudited_client_can_only_post_to_private_accounts",
    "url_ownership_unverified",
    "privacy_level_option_mismatch",
    "invalid_publish_id",
    "token_not_authorized_for_specified_publish_id",
    "publish_not_cancellable",
]


@pytest.mark.parametrize("code", DOCUMENTED)
def test_every_documented_code_has_its_typed_error(code: str) -> None:
    cls = ERROR_CLASSES[code]
    error = error_for(code, "msg", log_id="2022LOGID", http_status=403, endpoint="/v2/x/")
    assert type(error) is cls
    assert cls is not TikTokAPIError
    assert isinstance(error, ProviderError)
    assert error.error == code
    assert error.log_id == "2022LOGID"
    assert error.http_status == 403
    assert "2022LOGID" in str(error)


def test_error_families() -> None:
    assert issubclass(TikTokRateLimitedError, RateLimitedError)
    assert issubclass(ERROR_CLASSES["spam_risk_too_many_posts"], PostingBlockedError)
    assert issubclass(AccessTokenInvalidError, TikTokAPIError)
    unknown = error_for("brand_new_code", "", log_id=None, http_status=400, endpoint="/v2/x/")
    assert type(unknown) is TikTokAPIError
    assert unknown.error == "brand_new_code"
    server = error_for("", "", log_id=None, http_status=500, endpoint="/v2/x/")
    assert type(server) is InternalServerError


def test_post_failures_say_whether_to_try_again() -> None:
    from keyloom_tiktok.api import PostFailedError

    assert PostFailedError("p", "internal").retryable
    assert PostFailedError("p", "video_pull_failed").retryable
    assert not PostFailedError("p", "spam_risk_text").retryable
    assert "spam_risk_text" in str(PostFailedError("p", "spam_risk_text"))


# -- models --------------------------------------------------------------------------------------


def test_video_and_status_parsing_is_lenient() -> None:
    assert Video.from_json({"title": "no id"}) is None
    video = Video.from_json({"id": 7080213458555737986, "like_count": "12", "duration": True})
    assert video is not None
    assert video.id == "7080213458555737986"
    assert video.like_count == 12
    assert video.duration is None
    assert video.cover_expires_at is None
    status = PostStatus.from_json(
        "p", {"status": "PUBLISH_COMPLETE", "publicaly_available_post_id": [1, "2", True]}
    )
    assert status.post_ids == ("1", "2")
    assert status.final


# -- webhooks ------------------------------------------------------------------------------------

SECRET = "webhook-client-secret"
EVENT = {
    "client_key": "awkeyloomemulator",
    "event": "post.publish.publicly_available",
    "create_time": 1_700_000_000,
    "user_openid": "act.example",
    "content": json.dumps({"publish_id": "v_pub_file~v2.1", "post_id": 7080213458555737986}),
}


def test_webhook_signature_round_trip() -> None:
    body = json.dumps(EVENT).encode()
    header = sign_webhook(body, SECRET, timestamp=1_700_000_000)
    event = verify_webhook(body, header, client_secret=SECRET, clock=lambda: 1_700_000_100)
    assert event.event == "post.publish.publicly_available"
    assert event.publish_id == "v_pub_file~v2.1"
    assert event.post_id == "7080213458555737986"
    assert event.create_time == 1_700_000_000


def _other_secret(body: bytes) -> str:
    return sign_webhook(body, "other-secret", timestamp=1_700_000_000)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b, _h: (b, None), "missing"),
        (lambda b, _h: (b, "garbage"), "malformed"),
        (lambda b, h: (b + b" ", h), "mismatch"),
        (lambda b, h: (b, h.replace("s=", "s=0")), "mismatch"),
        (lambda b, h: (b, h.replace("s=", "s=\u00e9")), "mismatch"),  # not ASCII: no TypeError
        (lambda b, _h: (b, _other_secret(b)), "mismatch"),
        (lambda b, _h: (b, sign_webhook(b, SECRET, timestamp=1_600_000_000)), "stale"),
        (lambda _b, _h: (b"[1]", sign_webhook(b"[1]", SECRET, timestamp=1_700_000_000)), "body"),
    ],
)
def test_webhook_signature_failures(
    mutate: Callable[[bytes, str], tuple[bytes, str | None]], reason: str
) -> None:
    body = json.dumps(EVENT).encode()
    header = sign_webhook(body, SECRET, timestamp=1_700_000_000)
    sent_body, sent_header = mutate(body, header)
    with pytest.raises(WebhookSignatureError) as caught:
        verify_webhook(sent_body, sent_header, client_secret=SECRET, clock=lambda: 1_700_000_000)
    assert caught.value.reason == reason
    assert caught.value.status == 401
    assert SECRET not in str(caught.value)


@pytest.mark.anyio
async def test_a_webhook_endpoint_acknowledges_only_signed_events() -> None:
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        try:
            event = verify_webhook(
                await request.read(), request.headers.get("TikTok-Signature"), client_secret=SECRET
            )
        except WebhookSignatureError as exc:
            return web.json_response({"error": exc.code}, status=exc.status)
        received.append(event.event)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/tiktok/webhook", hook)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = json.dumps(EVENT).encode()
        signed = {"TikTok-Signature": sign_webhook(body, SECRET)}
        response = await client.post("/tiktok/webhook", data=body, headers=signed)
        assert response.status == 200
        forged = {"TikTok-Signature": sign_webhook(body, "guess")}
        response = await client.post("/tiktok/webhook", data=body, headers=forged)
        assert response.status == 401
    assert received == ["post.publish.publicly_available"]


# -- pacing --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pacing_waits_for_room_within_max_wait_and_keys_per_account() -> None:
    from keyloom_tiktok.api import RateLimits, TikTokRateLimitedError

    limits = RateLimits({"status": (1, 0.05, True), "user_info": (1, 60.0, False)}, max_wait=1.0)
    await limits.acquire("status", "alice")
    await limits.acquire("status", "alice")  # waited for the 50 ms window to pass
    await limits.acquire("status", "bob")  # per account: bob has his own window
    await limits.acquire("cancel", "alice")  # no documented limit: not paced
    await limits.acquire("user_info", "alice")
    with pytest.raises(TikTokRateLimitedError) as caught:
        await limits.acquire("user_info", "bob")  # per app: bob shares alice's window
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 1.0
    assert RateLimits.shared() is RateLimits.shared()
