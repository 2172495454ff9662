"""PKCE (RFC 7636) helpers: pure functions on the standard library."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Literal

__all__ = ["CODE_VERIFIER_PATTERN", "new_code_verifier", "s256_challenge"]

#: RFC 7636 §4.1: 43 to 128 characters of ``[A-Z] [a-z] [0-9] - . _ ~``.
CODE_VERIFIER_PATTERN = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def new_code_verifier() -> str:
    """Return a fresh 64-character code verifier with 384 bits of randomness."""
    return secrets.token_urlsafe(48)


def s256_challenge(verifier: str, encoding: Literal["base64url", "hex"] = "base64url") -> str:
    """Return the S256 code challenge of *verifier*.

    :param encoding: ``"base64url"`` (RFC 7636, unpadded) or ``"hex"`` (lowercase hex of the
        SHA-256 digest, which TikTok's documentation and SDK use).
    :raises ValueError: if *verifier* is not a valid RFC 7636 code verifier.
    """
    if not CODE_VERIFIER_PATTERN.fullmatch(verifier):
        msg = "code verifier must be 43-128 characters of [A-Za-z0-9-._~]"
        raise ValueError(msg)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    if encoding == "hex":
        return digest.hex()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
