"""Typed values of TikTok's Display and Content Posting APIs, parsed from TikTok's JSON."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import parse_qs, urlsplit

import attrs

from .. import FIELDS_BY_SCOPE

__all__ = [
    "FINAL_STATUSES",
    "USER_FIELDS_BY_SCOPE",
    "VIDEO_FIELDS",
    "CreatorInfo",
    "PostStatus",
    "PrivacyLevel",
    "PublishStatus",
    "PublishedPost",
    "UserInfo",
    "Video",
]

#: ``privacy_level`` values TikTok knows.
PrivacyLevel: TypeAlias = Literal[
    "PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"
]

#: The user-info fields each scope unlocks (``/v2/user/info/``): the plugin's own table.
USER_FIELDS_BY_SCOPE: Final[Mapping[str, tuple[str, ...]]] = FIELDS_BY_SCOPE

#: Every Video Object field the client asks ``video.list`` / ``video.query`` for.
VIDEO_FIELDS: Final = (
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
)


def _str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return value if isinstance(value, str) else None


def _int(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _bool(raw: Mapping[str, Any], name: str) -> bool | None:
    value = raw.get(name)
    return value if isinstance(value, bool) else None


@attrs.frozen(kw_only=True)
class UserInfo:
    """A TikTok user as ``/v2/user/info/`` describes them; fields not granted are ``None``.

    Attributes:
        open_id: The user's id for this app.
        union_id: The user's id across the developer's apps.
        display_name: The display name.
        avatar_url: Avatar image URL (also ``avatar_url_100``, ``avatar_large_url``).
        avatar_url_100: 100 px avatar.
        avatar_large_url: Large avatar.
        username: The handle (``user.info.profile``).
        bio_description: The bio (``user.info.profile``).
        profile_deep_link: Link to the profile (``user.info.profile``).
        is_verified: The verification badge (``user.info.profile``).
        follower_count: Followers (``user.info.stats``).
        following_count: Accounts followed (``user.info.stats``).
        likes_count: Likes received across all videos (``user.info.stats``).
        video_count: Public videos (``user.info.stats``).
        raw: The user object as TikTok sent it.
    """

    open_id: str | None = None
    union_id: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    avatar_url_100: str | None = None
    avatar_large_url: str | None = None
    username: str | None = None
    bio_description: str | None = None
    profile_deep_link: str | None = None
    is_verified: bool | None = None
    follower_count: int | None = None
    following_count: int | None = None
    likes_count: int | None = None
    video_count: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def has_stats(self) -> bool:
        """Whether the stats fields were granted (``user.info.stats``) and returned."""
        return self.follower_count is not None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> UserInfo:
        """Parse TikTok's ``data.user`` object; unknown or mistyped fields are left out."""
        return cls(
            open_id=_str(raw, "open_id"),
            union_id=_str(raw, "union_id"),
            display_name=_str(raw, "display_name"),
            avatar_url=_str(raw, "avatar_url"),
            avatar_url_100=_str(raw, "avatar_url_100"),
            avatar_large_url=_str(raw, "avatar_large_url"),
            username=_str(raw, "username"),
            bio_description=_str(raw, "bio_description"),
            profile_deep_link=_str(raw, "profile_deep_link"),
            is_verified=_bool(raw, "is_verified"),
            follower_count=_int(raw, "follower_count"),
            following_count=_int(raw, "following_count"),
            likes_count=_int(raw, "likes_count"),
            video_count=_int(raw, "video_count"),
            raw=dict(raw),
        )


@attrs.frozen(kw_only=True)
class Video:
    """A public video (TikTok's Video Object); fields not asked for are ``None``.

    Attributes:
        id: The video id (a numeric string: keep it a string).
        create_time: Posting time, Unix seconds.
        title: The title.
        video_description: The description.
        duration: Seconds.
        width: Pixels.
        height: Pixels.
        cover_image_url: Signed cover URL; it expires (see :attr:`cover_expires_at`).
        share_url: The public link.
        embed_html: HTML to embed the video.
        embed_link: The embed player's URL.
        like_count: Likes.
        comment_count: Comments.
        share_count: Shares.
        view_count: Views.
        raw: The object as TikTok sent it.
    """

    id: str
    create_time: int | None = None
    title: str | None = None
    video_description: str | None = None
    duration: int | None = None
    width: int | None = None
    height: int | None = None
    cover_image_url: str | None = None
    share_url: str | None = None
    embed_html: str | None = None
    embed_link: str | None = None
    like_count: int | None = None
    comment_count: int | None = None
    share_count: int | None = None
    view_count: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def cover_expires_at(self) -> float | None:
        """When :attr:`cover_image_url` stops working (its ``x-expires``), if it says.

        Covers live six hours: refresh them with ``TikTokAPI.query_videos``.
        """
        if not self.cover_image_url:
            return None
        values = parse_qs(urlsplit(self.cover_image_url).query).get("x-expires")
        if not values or not values[0].isdigit():
            return None
        return float(values[0])

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Video | None:
        """Parse one Video Object; ``None`` when it has no usable id."""
        video_id = raw.get("id")
        if isinstance(video_id, int) and not isinstance(video_id, bool):
            video_id = str(video_id)
        if not isinstance(video_id, str) or not video_id:
            return None
        return cls(
            id=video_id,
            create_time=_int(raw, "create_time"),
            title=_str(raw, "title"),
            video_description=_str(raw, "video_description"),
            duration=_int(raw, "duration"),
            width=_int(raw, "width"),
            height=_int(raw, "height"),
            cover_image_url=_str(raw, "cover_image_url"),
            share_url=_str(raw, "share_url"),
            embed_html=_str(raw, "embed_html"),
            embed_link=_str(raw, "embed_link"),
            like_count=_int(raw, "like_count"),
            comment_count=_int(raw, "comment_count"),
            share_count=_int(raw, "share_count"),
            view_count=_int(raw, "view_count"),
            raw=dict(raw),
        )


@attrs.frozen(kw_only=True)
class CreatorInfo:
    """What the creator may post now (``creator_info/query``); ask before every post.

    Attributes:
        avatar_url: The creator's avatar (valid two hours).
        username: The handle.
        nickname: The name to show in the posting UI.
        privacy_level_options: The privacy levels the user must choose from (no default).
        comment_disabled: Comments cannot be turned on.
        duet_disabled: Duets cannot be turned on.
        stitch_disabled: Stitches cannot be turned on.
        max_video_post_duration_sec: The longest video the creator may post.
    """

    avatar_url: str | None
    username: str | None
    nickname: str | None
    privacy_level_options: tuple[str, ...]
    comment_disabled: bool
    duet_disabled: bool
    stitch_disabled: bool
    max_video_post_duration_sec: int | None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CreatorInfo:
        """Parse ``data`` of ``creator_info/query``."""
        options = raw.get("privacy_level_options")
        return cls(
            avatar_url=_str(raw, "creator_avatar_url"),
            username=_str(raw, "creator_username"),
            nickname=_str(raw, "creator_nickname"),
            privacy_level_options=tuple(
                o for o in (options if isinstance(options, list) else []) if isinstance(o, str)
            ),
            comment_disabled=bool(raw.get("comment_disabled")),
            duet_disabled=bool(raw.get("duet_disabled")),
            stitch_disabled=bool(raw.get("stitch_disabled")),
            max_video_post_duration_sec=_int(raw, "max_video_post_duration_sec"),
        )


class PublishStatus(enum.StrEnum):
    """The stages of a post (``status/fetch``)."""

    PROCESSING_UPLOAD = "PROCESSING_UPLOAD"
    PROCESSING_DOWNLOAD = "PROCESSING_DOWNLOAD"
    SEND_TO_USER_INBOX = "SEND_TO_USER_INBOX"
    PUBLISH_COMPLETE = "PUBLISH_COMPLETE"
    FAILED = "FAILED"


#: Statuses after which nothing more happens on the app's side.
FINAL_STATUSES: Final = frozenset(
    {PublishStatus.SEND_TO_USER_INBOX, PublishStatus.PUBLISH_COMPLETE, PublishStatus.FAILED}
)


@attrs.frozen(kw_only=True)
class PostStatus:
    """One answer of ``status/fetch``.

    Attributes:
        publish_id: The post.
        status: The stage (a :class:`PublishStatus`, or TikTok's text if unknown).
        fail_reason: Why it failed, when ``FAILED``.
        post_ids: Public post ids (only once public and moderated), as strings.
        uploaded_bytes: Bytes received (``FILE_UPLOAD``).
        downloaded_bytes: Bytes fetched (``PULL_FROM_URL``).
    """

    publish_id: str
    status: str
    fail_reason: str | None = None
    post_ids: tuple[str, ...] = ()
    uploaded_bytes: int | None = None
    downloaded_bytes: int | None = None

    @property
    def final(self) -> bool:
        """Whether the post reached a final stage for the app (inbox, published, failed)."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, publish_id: str, raw: Mapping[str, Any]) -> PostStatus:
        """Parse ``data`` of ``status/fetch`` (TikTok spells ``publicaly_available_post_id``)."""
        ids = raw.get("publicaly_available_post_id")
        return cls(
            publish_id=publish_id,
            status=_str(raw, "status") or "",
            fail_reason=_str(raw, "fail_reason") or None,
            post_ids=tuple(
                str(i)
                for i in (ids if isinstance(ids, list) else [])
                if isinstance(i, int | str) and not isinstance(i, bool)
            ),
            uploaded_bytes=_int(raw, "uploaded_bytes"),
            downloaded_bytes=_int(raw, "downloaded_bytes"),
        )

    def changed_from(self, other: PostStatus | None) -> bool:
        """Whether this answer says something new compared with *other*."""
        return other is None or (
            self.status,
            self.fail_reason,
            self.post_ids,
            self.uploaded_bytes,
            self.downloaded_bytes,
        ) != (
            other.status,
            other.fail_reason,
            other.post_ids,
            other.uploaded_bytes,
            other.downloaded_bytes,
        )


@attrs.frozen(kw_only=True)
class PublishedPost:
    """A post TikTok accepted (``…/init/``): follow it with ``TikTokAPI.statuses`` or ``wait``.

    Attributes:
        publish_id: TikTok's id of the post (at most 64 characters).
        upload_url: Where the file goes (``FILE_UPLOAD`` only; valid one hour).
        direct: A Direct Post (``video.publish``) rather than an inbox draft.
        uploaded_bytes: Bytes sent (``FILE_UPLOAD``), once the upload finished.
    """

    publish_id: str
    upload_url: str | None = attrs.field(default=None, repr=False)
    direct: bool = False
    uploaded_bytes: int = 0
