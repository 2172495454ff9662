"""Callback URLs must stay on the app's own origin (no open redirects)."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urljoin, urlsplit

from .errors import InvalidRedirectError

MAX_CALLBACK_URL = 2048
_URL_SAFE = "/?#[]@!$&'()*+,;=:%~"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters and backslashes


def _unsafe(text: str) -> bool:
    return _UNSAFE.search(text) is not None


# A path of plain characters, not starting "//" or "/\\": nothing to decode, nothing a
# browser could resolve elsewhere, nothing to quote. The common case ("/dashboard").
_PLAIN_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/._~!$&'()*+,;=:@?#-]*")


def safe_callback_url(value: str | None, base_url: str) -> str:
    """Return *value* as a same-origin path (with query and fragment), or raise.

    Accepts a path (``/dashboard?tab=1``) or an absolute URL on *base_url*'s origin.
    Refuses everything a browser could resolve to another origin, in any encoding:
    ``//evil``, ``/\\evil``, ``https://evil``, ``javascript:…``, percent-encoded or
    control-character variants.

    :raises InvalidRedirectError: the value would leave the app's origin.
    """
    if value is None or value == "":
        return "/"
    if len(value) > MAX_CALLBACK_URL:
        raise InvalidRedirectError("callback URL is too long")
    if _PLAIN_PATH.fullmatch(value):
        return value
    return _checked(value, base_url)


def _checked(value: str, base_url: str) -> str:
    """The full check of :func:`safe_callback_url`, for anything but a plain path."""
    decoded = value
    for _ in range(4):  # catch %2F%2F, %252F%252F, ...
        if _unsafe(decoded) or decoded.startswith("//"):
            raise InvalidRedirectError("callback URL must be a path on this site")
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    else:
        raise InvalidRedirectError("callback URL is encoded too many times")
    if not value.startswith("/"):
        parts = urlsplit(value)
        if parts.scheme.lower() not in {"http", "https"} or _origin(value) != _origin(base_url):
            raise InvalidRedirectError("callback URL must be a path on this site")
        value = parts.path or "/"
        value += f"?{parts.query}" if parts.query else ""
        value += f"#{parts.fragment}" if parts.fragment else ""
        if not value.startswith("/") or value.startswith("//"):
            raise InvalidRedirectError("callback URL must be a path on this site")
    if _origin(urljoin(base_url, value)) != _origin(base_url):  # belt and braces
        raise InvalidRedirectError("callback URL must be a path on this site")
    return quote(value, safe=_URL_SAFE)  # non-ASCII goes out percent-encoded, as in a Location
