"""The token store contract, the stored value, the store errors and a keyed lock table."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs

from ..errors import ConfigurationError, KeyloomError, ReauthenticationRequiredError
from ..models import TokenSet, parse_scopes

__all__ = [
    "NotSignedInError",
    "StoredGrant",
    "TokenDecryptionError",
    "TokenLockTimeoutError",
    "TokenStore",
    "TokenStoreError",
    "TokenStoreWriteError",
    "hold_lease",
]

log = logging.getLogger("keyloom.tokens")


@attrs.frozen
class StoredGrant:
    """What a token store holds for one account of one provider.

    Attributes:
        provider_id: The provider, e.g. ``"tiktok"``.
        account_id: The provider's id for the user (TikTok's ``open_id``).
        tokens: The current token set; its refresh token is the only live one when the
            provider rotates refresh tokens (hidden from repr).
        granted_scopes: The scopes the user granted.
        version: Starts at 1 and grows by one on every write; compare-and-swap writes
            name the version they replace.
        updated_at: When this version was written (epoch seconds).
    """

    provider_id: str
    account_id: str
    tokens: TokenSet = attrs.field(repr=False)
    granted_scopes: frozenset[str] = attrs.field(converter=parse_scopes)
    version: int
    updated_at: float

    @property
    def expires_at(self) -> float | None:
        """When the access token expires, if known."""
        return self.tokens.expires_at

    @property
    def refresh_expires_at(self) -> float | None:
        """When the refresh token expires, if known."""
        return self.tokens.refresh_expires_at

    def to_payload(self) -> dict[str, Any]:
        """The secret part, JSON-ready (tokens, scopes, write time); stores encrypt it."""
        return {
            "tokens": self.tokens.to_dict(),
            "granted_scopes": sorted(self.granted_scopes),
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_payload(
        cls, provider_id: str, account_id: str, version: int, payload: Mapping[str, Any]
    ) -> StoredGrant:
        """Read back what :meth:`to_payload` wrote, for the given key and version."""
        return cls(
            provider_id=provider_id,
            account_id=account_id,
            tokens=TokenSet.from_dict(payload["tokens"]),
            granted_scopes=frozenset(payload.get("granted_scopes") or ()),
            version=version,
            updated_at=float(payload.get("updated_at") or 0.0),
        )

    @classmethod
    def new(
        cls,
        provider_id: str,
        account_id: str,
        tokens: TokenSet,
        scopes: Iterable[str],
        version: int,
        now: float | None = None,
    ) -> StoredGrant:
        """A grant as a store writes it (``updated_at`` is *now*)."""
        return cls(
            provider_id=provider_id,
            account_id=account_id,
            tokens=tokens,
            granted_scopes=frozenset(scopes),
            version=version,
            updated_at=time.time() if now is None else now,
        )


@runtime_checkable
class TokenStore(Protocol):
    """Where provider tokens live between requests, shared by every process of an app.

    Keys are ``(provider_id, account_id)``. Implementations: :class:`MemoryTokenStore`
    (one process, tests), :class:`SQLiteTokenStore` (one host, the embedded default) and
    :class:`RedisTokenStore` (several hosts). SQLite and Redis encrypt what they keep.

    Store methods raise :class:`TokenStoreError` (or a subclass) when the backend fails;
    they never log or show token values.
    """

    async def get(self, provider_id: str, account_id: str) -> StoredGrant | None:
        """The stored grant, or ``None`` if there is none.

        :raises TokenDecryptionError: the entry was written with a secret no longer
            configured.
        """
        ...

    async def put(
        self,
        provider_id: str,
        account_id: str,
        tokens: TokenSet,
        *,
        scopes: Iterable[str],
        if_version: int | None = None,
    ) -> StoredGrant | None:
        """Write *tokens* and *scopes* as the next version (``1`` for a new entry).

        :param if_version: compare-and-swap: write only if the stored version is exactly
            this one, and return ``None`` if it is not (or nothing is stored). Without it
            the write is unconditional (a new login replaces what was there).
        :returns: the grant as written, or ``None`` when the compare-and-swap lost.
        """
        ...

    async def delete(
        self, provider_id: str, account_id: str, *, if_version: int | None = None
    ) -> bool:
        """Remove the entry; ``True`` if one was removed.

        :param if_version: remove only if the stored version is exactly this one.
        """
        ...

    def lock(
        self, provider_id: str, account_id: str, *, ttl: float, wait: float
    ) -> AbstractAsyncContextManager[None]:
        """Hold the account's refresh lock, across every process sharing the store.

        The lock is a lease: if its holder dies it frees itself after *ttl* seconds.

        :param ttl: seconds the lease lasts; longer than one refresh with its write.
        :param wait: seconds to wait for it.
        :raises TokenLockTimeoutError: the lock was not free within *wait* seconds.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the store may not be used afterwards."""
        ...


# -- errors ------------------------------------------------------------------------------


class TokenStoreError(KeyloomError):
    """The token store failed (unreachable, read-only, corrupt…); nothing secret is shown.

    Attributes:
        account_id: The account concerned, if any.
    """

    code = "token_store_error"
    status = 503

    def __init__(
        self,
        message: str,
        *,
        provider_id: str | None = None,
        account_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, provider_id=provider_id, hint=hint)
        self.account_id = account_id


class TokenStoreWriteError(TokenStoreError):
    """Refreshed tokens could not be written to the store; they are held for a retry.

    The provider already rotated the refresh token, so the new token set is the only
    valid one: the :class:`TokenManager` keeps it in its recovery slot (process memory),
    writes it on the next call for the account or on :meth:`TokenManager.flush`, and
    hands out no access token until it is written.
    """

    code = "token_store_write_failed"

    def __init__(
        self, message: str, *, provider_id: str | None = None, account_id: str | None = None
    ) -> None:
        super().__init__(
            message,
            provider_id=provider_id,
            account_id=account_id,
            hint=(
                "The refreshed tokens are kept in this process and written on the next "
                "call or TokenManager.flush(); fix the store, and call flush() before "
                "the process exits."
            ),
        )


class TokenLockTimeoutError(TokenStoreError):
    """The account's refresh lock stayed taken longer than the manager waits."""

    code = "token_lock_timeout"


class TokenDecryptionError(TokenStoreError):
    """A stored entry cannot be decrypted with the configured secrets."""

    code = "token_decryption_failed"
    default_hint = (
        "The entry was written with a secret that is no longer configured: pass the old "
        "secret in old_secrets, or have the user sign in again."
    )


class NotSignedInError(ReauthenticationRequiredError):
    """No tokens are stored for the account: the user must sign in (again)."""

    code = "not_signed_in"


# -- a bounded table of per-key locks ----------------------------------------------------


@attrs.define
class _Slot:
    lock: anyio.Lock = attrs.field(factory=anyio.Lock)
    users: int = 0


class KeyedLocks:
    """One :class:`anyio.Lock` per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str], _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str], *, wait: float | None = None) -> AsyncIterator[None]:
        """Hold the lock of *key* (``(provider_id, account_id)``).

        :raises TokenLockTimeoutError: not acquired within *wait* seconds.
        """
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.users += 1
        try:
            acquired = False
            with anyio.move_on_after(wait):
                await slot.lock.acquire()
                acquired = True
            if not acquired:
                msg = f"the refresh lock stayed taken for {wait:g}s"
                raise TokenLockTimeoutError(msg, provider_id=key[0], account_id=key[1])
            try:
                yield
            finally:
                slot.lock.release()
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[key]


async def rewrite_legacy(
    store: TokenStore, accounts: Iterable[tuple[str, str]], cipher_mode: str
) -> int:
    """Rewrite the entries of *accounts* in the current format; return how many changed.

    Each rewrite is a compare-and-swap on the version just read, so a login or refresh
    writing the same entry meanwhile wins (and writes the current format itself).

    :raises ConfigurationError: the store still writes the earlier format
        (``legacy_entries="write"``) or refuses to read it (``"refuse"``).
    """
    if cipher_mode != "read":
        msg = "rewriting earlier token entries needs legacy_entries='read'"
        raise ConfigurationError(msg)
    rewritten = 0
    for provider_id, account_id in accounts:
        grant = await store.get(provider_id, account_id)
        if grant is None:
            continue
        written = await store.put(
            provider_id,
            account_id,
            grant.tokens,
            scopes=grant.granted_scopes,
            if_version=grant.version,
        )
        rewritten += written is not None
    return rewritten


@contextlib.asynccontextmanager
async def hold_lease(
    take: Callable[[], Awaitable[bool]],
    release: Callable[[], Awaitable[None]],
    *,
    provider_id: str,
    account_id: str,
    wait: float,
) -> AsyncIterator[None]:
    """Hold an account's refresh lease for the block: the polling every store shares.

    *take* tries once to take the lease (``True``: taken); it is retried with a doubling
    delay (5 ms, up to 100 ms) for at most *wait* seconds. *release* runs on the way out,
    shielded from cancellation; a store failure there is logged, never raised (a lease
    expires by itself).

    :raises TokenLockTimeoutError: the lease stayed taken for *wait* seconds.
    """
    deadline = time.monotonic() + wait
    delay = 0.005
    while not await take():
        if time.monotonic() + delay > deadline:
            msg = f"the refresh lock stayed taken for {wait:g}s"
            raise TokenLockTimeoutError(msg, provider_id=provider_id, account_id=account_id)
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.1)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await release()
            except TokenStoreError as exc:
                log.warning("could not release a refresh lock: %s", exc)
