"""A token store in Redis, shared by every process and host of an app.

Needs the ``redis`` package (``pip install 'keyloom-core[redis]'``); uses its asyncio client.
"""

from __future__ import annotations

import base64
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import attrs

from ._crypto import LegacyEntries, TokenCipher, is_legacy
from ._store import StoredGrant, TokenStoreError, hold_lease, rewrite_legacy

try:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = "RedisTokenStore needs the 'redis' package: pip install 'keyloom-core[redis]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from ..models import TokenSet

__all__ = ["RedisTokenStore"]

log = logging.getLogger("keyloom.tokens")

T = TypeVar("T")

#: An unconditional write reads the version, then writes the next one if it is unchanged
#: (the version is bound into the encryption); racing writers of one account retry.
_PUT_ATTEMPTS: Final = 32
_PUT_BACKOFF: Final = 0.002  # seconds, doubled per attempt up to 64 times

# KEYS[1] grant hash; ARGV: blob, expected version ('' = any, '0' = none stored),
# expire-at ms ('' = never).
_PUT: Final = """
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[2] ~= '' and (current or '0') ~= ARGV[2] then return 0 end
local version = 1
if current then version = tonumber(current) + 1 end
redis.call('HSET', KEYS[1], 'v', version, 'd', ARGV[1])
if ARGV[3] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
return version
"""
# KEYS[1] grant hash; ARGV[1] expected version ('' = any).
_DELETE: Final = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
# KEYS[1] lock key; ARGV[1] owner token. Only the owner releases.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _text(value: object) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


class RedisTokenStore:
    """A :class:`~keyloom_core.tokens.TokenStore` in Redis.

    Each account is a hash ``{prefix}grant:{provider}:{account}`` with the version ``v`` in
    clear and the AES-256-GCM encrypted payload ``d`` (base64, so clients created with
    ``decode_responses=True`` work too). Writes and compare-and-swap run as Lua scripts, so
    they are atomic. An entry expires with its refresh token (``PEXPIREAT``).

    The refresh lock is ``SET {prefix}lock:{provider}:{account} <random> NX PX <ttl>``,
    polled while taken and released by a Lua script only by its owner, so a lease that
    expired and was taken by another process is never released by the first holder.

    :param redis: a ``redis://`` URL (the store then owns and closes the client, with
        5-second socket timeouts) or a ``redis.asyncio.Redis`` client (borrowed, not closed).
    :param secret: the current encryption secret (at least 32 characters); usually the app's
        Keyloom secret.
    :param old_secrets: previous secrets, still accepted for reading.
    :param prefix: the key prefix.
    :param clock: the time source of ``updated_at``.
    :param hash_tags: put ``{provider}:{account}`` in a hash tag, so that an account's grant
        and lock share a Redis Cluster slot (``…grant:{tiktok:abc}``); off by default,
        which keeps the key names of existing data.
    :param legacy_entries: entries in the earlier ``0x01`` format are ``"read"`` (the
        default), also ``"write"``-n, or ``"refuse"``-d; see
        :data:`~keyloom_core.tokens.LegacyEntries`.
    """

    def __init__(
        self,
        redis: str | Redis,
        *,
        secret: str,
        old_secrets: Sequence[str] = (),
        prefix: str = "keyloom:tokens:",
        clock: Callable[[], float] = time.time,
        hash_tags: bool = False,
        legacy_entries: LegacyEntries = "read",
    ) -> None:
        self._tag = "{{{}}}" if hash_tags else "{}"
        if isinstance(redis, str):
            self._client: Redis = Redis.from_url(
                redis, socket_timeout=5.0, socket_connect_timeout=5.0
            )
            self._owns_client = True
        else:
            self._client = redis
            self._owns_client = False
        self._cipher = TokenCipher(secret, old_secrets, legacy_entries=legacy_entries)
        self.prefix = prefix
        self._clock = clock
        self._put = self._client.register_script(_PUT)
        self._delete = self._client.register_script(_DELETE)
        self._release = self._client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"RedisTokenStore(prefix={self.prefix!r})"

    async def __aenter__(self) -> RedisTokenStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def client(self) -> Redis:
        """The Redis client in use."""
        return self._client

    def key(self, provider_id: str, account_id: str) -> str:
        """The Redis key of an account's grant."""
        return f"{self.prefix}grant:" + self._tag.format(f"{provider_id}:{account_id}")

    def lock_key(self, provider_id: str, account_id: str) -> str:
        """The Redis key of an account's refresh lock."""
        return f"{self.prefix}lock:" + self._tag.format(f"{provider_id}:{account_id}")

    async def _call(self, awaitable: Awaitable[T], provider_id: str, account_id: str) -> T:
        try:
            return await awaitable
        except RedisError as exc:
            msg = f"the Redis token store failed: {type(exc).__name__}"
            raise TokenStoreError(msg, provider_id=provider_id, account_id=account_id) from exc

    async def get(self, provider_id: str, account_id: str) -> StoredGrant | None:
        """The stored grant, or ``None``.

        :raises TokenDecryptionError: written with a secret no longer configured.
        """
        pending: Awaitable[list[Any]] = self._client.hmget(
            self.key(provider_id, account_id), ["v", "d"]
        )
        version, data = await self._call(pending, provider_id, account_id)
        if version is None or data is None:
            return None
        try:
            blob, number = base64.b64decode(_text(data)), int(_text(version))
        except ValueError as exc:
            msg = "a stored token entry is not valid base64 with a version number"
            raise TokenStoreError(msg, provider_id=provider_id, account_id=account_id) from exc
        return self._cipher.open_grant(blob, provider_id, account_id, number)

    async def put(
        self,
        provider_id: str,
        account_id: str,
        tokens: TokenSet,
        *,
        scopes: Iterable[str],
        if_version: int | None = None,
    ) -> StoredGrant | None:
        """Write the next version; with *if_version*, only over exactly that version.

        The value is encrypted bound to the version it is written as, so the write is a
        compare-and-swap on the version read just before; an unconditional write that
        keeps losing that race to other writers raises :class:`TokenStoreError`.
        """
        grant = StoredGrant.new(provider_id, account_id, tokens, scopes, 0, now=self._clock())
        if if_version is not None:
            return await self._write(grant, if_version) if if_version >= 1 else None
        key = self.key(provider_id, account_id)
        for attempt in range(_PUT_ATTEMPTS):
            pending: Awaitable[Any] = self._client.hget(key, "v")
            current = await self._call(pending, provider_id, account_id)
            written = await self._write(grant, 0 if current is None else int(_text(current)))
            if written is not None:
                return written
            # another writer of this account won the race: back off (full jitter) and retry
            await anyio.sleep(random.uniform(0, _PUT_BACKOFF * 2 ** min(attempt, 6)))
        msg = "the token entry kept changing while it was being written"
        raise TokenStoreError(msg, provider_id=provider_id, account_id=account_id)

    async def _write(self, grant: StoredGrant, expected: int) -> StoredGrant | None:
        """Write *grant* as version ``expected + 1`` if version *expected* is stored."""
        written = attrs.evolve(grant, version=expected + 1)
        expiry = grant.tokens.refresh_expires_at
        args = [
            base64.b64encode(self._cipher.seal(written)).decode("ascii"),
            str(expected),
            "" if expiry is None else str(int(expiry * 1000) + 60_000),
        ]
        result = self._put(keys=[self.key(grant.provider_id, grant.account_id)], args=args)
        version = int(await self._call(result, grant.provider_id, grant.account_id))
        return None if version == 0 else written

    async def delete(
        self, provider_id: str, account_id: str, *, if_version: int | None = None
    ) -> bool:
        """Remove the entry (only version *if_version*, when given)."""
        args = ["" if if_version is None else str(if_version)]
        result = self._delete(keys=[self.key(provider_id, account_id)], args=args)
        return int(await self._call(result, provider_id, account_id)) > 0

    def lock(
        self, provider_id: str, account_id: str, *, ttl: float, wait: float
    ) -> AbstractAsyncContextManager[None]:
        """The account's refresh lock (``SET NX PX``), shared by every client of the server."""
        key = self.lock_key(provider_id, account_id)
        owner = secrets.token_hex(16)
        ttl_ms = max(1, int(ttl * 1000))

        async def take() -> bool:
            taken = self._client.set(key, owner, nx=True, px=ttl_ms)
            return bool(await self._call(taken, provider_id, account_id))

        return hold_lease(
            take,
            lambda: self._call(self._release(keys=[key], args=[owner]), provider_id, account_id),
            provider_id=provider_id,
            account_id=account_id,
            wait=wait,
        )

    async def legacy_accounts(self) -> list[tuple[str, str]]:
        """The ``(provider, account)`` of entries still in the earlier ``0x01`` format.

        Walks this store's keys with ``SCAN`` (never ``KEYS``), reading each value once.
        """
        grant_prefix = f"{self.prefix}grant:"
        found: list[tuple[str, str]] = []
        try:
            async for raw_key in self._client.scan_iter(match=f"{grant_prefix}*", count=500):
                key = _text(raw_key)
                pending: Awaitable[Any] = self._client.hget(key, "d")
                data = await pending
                if data is None or not is_legacy(base64.b64decode(_text(data)[:4])):
                    continue
                tagged = key[len(grant_prefix) :]
                if self._tag != "{}":
                    tagged = tagged[1:-1]
                provider_id, _, account_id = tagged.partition(":")
                found.append((provider_id, account_id))
        except RedisError as exc:
            msg = f"the Redis token store failed: {type(exc).__name__}"
            raise TokenStoreError(msg, provider_id="", account_id="") from exc
        return found

    async def upgrade_legacy(self) -> int:
        """Rewrite every ``0x01`` entry in the current format; return how many.

        Run it once no worker of the earlier release is left, then switch to
        ``legacy_entries="refuse"``.

        :raises ConfigurationError: this store does not read and write with ``"read"``.
        """
        accounts = await self.legacy_accounts()
        return await rewrite_legacy(self, accounts, self._cipher.legacy_entries)

    async def aclose(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            await self._client.aclose()
