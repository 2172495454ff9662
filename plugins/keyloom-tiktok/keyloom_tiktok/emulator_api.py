"""TikTok's emulated v2 APIs (Display, Content Posting), mounted on :class:`TikTokEmulator`.

Endpoints (same origin as the rest of the emulator), all answering in TikTok's ``{"data",
"error"}`` envelope with an ``x-tt-logid`` header, all checking the bearer token, its
scopes and a rate limit the same way:

========  ==========================================  =====================================
``GET``   ``/v2/user/info/``                          the user's profile ``fields``
``POST``  ``/v2/video/list/``                         the user's public videos (cursor pages)
``POST``  ``/v2/video/query/``                        videos by id (at most 20)
``POST``  ``/v2/post/publish/creator_info/query/``    what the creator may post
``POST``  ``/v2/post/publish/video/init/``            Direct Post (``video.publish``)
``POST``  ``/v2/post/publish/inbox/video/init/``      upload to inbox (``video.upload``)
``POST``  ``/v2/post/publish/content/init/``          photo posts (pull from URL)
``POST``  ``/v2/post/publish/status/fetch/``          a post's status
``POST``  ``/v2/post/publish/cancel/``                cancel a pull from URL
``PUT``   ``/emulator/upload/video/?upload_id&…``      chunk transfer (the ``upload_url``)
``GET``   ``/emulator/cover/{video_id}.svg?…``        a signed cover image (expires after 6 h)
========  ==========================================  =====================================

``/v2/user/info/`` is the emulator's profile route (the kit registers it, and
:meth:`TikTokEmulator.userinfo` hands it to :meth:`ContentAPI.user_info`): each field needs
its scope (:data:`FIELD_SCOPES`), and its limit is the emulator's per-app
:attr:`~TikTokEmulator.rate_limiter`. The emulator's ``api_errors_http_200`` and
``rate_limit_retry_after`` options apply to every endpoint here.

TikTok's rules are enforced: the chunk plan at init and each chunk's ``Content-Range``
(416 out of order, 403 once the one-hour upload URL expired, 404 for an unknown upload),
the per-token limits (6 inits, 20 ``creator_info``, 30 status calls a minute; 600 a minute
for each Display endpoint), the creator's privacy options, the daily posting cap, the
pending-draft cap, the active-creator cap, unaudited clients (private accounts and
``SELF_ONLY`` only, five creators a day), verified URL prefixes for ``PULL_FROM_URL``, and
TikTok's error codes and HTTP statuses. A post's status moves with the emulator's clock,
so a test drives it with :class:`~keyloom_core.testing.emulator.ManualClock`.

Every emulated user has a seeded catalogue of public videos: as many as their
``video_count``, their likes adding up to their ``likes_count``, newest first. A public
Direct Post joins it once published. :meth:`ContentAPI.deliver_webhooks` sends the signed
``post.publish.*`` webhooks that posts have reached to a loopback URL.

Configure it through :meth:`ContentAPI.of`::

    api = ContentAPI.of(emulator)
    api.posts_per_day = 2
    api.creator("emulated-creator").private = True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
import re
import secrets
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlencode, urlsplit

import attrs
from aiohttp import web

from keyloom_core.testing.emulator import AccessToken, SlidingWindowLimiter, TokenFailure, log_id
from keyloom_tiktok import BASIC, FIELDS_BY_SCOPE

if TYPE_CHECKING:  # emulator imports this module; only the types come back
    from .emulator import EmulatedUser, TikTokEmulator

__all__ = [
    "CANCEL_PATH",
    "CONTENT_INIT_PATH",
    "CREATOR_INFO_PATH",
    "FIELD_SCOPES",
    "INBOX_INIT_PATH",
    "STATUS_PATH",
    "UPLOAD_PATH",
    "USER_INFO_PATH",
    "VIDEO_INIT_PATH",
    "VIDEO_LIST_PATH",
    "VIDEO_QUERY_PATH",
    "ContentAPI",
    "CreatorSettings",
    "EmulatedPost",
    "EmulatedVideo",
    "PutFault",
    "api_headers",
]

logger = logging.getLogger(__name__)

USER_INFO_PATH: Final = "/v2/user/info/"
VIDEO_LIST_PATH: Final = "/v2/video/list/"
VIDEO_QUERY_PATH: Final = "/v2/video/query/"
CREATOR_INFO_PATH: Final = "/v2/post/publish/creator_info/query/"
VIDEO_INIT_PATH: Final = "/v2/post/publish/video/init/"
INBOX_INIT_PATH: Final = "/v2/post/publish/inbox/video/init/"
CONTENT_INIT_PATH: Final = "/v2/post/publish/content/init/"
STATUS_PATH: Final = "/v2/post/publish/status/fetch/"
CANCEL_PATH: Final = "/v2/post/publish/cancel/"
UPLOAD_PATH: Final = "/emulator/upload/video/"
COVER_PATH: Final = "/emulator/cover/{video_id}.svg"

MIN_CHUNK: Final = 5 * 1024 * 1024
MAX_CHUNK: Final = 64 * 1024 * 1024
MAX_FINAL_CHUNK: Final = 128 * 1024 * 1024
MAX_VIDEO: Final = 4 * 1024**3
DAY: Final = 86_400.0

VIDEO_FIELDS: Final = frozenset(
    {
        "id",
        "create_time",
        "cover_image_url",
        "share_url",
        "video_description",
        "duration",
        "height",
        "width",
        "title",
        "embed_html",
        "embed_link",
        "like_count",
        "comment_count",
        "share_count",
        "view_count",
    }
)
PUBLIC_OPTIONS: Final = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")
PRIVATE_OPTIONS: Final = ("FOLLOWER_OF_CREATOR", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY")
VIDEO_TYPES: Final = frozenset({"video/mp4", "video/quicktime", "video/webm"})
_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_PULLED_SIZE: Final = 10_000_000
_HEAD_BYTES: Final = 64 * 1024

#: What a chunk ``PUT`` may be made to suffer (queued with :meth:`ContentAPI.fail_puts`):
#: ``"503"`` answers 503 without keeping the chunk; ``"503-after"`` keeps it, then answers
#: 503 (as if the answer were lost); ``"reset"`` keeps it and drops the connection.
PutFault = Literal["503", "503-after", "reset"]

#: The scope each ``/v2/user/info/`` field needs (after TikTok's 2024 scope migration).
FIELD_SCOPES: Final[Mapping[str, str]] = {
    field: scope for scope, fields in FIELDS_BY_SCOPE.items() for field in fields
}
_ACCESS_FAILURES: Final[Mapping[TokenFailure, str]] = {
    TokenFailure.UNKNOWN: "Access token is invalid or not found in the request.",
    TokenFailure.EXPIRED: "Access token has expired, please refresh token and retry.",
    TokenFailure.REVOKED: "Access token has been revoked.",
    TokenFailure.CLIENT_MISMATCH: "Access token is invalid.",
}
_MESSAGES: Final[Mapping[str, str]] = {
    "scope_not_authorized": "The user did not authorize the scope required for completing "
    "this request.",
    "rate_limit_exceeded": "The API rate limit was exceeded. Please retry later.",
    "spam_risk_too_many_posts": "The daily post cap for this user has been reached.",
    "spam_risk_user_banned_from_posting": "This user is banned from posting.",
    "spam_risk_too_many_pending_share": "There may be at most 5 pending shares within any "
    "24-hour period.",
    "reached_active_user_cap": "The daily quota of active publishing users for this client "
    "has been reached.",
    "unaudited_client_can_only_post_to_private_accounts": "Unaudited clients can only post "
    "to private accounts, as SELF_ONLY.",
    "url_ownership_unverified": "The ownership of the media URL's domain or prefix is not "
    "verified.",
    "privacy_level_option_mismatch": "The privacy level is not one of the creator's options.",
    "invalid_publish_id": "The publish_id does not exist.",
    "token_not_authorized_for_specified_publish_id": "The access token is not authorized for "
    "this publish_id.",
    "publish_not_cancellable": "The post cannot be cancelled any more.",
    "app_version_check_failed": "The user's TikTok app is too old for this post.",
}


@attrs.define(kw_only=True)
class CreatorSettings:
    """An emulated creator's posting situation (what ``creator_info`` reports).

    Attributes:
        private: A private account (its privacy options then differ).
        comment_disabled: Comments off in the account's settings.
        duet_disabled: Duets off (always for private accounts).
        stitch_disabled: Stitches off (always for private accounts).
        max_video_post_duration_sec: The longest video the creator may post.
        banned: Banned from posting.
        app_too_old: Their TikTok app fails ``MEDIA_UPLOAD`` photo posts.
    """

    private: bool = False
    comment_disabled: bool = False
    duet_disabled: bool = False
    stitch_disabled: bool = False
    max_video_post_duration_sec: int = 600
    banned: bool = False
    app_too_old: bool = False

    @property
    def privacy_level_options(self) -> tuple[str, ...]:
        """The privacy levels TikTok offers this account."""
        return PRIVATE_OPTIONS if self.private else PUBLIC_OPTIONS


@attrs.frozen(kw_only=True)
class EmulatedVideo:
    """One public video of an emulated user's catalogue.

    Attributes:
        id: A 19-digit id.
        create_time: Unix seconds.
        title: Title.
        description: Description.
        duration: Seconds.
        width: Pixels.
        height: Pixels.
        like_count: Likes.
        comment_count: Comments.
        share_count: Shares.
        view_count: Views.
        hidden: Filtered out of pages (as TikTok's trust-and-safety filter does).
    """

    id: str
    create_time: int
    title: str
    description: str
    duration: int
    width: int = 1080
    height: int = 1920
    like_count: int = 0
    comment_count: int = 0
    share_count: int = 0
    view_count: int = 0
    hidden: bool = False


@attrs.define(kw_only=True)
class EmulatedPost:
    """A post in progress or done.

    Attributes:
        publish_id: TikTok's id.
        client_key: The app that created it.
        user_id: The creator.
        direct: A Direct Post (else an inbox draft).
        media: ``"video"`` or ``"photo"``.
        source: ``FILE_UPLOAD`` or ``PULL_FROM_URL``.
        created_at: Init time.
        privacy_level: For direct posts.
        title: The caption.
        video_size: ``FILE_UPLOAD`` bytes announced.
        chunk_size: ``FILE_UPLOAD`` chunk size announced.
        total_chunk_count: ``FILE_UPLOAD`` chunks announced.
        received: Bytes received so far.
        upload_id: For the upload URL.
        upload_token: For the upload URL.
        transfer_done_at: When the last byte arrived (or the pull finished).
        cancelled: Cancelled by the app.
        fail_reason: Set to make the post fail once processed.
        user_posted: The creator posted the draft from the inbox.
        published_video: The catalogue entry a public post became.
        puts: Chunk ``PUT`` requests received.
        declared_duration: The duration an MP4/MOV header in the first chunk declares.
    """

    publish_id: str
    client_key: str
    user_id: str
    direct: bool
    media: str
    source: str
    created_at: float
    privacy_level: str | None = None
    title: str = ""
    video_size: int = 0
    chunk_size: int = 0
    total_chunk_count: int = 0
    received: int = 0
    upload_id: str = ""
    upload_token: str = attrs.field(default="", repr=False)
    transfer_done_at: float | None = None
    cancelled: bool = False
    fail_reason: str | None = None
    user_posted: bool = False
    published_video: EmulatedVideo | None = None
    puts: int = 0
    declared_duration: float | None = None


def api_headers(lid: str) -> dict[str, str]:
    """The headers of every answer of TikTok's v2 API and OAuth endpoints, with *lid*."""
    return {"x-tt-logid": lid, "Cache-Control": "no-store", "Pragma": "no-cache"}


class _RefusalError(Exception):
    """A v2 API error: its code, HTTP status and message (a *fault* keeps its status)."""

    def __init__(
        self,
        code: str,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        fault: bool = False,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.message = message or _MESSAGES.get(code, "The request is invalid.")
        self.retry_after = retry_after
        self.fault = fault


_STATES: weakref.WeakKeyDictionary[Any, ContentAPI] = weakref.WeakKeyDictionary()


class ContentAPI:
    """The Display and Content Posting state of one emulator; get it with :meth:`of`.

    Every attribute may be changed while the emulator runs.

    Attributes:
        posts_per_day: Direct posts one creator may make in 24 h (all clients).
        pending_share_cap: Inbox drafts one creator may have pending within 24 h.
        active_user_cap: Creators one client may post for in 24 h (``None``: no cap).
        unaudited_clients: Client keys that have not passed TikTok's audit.
        unaudited_user_cap: Creators an unaudited client may post for in 24 h.
        verified_url_prefixes: URL prefixes (``https://host/path/``) and bare domains
            (covering their subdomains) verified for ``PULL_FROM_URL``.
        processing_seconds: Time from the last byte to the final status.
        download_seconds: Time a ``PULL_FROM_URL`` download takes.
        upload_url_ttl: Seconds an upload URL lives.
        cover_ttl: Seconds a ``cover_image_url`` lives.
        hide_every: Hide every n-th video from pages (short pages); ``None``: none.
        webhook_url: Where :meth:`deliver_webhooks` posts ``post.publish.*`` events (a
            loopback URL).
        limits: ``{endpoint path: calls per minute}`` per token (Display: per client).
        posts: Every post by ``publish_id``.
    """

    def __init__(self, emulator: TikTokEmulator) -> None:
        self.emulator = emulator
        self.posts_per_day = 15
        self.pending_share_cap = 5
        self.active_user_cap: int | None = None
        self.unaudited_clients: set[str] = set()
        self.unaudited_user_cap = 5
        self.verified_url_prefixes: list[str] = ["https://media.example.com/"]
        self.processing_seconds = 30.0
        self.download_seconds = 20.0
        self.upload_url_ttl = 3600.0
        self.cover_ttl = 6 * 3600.0
        self.hide_every: int | None = None
        self.webhook_url: str | None = None
        self.limits: dict[str, int] = {
            VIDEO_LIST_PATH: 600,
            VIDEO_QUERY_PATH: 600,
            CREATOR_INFO_PATH: 20,
            VIDEO_INIT_PATH: 6,
            INBOX_INIT_PATH: 6,
            CONTENT_INIT_PATH: 6,
            STATUS_PATH: 30,
        }
        self.posts: dict[str, EmulatedPost] = {}
        self._user_info_handler = self._handle(self._user_info)
        self._creators: dict[str, CreatorSettings] = {}
        self._catalogues: dict[str, list[EmulatedVideo]] = {}
        self._uploads: dict[str, str] = {}
        self._put_faults: deque[PutFault] = deque()
        self._call_faults: dict[str, deque[int]] = {}
        self._limiters: dict[str, SlidingWindowLimiter] = {}
        self._cover_key = secrets.token_bytes(16)
        self._delivered: dict[str, set[str]] = {}

    @classmethod
    def of(cls, emulator: TikTokEmulator) -> ContentAPI:
        """The state of *emulator* (created on first use)."""
        state = _STATES.get(emulator)
        if state is None:
            state = _STATES[emulator] = cls(emulator)
        return state

    def __repr__(self) -> str:
        return f"ContentAPI(posts={len(self.posts)})"

    # -- configuration and test controls ---------------------------------------------------

    def creator(self, user_id: str) -> CreatorSettings:
        """The creator settings of *user_id* (mutable)."""
        if user_id not in self._creators:
            self._creators[user_id] = CreatorSettings()
        return self._creators[user_id]

    def catalogue(self, user_id: str) -> list[EmulatedVideo]:
        """The user's public videos, newest first (seeded from the user, stable per run)."""
        if user_id not in self._catalogues:
            self._catalogues[user_id] = _seed_catalogue(self.emulator.users[user_id])
        return self._catalogues[user_id]

    def fail_puts(self, *faults: PutFault) -> None:
        """Make the next chunk ``PUT`` requests fail, one fault each, in order."""
        self._put_faults.extend(faults)

    def fail_calls(self, path: str, *statuses: int) -> None:
        """Make the next calls to the API endpoint *path* answer these 5xx statuses, in order.

        The call is refused before it does anything (``internal_error`` in TikTok's envelope).
        """
        self._call_faults.setdefault(path, deque()).extend(statuses)

    def user_posts(self, publish_id: str) -> None:
        """The creator posts an inbox draft (its status becomes ``PUBLISH_COMPLETE``)."""
        self.posts[publish_id].user_posted = True

    def fail_post(self, publish_id: str, reason: str) -> None:
        """Make a post end ``FAILED`` with *reason* once processed."""
        self.posts[publish_id].fail_reason = reason

    def events_of(self, post: EmulatedPost) -> list[tuple[str, dict[str, object]]]:
        """The ``post.publish.*`` events *post* has reached now, with their ``content``.

        ``publish_type`` is ``INBOX_SHARE`` for drafts (documented) and ``DIRECT_PUBLISH``
        for direct posts (TikTok's value for those is not documented).
        """
        status = self.status_of(post)
        base: dict[str, object] = {
            "publish_id": post.publish_id,
            "publish_type": "DIRECT_PUBLISH" if post.direct else "INBOX_SHARE",
        }
        events: list[tuple[str, dict[str, object]]] = []
        if status["status"] == "FAILED":
            events.append(("post.publish.failed", {**base, "reason": status["fail_reason"]}))
        if status["status"] == "SEND_TO_USER_INBOX" or (
            not post.direct and status["status"] == "PUBLISH_COMPLETE"
        ):
            events.append(("post.publish.inbox_delivered", base))
        if status["status"] == "PUBLISH_COMPLETE":
            events.append(("post.publish.complete", base))
            ids = status.get("publicaly_available_post_id")
            events.extend(
                ("post.publish.publicly_available", {**base, "post_id": post_id})
                for post_id in (ids if isinstance(ids, list) else [])
            )
        return events

    async def deliver_webhooks(self) -> list[str]:
        """POST every event reached since the last delivery to :attr:`webhook_url`, signed.

        Each body is TikTok's (``client_key``, ``event``, ``create_time``, ``user_openid``,
        ``content`` as a JSON string), signed with the app's client secret in
        ``TikTok-Signature: t=…,s=…``. Returns the events sent, in order. Tests call it after
        moving the clock, where TikTok would send them by itself.

        :raises ValueError: no webhook URL, or one that is not on a loopback address.
        """
        url = self.webhook_url
        host = urlsplit(url).hostname if url else None
        if url is None or host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("webhook_url must be set to a loopback URL")
        import aiohttp  # noqa: PLC0415

        sent: list[str] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for post in list(self.posts.values()):
                done = self._delivered.setdefault(post.publish_id, set())
                for event, content in self.events_of(post):
                    key = f"{event}:{content.get('post_id', '')}"
                    if key in done:
                        continue
                    await self._deliver(session, url, post, event, content)
                    done.add(key)
                    sent.append(event)
        return sent

    async def _deliver(
        self,
        session: Any,
        url: str,
        post: EmulatedPost,
        event: str,
        content: Mapping[str, object],
    ) -> None:
        app = self.emulator.clients[post.client_key]
        now = int(self.emulator.clock())
        body = json.dumps(
            {
                "client_key": post.client_key,
                "event": event,
                "create_time": now,
                "user_openid": self.emulator.open_id(post.user_id, post.client_key),
                "content": json.dumps(content),
            }
        ).encode()
        mac = hmac.new(app.client_secret.encode(), f"{now}.".encode() + body, hashlib.sha256)
        headers = {
            "Content-Type": "application/json",
            "TikTok-Signature": f"t={now},s={mac.hexdigest()}",
        }
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()

    def status_of(self, post: EmulatedPost) -> dict[str, object]:
        """``data`` of ``status/fetch`` for *post* now."""
        now = self.emulator.clock()
        data: dict[str, object] = {}
        if post.source == "PULL_FROM_URL":
            progress = min(1.0, (now - post.created_at) / max(self.download_seconds, 1e-9))
            data["downloaded_bytes"] = int(_PULLED_SIZE * progress)
            if progress >= 1.0 and post.transfer_done_at is None:
                post.transfer_done_at = post.created_at + self.download_seconds
        else:
            data["uploaded_bytes"] = post.received
        if post.cancelled:
            return {**data, "status": "FAILED", "fail_reason": "publish_cancelled"}
        done = post.transfer_done_at
        if done is None or now < done + self.processing_seconds:
            waiting = "PROCESSING_DOWNLOAD" if post.source == "PULL_FROM_URL" else None
            return {**data, "status": waiting or "PROCESSING_UPLOAD"}
        limit = min(600, self.creator(post.user_id).max_video_post_duration_sec)
        if not post.fail_reason and (post.declared_duration or 0) > limit:
            post.fail_reason = "duration_check_failed"
        if post.fail_reason:
            return {**data, "status": "FAILED", "fail_reason": post.fail_reason}
        if not post.direct:
            status = "PUBLISH_COMPLETE" if post.user_posted else "SEND_TO_USER_INBOX"
            return {**data, "status": status}
        ids: list[int] = []
        if post.privacy_level == "PUBLIC_TO_EVERYONE":
            video = self._publish(post, int(done + self.processing_seconds))
            ids.append(int(video.id))
        return {**data, "status": "PUBLISH_COMPLETE", "publicaly_available_post_id": ids}

    # -- routes ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register the Display and Content Posting endpoints on *app*."""
        app.router.add_post(VIDEO_LIST_PATH, self._handle(self._list))
        app.router.add_post(VIDEO_QUERY_PATH, self._handle(self._query))
        app.router.add_post(CREATOR_INFO_PATH, self._handle(self._creator))
        app.router.add_post(VIDEO_INIT_PATH, self._handle(self._direct_init))
        app.router.add_post(INBOX_INIT_PATH, self._handle(self._inbox))
        app.router.add_post(CONTENT_INIT_PATH, self._handle(self._photos))
        app.router.add_post(STATUS_PATH, self._handle(self._fetch))
        app.router.add_post(CANCEL_PATH, self._handle(self._do_cancel))
        app.router.add_put(UPLOAD_PATH, self._put)
        app.router.add_get(COVER_PATH, self._cover)

    # -- plumbing: one envelope, bearer check, rate limit and refusal for every v2 route ----

    def _answer(
        self, data: Mapping[str, object] | None, refusal: _RefusalError | None = None
    ) -> web.Response:
        """TikTok's envelope; an error with HTTP 200 if ``api_errors_http_200`` (not a fault)."""
        lid = log_id(self.emulator.clock)
        headers = api_headers(lid)
        if refusal is None:
            body: dict[str, object] = {} if data is None else {"data": data}
            body["error"] = {"code": "ok", "message": "", "log_id": lid}
            return web.json_response(body, headers=headers)
        logger.info("API error %s (%s), log_id %s", refusal.code, refusal.message, lid)
        if refusal.retry_after is not None and self.emulator.rate_limit_retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(refusal.retry_after)))
        error = {"code": refusal.code, "message": refusal.message, "log_id": lid}
        http_200 = self.emulator.api_errors_http_200 and not refusal.fault
        return web.json_response(
            {"data": {}, "error": error},
            status=200 if http_200 else refusal.status,
            headers=headers,
        )

    def fault(self, status: int) -> web.Response:
        """An injected fault's answer: ``rate_limit_exceeded`` for 429, else ``internal_error``."""
        code = "rate_limit_exceeded" if status == 429 else "internal_error"
        return self._answer(None, _RefusalError(code, status, "Injected fault.", fault=True))

    def _authorized(self, request: web.Request, *scopes: str) -> tuple[AccessToken, EmulatedUser]:
        """The bearer token and its user; the token must hold one of *scopes* (if any).

        Then the endpoint's rate limit: the emulator's per-app :attr:`rate_limiter` for
        ``/v2/user/info/``, per app for the other Display endpoints, else per token.
        """
        found = self.emulator.authorized(request)  # a client token has no user: UNKNOWN
        if isinstance(found, TokenFailure):
            raise _RefusalError("access_token_invalid", 401, _ACCESS_FAILURES[found])
        user = self.emulator.users[found.user_id or ""]
        if scopes and not set(scopes) & set(found.scopes):
            raise _RefusalError("scope_not_authorized", 401)
        limiter, key = self._limiter(request.path, found)
        wait = None if limiter is None else limiter.hit(key)
        if wait is not None:
            raise _RefusalError("rate_limit_exceeded", 429, retry_after=wait)
        return found, user

    def _limiter(self, path: str, token: AccessToken) -> tuple[SlidingWindowLimiter | None, object]:
        if path == USER_INFO_PATH:
            return self.emulator.rate_limiter, (token.client_id, path)
        limit = self.limits.get(path)
        if limit is None:
            return None, None
        limiter = self._limiters.get(path)
        if limiter is None:
            limiter = SlidingWindowLimiter(limit, 60.0, clock=self.emulator.clock)
            self._limiters[path] = limiter
        limiter.limit = limit
        display = path in {VIDEO_LIST_PATH, VIDEO_QUERY_PATH}
        return limiter, token.client_id if display else token.token

    def _caller(self, request: web.Request, *scopes: str) -> tuple[str, EmulatedUser]:
        """``(client_key, user)`` of the bearer token, which must hold one of *scopes*."""
        token, user = self._authorized(request, *scopes)
        return token.client_id, user

    @staticmethod
    async def _json(request: web.Request, invalid: str = "invalid_param") -> dict[str, Any]:
        raw = await request.read() if request.can_read_body else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _RefusalError(invalid, 400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise _RefusalError(invalid, 400, "The request body must be a JSON object.")
        return body

    def _handle(
        self, work: Callable[[web.Request], Awaitable[Mapping[str, object] | None]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            faults = self._call_faults.get(request.path)
            if faults:
                return self.fault(faults.popleft())
            try:
                return self._answer(await work(request))
            except _RefusalError as refusal:
                return self._answer(None, refusal)

        return handler

    # -- user info -------------------------------------------------------------------------

    async def user_info(self, request: web.Request) -> web.StreamResponse:
        """``/v2/user/info/``: the requested ``fields`` the token's scopes allow."""
        return await self._user_info_handler(request)

    async def _user_info(self, request: web.Request) -> dict[str, object]:
        token, user = self._authorized(request)
        fields = _requested_fields(request.query.get("fields", ""), token.scopes)
        values = self._user_fields(user, token.client_id)
        return {"user": {name: values[name] for name in fields}}

    def _user_fields(self, user: EmulatedUser, client_key: str) -> dict[str, object]:
        """Every ``/v2/user/info/`` field of *user*, as the app *client_key* sees it."""
        emulator = self.emulator
        avatar = emulator.url_for(f"/emulator/avatar/{user.user_id}.svg")
        return {
            "open_id": emulator.open_id(user.user_id, client_key),
            "union_id": emulator.union_id(user.user_id),
            "avatar_url": avatar,
            "avatar_url_100": f"{avatar}?size=100",
            "avatar_large_url": f"{avatar}?size=720",
            "display_name": user.display_name,
            "bio_description": user.bio_description,
            "profile_deep_link": emulator.url_for(f"/emulator/@{user.username}"),
            "is_verified": user.is_verified,
            "username": user.username,
            "follower_count": user.follower_count,
            "following_count": user.following_count,
            "likes_count": user.likes_count,
            "video_count": user.video_count,
        }

    # -- Display API -----------------------------------------------------------------------

    def _fields(self, request: web.Request) -> list[str]:
        raw = request.query.get("fields", "")
        fields = [f.strip() for f in raw.split(",") if f.strip()] or ["id"]
        unknown = [f for f in fields if f not in VIDEO_FIELDS]
        if unknown:
            raise _RefusalError("invalid_params", 400, f"Unknown fields: {', '.join(unknown)}.")
        return fields

    def _video_json(
        self, video: EmulatedVideo, user: EmulatedUser, client_key: str, fields: list[str]
    ) -> dict[str, object]:
        expires = int(self.emulator.clock() + self.cover_ttl)
        signature = self._cover_signature(video.id, expires)
        cover = self.emulator.url_for(
            COVER_PATH.format(video_id=video.id)
            + "?"
            + urlencode({"x-expires": expires, "x-signature": signature})
        )
        utm = urlencode({"utm_campaign": "tt4d_open_api", "utm_source": client_key})
        embed_link = (
            f"https://www.tiktok.com/static/profile-video?id={video.id}&hide_author=1&{utm}"
        )
        values: dict[str, object] = {
            "id": video.id,
            "create_time": video.create_time,
            "cover_image_url": cover,
            "share_url": f"https://www.tiktok.com/@{user.username}/video/{video.id}?{utm}",
            "video_description": video.description,
            "duration": video.duration,
            "height": video.height,
            "width": video.width,
            "title": video.title,
            "embed_html": f'<iframe src="{embed_link}" width="325" height="580"></iframe>',
            "embed_link": embed_link,
            "like_count": video.like_count,
            "comment_count": video.comment_count,
            "share_count": video.share_count,
            "view_count": video.view_count,
        }
        return {name: values[name] for name in fields}

    async def _list(self, request: web.Request) -> dict[str, object]:
        client_key, user = self._caller(request, "video.list")
        fields = self._fields(request)
        body = await self._json(request, "invalid_params")
        max_count = body.get("max_count", 10)
        cursor = body.get("cursor")
        if (
            not isinstance(max_count, int)
            or isinstance(max_count, bool)
            or not 1 <= max_count <= 20
        ):
            raise _RefusalError("invalid_params", 400, "max_count must be 1 to 20.")
        if cursor is not None and (not isinstance(cursor, int) or cursor < 0):
            raise _RefusalError("invalid_params", 400, "cursor must be a timestamp in ms.")
        videos = [
            (i, v)
            for i, v in enumerate(self.catalogue(user.user_id))
            if cursor is None or v.create_time * 1000 < cursor
        ]
        window = [v for _, v in videos[:max_count]]
        shown = [v for i, v in videos[:max_count] if not self._hidden(i, v)]
        return {
            "videos": [self._video_json(v, user, client_key, fields) for v in shown],
            "cursor": window[-1].create_time * 1000 if window else (cursor or 0),
            "has_more": len(videos) > max_count,
        }

    async def _query(self, request: web.Request) -> dict[str, object]:
        client_key, user = self._caller(request, "video.list")
        fields = self._fields(request)
        body = await self._json(request, "invalid_params")
        filters = body.get("filters")
        ids = filters.get("video_ids") if isinstance(filters, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _RefusalError("invalid_params", 400, "filters.video_ids must list video ids.")
        if len(ids) > 20:
            raise _RefusalError("invalid_params", 400, "At most 20 video ids per request.")
        catalogue = self.catalogue(user.user_id)
        own = {v.id: v for i, v in enumerate(catalogue) if not self._hidden(i, v)}
        found = [own[i] for i in dict.fromkeys(ids) if i in own]
        return {
            "videos": [self._video_json(v, user, client_key, fields) for v in found],
            "cursor": 0,
            "has_more": False,
        }

    def _hidden(self, index: int, video: EmulatedVideo) -> bool:
        n = self.hide_every
        return video.hidden or (n is not None and n > 0 and (index + 1) % n == 0)

    def _cover_signature(self, video_id: str, expires: int) -> str:
        return hmac.new(
            self._cover_key, f"{video_id}:{expires}".encode(), hashlib.sha256
        ).hexdigest()[:32]

    async def _cover(self, request: web.Request) -> web.StreamResponse:
        video_id = request.match_info["video_id"]
        expires = request.query.get("x-expires", "")
        signature = request.query.get("x-signature", "")
        valid = expires.isdigit() and hmac.compare_digest(
            signature, self._cover_signature(video_id, int(expires))
        )
        if not valid or int(expires) < self.emulator.clock():
            return web.Response(
                status=403, text="Access denied: the URL has expired or is invalid."
            )
        colour = int(hashlib.sha256(video_id.encode()).hexdigest()[:6], 16)
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="90" height="160">'
            f'<rect width="90" height="160" fill="#{colour:06x}"/></svg>'
        )
        return web.Response(text=svg, content_type="image/svg+xml")

    # -- Content Posting: creator and caps -------------------------------------------------

    def _recent(self, user_id: str, *, direct: bool) -> list[EmulatedPost]:
        since = self.emulator.clock() - DAY
        return [
            p
            for p in self.posts.values()
            if p.user_id == user_id and p.direct == direct and p.created_at > since
        ]

    def _posting_refusal(self, client_key: str, user_id: str, *, direct: bool) -> str | None:
        settings = self.creator(user_id)
        if settings.banned:
            return "spam_risk_user_banned_from_posting"
        if direct and len(self._recent(user_id, direct=True)) >= self.posts_per_day:
            return "spam_risk_too_many_posts"
        since = self.emulator.clock() - DAY
        creators = {
            p.user_id
            for p in self.posts.values()
            if p.client_key == client_key and p.created_at > since
        }
        cap = self.active_user_cap
        if client_key in self.unaudited_clients:
            cap = min(cap or self.unaudited_user_cap, self.unaudited_user_cap)
        if cap is not None and user_id not in creators and len(creators) >= cap:
            return "reached_active_user_cap"
        return None

    async def _creator(self, request: web.Request) -> dict[str, object]:
        client_key, user = self._caller(request, "video.publish")
        refusal = self._posting_refusal(client_key, user.user_id, direct=True)
        if refusal is not None:
            raise _RefusalError(refusal, 200)  # TikTok answers these with HTTP 200 here
        settings = self.creator(user.user_id)
        return {
            "creator_avatar_url": self.emulator.url_for(f"/emulator/avatar/{user.user_id}.svg"),
            "creator_username": user.username,
            "creator_nickname": user.display_name,
            "privacy_level_options": list(settings.privacy_level_options),
            "comment_disabled": settings.comment_disabled,
            "duet_disabled": settings.duet_disabled or settings.private,
            "stitch_disabled": settings.stitch_disabled or settings.private,
            "max_video_post_duration_sec": settings.max_video_post_duration_sec,
        }

    def _check_direct(self, client_key: str, user_id: str, post_info: Mapping[str, Any]) -> str:
        settings = self.creator(user_id)
        privacy = post_info.get("privacy_level")
        if client_key in self.unaudited_clients and (
            not settings.private or privacy != "SELF_ONLY"
        ):
            raise _RefusalError("unaudited_client_can_only_post_to_private_accounts", 403)
        if not isinstance(privacy, str) or privacy not in settings.privacy_level_options:
            raise _RefusalError("privacy_level_option_mismatch", 403)
        title = post_info.get("title", "")
        if not isinstance(title, str) or len(title.encode("utf-16-le")) // 2 > 2200:
            raise _RefusalError("invalid_param", 400, "The title is too long.")
        return privacy

    def _verified(self, url: object) -> str:
        if not isinstance(url, str):
            raise _RefusalError("invalid_param", 400, "A media URL is missing.")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise _RefusalError("invalid_param", 400, "Media URLs must use https.")
        host = parts.hostname.lower()
        for entry in self.verified_url_prefixes:
            if "://" in entry:
                if url.startswith(entry):
                    return url
            elif host == entry.lower() or host.endswith("." + entry.lower()):
                return url
        raise _RefusalError("url_ownership_unverified", 403)

    def _new_post(
        self, client_key: str, user_id: str, *, direct: bool, media: str, source: str, prefix: str
    ) -> EmulatedPost:
        publish_id = f"{prefix}~v2.{secrets.randbelow(10**15):015d}"
        post = EmulatedPost(
            publish_id=publish_id,
            client_key=client_key,
            user_id=user_id,
            direct=direct,
            media=media,
            source=source,
            created_at=self.emulator.clock(),
        )
        self.posts[publish_id] = post
        return post

    def _source(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        source_info = body.get("source_info")
        if not isinstance(source_info, dict):
            raise _RefusalError("invalid_param", 400, "source_info is required.")
        if source_info.get("source") not in {"FILE_UPLOAD", "PULL_FROM_URL"}:
            raise _RefusalError(
                "invalid_param", 400, "source must be FILE_UPLOAD or PULL_FROM_URL."
            )
        return source_info

    def _plan(self, source_info: Mapping[str, Any]) -> tuple[int, int, int]:
        values = [source_info.get(k) for k in ("video_size", "chunk_size", "total_chunk_count")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise _RefusalError(
                "invalid_param", 400, "video_size, chunk_size and total_chunk_count are required."
            )
        size, chunk, count = (int(v) for v in values)  # type: ignore[arg-type]
        if size > MAX_VIDEO:
            raise _RefusalError("invalid_param", 400, "The video is larger than 4 GB.")
        if size < MIN_CHUNK:
            if chunk != size or count != 1:
                raise _RefusalError(
                    "invalid_param", 400, "A video under 5 MB is one chunk of its size."
                )
        elif (
            not MIN_CHUNK <= chunk <= MAX_CHUNK or count != size // chunk or not 1 <= count <= 1000
        ):
            raise _RefusalError("invalid_param", 400, "The chunk plan breaks the chunk rules.")
        elif size - (count - 1) * chunk > MAX_FINAL_CHUNK:
            raise _RefusalError("invalid_param", 400, "The final chunk would exceed 128 MB.")
        return size, chunk, count

    def _start_transfer(
        self, post: EmulatedPost, source_info: Mapping[str, Any]
    ) -> dict[str, object]:
        if source_info["source"] == "PULL_FROM_URL":
            self._verified(source_info.get("video_url"))
            return {"publish_id": post.publish_id}
        post.video_size, post.chunk_size, post.total_chunk_count = self._plan(source_info)
        post.upload_id = secrets.token_hex(8)
        post.upload_token = secrets.token_urlsafe(16)
        self._uploads[post.upload_id] = post.publish_id
        query = urlencode({"upload_id": post.upload_id, "upload_token": post.upload_token})
        return {
            "publish_id": post.publish_id,
            "upload_url": self.emulator.url_for(f"{UPLOAD_PATH}?{query}"),
        }

    async def _direct_init(self, request: web.Request) -> dict[str, object]:
        client_key, user = self._caller(request, "video.publish")
        body = await self._json(request)
        source_info = self._source(body)
        post_info = body.get("post_info")
        if not isinstance(post_info, dict):
            raise _RefusalError("privacy_level_option_mismatch", 403)
        refusal = self._posting_refusal(client_key, user.user_id, direct=True)
        if refusal is not None:
            raise _RefusalError(refusal, 403)
        privacy = self._check_direct(client_key, user.user_id, post_info)
        if source_info["source"] == "FILE_UPLOAD":
            self._plan(source_info)
        else:
            self._verified(source_info.get("video_url"))
        kind = "file" if source_info["source"] == "FILE_UPLOAD" else "url"
        post = self._new_post(
            client_key,
            user.user_id,
            direct=True,
            media="video",
            source=source_info["source"],
            prefix=f"v_pub_{kind}",
        )
        post.privacy_level = privacy
        post.title = str(post_info.get("title", ""))
        return self._start_transfer(post, source_info)

    def _pending_refusal(self, client_key: str, user_id: str) -> None:
        settings = self.creator(user_id)
        if settings.banned:
            raise _RefusalError("spam_risk_user_banned_from_posting", 403)
        pending = [
            p for p in self._recent(user_id, direct=False) if not p.user_posted and not p.cancelled
        ]
        if len(pending) >= self.pending_share_cap:
            raise _RefusalError("spam_risk_too_many_pending_share", 403)
        del client_key

    async def _inbox(self, request: web.Request) -> dict[str, object]:
        client_key, user = self._caller(request, "video.upload")
        body = await self._json(request)
        source_info = self._source(body)
        self._pending_refusal(client_key, user.user_id)
        if source_info["source"] == "FILE_UPLOAD":
            self._plan(source_info)
        else:
            self._verified(source_info.get("video_url"))
        kind = "file" if source_info["source"] == "FILE_UPLOAD" else "url"
        post = self._new_post(
            client_key,
            user.user_id,
            direct=False,
            media="video",
            source=source_info["source"],
            prefix=f"v_inbox_{kind}",
        )
        return self._start_transfer(post, source_info)

    async def _photos(self, request: web.Request) -> dict[str, object]:
        body = await self._json(request)
        mode = body.get("post_mode")
        if mode not in {"DIRECT_POST", "MEDIA_UPLOAD"}:
            self._caller(request, "video.upload", "video.publish")
            raise _RefusalError(
                "invalid_param", 400, "post_mode must be DIRECT_POST or MEDIA_UPLOAD."
            )
        direct = mode == "DIRECT_POST"
        client_key, user = self._caller(request, "video.publish" if direct else "video.upload")
        if body.get("media_type") != "PHOTO":
            raise _RefusalError("invalid_param", 400, "media_type must be PHOTO.")
        source_info = body.get("source_info")
        if not isinstance(source_info, dict) or source_info.get("source") != "PULL_FROM_URL":
            raise _RefusalError("invalid_param", 400, "Photos are pulled from URLs only.")
        images = source_info.get("photo_images")
        if not isinstance(images, list) or not 1 <= len(images) <= 35:
            raise _RefusalError("invalid_param", 400, "photo_images must list 1 to 35 URLs.")
        cover = source_info.get("photo_cover_index", 0)
        if not isinstance(cover, int) or not 0 <= cover < len(images):
            raise _RefusalError("invalid_param", 400, "photo_cover_index is out of range.")
        post_info = body.get("post_info")
        post_info = post_info if isinstance(post_info, dict) else {}
        settings = self.creator(user.user_id)
        if direct:
            refusal = self._posting_refusal(client_key, user.user_id, direct=True)
            if refusal is not None:
                raise _RefusalError(refusal, 403)
            privacy = self._check_direct(client_key, user.user_id, post_info)
        else:
            if settings.app_too_old:
                raise _RefusalError("app_version_check_failed", 400)
            self._pending_refusal(client_key, user.user_id)
            privacy = None
        for url in images:
            self._verified(url)
        post = self._new_post(
            client_key,
            user.user_id,
            direct=direct,
            media="photo",
            source="PULL_FROM_URL",
            prefix="p_pub_url" if direct else "p_inbox_url",
        )
        post.privacy_level = privacy
        return {"publish_id": post.publish_id}

    # -- status and cancel -----------------------------------------------------------------

    async def _own_post(self, request: web.Request) -> EmulatedPost:
        client_key, user = self._caller(request, "video.upload", "video.publish")
        body = await self._json(request)
        publish_id = body.get("publish_id")
        post = self.posts.get(publish_id) if isinstance(publish_id, str) else None
        if post is None:
            raise _RefusalError("invalid_publish_id", 400)
        if post.user_id != user.user_id or post.client_key != client_key:
            raise _RefusalError("token_not_authorized_for_specified_publish_id", 400)
        return post

    async def _fetch(self, request: web.Request) -> dict[str, object]:
        return self.status_of(await self._own_post(request))

    async def _do_cancel(self, request: web.Request) -> None:
        post = await self._own_post(request)
        now = self.emulator.clock()
        near_end = now >= post.created_at + 0.9 * self.download_seconds
        if post.source != "PULL_FROM_URL" or post.cancelled or near_end:
            raise _RefusalError("publish_not_cancellable", 400)
        post.cancelled = True

    # -- chunk transfer --------------------------------------------------------------------

    @staticmethod
    def _progress(post: EmulatedPost) -> dict[str, str]:
        if post.received == 0:
            return {}
        return {"Content-Range": f"bytes 0-{post.received - 1}/{post.video_size}"}

    def _check_put(
        self, request: web.Request, post: EmulatedPost
    ) -> web.Response | tuple[int, int, bool]:
        """The chunk's first and last byte and whether it is the final one, or the refusal."""
        if self.emulator.clock() > post.created_at + self.upload_url_ttl:
            return web.Response(status=403, text="The upload URL has expired.")
        match = _RANGE.fullmatch(request.headers.get("Content-Range", "").strip())
        length = request.content_length
        if (
            match is None
            or length is None
            or request.content_type not in VIDEO_TYPES
            or int(match.group(3)) != post.video_size
        ):
            text = "Malformed Content-Range, Content-Length or Content-Type."
            return web.Response(status=400, text=text)
        first, last = int(match.group(1)), int(match.group(2))
        if last < first or length != last - first + 1 or last >= post.video_size:
            return web.Response(status=400, text="Content-Length does not match Content-Range.")
        final = first // post.chunk_size >= post.total_chunk_count - 1
        expected_last = post.video_size - 1 if final else first + post.chunk_size - 1
        if first != post.received or first % post.chunk_size or last != expected_last:
            return web.Response(
                status=416,
                text="Content-Range does not match the upload progress.",
                headers=self._progress(post),
            )
        return first, last, final

    async def _put(self, request: web.Request) -> web.StreamResponse:
        publish_id = self._uploads.get(request.query.get("upload_id", ""))
        post = self.posts.get(publish_id or "")
        token = request.query.get("upload_token", "")
        if post is None or not hmac.compare_digest(token, post.upload_token):
            return web.Response(status=404, text="No such upload.")
        post.puts += 1
        checked = self._check_put(request, post)
        if isinstance(checked, web.Response):
            return checked
        first, last, final = checked
        received, head = await _drain(request, keep=_HEAD_BYTES if first == 0 else 0)
        if received != last - first + 1:
            return web.Response(status=400, text="The body does not match Content-Length.")
        fault = self._put_faults.popleft() if self._put_faults else None
        if fault == "503":
            return web.Response(status=503, text="Try again.")
        post.received = last + 1
        if first == 0:
            post.declared_duration = _mp4_duration(head)
        if final:
            post.transfer_done_at = self.emulator.clock()
        if fault == "reset" and request.transport is not None:
            request.transport.close()
            raise ConnectionResetError
        if fault == "503-after":
            return web.Response(status=503, text="Try again.")
        return web.Response(status=201 if final else 206, headers=self._progress(post))

    # -- publishing ------------------------------------------------------------------------

    def _publish(self, post: EmulatedPost, when: int) -> EmulatedVideo:
        if post.published_video is None:
            catalogue = self.catalogue(post.user_id)
            newest = catalogue[0].create_time if catalogue else 0
            video = EmulatedVideo(
                id=_video_id(random.Random(post.publish_id)),
                create_time=max(when, newest + 1),
                title=post.title[:150],
                description=post.title[:150],
                duration=15,
            )
            catalogue.insert(0, video)
            post.published_video = video
        return post.published_video


def _requested_fields(raw: str, granted: Sequence[str]) -> list[str]:
    """The ``fields`` asked for, once each; refused if unknown or beyond the granted scopes."""
    fields: list[str] = []
    for name in (part.strip() for part in raw.split(",")):
        if name and name not in fields:
            fields.append(name)
    unknown = [name for name in fields if name not in FIELD_SCOPES]
    missing = sorted({FIELD_SCOPES[name] for name in fields if name in FIELD_SCOPES})
    missing = [scope for scope in missing if scope not in granted]
    if not fields:
        raise _RefusalError("invalid_params", 400, "The fields parameter is required.")
    if unknown:
        raise _RefusalError("invalid_params", 400, f"Unknown fields: {', '.join(unknown)}.")
    if BASIC not in granted:
        message = f"The user did not authorize the scope required: {BASIC}."
        raise _RefusalError("scope_not_authorized", 401, message)
    if missing:
        message = (
            "The user did not authorize the scope required for completing this request: "
            f"{', '.join(missing)}."
        )
        raise _RefusalError("scope_not_authorized", 401, message)
    return fields


_WORDS: Final = (
    "sunset", "city", "cooking", "dance", "coffee", "rain", "cat", "beach", "street",
    "studio", "forest", "night", "market", "ride", "garden", "snow", "tutorial", "vlog",
)  # fmt: skip


def _video_id(rng: random.Random) -> str:
    return str(7_000_000_000_000_000_000 + rng.randrange(10**18))


def _seed_catalogue(user: EmulatedUser) -> list[EmulatedVideo]:
    """``video_count`` videos, newest first, whose likes add up to ``likes_count``."""
    count = max(0, user.video_count)
    rng = random.Random(hashlib.sha256(user.user_id.encode()).digest())
    weights = [rng.random() ** 2 + 0.01 for _ in range(count)]
    total = sum(weights) or 1.0
    likes = [int(user.likes_count * w / total) for w in weights]
    if likes:
        likes[0] += user.likes_count - sum(likes)
    when = 1_764_000_000
    videos: list[EmulatedVideo] = []
    for i in range(count):
        when -= rng.randrange(3_600, 4 * 86_400)
        topic = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"
        videos.append(
            EmulatedVideo(
                id=_video_id(rng),
                create_time=when,
                title=f"{topic.title()} #{i + 1}",
                description=f"A {topic} clip by @{user.username} #keyloom",
                duration=rng.randrange(5, 180),
                like_count=likes[i],
                comment_count=likes[i] // rng.randrange(8, 40),
                share_count=likes[i] // rng.randrange(20, 90),
                view_count=likes[i] * rng.randrange(6, 40) + rng.randrange(100),
            )
        )
    return videos


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """``(type, payload_start, box_end)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    found = []
    offset = start
    while offset + 8 <= end:
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if size < 8:
            break
        found.append((kind, offset + 8, min(offset + size, end)))
        offset += size
    return found


def _mp4_duration(head: bytes) -> float | None:
    """The ``moov/mvhd`` duration in seconds, if the file's first bytes hold it."""
    for kind, payload, end in _boxes(head, 0, len(head)):
        if kind != b"moov":
            continue
        for inner, start, _ in _boxes(head, payload, end):
            if inner != b"mvhd" or start + 32 > len(head):
                continue
            if head[start] == 1:
                scale = int.from_bytes(head[start + 20 : start + 24], "big")
                duration = int.from_bytes(head[start + 24 : start + 32], "big")
            else:
                scale = int.from_bytes(head[start + 12 : start + 16], "big")
                duration = int.from_bytes(head[start + 16 : start + 20], "big")
            return duration / scale if scale else None
    return None


async def _drain(request: web.Request, *, keep: int) -> tuple[int, bytes]:
    """Read the body without keeping it: its length, and its first *keep* bytes."""
    received = 0
    head = b""
    async for piece in request.content.iter_chunked(1 << 20):
        if len(head) < keep:
            head += piece[: keep - len(head)]
        received += len(piece)
    return received, head
