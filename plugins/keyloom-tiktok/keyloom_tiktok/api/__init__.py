"""After sign-in: TikTok's Display API and Content Posting API on Keyloom's tokens.

::

    from keyloom_tiktok.api import DirectPost, TikTokAPI

    api = TikTokAPI.for_account(keyloom, manager, open_id)
    me = await api.user_info()                       # stats too, with user.info.stats
    async for video in api.videos(limit=100):        # video.list, page by page
        ...
    post = await api.upload_video("clip.mp4")        # inbox draft (video.upload)
    status = await api.wait(post.publish_id)
"""

from ._client import API_ORIGIN as API_ORIGIN
from ._client import DirectPhotoPost as DirectPhotoPost
from ._client import DirectPost as DirectPost
from ._client import TikTokAPI as TikTokAPI
from ._client import VideoPage as VideoPage
from ._errors import ERROR_CLASSES as ERROR_CLASSES
from ._errors import AccessTokenInvalidError as AccessTokenInvalidError
from ._errors import ActiveUserCapError as ActiveUserCapError
from ._errors import AppVersionCheckFailedError as AppVersionCheckFailedError
from ._errors import CreatorOptionsError as CreatorOptionsError
from ._errors import InternalServerError as InternalServerError
from ._errors import InvalidFileUploadError as InvalidFileUploadError
from ._errors import InvalidParamsError as InvalidParamsError
from ._errors import InvalidPublishIdError as InvalidPublishIdError
from ._errors import PostFailedError as PostFailedError
from ._errors import PostingBlockedError as PostingBlockedError
from ._errors import PostTimeoutError as PostTimeoutError
from ._errors import PrivacyLevelOptionMismatchError as PrivacyLevelOptionMismatchError
from ._errors import PublishIdNotAuthorizedError as PublishIdNotAuthorizedError
from ._errors import PublishNotCancellableError as PublishNotCancellableError
from ._errors import ScopeNotAuthorizedError as ScopeNotAuthorizedError
from ._errors import TikTokAPIError as TikTokAPIError
from ._errors import TikTokRateLimitedError as TikTokRateLimitedError
from ._errors import TooManyPendingSharesError as TooManyPendingSharesError
from ._errors import TooManyPostsError as TooManyPostsError
from ._errors import UnauditedClientError as UnauditedClientError
from ._errors import UploadError as UploadError
from ._errors import UploadNotFoundError as UploadNotFoundError
from ._errors import UploadRangeError as UploadRangeError
from ._errors import UploadRejectedError as UploadRejectedError
from ._errors import UploadURLExpiredError as UploadURLExpiredError
from ._errors import UrlOwnershipUnverifiedError as UrlOwnershipUnverifiedError
from ._errors import UserBannedFromPostingError as UserBannedFromPostingError
from ._errors import error_for as error_for
from ._limits import DEFAULT_LIMITS as DEFAULT_LIMITS
from ._limits import RateLimits as RateLimits
from ._models import FINAL_STATUSES as FINAL_STATUSES
from ._models import USER_FIELDS_BY_SCOPE as USER_FIELDS_BY_SCOPE
from ._models import VIDEO_FIELDS as VIDEO_FIELDS
from ._models import CreatorInfo as CreatorInfo
from ._models import PostStatus as PostStatus
from ._models import PrivacyLevel as PrivacyLevel
from ._models import PublishedPost as PublishedPost
from ._models import PublishStatus as PublishStatus
from ._models import UserInfo as UserInfo
from ._models import Video as Video
from ._upload import DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE
from ._upload import MAX_CHUNK_SIZE as MAX_CHUNK_SIZE
from ._upload import MIN_CHUNK_SIZE as MIN_CHUNK_SIZE
from ._upload import ChunkPlan as ChunkPlan
from ._upload import Progress as Progress
from ._upload import content_type_for as content_type_for
from ._upload import mp4_duration as mp4_duration
from .webhooks import POST_PUBLISH_EVENTS as POST_PUBLISH_EVENTS
from .webhooks import SIGNATURE_HEADER as SIGNATURE_HEADER
from .webhooks import WebhookEvent as WebhookEvent
from .webhooks import WebhookSignatureError as WebhookSignatureError
from .webhooks import sign_webhook as sign_webhook
from .webhooks import verify_webhook as verify_webhook

__all__ = [
    "API_ORIGIN",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LIMITS",
    "ERROR_CLASSES",
    "FINAL_STATUSES",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "POST_PUBLISH_EVENTS",
    "SIGNATURE_HEADER",
    "USER_FIELDS_BY_SCOPE",
    "VIDEO_FIELDS",
    "AccessTokenInvalidError",
    "ActiveUserCapError",
    "AppVersionCheckFailedError",
    "ChunkPlan",
    "CreatorInfo",
    "CreatorOptionsError",
    "DirectPhotoPost",
    "DirectPost",
    "InternalServerError",
    "InvalidFileUploadError",
    "InvalidParamsError",
    "InvalidPublishIdError",
    "PostFailedError",
    "PostStatus",
    "PostTimeoutError",
    "PostingBlockedError",
    "PrivacyLevel",
    "PrivacyLevelOptionMismatchError",
    "Progress",
    "PublishIdNotAuthorizedError",
    "PublishNotCancellableError",
    "PublishStatus",
    "PublishedPost",
    "RateLimits",
    "ScopeNotAuthorizedError",
    "TikTokAPI",
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
    "UserInfo",
    "Video",
    "VideoPage",
    "WebhookEvent",
    "WebhookSignatureError",
    "content_type_for",
    "error_for",
    "mp4_duration",
    "sign_webhook",
    "verify_webhook",
]
