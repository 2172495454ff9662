"""Compact HMAC-signed tokens (state, sessions, CSRF), with secret rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from typing import Any

MIN_SECRET_LENGTH = 32
MAX_TOKEN_LENGTH = 8192
_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # built once, not per call


def b64encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64decode(text: str) -> bytes:
    """Decode unpadded base64url strictly: one value has exactly one accepted spelling.

    Padding, characters outside the alphabet, an impossible length and non-zero unused
    bits in the last character are refused, so a signed value cannot be altered (``!!``
    or ``==`` appended) and still verify: deny lists and caches keyed on it stay sound.

    :raises ValueError: *text* is not canonical unpadded base64url.
    """
    tail = len(text) % 4
    if tail == 1 or not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    # the last character of 2 (3) leftover characters carries 4 (2) unused bits
    if tail and _ALPHABET.index(text[-1]) % (16 if tail == 2 else 4):
        raise ValueError("not canonical base64url")
    return base64.urlsafe_b64decode(text + "=" * (4 - tail if tail else 0))


class BadSignatureError(ValueError):
    """The value was not signed by any of our secrets, or is malformed."""


class ExpiredError(ValueError):
    """The value was signed by us but has expired."""


def derive_key(secret: str, purpose: str) -> bytes:
    """The HMAC key of *purpose* derived from *secret* (one key per purpose)."""
    return hmac.new(secret.encode(), b"keyloom/" + purpose.encode(), hashlib.sha256).digest()


class Signer:
    """Signs JSON payloads for one purpose; verifies with the current and any old secrets.

    Each purpose (``"state"``, ``"session"``…) derives its own key, so a value signed for
    one purpose is never accepted for another.
    """

    __slots__ = ("_keys", "_purpose")

    def __init__(self, secrets: Sequence[str], purpose: str) -> None:
        self._purpose = purpose
        self._keys = [derive_key(s, purpose) for s in secrets]

    def __repr__(self) -> str:
        return f"Signer(purpose={self._purpose!r})"

    def sign(self, payload: dict[str, Any], *, ttl: float, now: float | None = None) -> str:
        """Return ``body.signature`` for *payload*, valid for *ttl* seconds."""
        now = time.time() if now is None else now
        data = _compact_json({**payload, "exp": int(now + ttl)})
        body = b64encode(data.encode())
        mac = hmac.digest(self._keys[0], body.encode("ascii"), "sha256")
        return f"{body}.{b64encode(mac)}"

    def unsign(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """Return the payload of *token*.

        :raises BadSignatureError: forged, tampered, malformed or not canonically encoded.
        :raises ExpiredError: genuine but past its expiry.
        """
        body, sep, mac_text = token.partition(".")
        if not sep or not body or not mac_text or len(token) > MAX_TOKEN_LENGTH:
            raise BadSignatureError("malformed")
        try:
            mac = b64decode(mac_text)
            raw = body.encode("ascii")
        except ValueError as exc:  # UnicodeEncodeError included
            raise BadSignatureError("malformed") from exc
        if not any(hmac.compare_digest(mac, hmac.digest(k, raw, "sha256")) for k in self._keys):
            raise BadSignatureError("signature")
        try:
            data = json.loads(b64decode(body))
        except ValueError as exc:  # signed by us, so only a body we never wrote gets here
            raise BadSignatureError("malformed") from exc
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            raise BadSignatureError("malformed")
        if data["exp"] <= (time.time() if now is None else now):
            raise ExpiredError("expired")
        return data
