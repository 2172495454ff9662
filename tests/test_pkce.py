"""PKCE (RFC 7636): the S256 challenge, its hex dialect, and verifier validation."""

from __future__ import annotations

import base64
import hashlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyloom_core.pkce import CODE_VERIFIER_PATTERN, new_code_verifier, s256_challenge

RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
VERIFIER_ALPHABET = string.ascii_letters + string.digits + "-._~"


def test_rfc7636_appendix_b_vector() -> None:
    assert s256_challenge(RFC7636_VERIFIER) == RFC7636_CHALLENGE
    assert s256_challenge(RFC7636_VERIFIER, "base64url") == RFC7636_CHALLENGE


def test_hex_encoding_is_the_lowercase_hex_sha256() -> None:
    challenge = s256_challenge(RFC7636_VERIFIER, "hex")
    assert challenge == hashlib.sha256(RFC7636_VERIFIER.encode()).hexdigest()
    assert challenge == base64.urlsafe_b64decode(RFC7636_CHALLENGE + "=").hex()
    assert len(challenge) == 64
    assert challenge == challenge.lower()


@pytest.mark.parametrize("length", [43, 128])
def test_length_bounds_are_accepted(length: int) -> None:
    assert len(s256_challenge("a" * length)) == 43


@pytest.mark.parametrize(
    "verifier",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 42, id="42-chars"),
        pytest.param("a" * 129, id="129-chars"),
        pytest.param("a" * 42 + "+", id="plus"),
        pytest.param("a" * 42 + "/", id="slash"),
        pytest.param("a" * 42 + "=", id="padding"),
        pytest.param("a" * 42 + " ", id="space"),
        pytest.param("a" * 42 + "é", id="non-ascii"),
        pytest.param("a" * 42 + "%", id="percent"),
        # a regex ending in "$" also matches before a trailing newline
        pytest.param("a" * 43 + "\n", id="trailing-newline"),
        pytest.param("a" * 128 + "\n", id="129-chars-with-newline"),
        pytest.param("\n" + "a" * 43, id="leading-newline"),
    ],
)
def test_invalid_verifiers_are_refused(verifier: str) -> None:
    with pytest.raises(ValueError, match="code verifier"):
        s256_challenge(verifier)
    with pytest.raises(ValueError, match="code verifier"):
        s256_challenge(verifier, "hex")


def test_new_code_verifier_is_valid_and_fresh() -> None:
    verifiers = {new_code_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for verifier in verifiers:
        assert len(verifier) == 64
        assert set(verifier) <= set(VERIFIER_ALPHABET)
        assert CODE_VERIFIER_PATTERN.fullmatch(verifier)


@given(st.text(alphabet=VERIFIER_ALPHABET, min_size=43, max_size=128))
def test_any_valid_verifier_gives_an_unpadded_base64url_sha256(verifier: str) -> None:
    challenge = s256_challenge(verifier)
    assert len(challenge) == 43
    assert set(challenge) <= set(string.ascii_letters + string.digits + "-_")
    assert base64.urlsafe_b64decode(challenge + "=") == hashlib.sha256(verifier.encode()).digest()


@given(st.text(min_size=43, max_size=128).filter(lambda v: not set(v) <= set(VERIFIER_ALPHABET)))
def test_any_character_outside_the_alphabet_is_refused(verifier: str) -> None:
    with pytest.raises(ValueError, match="code verifier"):
        s256_challenge(verifier)
