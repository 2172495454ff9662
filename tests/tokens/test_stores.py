"""The three token stores behind one contract, on real SQLite files and a real redis-server."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from keyloom_core import TokenSet
from keyloom_core.tokens import (
    MemoryTokenStore,
    SQLiteTokenStore,
    TokenDecryptionError,
    TokenLockTimeoutError,
    TokenStore,
    TokenStoreError,
)

pytestmark = pytest.mark.anyio

SECRET = "token-store-test-secret-0123456789-abcdefghij"
OLD_SECRET = "token-store-old-secret-9876543210-zyxwvutsrq"
ACCESS = "act.ACCESS-token-value-visible-if-plaintext-7f3a"
REFRESH = "rft.REFRESH-token-value-visible-if-plaintext-91bc"


def tokens(n: int = 0, *, refresh_in: float = 86_400.0) -> TokenSet:
    now = time.time()
    return TokenSet(
        access_token=f"{ACCESS}-{n}",
        refresh_token=f"{REFRESH}-{n}",
        expires_at=now + 3_600,
        refresh_expires_at=now + refresh_in,
        scopes=frozenset({"user.info.basic"}),
        account_id="open-id-1",
    )


StoreFactory = Callable[..., TokenStore]


def _factory(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, made: list[TokenStore]
) -> StoreFactory:
    url = request.getfixturevalue("redis_url") if kind == "redis" else ""

    def make(secret: str = SECRET, old_secrets: tuple[str, ...] = ()) -> TokenStore:
        store: TokenStore
        if kind == "memory":
            store = MemoryTokenStore()
        elif kind == "sqlite":
            store = SQLiteTokenStore(tmp_path / "tokens.db", secret=secret, old_secrets=old_secrets)
        else:
            from keyloom_core.tokens.redis import RedisTokenStore

            store = RedisTokenStore(url, secret=secret, old_secrets=old_secrets)
        made.append(store)
        return store

    make.kind = kind  # type: ignore[attr-defined]
    return make


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Every store."""
    made: list[TokenStore] = []
    yield _factory(request.param, tmp_path, request, made)
    for store in made:
        await store.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def make_durable(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """The stores that persist, encrypt and lock across processes."""
    made: list[TokenStore] = []
    yield _factory(request.param, tmp_path, request, made)
    for store in made:
        await store.aclose()


async def test_put_get_versions_and_compare_and_swap(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.get("tiktok", "open-id-1") is None
    first = await store.put(
        "tiktok", "open-id-1", tokens(1), scopes={"user.info.basic", "video.list"}
    )
    assert first is not None
    assert first.version == 1
    got = await store.get("tiktok", "open-id-1")
    assert got == first
    assert got.granted_scopes == {"user.info.basic", "video.list"}
    assert got.tokens.access_token == f"{ACCESS}-1"
    assert got.tokens.refresh_token == f"{REFRESH}-1"
    assert got.tokens.account_id == "open-id-1"
    # Compare-and-swap: only over the version named.
    assert await store.put("tiktok", "open-id-1", tokens(2), scopes=(), if_version=7) is None
    second = await store.put("tiktok", "open-id-1", tokens(2), scopes=(), if_version=1)
    assert second is not None
    assert second.version == 2
    assert await store.put("tiktok", "open-id-1", tokens(3), scopes=(), if_version=1) is None
    assert (await store.get("tiktok", "open-id-1")).tokens.access_token == f"{ACCESS}-2"
    assert await store.put("tiktok", "nobody", tokens(3), scopes=(), if_version=1) is None
    assert await store.get("tiktok", "nobody") is None
    # An unconditional put (a new sign-in) always writes the next version.
    third = await store.put("tiktok", "open-id-1", tokens(3), scopes=())
    assert third is not None
    assert third.version == 3
    # Keys are separate per provider and per account.
    assert await store.get("other", "open-id-1") is None
    assert await store.get("tiktok", "open-id-2") is None


async def test_delete_optionally_by_version(make_store: StoreFactory) -> None:
    store = make_store()
    await store.put("tiktok", "a", tokens(), scopes=())
    await store.put("tiktok", "a", tokens(), scopes=())
    assert await store.delete("tiktok", "a", if_version=1) is False
    assert await store.get("tiktok", "a") is not None
    assert await store.delete("tiktok", "a", if_version=2) is True
    assert await store.get("tiktok", "a") is None
    assert await store.delete("tiktok", "a") is False
    await store.put("tiktok", "a", tokens(), scopes=())
    assert await store.delete("tiktok", "a") is True


async def test_the_lock_is_exclusive_per_account(make_store: StoreFactory) -> None:
    store = make_store()
    other = make_store()  # a second client of the same backend
    if make_store.kind == "memory":  # type: ignore[attr-defined]
        other = store  # the memory lock covers one store object
    seen: list[str] = []

    async def try_same_account() -> None:
        with pytest.raises(TokenLockTimeoutError) as info:
            async with other.lock("tiktok", "a", ttl=5, wait=0.2):
                seen.append("a")  # pragma: no cover - must not happen
        assert info.value.account_id == "a"

    async def take_other_account() -> None:
        async with other.lock("tiktok", "b", ttl=5, wait=0.2):
            seen.append("b")

    async with store.lock("tiktok", "a", ttl=5, wait=1), anyio.create_task_group() as tg:
        tg.start_soon(try_same_account)
        tg.start_soon(take_other_account)
    async with other.lock("tiktok", "a", ttl=5, wait=0.5):
        seen.append("a after release")
    assert seen == ["b", "a after release"]


async def test_waiters_get_the_lock_in_turn(make_store: StoreFactory) -> None:
    store = make_store()
    inside = 0
    peak = 0

    async def worker() -> None:
        nonlocal inside, peak
        async with store.lock("tiktok", "a", ttl=5, wait=10):
            inside += 1
            peak = max(peak, inside)
            await anyio.sleep(0.02)
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(worker)
    assert peak == 1


async def test_a_dead_holders_lease_expires_and_is_not_released_by_it(
    make_durable: StoreFactory,
) -> None:
    first, second, third = make_durable(), make_durable(), make_durable()
    async with first.lock("tiktok", "a", ttl=0.3, wait=1):
        # The holder is stuck past its lease: another process takes over.
        started = time.monotonic()
        second_lock = second.lock("tiktok", "a", ttl=30, wait=5)
        await second_lock.__aenter__()
        assert time.monotonic() - started >= 0.2
    # The first holder's release must not free the second holder's lease.
    with pytest.raises(TokenLockTimeoutError):
        async with third.lock("tiktok", "a", ttl=30, wait=0.2):
            pass
    await second_lock.__aexit__(None, None, None)
    async with third.lock("tiktok", "a", ttl=30, wait=0.5):
        pass


async def test_tokens_survive_reopening(make_durable: StoreFactory) -> None:
    store = make_durable()
    await store.put("tiktok", "a", tokens(5), scopes={"video.list"})
    await store.aclose()
    again = make_durable()
    grant = await again.get("tiktok", "a")
    assert grant is not None
    assert grant.tokens.refresh_token == f"{REFRESH}-5"
    assert grant.granted_scopes == {"video.list"}


async def test_secret_rotation(make_durable: StoreFactory) -> None:
    old = make_durable(secret=OLD_SECRET)
    await old.put("tiktok", "a", tokens(1), scopes=())
    await old.put("tiktok", "b", tokens(2), scopes=())
    rotated = make_durable(secret=SECRET, old_secrets=(OLD_SECRET,))
    grant = await rotated.get("tiktok", "a")
    assert grant is not None
    assert grant.tokens.access_token == f"{ACCESS}-1"
    # A write re-encrypts with the current secret: the old one is no longer needed for it.
    await rotated.put("tiktok", "a", grant.tokens, scopes=(), if_version=grant.version)
    current_only = make_durable(secret=SECRET)
    assert (await current_only.get("tiktok", "a")).tokens.access_token == f"{ACCESS}-1"
    with pytest.raises(TokenDecryptionError) as info:
        await current_only.get("tiktok", "b")
    assert info.value.account_id == "b"
    assert "old_secrets" in (info.value.hint or "")


async def _raw_bytes(kind: str, store: TokenStore, tmp_path: Path, redis_dir: Any) -> bytes:
    if kind == "sqlite":
        return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("tokens.db*")))
    client = store.client  # type: ignore[attr-defined]
    raw = b""
    async for key in client.scan_iter(match="*"):
        raw += key + repr(await client.hgetall(key)).encode() + (await client.dump(key) or b"")
    await client.save()
    return raw + (Path(redis_dir) / "dump.rdb").read_bytes()


async def test_nothing_readable_at_rest(
    make_durable: StoreFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kind = make_durable.kind  # type: ignore[attr-defined]
    redis_dir = request.getfixturevalue("redis_dir") if kind == "redis" else None
    store = make_durable()
    for n in range(3):
        await store.put("tiktok", f"acct-{n}", tokens(n), scopes={"video.list"})
    raw = await _raw_bytes(kind, store, tmp_path, redis_dir)
    assert b"acct-1" in raw  # the file / keys really were read
    for needle in (ACCESS, REFRESH, "ACCESS-token", "REFRESH-token", "act.", "rft."):
        assert needle.encode() not in raw, needle
    assert SECRET.encode() not in raw


async def test_a_value_moved_to_another_account_does_not_decrypt(tmp_path: Path) -> None:
    async with SQLiteTokenStore(tmp_path / "tokens.db", secret=SECRET) as store:
        await store.put("tiktok", "victim", tokens(1), scopes=())
        await store.put("tiktok", "attacker", tokens(2), scopes=())
    with sqlite3.connect(tmp_path / "tokens.db") as conn:
        conn.execute(
            "UPDATE keyloom_tokens SET payload = "
            "(SELECT payload FROM keyloom_tokens WHERE account = 'victim') "
            "WHERE account = 'attacker'"
        )
    conn.close()
    async with SQLiteTokenStore(tmp_path / "tokens.db", secret=SECRET) as store:
        with pytest.raises(TokenDecryptionError):
            await store.get("tiktok", "attacker")
        assert (await store.get("tiktok", "victim")) is not None


async def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokens.db"
    async with SQLiteTokenStore(path, secret=SECRET) as store:
        await store.put("tiktok", "a", tokens(), scopes=())
        assert path.stat().st_mode & 0o077 == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_purges_dead_entries(tmp_path: Path) -> None:
    async with SQLiteTokenStore(tmp_path / "tokens.db", secret=SECRET) as store:
        await store.put("tiktok", "dead", tokens(refresh_in=-1), scopes=())
        await store.put("tiktok", "alive", tokens(), scopes=())
        assert await store.purge_expired() == 1
        assert await store.get("tiktok", "dead") is None
        assert await store.get("tiktok", "alive") is not None


async def test_sqlite_failure_is_a_typed_error(tmp_path: Path) -> None:
    store = SQLiteTokenStore(tmp_path, secret=SECRET)  # a directory: cannot be opened
    with pytest.raises(TokenStoreError) as info:
        await store.get("tiktok", "a")
    assert info.value.status == 503
    assert info.value.account_id == "a"
    await store.aclose()


async def test_redis_expires_entries_with_their_refresh_token(redis_url: str) -> None:
    from keyloom_core.tokens.redis import RedisTokenStore

    async with RedisTokenStore(redis_url, secret=SECRET) as store:
        await store.put("tiktok", "a", tokens(refresh_in=3_600), scopes=())
        ttl = await store.client.pttl(store.key("tiktok", "a"))
        assert 3_600_000 < ttl <= 3_660_000
        await store.put("tiktok", "a", TokenSet(access_token="x"), scopes=())
        assert await store.client.pttl(store.key("tiktok", "a")) == -1


async def test_redis_unreachable_is_a_typed_error() -> None:
    import socket

    from keyloom_core.tokens.redis import RedisTokenStore

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with RedisTokenStore(f"redis://127.0.0.1:{port}/0", secret=SECRET) as store:
        with pytest.raises(TokenStoreError) as info:
            await store.get("tiktok", "a")
    assert "ConnectionError" in str(info.value)


async def test_reprs_show_no_secrets(tmp_path: Path, redis_url: str) -> None:
    from keyloom_core.tokens import TokenCipher
    from keyloom_core.tokens.redis import RedisTokenStore

    for obj in (
        SQLiteTokenStore(tmp_path / "t.db", secret=SECRET),
        RedisTokenStore(redis_url, secret=SECRET),
        TokenCipher(SECRET),
    ):
        assert SECRET not in repr(obj)


async def test_every_store_implements_the_protocol(make_store: StoreFactory) -> None:
    assert isinstance(make_store(), TokenStore)
