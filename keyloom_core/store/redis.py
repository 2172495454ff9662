"""A store in Redis (or Redis Cluster), shared by every process and host of an app.

Needs the ``redis`` package (``pip install 'keyloom-core[redis]'``); uses its asyncio client.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._base import SessionRecord, StoreUnavailableError, session_tag, tag_of

try:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installation
    msg = "RedisStore needs the 'redis' package: pip install 'keyloom-core[redis]'"
    raise ImportError(msg) from exc

if TYPE_CHECKING:
    from ..tokens._store import TokenStore

__all__ = ["RedisStore"]

T = TypeVar("T")

# KEYS: session hash, user index set. ARGV: record, last seen, session expire-at ms,
# session id, index expire-at ms, now ms.
_CREATE: Final = """
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'l', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
local pttl = redis.call('PTTL', KEYS[2])
if pttl < 0 or tonumber(ARGV[6]) + pttl < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
return 1
"""
# KEYS: session hash. ARGV: last seen, expire-at ms. Never recreates a deleted session.
_TOUCH: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'l', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
# KEYS: session hash, user index set. ARGV: session id.
_DELETE: Final = """
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""
# KEYS: user index set, then the session hashes. ARGV: the session ids.
_DELETE_USER: Final = """
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], ARGV[i - 1])
end
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return n
"""
# KEYS: counter. ARGV: window ms, amount. Returns {count, ms until reset}.
_HIT: Final = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def _ms(epoch: float) -> int:
    return int(epoch * 1000)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisStore:
    """A :class:`~keyloom_core.store.Store` in Redis; every multi-key write is a Lua script.

    Key layout (``P`` is ``{prefix}{namespace}:``; ``{…}`` is a Redis Cluster hash tag)::

        P state:<nonce>                 used login state      SET NX PX (state TTL)
        P session:{<tag>}:<random>      a session (hash)      r = record, l = last seen
        P user:{<tag>}                  the user's session ids (set)
        P rate:<limit>:<client>         a rate-limit counter  INCR, PEXPIRE (window)
        P tokens:grant:{<provider>:<account>} and P tokens:lock:{<provider>:<account>}

    ``<tag>`` is a 64-bit hash of the user id (:func:`~keyloom_core.store.session_tag`),
    also the first part of the session id, so one user's sessions and their index share
    a cluster slot: creating, deleting and revoking them are single-slot scripts, and
    Redis Cluster works (give a ``redis.asyncio.RedisCluster`` client). A session key
    expires when the session ends (idle or absolute), a state with its login, a counter
    with its window: nothing needs purging.

    :param redis: a ``redis://`` URL (the store then owns and closes the client: a
        blocking pool of *max_connections*, where a request waits up to 5 s for a free
        connection instead of failing, and 5-second socket timeouts) or a
        ``redis.asyncio`` client (borrowed, not closed).
    :param namespace: the app's namespace, so several apps may share one Redis.
    :param prefix: the key prefix before the namespace.
    :param clock: the time source.
    :param max_connections: connections per process, for a URL.
    """

    def __init__(
        self,
        redis: str | Redis,
        *,
        namespace: str = "app",
        prefix: str = "keyloom:",
        clock: Callable[[], float] = time.time,
        max_connections: int = 64,
    ) -> None:
        if isinstance(redis, str):
            pool = BlockingConnectionPool.from_url(
                redis,
                max_connections=max_connections,
                timeout=5.0,
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
            )
            self._client: Redis = Redis.from_pool(pool)
            self._owns_client = True
        else:
            self._client = redis
            self._owns_client = False
        self.namespace = namespace
        self.prefix = f"{prefix}{namespace}:"
        self._clock = clock
        self._create = self._client.register_script(_CREATE)
        self._touch = self._client.register_script(_TOUCH)
        self._delete = self._client.register_script(_DELETE)
        self._delete_user = self._client.register_script(_DELETE_USER)
        self._hit = self._client.register_script(_HIT)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def client(self) -> Redis:
        """The Redis client in use."""
        return self._client

    # -- keys ------------------------------------------------------------------------------

    def session_key(self, session_id: str) -> str | None:
        """The key of a session, or ``None`` if *session_id* is not one of ours."""
        tag = tag_of(session_id)
        if tag is None:
            return None
        return f"{self.prefix}session:{{{tag}}}:{session_id.partition('.')[2]}"

    def user_key(self, tag: str) -> str:
        """The key of the set of a user's session ids."""
        return f"{self.prefix}user:{{{tag}}}"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            msg = f"the Redis store failed: {type(exc).__name__}"
            raise StoreUnavailableError(msg) from exc

    # -- the store -------------------------------------------------------------------------

    async def use_once(self, key: str, expires_at: float) -> bool:
        """Record *key* (``SET NX``); ``False`` if it was used and has not expired."""
        ttl = max(1, _ms(expires_at - self._clock()))
        pending = self._client.set(f"{self.prefix}state:{key}", b"1", nx=True, px=ttl)
        return bool(await self._call(pending))

    async def create_session(self, record: SessionRecord) -> None:
        """Write the session and index it under its user, atomically."""
        key = self.session_key(record.id)
        if key is None:
            msg = "session ids come from new_session_id()"
            raise ValueError(msg)
        tag = tag_of(record.id) or ""
        args: list[str | int] = [
            record.to_json(),
            repr(record.last_seen_at),
            _ms(record.valid_until),
            record.id,
            _ms(record.expires_at),
            _ms(self._clock()),
        ]
        await self._call(self._create(keys=[key, self.user_key(tag)], args=args))

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The live record, or ``None`` (one ``HMGET``)."""
        key = self.session_key(session_id)
        if key is None:
            return None
        pending: Awaitable[list[Any]] = self._client.hmget(key, ["r", "l"])
        record, last_seen = await self._call(pending)
        if record is None or last_seen is None:
            return None
        found = SessionRecord.from_json(record, last_seen_at=float(_text(last_seen)))
        if found.id != session_id or not found.is_valid(self._clock()):
            return None
        return found

    async def touch_session(self, session_id: str, last_seen_at: float) -> bool:
        """Move the last use (and the key's expiry); ``False`` if the session is gone."""
        record = await self.get_session(session_id)
        key = self.session_key(session_id)
        if record is None or key is None:
            return False
        renewed = min(record.expires_at, last_seen_at + record.idle_ttl)
        args: list[str | int] = [repr(last_seen_at), _ms(renewed)]
        return bool(await self._call(self._touch(keys=[key], args=args)))

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session and its index entry."""
        key = self.session_key(session_id)
        tag = tag_of(session_id)
        if key is None or tag is None:
            return False
        pending = self._delete(keys=[key, self.user_key(tag)], args=[session_id])
        return int(await self._call(pending)) > 0

    async def _ids(self, user_id: str) -> list[str]:
        pending: Awaitable[set[Any]] = self._client.smembers(self.user_key(session_tag(user_id)))
        return sorted(_text(m) for m in await self._call(pending))

    async def list_sessions(self, user_id: str) -> Sequence[SessionRecord]:
        """The user's live sessions, oldest first."""
        found = []
        for session_id in await self._ids(user_id):
            record = await self.get_session(session_id)
            if record is not None and record.user_id == user_id:
                found.append(record)
        return sorted(found, key=lambda r: r.created_at)

    async def delete_user_sessions(self, user_id: str) -> int:
        """Delete every session of the user and the index, in one script."""
        pairs = [(k, i) for i in await self._ids(user_id) if (k := self.session_key(i))]
        if not pairs:
            return 0
        keys = [self.user_key(session_tag(user_id)), *(k for k, _ in pairs)]
        pending = self._delete_user(keys=keys, args=[i for _, i in pairs])
        return int(await self._call(pending))

    async def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count one event in *key*'s fixed window (``INCR`` + ``PEXPIRE``, atomic)."""
        pending = self._hit(keys=[f"{self.prefix}rate:{key}"], args=[max(1, _ms(window)), amount])
        count, ttl = await self._call(pending)
        return int(count), self._clock() + int(ttl) / 1000

    def token_store(self, *, secret: str, old_secrets: Sequence[str] = ()) -> TokenStore:
        """A :class:`~keyloom_core.tokens.RedisTokenStore` on this client and namespace."""
        from ..tokens.redis import RedisTokenStore  # noqa: PLC0415

        return RedisTokenStore(
            self._client,
            secret=secret,
            old_secrets=old_secrets,
            prefix=f"{self.prefix}tokens:",
            hash_tags=True,
        )

    async def aclose(self) -> None:
        """Disconnect the client if this store created it (it reconnects if used again)."""
        if self._owns_client:
            await self._client.aclose()
