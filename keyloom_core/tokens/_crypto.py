"""Encryption of stored tokens: AES-256-GCM with keys derived from the app's secrets."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, get_args

from ..errors import ConfigurationError
from ._store import StoredGrant, TokenDecryptionError, TokenStoreError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = (
        "keyloom_core.tokens encrypts tokens with the 'cryptography' package: "
        "pip install 'keyloom-core[tokens]'"
    )
    raise ImportError(msg) from exc

__all__ = ["LegacyEntries", "TokenCipher"]

#: Secrets shorter than this are refused (the same rule as the signing secret).
MIN_SECRET_LENGTH = 32

#: Entries written by earlier versions: the associated data names provider and account.
_FORMAT_UNVERSIONED = b"\x01"
#: The current format: the associated data also names the entry's version.
_FORMAT = b"\x02"
_FORMATS = frozenset({_FORMAT_UNVERSIONED, _FORMAT})

#: What a store does with entries in the earlier ``0x01`` format: ``"read"`` them (the
#: default; writes use the current format), also ``"write"`` them (while workers of the
#: earlier release still run: they cannot read ``0x02``), or ``"refuse"`` them (once none
#: is left, so that an old ``0x01`` value written back into a row no longer decrypts).
LegacyEntries = Literal["read", "write", "refuse"]
_LEGACY_CHOICES: Final = get_args(LegacyEntries)
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_HEADER = len(_FORMAT) + _KEY_ID_BYTES + _NONCE_BYTES
#: Built once: ``json.dumps`` with options builds an encoder on every call, which cost a
#: login state's sealing 4 of its 7 µs.
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _derive(secret: str, info: bytes, length: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=b"keyloom", info=info)
    return hkdf.derive(secret.encode("utf-8"))


class TokenCipher:
    """Encrypts token payloads for one purpose; decrypts with the current or an old secret.

    The key is ``HKDF-SHA256(secret, salt="keyloom", info="keyloom/{purpose}/aes-256-gcm")``,
    so it is independent of the keys that sign state and sessions with the same secret.
    Each value is ``0x02 | key id (8 bytes) | nonce (12 bytes) | AES-GCM ciphertext+tag``,
    authenticated together with *associated* data: the store passes the provider, the
    account and the version being written, so a value copied to another account does not
    decrypt, and neither does an older value of the same account written back into its
    row (a rollback). The key id (itself derived with HKDF, revealing nothing about the
    key) picks the secret for decryption.

    Values in the earlier ``0x01`` format (associated data without the version) are read
    and rewritten in the current format by the store's next write of the entry, unless
    *legacy_entries* says otherwise (see :data:`LegacyEntries` for the upgrade order).

    :param secret: the current secret; new values are always encrypted with it.
    :param old_secrets: previous secrets, still accepted for reading (rotation).
    :param purpose: binds the keys to one use.
    :param legacy_entries: ``"read"``, ``"write"`` or ``"refuse"`` entries in the ``0x01``
        format.
    :raises ConfigurationError: a secret is shorter than 32 characters, or
        *legacy_entries* is not one of the three choices.
    """

    __slots__ = ("_keys", "_purpose", "legacy_entries")

    def __init__(
        self,
        secret: str,
        old_secrets: Sequence[str] = (),
        *,
        purpose: str = "token-store/v1",
        legacy_entries: LegacyEntries = "read",
    ) -> None:
        if legacy_entries not in _LEGACY_CHOICES:
            msg = f"legacy_entries must be one of {', '.join(map(repr, _LEGACY_CHOICES))}"
            raise ConfigurationError(msg)
        self.legacy_entries: LegacyEntries = legacy_entries
        self._purpose = purpose
        self._keys: list[tuple[bytes, AESGCM]] = []
        for value in (secret, *old_secrets):
            if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
                msg = f"token store secrets must be at least {MIN_SECRET_LENGTH} characters"
                raise ConfigurationError(msg)
            base = f"keyloom/{purpose}".encode()
            key = _derive(value, base + b"/aes-256-gcm", 32)
            key_id = _derive(value, base + b"/key-id", _KEY_ID_BYTES)
            self._keys.append((key_id, AESGCM(key)))

    def __repr__(self) -> str:
        return f"TokenCipher(purpose={self._purpose!r}, keys={len(self._keys)})"

    def encrypt(
        self, payload: Mapping[str, Any], associated: bytes, *, legacy: bool = False
    ) -> bytes:
        """Encrypt a JSON-ready *payload* with the current secret's key.

        :param legacy: mark the value with the earlier format byte (``0x01``).
        """
        key_id, aead = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        plain = _dumps(payload).encode()
        head = _FORMAT_UNVERSIONED if legacy else _FORMAT
        return head + key_id + nonce + aead.encrypt(nonce, plain, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> dict[str, Any]:
        """Decrypt what :meth:`encrypt` wrote.

        :raises TokenDecryptionError: no configured secret decrypts it, or it is corrupt.
        """
        if len(blob) <= _HEADER or blob[:1] not in _FORMATS:
            msg = "a stored token entry is not in a known format"
            raise TokenDecryptionError(msg)
        key_id = blob[1 : 1 + _KEY_ID_BYTES]
        nonce = blob[1 + _KEY_ID_BYTES : _HEADER]
        for candidate_id, aead in self._keys:
            if candidate_id != key_id:
                continue
            try:
                plain = aead.decrypt(nonce, blob[_HEADER:], associated)
            except InvalidTag:
                continue
            data = json.loads(plain)
            if not isinstance(data, dict):  # pragma: no cover - we wrote it ourselves
                break
            return data
        msg = "a stored token entry cannot be decrypted with the configured secrets"
        raise TokenDecryptionError(msg)

    def seal(self, grant: StoredGrant) -> bytes:
        """Encrypt *grant*'s payload, bound to its provider, account and version.

        With ``legacy_entries="write"`` the value is written in the earlier format, bound
        to the provider and account only, so that workers of the earlier release read it.
        """
        if self.legacy_entries == "write":
            unbound = associated_data(grant.provider_id, grant.account_id)
            return self.encrypt(grant.to_payload(), unbound, legacy=True)
        return self.encrypt(
            grant.to_payload(),
            associated_data(grant.provider_id, grant.account_id, grant.version),
        )

    def unseal(
        self, blob: bytes, provider_id: str, account_id: str, *, version: int
    ) -> dict[str, Any]:
        """Decrypt what :meth:`seal` wrote for *provider_id* / *account_id* at *version*.

        :raises TokenDecryptionError: the value belongs to another account or another
            version (an older value written back), it is in the earlier format and this
            cipher refuses those, or no configured secret decrypts it.
        """
        unversioned = is_legacy(blob)
        if unversioned and self.legacy_entries == "refuse":
            msg = (
                "a stored token entry is in the earlier unversioned format, which this "
                "store refuses (legacy_entries='refuse')"
            )
            raise TokenDecryptionError(msg)
        bound = None if unversioned else version
        return self.decrypt(blob, associated_data(provider_id, account_id, bound))

    def open_grant(
        self, blob: bytes, provider_id: str, account_id: str, version: int
    ) -> StoredGrant:
        """The grant :meth:`seal` wrote for *provider_id* / *account_id* at *version*.

        :raises TokenDecryptionError: as :meth:`unseal`, naming the provider and account.
        """
        try:
            payload = self.unseal(blob, provider_id, account_id, version=version)
        except TokenStoreError as exc:
            exc.provider_id, exc.account_id = provider_id, account_id
            raise
        return StoredGrant.from_payload(provider_id, account_id, version, payload)

    def needs_rewrap(self, blob: bytes) -> bool:
        """Whether *blob* was encrypted with an old secret (a write re-encrypts it)."""
        return blob[1 : 1 + _KEY_ID_BYTES] != self._keys[0][0]


def is_legacy(blob: bytes) -> bool:
    """Whether *blob* is in the earlier ``0x01`` format (not bound to a version)."""
    return blob[:1] == _FORMAT_UNVERSIONED


def associated_data(provider_id: str, account_id: str, version: int | None = None) -> bytes:
    """The associated data binding an encrypted value to its key (and version)."""
    unversioned = f"keyloom-token\x00{provider_id}\x00{account_id}"
    return (unversioned if version is None else f"{unversioned}\x00v{version}").encode()
