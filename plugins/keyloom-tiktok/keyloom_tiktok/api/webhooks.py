"""TikTok webhooks: the ``TikTok-Signature`` check and the ``post.publish.*`` events.

TikTok POSTs JSON to the app's callback URL and signs it::

    TikTok-Signature: t=<unix seconds>,s=<hex HMAC-SHA256(client_secret, t + "." + raw_body)>

Verify the signature on the **raw** body before parsing it, answer 200 quickly, and expect
the same event more than once (TikTok retries for up to 72 hours)::

    event = verify_webhook(await request.read(), request.headers.get("TikTok-Signature"),
                           client_secret=CLIENT_SECRET)
    if event.event == "post.publish.complete":
        ...
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from keyloom_core import KeyloomError

__all__ = [
    "POST_PUBLISH_EVENTS",
    "SIGNATURE_HEADER",
    "WebhookEvent",
    "WebhookSignatureError",
    "sign_webhook",
    "verify_webhook",
]

#: The header carrying the signature.
SIGNATURE_HEADER: Final = "TikTok-Signature"
#: The Content Posting events.
POST_PUBLISH_EVENTS: Final = frozenset(
    {
        "post.publish.failed",
        "post.publish.complete",
        "post.publish.inbox_delivered",
        "post.publish.publicly_available",
        "post.publish.no_longer_publicaly_available",
    }
)
_MAX_BODY: Final = 1 << 20


class WebhookSignatureError(KeyloomError):
    """The webhook's signature is missing, malformed, wrong or too old: answer 401 and drop it.

    Attributes:
        reason: ``missing``, ``malformed``, ``mismatch``, ``stale`` or ``body``.
    """

    code = "tiktok_webhook_signature"
    status = 401

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, provider_id="tiktok")
        self.reason = reason


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """A verified webhook.

    Attributes:
        event: e.g. ``"post.publish.complete"``.
        client_key: The app it was sent to.
        user_openid: The user concerned.
        create_time: When TikTok created it (Unix seconds).
        content: The decoded ``content`` (TikTok sends it as a JSON string).
    """

    event: str
    client_key: str
    user_openid: str
    create_time: int
    content: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def publish_id(self) -> str | None:
        """``content.publish_id`` of a ``post.publish.*`` event."""
        value = self.content.get("publish_id")
        return value if isinstance(value, str) else None

    @property
    def post_id(self) -> str | None:
        """``content.post_id`` (public posts), as a string."""
        value = self.content.get("post_id")
        return str(value) if isinstance(value, int | str) and value != "" else None

    @property
    def reason(self) -> str | None:
        """``content.reason`` of a failure (as text)."""
        value = self.content.get("reason")
        return None if value is None else str(value)


def sign_webhook(body: bytes, client_secret: str, *, timestamp: int | None = None) -> str:
    """The ``TikTok-Signature`` value TikTok would send for *body* (for tests and emulators)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(client_secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},s={mac.hexdigest()}"


def verify_webhook(
    body: bytes,
    signature: str | None,
    *,
    client_secret: str,
    tolerance: float | None = 300.0,
    clock: Callable[[], float] = time.time,
) -> WebhookEvent:
    """Check *signature* (the ``TikTok-Signature`` header) over the raw *body*, then parse it.

    :param tolerance: Refuse signatures older (or newer) than this many seconds, against
        replays; ``None`` accepts any age. TikTok does not document whether its
        retries (up to 72 h) are signed again with a new timestamp.
    :raises WebhookSignatureError: missing, malformed, mismatching or stale signature, or a
        body that is not a TikTok event.
    """
    if not signature:
        raise WebhookSignatureError("no TikTok-Signature header", reason="missing")
    parts: dict[str, str] = {}
    for item in signature.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key] = value
    t, s = parts.get("t", ""), parts.get("s", "")
    if not t.isdigit() or not s or len(s) > 128:
        raise WebhookSignatureError("malformed TikTok-Signature header", reason="malformed")
    expected = hmac.new(client_secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest().encode(), s.lower().encode("utf-8", "replace")):
        raise WebhookSignatureError("the webhook signature does not match", reason="mismatch")
    if tolerance is not None and abs(clock() - int(t)) > tolerance:
        raise WebhookSignatureError("the webhook signature is too old", reason="stale")
    return _parse(body)


def _parse(body: bytes) -> WebhookEvent:
    if len(body) > _MAX_BODY:
        raise WebhookSignatureError("the webhook body is too large", reason="body")
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise WebhookSignatureError("the webhook body is not JSON", reason="body") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
        raise WebhookSignatureError("the webhook body is not a TikTok event", reason="body")
    content: Any = raw.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content) if content else {}
        except (ValueError, RecursionError):
            content = {}
    create_time = raw.get("create_time")
    return WebhookEvent(
        event=raw["event"],
        client_key=str(raw.get("client_key") or ""),
        user_openid=str(raw.get("user_openid") or ""),
        create_time=create_time if isinstance(create_time, int) else 0,
        content=content if isinstance(content, dict) else {},
    )
