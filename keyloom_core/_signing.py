"""Compact HMAC-signed tokens (state, sessions, CSRF), with secret rotation."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

MIN_SECRET_LENGTH = 32

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def _b64(data: bytes) -> str:
    """Unpadded base64url (what ``base64.urlsafe_b64encode`` does, minus two layers)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url; :class:`ValueError` if it is not."""
    padded = (text + "=" * (-len(text) % 4)).encode("ascii")
    return binascii.a2b_base64(padded.translate(_FROM_URLSAFE))


class BadSignatureError(ValueError):
    """The value was not signed by any of our secrets, or is malformed."""


class ExpiredError(ValueError):
    """The value was signed by us but has expired."""


class Signer:
    """Signs JSON payloads for one purpose; verifies with the current and any old secrets.

    Each purpose (``"state"``, ``"session"``…) derives its own key, so a value signed for
    one purpose is never accepted for another.
    """

    __slots__ = ("_keys", "_purpose")

    def __init__(self, secrets: Sequence[str], purpose: str) -> None:
        self._purpose = purpose
        self._keys = [
            hmac.new(s.encode(), b"keyloom/" + purpose.encode(), hashlib.sha256).digest()
            for s in secrets
        ]

    def __repr__(self) -> str:
        return f"Signer(purpose={self._purpose!r})"

    def sign(self, payload: dict[str, Any], *, ttl: float, now: float | None = None) -> str:
        """Return ``body.signature`` for *payload*, valid for *ttl* seconds."""
        now = time.time() if now is None else now
        body = _b64(_encode_json({**payload, "exp": int(now + ttl)}).encode())
        mac = hmac.digest(self._keys[0], body.encode("ascii"), "sha256")
        return f"{body}.{_b64(mac)}"

    def unsign(self, token: str, *, now: float | None = None) -> dict[str, Any]:
        """Return the payload of *token*.

        :raises BadSignatureError: forged, tampered or malformed.
        :raises ExpiredError: genuine but past its expiry.
        """
        body, sep, mac_text = token.partition(".")
        if not sep or not body or not mac_text or len(token) > 8192:
            raise BadSignatureError("malformed")
        try:
            mac = _unb64(mac_text)
        except ValueError as exc:
            raise BadSignatureError("malformed") from exc
        raw = body.encode("ascii", "replace")
        for key in self._keys:
            if hmac.compare_digest(mac, hmac.digest(key, raw, "sha256")):
                break
        else:
            raise BadSignatureError("signature")
        try:
            data = json.loads(_unb64(body).decode())
        except ValueError as exc:  # pragma: no cover - we signed it ourselves
            raise BadSignatureError("malformed") from exc
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            raise BadSignatureError("malformed")
        if data["exp"] <= (time.time() if now is None else now):
            raise ExpiredError("expired")
        return data
