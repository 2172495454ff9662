"""Signed tokens: round trip, tampering, expiry, purpose separation and secret rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyloom_core._signing import BadSignatureError, ExpiredError, Signer, _Hmac

SECRET = "s" * 32
OLD_SECRET = "o" * 32
NOW = 1_700_000_000.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _body(token: str) -> dict[str, object]:
    body = token.partition(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_round_trip_adds_the_expiry() -> None:
    signer = Signer([SECRET], "state")
    token = signer.sign({"p": "fake", "n": "nonce"}, ttl=600, now=NOW)
    assert signer.unsign(token, now=NOW) == {"p": "fake", "n": "nonce", "exp": int(NOW + 600)}


def test_token_is_url_safe_and_unpadded() -> None:
    token = Signer([SECRET], "state").sign({"x": "é/+?&"}, ttl=60, now=NOW)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_expired_after_ttl() -> None:
    signer = Signer([SECRET], "state")
    token = signer.sign({"a": 1}, ttl=600, now=NOW)
    assert signer.unsign(token, now=NOW + 599)["a"] == 1
    with pytest.raises(ExpiredError):
        signer.unsign(token, now=NOW + 600)
    with pytest.raises(ExpiredError):
        signer.unsign(token, now=NOW + 10_000)


def test_expired_is_not_a_bad_signature() -> None:
    # callers tell "start again, you were too slow" from "forged"
    signer = Signer([SECRET], "state")
    token = signer.sign({}, ttl=1, now=NOW)
    with pytest.raises(ExpiredError) as info:
        signer.unsign(token, now=NOW + 5)
    assert not isinstance(info.value, BadSignatureError)


def test_tampered_payload_is_refused() -> None:
    signer = Signer([SECRET], "state")
    token = signer.sign({"p": "fake", "c": "/home"}, ttl=600, now=NOW)
    _, _, mac = token.partition(".")
    forged_payload = {**_body(token), "c": "https://evil.example"}
    forged = _b64(json.dumps(forged_payload, separators=(",", ":"), sort_keys=True).encode())
    with pytest.raises(BadSignatureError, match="signature"):
        signer.unsign(f"{forged}.{mac}", now=NOW)


def test_extended_expiry_is_refused() -> None:
    signer = Signer([SECRET], "state")
    token = signer.sign({"p": "fake"}, ttl=1, now=NOW)
    _, _, mac = token.partition(".")
    longer = _b64(json.dumps({**_body(token), "exp": int(NOW + 10**6)}).encode())
    with pytest.raises(BadSignatureError):
        signer.unsign(f"{longer}.{mac}", now=NOW + 10)


def test_every_single_character_change_is_refused() -> None:
    signer = Signer([SECRET], "state")
    token = signer.sign({"n": "abc"}, ttl=600, now=NOW)
    for i, char in enumerate(token):
        if char == ".":
            continue
        for replacement in ("A", "z"):
            if replacement == char:
                continue
            altered = token[:i] + replacement + token[i + 1 :]
            try:
                payload = signer.unsign(altered, now=NOW)
            except BadSignatureError:
                continue
            # the last base64 character carries unused bits: only a no-op change may pass
            assert payload == signer.unsign(token, now=NOW), (i, replacement)


def test_other_secret_is_refused() -> None:
    token = Signer(["x" * 32], "state").sign({"a": 1}, ttl=60, now=NOW)
    with pytest.raises(BadSignatureError, match="signature"):
        Signer([SECRET], "state").unsign(token, now=NOW)


def test_purposes_do_not_mix() -> None:
    session_token = Signer([SECRET], "session").sign({"uid": "u1"}, ttl=60, now=NOW)
    with pytest.raises(BadSignatureError):
        Signer([SECRET], "state").unsign(session_token, now=NOW)


def test_rotation_accepts_old_secret_and_signs_with_the_new_one() -> None:
    old_token = Signer([OLD_SECRET], "state").sign({"a": 1}, ttl=60, now=NOW)
    rotated = Signer([SECRET, OLD_SECRET], "state")
    assert rotated.unsign(old_token, now=NOW)["a"] == 1
    new_token = rotated.sign({"a": 2}, ttl=60, now=NOW)
    assert Signer([SECRET], "state").unsign(new_token, now=NOW)["a"] == 2
    with pytest.raises(BadSignatureError):
        Signer([OLD_SECRET], "state").unsign(new_token, now=NOW)


def test_signed_payload_without_integer_expiry_is_refused() -> None:
    # even a correctly signed body must carry an integer "exp"
    key = hmac.new(SECRET.encode(), b"keyloom/state", hashlib.sha256).digest()
    for payload in ({"exp": "9999999999"}, {"a": 1}, [1, 2]):
        body = _b64(json.dumps(payload).encode())
        mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
        with pytest.raises(BadSignatureError, match="malformed"):
            Signer([SECRET], "state").unsign(f"{body}.{mac}", now=NOW)


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", "é.é", "abc.@@@@", "a" * 9000 + ".b"],
)
def test_malformed_tokens_are_bad_signatures(token: str) -> None:
    with pytest.raises(BadSignatureError):
        Signer([SECRET], "state").unsign(token, now=NOW)


def test_repr_shows_no_key_material() -> None:
    signer = Signer([SECRET, OLD_SECRET], "state")
    assert SECRET not in repr(signer)
    assert OLD_SECRET not in repr(signer)
    assert "state" in repr(signer)


@given(st.text(max_size=300))
def test_arbitrary_text_only_ever_raises_bad_signature(token: str) -> None:
    with pytest.raises(BadSignatureError):
        Signer([SECRET], "state").unsign(token, now=NOW)


@pytest.mark.parametrize("suffix", ["!!", "==", "=", "====", " ", "\n", "A", "%3D"])
def test_a_signed_value_has_one_spelling(suffix: str) -> None:
    # Lenient base64 would accept these; a deny list or cache keyed on the value would then
    # miss its altered spellings.
    signer = Signer([SECRET], "session")
    token = signer.sign({"sid": "abc"}, ttl=60, now=NOW)
    assert signer.unsign(token, now=NOW)["sid"] == "abc"
    with pytest.raises(BadSignatureError):
        signer.unsign(token + suffix, now=NOW)


def test_the_unused_bits_of_the_signature_must_be_zero() -> None:
    signer = Signer([SECRET], "session")
    body, _, mac = signer.sign({"sid": "abc"}, ttl=60, now=NOW).partition(".")
    # 32 bytes take 43 characters: the last one carries 4 bits of the digest and 2 unused
    # bits; flipping an unused bit decodes to the same digest leniently.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    twin = mac[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(mac + "=")
    with pytest.raises(BadSignatureError):
        signer.unsign(f"{body}.{twin}", now=NOW)


@pytest.mark.parametrize("key", [b"", b"k" * 32, b"k" * 64, b"k" * 65, bytes(range(200))])
@pytest.mark.parametrize("message", [b"", b"body", bytes(range(256)) * 3])
def test_the_keyed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    expected = base64.urlsafe_b64encode(hmac.digest(key, message, "sha256")).rstrip(b"=")
    assert _Hmac(key).text(message) == expected
