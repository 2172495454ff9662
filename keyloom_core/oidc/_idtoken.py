"""ID-token validation (OpenID Connect Core §3.1.3.7), JOSE through PyJWT.

Why PyJWT (``PyJWT[crypto]``) rather than joserfc: Keyloom needs JWS verification of one
compact token against a JWK set, nothing of JWE or JWT encryption. PyJWT does exactly that,
is the most widely deployed Python JWT library, ships type hints, refuses ``none`` unless
asked for it, and its only dependency is ``cryptography``, which Keyloom's ``tokens`` extra
already uses. Every claim check is done here, against an explicit clock, rather than by
the library's options, so the rules are Keyloom's and testable without waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .._signing import b64encode
from ._errors import IdTokenError

__all__ = [
    "DEFAULT_LEEWAY",
    "MAX_LEEWAY",
    "IdTokenRules",
    "UnknownKeyError",
    "at_hash",
    "validate_id_token",
]

#: Default clock skew allowed on ``exp`` and ``iat``, in seconds.
DEFAULT_LEEWAY = 60.0
#: The largest skew a configuration may allow.
MAX_LEEWAY = 300.0

_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


class UnknownKeyError(LookupError):
    """No key of the set matches the token's ``kid``: refetch the set (once) and retry."""


@attrs.frozen
class IdTokenRules:
    """What an ID token must satisfy.

    Attributes:
        issuer: The exact ``iss`` expected.
        client_id: The client id, which ``aud`` must contain (and ``azp`` equal).
        algorithms: The accepted JWS algorithms (never ``none``).
        nonce: The expected ``nonce``, or ``None`` where none was sent (a refresh).
        access_token: The access token issued with it, checked against ``at_hash``.
        subject: The ``sub`` it must have (a refreshed ID token keeps the first one's).
        leeway: Seconds of clock skew tolerated on ``exp`` and ``iat`` (at most 300).
    """

    issuer: str
    client_id: str
    algorithms: tuple[str, ...]
    nonce: str | None = attrs.field(default=None, repr=False)
    access_token: str | None = attrs.field(default=None, repr=False)
    subject: str | None = None
    leeway: float = attrs.field(default=DEFAULT_LEEWAY)

    @leeway.validator
    def _check_leeway(self, _: object, value: float) -> None:
        if not 0 <= value <= MAX_LEEWAY:
            msg = f"leeway must be between 0 and {MAX_LEEWAY:g} seconds"
            raise ValueError(msg)


def at_hash(access_token: str, algorithm: str) -> str:
    """The ``at_hash`` of *access_token* for a token signed with *algorithm*.

    The left half of the hash of the token's ASCII bytes, base64url without padding; the
    hash is the one of the algorithm (SHA-512 for EdDSA/Ed25519).
    """
    digest = _HASHES.get(algorithm[-3:], hashlib.sha512 if algorithm == "EdDSA" else None)
    if digest is None:
        msg = f"no at_hash for algorithm {algorithm}"
        raise ValueError(msg)
    full = digest(access_token.encode("ascii")).digest()
    return b64encode(full[: len(full) // 2])


def _fail(check: str, provider_id: str | None) -> IdTokenError:
    return IdTokenError(f"the ID token failed validation: {check}", provider_id=provider_id)


def _pick_key(header: Mapping[str, Any], keys: Iterable[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The JWK to verify with: the one with the token's ``kid``, or the only signing key."""
    candidates = [
        k
        for k in keys
        if isinstance(k, Mapping) and k.get("use", "sig") == "sig" and k.get("alg", header["alg"])
        == header["alg"]
    ]
    kid = header.get("kid")
    if kid is not None:
        matching = [k for k in candidates if k.get("kid") == kid]
        if len(matching) == 1:
            return matching[0]
        raise UnknownKeyError(kid if isinstance(kid, str) else "?")
    if len(candidates) == 1:
        return candidates[0]
    raise UnknownKeyError("(no kid)")


def validate_id_token(
    token: str,
    keys: Iterable[Mapping[str, Any]],
    rules: IdTokenRules,
    *,
    now: float | None = None,
    provider_id: str | None = None,
) -> dict[str, Any]:
    """Verify *token*'s signature against *keys* (a JWK set's ``keys``) and its claims.

    Returns the claims.

    :raises UnknownKeyError: no key matches the token's ``kid`` (refetch the set, retry).
    :raises IdTokenError: any check failed; the message names the check, not the values.
    """
    import jwt  # noqa: PLC0415  (an optional extra: keyloom-core[oidc])

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _fail("malformed token", provider_id) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg not in rules.algorithms:
        raise _fail("algorithm not allowed", provider_id)
    jwk = _pick_key(header, keys)
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=alg)
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise _fail("bad signature", provider_id) from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise _fail("signature cannot be verified", provider_id) from None
    _check_claims(claims, alg, rules, time.time() if now is None else now, provider_id)
    return claims


def _number(claims: Mapping[str, Any], name: str, provider_id: str | None) -> float:
    value = claims.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _fail(f"'{name}' missing or not a number", provider_id)
    return float(value)


def _check_claims(
    claims: Mapping[str, Any],
    alg: str,
    rules: IdTokenRules,
    now: float,
    provider_id: str | None,
) -> None:
    if claims.get("iss") != rules.issuer:
        raise _fail("wrong issuer (iss)", provider_id)
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if rules.client_id not in audiences:
        raise _fail("not issued to this client (aud)", provider_id)
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != rules.client_id:
        raise _fail("wrong authorized party (azp)", provider_id)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise _fail("no subject (sub)", provider_id)
    if rules.subject is not None and sub != rules.subject:
        raise _fail("subject changed (sub)", provider_id)
    _check_times(claims, rules, now, provider_id)
    _check_bindings(claims, alg, rules, provider_id)


def _check_times(
    claims: Mapping[str, Any], rules: IdTokenRules, now: float, provider_id: str | None
) -> None:
    if _number(claims, "exp", provider_id) + rules.leeway <= now:
        raise _fail("expired (exp)", provider_id)
    if _number(claims, "iat", provider_id) - rules.leeway > now:
        raise _fail("issued in the future (iat)", provider_id)
    if "nbf" in claims and _number(claims, "nbf", provider_id) - rules.leeway > now:
        raise _fail("not yet valid (nbf)", provider_id)


def _check_bindings(
    claims: Mapping[str, Any], alg: str, rules: IdTokenRules, provider_id: str | None
) -> None:
    if rules.nonce is not None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), rules.nonce.encode()
        ):
            raise _fail("wrong or missing nonce", provider_id)
    expected_hash = claims.get("at_hash")
    if expected_hash is not None and rules.access_token is not None:
        if not isinstance(expected_hash, str):
            raise _fail("at_hash is not a string", provider_id)
        try:
            actual = at_hash(rules.access_token, alg)
        except (ValueError, UnicodeEncodeError):
            raise _fail("at_hash cannot be computed", provider_id) from None
        if not hmac.compare_digest(actual.encode(), expected_hash.encode()):
            raise _fail("access token does not match at_hash", provider_id)
