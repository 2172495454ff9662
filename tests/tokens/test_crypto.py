"""TokenCipher: AES-256-GCM with HKDF-derived, purpose-bound keys and secret rotation."""

from __future__ import annotations

import pytest

from keyloom_core import ConfigurationError
from keyloom_core.tokens import TokenCipher, TokenDecryptionError

SECRET = "token-store-test-secret-0123456789-abcdefghij"
OLD_SECRET = "token-store-old-secret-9876543210-zyxwvutsrq"
AD = b"keyloom-token\x00tiktok\x00open-id"
PAYLOAD = {"tokens": {"access_token": "act.secret-value"}, "n": 1}


def test_round_trip_and_fresh_nonces() -> None:
    cipher = TokenCipher(SECRET)
    one, two = cipher.encrypt(PAYLOAD, AD), cipher.encrypt(PAYLOAD, AD)
    assert one != two
    assert cipher.decrypt(one, AD) == PAYLOAD
    assert b"secret-value" not in one


def test_associated_data_binds_the_value() -> None:
    cipher = TokenCipher(SECRET)
    blob = cipher.encrypt(PAYLOAD, AD)
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(blob, AD + b"x")


def test_tampering_is_detected() -> None:
    cipher = TokenCipher(SECRET)
    blob = bytearray(cipher.encrypt(PAYLOAD, AD))
    blob[-1] ^= 1
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(bytes(blob), AD)
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(b"\x03" + bytes(blob[1:]), AD)
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(b"", AD)


def test_rotation_reads_old_values_and_writes_with_the_current_secret() -> None:
    old = TokenCipher(OLD_SECRET)
    blob = old.encrypt(PAYLOAD, AD)
    rotated = TokenCipher(SECRET, [OLD_SECRET])
    assert rotated.decrypt(blob, AD) == PAYLOAD
    assert rotated.needs_rewrap(blob)
    fresh = rotated.encrypt(PAYLOAD, AD)
    assert not rotated.needs_rewrap(fresh)
    assert TokenCipher(SECRET).decrypt(fresh, AD) == PAYLOAD
    with pytest.raises(TokenDecryptionError):
        TokenCipher(SECRET).decrypt(blob, AD)


def test_keys_are_purpose_bound() -> None:
    blob = TokenCipher(SECRET).encrypt(PAYLOAD, AD)
    with pytest.raises(TokenDecryptionError):
        TokenCipher(SECRET, purpose="something-else").decrypt(blob, AD)


def test_short_secrets_are_refused_and_never_shown() -> None:
    with pytest.raises(ConfigurationError):
        TokenCipher("too-short")
    with pytest.raises(ConfigurationError):
        TokenCipher(SECRET, ["short"])
    assert SECRET not in repr(TokenCipher(SECRET))
