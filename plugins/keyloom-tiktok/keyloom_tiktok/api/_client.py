"""The TikTok API client: Display API and Content Posting API on Keyloom's tokens."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import attrs

from keyloom_core import HttpClient, HttpResponse, RateLimitedError, ScopeDeniedError

from ._errors import (
    AccessTokenInvalidError,
    CreatorOptionsError,
    InternalServerError,
    PostFailedError,
    PostTimeoutError,
    TikTokAPIError,
    TikTokRateLimitedError,
    error_for,
)
from ._limits import RateLimits
from ._models import (
    USER_FIELDS_BY_SCOPE,
    VIDEO_FIELDS,
    CreatorInfo,
    PostStatus,
    PublishedPost,
    PublishStatus,
    UserInfo,
    Video,
)
from ._upload import (
    DEFAULT_CHUNK_SIZE,
    ChunkPlan,
    Progress,
    content_type_for,
    mp4_duration,
    upload_chunks,
)

if TYPE_CHECKING:
    from keyloom_core import Keyloom
    from keyloom_core.tokens import StoredGrant, TokenManager

__all__ = [
    "API_ORIGIN",
    "DirectPhotoPost",
    "DirectPost",
    "TikTokAPI",
    "VideoPage",
]

log = logging.getLogger("keyloom.tiktok.api")

#: Where TikTok serves its v2 APIs.
API_ORIGIN: Final = "https://open.tiktokapis.com"
USER_INFO_PATH: Final = "/v2/user/info/"
VIDEO_LIST_PATH: Final = "/v2/video/list/"
VIDEO_QUERY_PATH: Final = "/v2/video/query/"
CREATOR_INFO_PATH: Final = "/v2/post/publish/creator_info/query/"
VIDEO_INIT_PATH: Final = "/v2/post/publish/video/init/"
INBOX_INIT_PATH: Final = "/v2/post/publish/inbox/video/init/"
CONTENT_INIT_PATH: Final = "/v2/post/publish/content/init/"
STATUS_PATH: Final = "/v2/post/publish/status/fetch/"
CANCEL_PATH: Final = "/v2/post/publish/cancel/"

BASIC: Final = "user.info.basic"
LIST: Final = "video.list"
UPLOAD: Final = "video.upload"
PUBLISH: Final = "video.publish"

MAX_PAGE: Final = 20
MAX_QUERY_IDS: Final = 20
MAX_PHOTOS: Final = 35
MAX_API_DURATION: Final = 600.0
_POSTING: Final = frozenset({UPLOAD, PUBLISH})
_JSON: Final = {"Content-Type": "application/json; charset=UTF-8"}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@attrs.frozen(kw_only=True)
class DirectPost:
    """The settings of a Direct Post (``video.publish``), chosen by the user.

    TikTok's rules: the user picks *privacy_level* from the creator's options (there is no
    default); interactions the creator disabled stay disabled; branded content cannot be
    private (``SELF_ONLY``).

    Attributes:
        privacy_level: One of ``CreatorInfo.privacy_level_options``.
        title: The caption (at most 2200 UTF-16 units; ``#tags`` and ``@mentions`` work).
        disable_comment: Turn comments off.
        disable_duet: Turn duets off.
        disable_stitch: Turn stitches off.
        video_cover_timestamp_ms: The frame used as cover (default: the first).
        brand_content_toggle: A paid partnership.
        brand_organic_toggle: Promotes the creator's own business.
        is_aigc: Label the video as AI-generated.
    """

    privacy_level: str
    title: str = ""
    disable_comment: bool = False
    disable_duet: bool = False
    disable_stitch: bool = False
    video_cover_timestamp_ms: int | None = None
    brand_content_toggle: bool = False
    brand_organic_toggle: bool = False
    is_aigc: bool = False


@attrs.frozen(kw_only=True)
class DirectPhotoPost:
    """The settings of a Direct Post of photos (``video.publish``).

    Attributes:
        privacy_level: One of ``CreatorInfo.privacy_level_options``.
        title: At most 90 UTF-16 units.
        description: At most 4000 UTF-16 units.
        disable_comment: Turn comments off.
        auto_add_music: Let TikTok add music.
        brand_content_toggle: A paid partnership.
        brand_organic_toggle: Promotes the creator's own business.
        is_aigc: Label the post as AI-generated.
    """

    privacy_level: str
    title: str = ""
    description: str = ""
    disable_comment: bool = False
    auto_add_music: bool = False
    brand_content_toggle: bool = False
    brand_organic_toggle: bool = False
    is_aigc: bool = False


@attrs.frozen
class VideoPage:
    """One page of ``video.list``.

    Attributes:
        videos: The page's videos (possibly fewer than asked for, even with more to come).
        cursor: Pass it to get the next page.
        has_more: Whether TikTok has more.
    """

    videos: tuple[Video, ...]
    cursor: int | None
    has_more: bool


class TikTokAPI:
    """TikTok's Display API and Content Posting API for one signed-in account.

    Every call takes a fresh access token from the :class:`~keyloom_core.tokens.TokenManager`
    (refreshed first when due), checks the scope it needs before any network call (a
    :class:`~keyloom_core.ScopeDeniedError` naming it), and, should TikTok still answer
    ``access_token_invalid``, refreshes once and tries again. Errors are typed (see
    ``keyloom_tiktok.api``), each with TikTok's ``log_id``. Calls stay within TikTok's
    per-endpoint limits (:class:`RateLimits`); only calls that are safe to repeat are
    retried after a failure TikTok may have acted on.

    The client is cheap: build one per request in a web handler::

        api = TikTokAPI.for_account(keyloom, manager, session.provider_account_id)
        me = await api.user_info()

    :param http: The shared HTTP client (``keyloom.http``).
    :param tokens: The token manager holding the account's tokens.
    :param account_id: The account's ``open_id``.
    :param api_origin: TikTok's API origin (an emulator's URL in tests).
    :param provider_id: The provider id the tokens are stored under.
    :param rate_limits: Pacing shared between clients; :meth:`RateLimits.shared` by default.
    :param clock: A monotonic clock for status polling deadlines.
    """

    def __init__(
        self,
        http: HttpClient,
        tokens: TokenManager,
        account_id: str,
        *,
        api_origin: str = API_ORIGIN,
        provider_id: str = "tiktok",
        rate_limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.tokens = tokens
        self.account_id = account_id
        self.api_origin = api_origin.rstrip("/")
        self.provider_id = provider_id
        self.rate_limits = rate_limits if rate_limits is not None else RateLimits.shared()
        self._clock = clock

    def __repr__(self) -> str:
        return f"TikTokAPI(account_id={self.account_id!r}, api_origin={self.api_origin!r})"

    @classmethod
    def for_account(
        cls,
        keyloom: Keyloom,
        tokens: TokenManager,
        account_id: str,
        *,
        provider_id: str = "tiktok",
        rate_limits: RateLimits | None = None,
    ) -> TikTokAPI:
        """A client on *keyloom*'s HTTP session, at the origin its TikTok provider uses.

        With ``tiktok(endpoint_origin=...)`` (the emulator) the API calls go there too.
        """
        spec = keyloom.provider(provider_id).spec
        parts = urlsplit(spec.profile_url or spec.token_url)
        return cls(
            keyloom.http,
            tokens,
            account_id,
            api_origin=f"{parts.scheme}://{parts.netloc}",
            provider_id=provider_id,
            rate_limits=rate_limits,
        )

    # -- Display API -------------------------------------------------------------------

    async def user_info(self, fields: Iterable[str] | None = None) -> UserInfo:
        """The user, with every field the granted scopes allow (stats with ``user.info.stats``).

        :param fields: Ask for these fields only; each one's scope must have been granted.
        :raises ScopeDeniedError: a field's scope was not granted (before any call).
        """
        grant = await self._grant({BASIC})
        if fields is None:
            wanted = [
                name
                for scope, names in USER_FIELDS_BY_SCOPE.items()
                if scope in grant.granted_scopes
                for name in names
            ]
        else:
            wanted = list(dict.fromkeys(fields))
            scope_of = {n: s for s, names in USER_FIELDS_BY_SCOPE.items() for n in names}
            unknown = [name for name in wanted if name not in scope_of]
            if unknown:
                msg = f"unknown user fields: {', '.join(unknown)}"
                raise ValueError(msg)
            needed = {scope_of[name] for name in wanted}
            missing = needed - grant.granted_scopes
            if missing:
                raise ScopeDeniedError(missing, provider_id=self.provider_id)
        data = await self._call(
            "user_info",
            "GET",
            USER_INFO_PATH,
            needs={BASIC},
            params={"fields": ",".join(wanted)},
            idempotent=True,
            grant=grant,  # just read: the first attempt need not read it again
        )
        user = data.get("user")
        return UserInfo.from_json(user if isinstance(user, dict) else {})

    async def video_pages(
        self,
        *,
        page_size: int = MAX_PAGE,
        cursor: int | None = None,
        fields: Sequence[str] = VIDEO_FIELDS,
    ) -> AsyncGenerator[VideoPage, None]:
        """The user's public videos, newest first, one page per ``video.list`` call.

        Stops when TikTok says ``has_more`` is false (or its cursor stops moving). A page
        may be short, even empty, while more follow (TikTok filters some videos out).

        :param page_size: 1 to 20 videos per call.
        :param cursor: Start before this time (ms), e.g. a previous page's ``cursor``.
        :raises ScopeDeniedError: ``video.list`` was not granted (before any call).
        """
        if not 1 <= page_size <= MAX_PAGE:
            msg = f"page_size must be 1 to {MAX_PAGE}"
            raise ValueError(msg)
        await self._grant({LIST})
        while True:
            body: dict[str, object] = {"max_count": page_size}
            if cursor is not None:
                body["cursor"] = cursor
            data = await self._call(
                "video_list",
                "POST",
                VIDEO_LIST_PATH,
                needs={LIST},
                params={"fields": ",".join(fields)},
                body=body,
                idempotent=True,
            )
            page = _page(data)
            yield page
            if not page.has_more or page.cursor is None or page.cursor == cursor:
                return
            cursor = page.cursor

    async def videos(
        self,
        *,
        limit: int | None = None,
        page_size: int = MAX_PAGE,
        fields: Sequence[str] = VIDEO_FIELDS,
    ) -> AsyncGenerator[Video, None]:
        """The user's public videos one by one, newest first (*limit* at most)."""
        if limit is not None and limit <= 0:
            return
        count = 0
        pages = self.video_pages(page_size=page_size, fields=fields)
        async with contextlib.aclosing(pages):
            async for page in pages:
                for video in page.videos:
                    yield video
                    count += 1
                    if limit is not None and count >= limit:
                        return

    async def query_videos(
        self, video_ids: Iterable[str], *, fields: Sequence[str] = VIDEO_FIELDS
    ) -> list[Video]:
        """The user's videos with these ids, any number of them (20 per call).

        Use it to refresh ``cover_image_url``, which expires after six hours. Ids that are
        not the user's public videos are left out. Results follow the order of *video_ids*.
        """
        ids = list(dict.fromkeys(str(i) for i in video_ids))
        await self._grant({LIST})
        found: dict[str, Video] = {}
        for start in range(0, len(ids), MAX_QUERY_IDS):
            batch = ids[start : start + MAX_QUERY_IDS]
            data = await self._call(
                "video_query",
                "POST",
                VIDEO_QUERY_PATH,
                needs={LIST},
                params={"fields": ",".join(fields)},
                body={"filters": {"video_ids": batch}},
                idempotent=True,
            )
            for video in _page(data).videos:
                found[video.id] = video
        return [found[i] for i in ids if i in found]

    # -- Content Posting API: creator and posts ----------------------------------------

    async def creator_info(self) -> CreatorInfo:
        """What the creator may post now; call it before showing a posting form.

        :raises PostingBlockedError: the creator cannot post now (TikTok says so with
            HTTP 200; the subclass says why).
        """
        data = await self._call(
            "creator_info", "POST", CREATOR_INFO_PATH, needs={PUBLISH}, idempotent=True
        )
        return CreatorInfo.from_json(data)

    async def upload_video(
        self,
        file: str | Path,
        *,
        direct: DirectPost | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        content_type: str | None = None,
        duration: float | None = None,
        on_progress: Progress | None = None,
    ) -> PublishedPost:
        """Post a video file: to the creator's inbox as a draft, or directly with *direct*.

        The file is cut by TikTok's chunk rules and streamed from disk (memory bounded by
        one 1 MiB piece); a chunk that fails is sent again from the last acknowledged byte.
        For a Direct Post, ``creator_info`` is asked first and its options enforced.

        :param direct: Post at once with these settings (``video.publish``); without it the
            video lands in the inbox (``video.upload``).
        :param chunk_size: Preferred chunk size (clamped to TikTok's rules).
        :param content_type: ``video/mp4``, ``video/quicktime`` or ``video/webm``; by default
            from the file's suffix.
        :param duration: The video's length in seconds; by default read from an MP4/MOV's
            header when it has one.
        :param on_progress: ``fn(sent, total)`` after each chunk.
        :raises ScopeDeniedError: the needed scope was not granted (before any call).
        :raises CreatorOptionsError: the settings break the creator's options.
        :raises UploadURLExpiredError: the upload took longer than the upload URL lives.
        """
        path = Path(file)
        scope = PUBLISH if direct is not None else UPLOAD
        await self._grant({scope})
        content_type = content_type or content_type_for(path)
        size = (await anyio.Path(path).stat()).st_size
        plan = ChunkPlan.for_size(size, chunk_size)
        if duration is None:
            duration = await anyio.to_thread.run_sync(mp4_duration, path)
        body: dict[str, object] = {"source_info": plan.as_source_info()}
        if direct is not None:
            info = await self.creator_info()
            body["post_info"] = _video_post_info(direct, info, duration)
        else:
            _check_duration(duration, None)
        group, endpoint = (
            ("video_init", VIDEO_INIT_PATH) if direct else ("inbox_init", INBOX_INIT_PATH)
        )
        data = await self._call(group, "POST", endpoint, needs={scope}, body=body)
        publish_id, upload_url = data.get("publish_id"), data.get("upload_url")
        if not isinstance(publish_id, str) or not isinstance(upload_url, str):
            msg = "TikTok accepted the post but sent no publish_id or upload_url"
            raise TikTokAPIError(msg, provider_id=self.provider_id)
        log.info("uploading %d bytes in %d chunks", size, plan.total_chunk_count)
        sent = await upload_chunks(
            self.http.session,
            upload_url,
            path,
            plan,
            content_type=content_type,
            retry=self.http.retry,
            on_progress=on_progress,
        )
        return PublishedPost(
            publish_id=publish_id,
            upload_url=upload_url,
            direct=direct is not None,
            uploaded_bytes=sent,
        )

    async def video_from_url(
        self, video_url: str, *, direct: DirectPost | None = None, duration: float | None = None
    ) -> PublishedPost:
        """Let TikTok fetch the video from *video_url* (``PULL_FROM_URL``).

        The URL must be https, on a domain or URL prefix verified in TikTok's developer
        portal, and must not redirect.

        :raises UrlOwnershipUnverifiedError: the URL's domain or prefix is not verified.
        """
        _check_https(video_url)
        scope = PUBLISH if direct is not None else UPLOAD
        await self._grant({scope})
        body: dict[str, object] = {
            "source_info": {"source": "PULL_FROM_URL", "video_url": video_url}
        }
        if direct is not None:
            info = await self.creator_info()
            body["post_info"] = _video_post_info(direct, info, duration)
        else:
            _check_duration(duration, None)
        group, endpoint = (
            ("video_init", VIDEO_INIT_PATH) if direct else ("inbox_init", INBOX_INIT_PATH)
        )
        data = await self._call(group, "POST", endpoint, needs={scope}, body=body)
        return PublishedPost(publish_id=_publish_id(data), direct=direct is not None)

    async def post_photos(
        self,
        image_urls: Sequence[str],
        *,
        direct: DirectPhotoPost | None = None,
        cover_index: int = 0,
        title: str = "",
        description: str = "",
    ) -> PublishedPost:
        """A photo post pulled from 1 to 35 verified https URLs (``content/init``).

        Without *direct* the photos go to the inbox (``MEDIA_UPLOAD``, ``video.upload``)
        with *title* and *description*; with it they are posted (``DIRECT_POST``,
        ``video.publish``) after checking ``creator_info``.
        """
        urls = list(image_urls)
        if not 1 <= len(urls) <= MAX_PHOTOS:
            msg = f"a photo post has 1 to {MAX_PHOTOS} images"
            raise ValueError(msg)
        for url in urls:
            _check_https(url)
        if not 0 <= cover_index < len(urls):
            msg = "cover_index must point at one of the images"
            raise ValueError(msg)
        scope = PUBLISH if direct is not None else UPLOAD
        await self._grant({scope})
        body: dict[str, object] = {
            "media_type": "PHOTO",
            "source_info": {
                "source": "PULL_FROM_URL",
                "photo_cover_index": cover_index,
                "photo_images": urls,
            },
        }
        if direct is not None:
            info = await self.creator_info()
            body["post_mode"] = "DIRECT_POST"
            body["post_info"] = _photo_post_info(direct, info)
            body["is_aigc"] = direct.is_aigc
        else:
            _check_text(title, 90, "title")
            _check_text(description, 4000, "description")
            body["post_mode"] = "MEDIA_UPLOAD"
            body["post_info"] = {"title": title, "description": description}
        data = await self._call("content_init", "POST", CONTENT_INIT_PATH, needs={scope}, body=body)
        return PublishedPost(publish_id=_publish_id(data), direct=direct is not None)

    # -- Content Posting API: status ---------------------------------------------------

    async def status(self, publish_id: str) -> PostStatus:
        """The post's status now (``status/fetch``; ``video.upload`` or ``video.publish``)."""
        data = await self._call(
            "status",
            "POST",
            STATUS_PATH,
            any_of=_POSTING,
            body={"publish_id": publish_id},
            idempotent=True,
        )
        return PostStatus.from_json(publish_id, data)

    async def statuses(
        self,
        publish_id: str,
        *,
        interval: float = 2.0,
        max_interval: float = 15.0,
        max_wait: float | None = None,
    ) -> AsyncGenerator[PostStatus, None]:
        """Each change of the post's status, until a final one (inbox, published, failed).

        Polls with backoff: *interval* after a change, doubling up to *max_interval* while
        nothing changes (TikTok allows 30 status calls a minute).

        :raises PostTimeoutError: no final status within *max_wait* seconds.
        """
        deadline = None if max_wait is None else self._clock() + max_wait
        last: PostStatus | None = None
        delay = interval
        while True:
            current = await self.status(publish_id)
            if current.changed_from(last):
                yield current
                delay = interval
            else:
                delay = min(delay * 2, max_interval)
            last = current
            if current.final:
                return
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    raise PostTimeoutError(publish_id, current.status)
                delay = min(delay, left)
            await anyio.sleep(delay)

    async def wait(
        self,
        publish_id: str,
        *,
        max_wait: float = 600.0,
        interval: float = 2.0,
        max_interval: float = 15.0,
    ) -> PostStatus:
        """Poll until the post reaches a final status and return it.

        :raises PostFailedError: the post failed (``fail_reason`` says why).
        :raises PostTimeoutError: still processing after *max_wait* seconds.
        """
        final: PostStatus | None = None
        async for status in self.statuses(
            publish_id, interval=interval, max_interval=max_interval, max_wait=max_wait
        ):
            final = status
        if final is None:  # pragma: no cover - statuses always yields at least once
            raise PostTimeoutError(publish_id, None)
        if final.status == PublishStatus.FAILED:
            raise PostFailedError(publish_id, final.fail_reason or "")
        return final

    async def cancel(self, publish_id: str) -> None:
        """Cancel a post TikTok is still downloading (``PULL_FROM_URL``), best effort.

        :raises PublishNotCancellableError: too far along to cancel.
        """
        await self._call(
            "cancel",
            "POST",
            CANCEL_PATH,
            any_of=_POSTING,
            body={"publish_id": publish_id},
        )

    # -- plumbing ------------------------------------------------------------------------

    async def _grant(
        self, needs: Iterable[str] = (), any_of: frozenset[str] = frozenset()
    ) -> StoredGrant:
        """The stored grant with a fresh token; scopes checked before any provider call."""
        if any_of:
            stored = await self.tokens.store.get(self.provider_id, self.account_id)
            if stored is not None and not any_of & stored.granted_scopes:
                raise ScopeDeniedError(any_of, provider_id=self.provider_id)
        grant = await self.tokens.grant(self.provider_id, self.account_id, needs=needs)
        if any_of and not any_of & grant.granted_scopes:
            raise ScopeDeniedError(any_of, provider_id=self.provider_id)
        return grant

    async def _expire(self, grant: StoredGrant) -> None:
        """Mark the stored access token expired, so the manager refreshes it (once)."""
        tokens = attrs.evolve(grant.tokens, expires_at=0.0)
        await self.tokens.store.put(
            self.provider_id,
            self.account_id,
            tokens,
            scopes=grant.granted_scopes,
            if_version=grant.version,
        )

    async def _call(
        self,
        group: str,
        method: str,
        path: str,
        *,
        needs: Iterable[str] = (),
        any_of: frozenset[str] = frozenset(),
        params: Mapping[str, str] | None = None,
        body: object = None,
        idempotent: bool = False,
        grant: StoredGrant | None = None,
    ) -> dict[str, Any]:
        """One API call: token, pacing, request, envelope; one refresh on a refused token.

        *grant*, just read by the caller, serves the first attempt.
        """
        needed = frozenset(needs)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1 or grant is None:
                grant = await self._grant(needed, any_of)
            await self.rate_limits.acquire(group, self.account_id)
            try:
                response = await self.http.request(
                    method,
                    self.api_origin + path,
                    json_body=body,
                    params=params,
                    headers=_JSON if body is not None else None,
                    bearer=grant.tokens.access_token,
                    idempotent=idempotent,
                    provider_id=self.provider_id,
                )
            except TikTokRateLimitedError:
                raise
            except RateLimitedError as exc:
                raise TikTokRateLimitedError(
                    f"TikTok rate-limited {path}",
                    retry_after=exc.retry_after,
                    provider_id=self.provider_id,
                    error="rate_limit_exceeded",
                    http_status=exc.http_status,
                ) from exc
            try:
                return _envelope(response, path)
            except AccessTokenInvalidError:
                if refreshed:
                    raise
                refreshed = True
                log.info("TikTok refused the access token; refreshing once")
                await self._expire(grant)
            except InternalServerError:
                delay = self.http.retry.delay(attempt, None) if idempotent else None
                if delay is None:
                    raise
                await anyio.sleep(delay)


def _envelope(response: HttpResponse, endpoint: str) -> dict[str, Any]:
    """``data`` of a ``{"data", "error"}`` answer, or the typed error (whatever the status)."""
    header_log_id = response.headers.get("x-tt-logid")
    try:
        body = response.json_object(TikTokAPIError, "tiktok")
    except TikTokAPIError as exc:
        if response.status >= 500:
            raise error_for(
                "internal_error",
                "",
                log_id=header_log_id,
                http_status=response.status,
                endpoint=endpoint,
            ) from exc
        raise
    error = body.get("error")
    envelope: Mapping[str, Any] = error if isinstance(error, dict) else {}
    code = envelope.get("code")
    code = code if isinstance(code, str) and code else ("ok" if response.ok else "")
    if code == "ok" and not response.ok:
        code = "internal_error" if response.status >= 500 else f"http_{response.status}"
    if code == "ok":
        data = body.get("data")
        return data if isinstance(data, dict) else {}
    log_id = envelope.get("log_id")
    message = envelope.get("message")
    raise error_for(
        code or f"http_{response.status}",
        message if isinstance(message, str) else "",
        log_id=str(log_id)[:128] if log_id else header_log_id,
        http_status=response.status,
        endpoint=endpoint,
    )


def _page(data: Mapping[str, Any]) -> VideoPage:
    raw = data.get("videos")
    videos = tuple(
        video
        for item in (raw if isinstance(raw, list) else [])
        if isinstance(item, dict) and (video := Video.from_json(item)) is not None
    )
    cursor = data.get("cursor")
    return VideoPage(
        videos=videos,
        cursor=cursor if isinstance(cursor, int) and not isinstance(cursor, bool) else None,
        has_more=data.get("has_more") is True,
    )


def _publish_id(data: Mapping[str, Any]) -> str:
    publish_id = data.get("publish_id")
    if not isinstance(publish_id, str) or not publish_id:
        msg = "TikTok accepted the post but sent no publish_id"
        raise TikTokAPIError(msg, provider_id="tiktok")
    return publish_id


def _check_https(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.netloc:
        msg = "TikTok pulls media from https URLs only"
        raise ValueError(msg)


def _check_text(text: str, limit: int, field: str) -> None:
    if _utf16_len(text) > limit:
        msg = f"the {field} is longer than TikTok's {limit} characters"
        raise CreatorOptionsError(msg, field=field)


def _check_duration(duration: float | None, info: CreatorInfo | None) -> None:
    limit = MAX_API_DURATION
    if info is not None and info.max_video_post_duration_sec:
        limit = min(limit, float(info.max_video_post_duration_sec))
    if duration is not None and duration > limit:
        msg = f"the video lasts {duration:.0f} s; this creator may post at most {limit:.0f} s"
        raise CreatorOptionsError(msg, field="duration", allowed=(f"{limit:.0f}",))


def _check_privacy(privacy_level: str, brand_content: bool, info: CreatorInfo) -> None:
    if privacy_level not in info.privacy_level_options:
        msg = "choose the privacy level from the creator's options"
        raise CreatorOptionsError(msg, field="privacy_level", allowed=info.privacy_level_options)
    if brand_content and privacy_level == "SELF_ONLY":
        msg = "branded content cannot be private (SELF_ONLY)"
        raise CreatorOptionsError(msg, field="brand_content_toggle")


def _video_post_info(
    post: DirectPost, info: CreatorInfo, duration: float | None
) -> dict[str, object]:
    _check_privacy(post.privacy_level, post.brand_content_toggle, info)
    _check_duration(duration, info)
    _check_text(post.title, 2200, "title")
    post_info: dict[str, object] = {
        "title": post.title,
        "privacy_level": post.privacy_level,
        "disable_comment": post.disable_comment or info.comment_disabled,
        "disable_duet": post.disable_duet or info.duet_disabled,
        "disable_stitch": post.disable_stitch or info.stitch_disabled,
        "brand_content_toggle": post.brand_content_toggle,
        "brand_organic_toggle": post.brand_organic_toggle,
        "is_aigc": post.is_aigc,
    }
    if post.video_cover_timestamp_ms is not None:
        post_info["video_cover_timestamp_ms"] = post.video_cover_timestamp_ms
    return post_info


def _photo_post_info(post: DirectPhotoPost, info: CreatorInfo) -> dict[str, object]:
    _check_privacy(post.privacy_level, post.brand_content_toggle, info)
    _check_text(post.title, 90, "title")
    _check_text(post.description, 4000, "description")
    return {
        "title": post.title,
        "description": post.description,
        "privacy_level": post.privacy_level,
        "disable_comment": post.disable_comment or info.comment_disabled,
        "auto_add_music": post.auto_add_music,
        "brand_content_toggle": post.brand_content_toggle,
        "brand_organic_toggle": post.brand_organic_toggle,
    }
