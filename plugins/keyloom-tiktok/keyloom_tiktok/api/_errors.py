"""Typed errors of TikTok's Display and Content Posting APIs.

Every error TikTok documents has its own class, a subclass of Keyloom's
:class:`~keyloom_core.ProviderError` that keeps TikTok's ``error.code`` (as ``error``), its
``message`` (as ``description``), the ``log_id`` for TikTok's support and the HTTP status.
:func:`error_for` picks the class for a code; unknown codes get :class:`TikTokAPIError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from keyloom_core import KeyloomError, ProviderError, ProviderTimeoutError, RateLimitedError

__all__ = [
    "ERROR_CLASSES",
    "AccessTokenInvalidError",
    "ActiveUserCapError",
    "AppVersionCheckFailedError",
    "CreatorOptionsError",
    "InternalServerError",
    "InvalidFileUploadError",
    "InvalidParamsError",
    "InvalidPublishIdError",
    "PostFailedError",
    "PostTimeoutError",
    "PostingBlockedError",
    "PrivacyLevelOptionMismatchError",
    "PublishIdNotAuthorizedError",
    "PublishNotCancellableError",
    "ScopeNotAuthorizedError",
    "TikTokAPIError",
    "TikTokRateLimitedError",
    "TooManyPendingSharesError",
    "TooManyPostsError",
    "UnauditedClientError",
    "UploadError",
    "UploadNotFoundError",
    "UploadRangeError",
    "UploadRejectedError",
    "UploadURLExpiredError",
    "UrlOwnershipUnverifiedError",
    "UserBannedFromPostingError",
    "error_for",
]

_PROVIDER: Final = "tiktok"


class TikTokAPIError(ProviderError):
    """TikTok answered an API call with an error (any ``error.code`` other than ``ok``).

    Attributes:
        error: TikTok's ``error.code``, e.g. ``"invalid_params"``.
        description: TikTok's ``error.message``.
        log_id: TikTok's ``error.log_id``; quote it to TikTok's support.
        http_status: The HTTP status of the answer (TikTok sends some errors with 200).
    """

    code = "tiktok_api_error"
    #: The TikTok error codes this class stands for.
    tiktok_codes: tuple[str, ...] = ()


class AccessTokenInvalidError(TikTokAPIError):
    """``access_token_invalid``: the token was refused, even after one refresh."""

    code = "tiktok_access_token_invalid"
    status = 401
    tiktok_codes = ("access_token_invalid",)


class ScopeNotAuthorizedError(TikTokAPIError):
    """``scope_not_authorized`` / ``scope_permission_missed``: TikTok says a scope is missing.

    The client checks scopes before calling, so this means TikTok's view of the grant
    differs from the stored one (the user removed a permission in the app): sign in again.
    """

    code = "tiktok_scope_not_authorized"
    status = 403
    tiktok_codes = ("scope_not_authorized", "scope_permission_missed")


class InvalidParamsError(TikTokAPIError):
    """``invalid_params`` / ``invalid_param``: TikTok refused the request's parameters."""

    code = "tiktok_invalid_params"
    status = 400
    tiktok_codes = ("invalid_params", "invalid_param")


class InvalidFileUploadError(TikTokAPIError):
    """``invalid_file_upload``: the file or its chunk plan does not meet TikTok's rules."""

    code = "tiktok_invalid_file_upload"
    status = 400
    tiktok_codes = ("invalid_file_upload",)


class InternalServerError(TikTokAPIError):
    """``internal_error`` (or a 5xx without a code): TikTok failed; safe calls were retried."""

    code = "tiktok_internal_error"
    status = 502
    tiktok_codes = ("internal_error",)


class TikTokRateLimitedError(RateLimitedError, TikTokAPIError):
    """``rate_limit_exceeded``: over TikTok's per-endpoint limit (see ``retry_after``)."""

    code = "tiktok_rate_limited"
    status = 429
    tiktok_codes = ("rate_limit_exceeded",)


class PostingBlockedError(TikTokAPIError):
    """TikTok will not take a post from this creator or app now; show the reason to the user."""

    code = "tiktok_posting_blocked"
    status = 403


class TooManyPostsError(PostingBlockedError):
    """``spam_risk_too_many_posts``: the creator reached the daily post cap."""

    code = "tiktok_too_many_posts"
    tiktok_codes = ("spam_risk_too_many_posts",)


class UserBannedFromPostingError(PostingBlockedError):
    """``spam_risk_user_banned_from_posting``: the creator may not post."""

    code = "tiktok_user_banned_from_posting"
    tiktok_codes = ("spam_risk_user_banned_from_posting",)


class TooManyPendingSharesError(PostingBlockedError):
    """``spam_risk_too_many_pending_share``: five drafts already wait in the inbox (24 h)."""

    code = "tiktok_too_many_pending_shares"
    tiktok_codes = ("spam_risk_too_many_pending_share",)


class ActiveUserCapError(PostingBlockedError):
    """``reached_active_user_cap``: the app reached its daily number of posting creators."""

    code = "tiktok_active_user_cap"
    tiktok_codes = ("reached_active_user_cap",)


class UnauditedClientError(PostingBlockedError):
    """``unaudited_client_can_only_post_to_private_accounts``: pass TikTok's audit first."""

    code = "tiktok_unaudited_client"
    tiktok_codes = ("unaudited_client_can_only_post_to_private_accounts",)


class UrlOwnershipUnverifiedError(PostingBlockedError):
    """``url_ownership_unverified``: verify the media URL's domain or prefix with TikTok."""

    code = "tiktok_url_ownership_unverified"
    tiktok_codes = ("url_ownership_unverified",)


class PrivacyLevelOptionMismatchError(PostingBlockedError):
    """``privacy_level_option_mismatch``: the privacy level is not one the creator offers."""

    code = "tiktok_privacy_level_option_mismatch"
    tiktok_codes = ("privacy_level_option_mismatch",)


class AppVersionCheckFailedError(TikTokAPIError):
    """``app_version_check_failed``: the creator's TikTok app is too old for this post."""

    code = "tiktok_app_version_check_failed"
    status = 400
    tiktok_codes = ("app_version_check_failed",)


class InvalidPublishIdError(TikTokAPIError):
    """``invalid_publish_id``: no such post."""

    code = "tiktok_invalid_publish_id"
    status = 404
    tiktok_codes = ("invalid_publish_id",)


class PublishIdNotAuthorizedError(TikTokAPIError):
    """``token_not_authorized_for_specified_publish_id``: another account's post."""

    code = "tiktok_publish_id_not_authorized"
    status = 403
    tiktok_codes = ("token_not_authorized_for_specified_publish_id",)


class PublishNotCancellableError(TikTokAPIError):
    """``publish_not_cancellable``: the post is too far along to cancel."""

    code = "tiktok_publish_not_cancellable"
    status = 409
    tiktok_codes = ("publish_not_cancellable",)


class UploadError(TikTokAPIError):
    """A chunk ``PUT`` to the upload URL failed.

    Attributes:
        uploaded: Bytes TikTok acknowledged before the failure.
    """

    code = "tiktok_upload_failed"
    uploaded: int = 0


class UploadRejectedError(UploadError):
    """HTTP 400 on a chunk: malformed headers or a length that does not match the body."""

    code = "tiktok_upload_rejected"
    status = 400


class UploadURLExpiredError(UploadError):
    """HTTP 403 on a chunk: the upload URL expired (it lives one hour); start a new post."""

    code = "tiktok_upload_url_expired"
    status = 410


class UploadNotFoundError(UploadError):
    """HTTP 404 on a chunk: TikTok knows no such upload."""

    code = "tiktok_upload_not_found"
    status = 404


class UploadRangeError(UploadError):
    """HTTP 416 on a chunk: its ``Content-Range`` does not follow TikTok's progress."""

    code = "tiktok_upload_out_of_order"
    status = 409


class PostFailedError(TikTokAPIError):
    """The post ended ``FAILED``; ``fail_reason`` says why (TikTok's value).

    Attributes:
        fail_reason: e.g. ``"duration_check_failed"``, ``"publish_cancelled"``.
        publish_id: The post.
    """

    code = "tiktok_post_failed"
    status = 422

    def __init__(self, publish_id: str, fail_reason: str) -> None:
        super().__init__(
            f"the post failed: {fail_reason or 'no reason given'}",
            provider_id=_PROVIDER,
            error=fail_reason or None,
        )
        self.fail_reason = fail_reason
        self.publish_id = publish_id

    @property
    def retryable(self) -> bool:
        """Whether TikTok says a new post may succeed (``internal``, a failed pull).

        A failed pull (``video_pull_failed``, ``photo_pull_failed``) is worth retrying only
        if the URL is valid.
        """
        return self.fail_reason in {"internal", "video_pull_failed", "photo_pull_failed"}


class PostTimeoutError(ProviderTimeoutError):
    """The post did not reach a final status before the deadline (it may still finish).

    Attributes:
        publish_id: The post.
        last_status: The last status seen.
    """

    code = "tiktok_post_timeout"

    def __init__(self, publish_id: str, last_status: str | None) -> None:
        super().__init__(
            f"the post is still {last_status or 'unknown'} at the deadline",
            provider_id=_PROVIDER,
        )
        self.publish_id = publish_id
        self.last_status = last_status


class CreatorOptionsError(KeyloomError, ValueError):
    """A post breaks the creator's options (``creator_info``); raised before any upload.

    Attributes:
        field: The offending setting: ``privacy_level``, ``duration``, ``disable_duet``…
        allowed: What the creator allows, for the UI to offer.
    """

    code = "tiktok_creator_options"
    status = 400

    def __init__(self, message: str, *, field: str, allowed: Iterable[str] = ()) -> None:
        super().__init__(message, provider_id=_PROVIDER)
        self.field = field
        self.allowed = tuple(allowed)


_CLASSES: Final[tuple[type[TikTokAPIError], ...]] = (
    AccessTokenInvalidError,
    ScopeNotAuthorizedError,
    InvalidParamsError,
    InvalidFileUploadError,
    InternalServerError,
    TikTokRateLimitedError,
    TooManyPostsError,
    UserBannedFromPostingError,
    TooManyPendingSharesError,
    ActiveUserCapError,
    UnauditedClientError,
    UrlOwnershipUnverifiedError,
    PrivacyLevelOptionMismatchError,
    AppVersionCheckFailedError,
    InvalidPublishIdError,
    PublishIdNotAuthorizedError,
    PublishNotCancellableError,
)
#: TikTok's documented error codes and the class each becomes.
ERROR_CLASSES: Final[Mapping[str, type[TikTokAPIError]]] = {
    tiktok_code: cls for cls in _CLASSES for tiktok_code in cls.tiktok_codes
}


def error_for(
    tiktok_code: str,
    message: str,
    *,
    log_id: str | None,
    http_status: int | None,
    endpoint: str,
    retry_after: float | None = None,
) -> TikTokAPIError:
    """The typed error for TikTok's *tiktok_code* (never quoting tokens or bodies)."""
    cls = ERROR_CLASSES.get(tiktok_code, TikTokAPIError)
    if cls is TikTokAPIError and http_status is not None and http_status >= 500:
        cls = InternalServerError
    text = f"TikTok refused {endpoint} (HTTP {http_status})"
    if cls is TikTokRateLimitedError:
        return TikTokRateLimitedError(
            text,
            retry_after=retry_after,
            provider_id=_PROVIDER,
            error=tiktok_code,
            log_id=log_id,
            http_status=http_status,
        )
    return cls(
        text,
        provider_id=_PROVIDER,
        error=tiktok_code[:64],
        description=message[:300] or None,
        log_id=log_id,
        http_status=http_status,
    )
