"""An older ciphertext of an account written back into its row (a rollback) is refused.

The encrypted value is bound to the version it is stored under, on real SQLite files and a
real redis-server; entries written before versions were bound stay readable and are
rewritten bound at their next write.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path

import pytest

from keyloom_core import TokenSet
from keyloom_core.tokens import SQLiteTokenStore, TokenCipher, TokenDecryptionError
from keyloom_core.tokens._crypto import associated_data

pytestmark = pytest.mark.anyio

SECRET = "token-store-test-secret-0123456789-abcdefghij"


def tokens(n: int) -> TokenSet:
    return TokenSet(
        access_token=f"act.access-{n}",
        refresh_token=f"rft.refresh-{n}",
        expires_at=time.time() + 3_600,
        account_id="open-id-1",
    )


def _row(path: Path) -> tuple[int, bytes]:
    conn = sqlite3.connect(path)
    try:
        version, payload = conn.execute(
            "SELECT version, payload FROM keyloom_tokens WHERE account = 'victim'"
        ).fetchone()
    finally:
        conn.close()
    return int(version), bytes(payload)


def _write_payload(path: Path, payload: bytes) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE keyloom_tokens SET payload = ?", (payload,))
    finally:
        conn.close()


async def test_sqlite_refuses_an_older_value_written_back(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    async with SQLiteTokenStore(path, secret=SECRET) as store:
        await store.put("tiktok", "victim", tokens(1), scopes=())
        _, old = _row(path)  # refresh token 1: the attacker keeps a copy
        await store.put("tiktok", "victim", tokens(2), scopes=(), if_version=1)
        version, _ = _row(path)
        assert version == 2
        _write_payload(path, old)  # the old ciphertext goes back, the version stays
        with pytest.raises(TokenDecryptionError):
            await store.get("tiktok", "victim")
        # the current value under its own version still reads
        await store.put("tiktok", "victim", tokens(3), scopes=())
        grant = await store.get("tiktok", "victim")
        assert grant is not None
        assert grant.version == 3
        assert grant.tokens.refresh_token == "rft.refresh-3"


async def test_sqlite_unconditional_and_compare_and_swap_writes_stay_readable(
    tmp_path: Path,
) -> None:
    async with SQLiteTokenStore(tmp_path / "tokens.db", secret=SECRET) as store:
        for n in range(1, 6):
            grant = await store.put("tiktok", "victim", tokens(n), scopes=())
            assert grant is not None
            assert grant.version == n
            assert (await store.get("tiktok", "victim")).tokens.access_token == f"act.access-{n}"
        assert await store.put("tiktok", "victim", tokens(9), scopes=(), if_version=4) is None
        swapped = await store.put("tiktok", "victim", tokens(6), scopes=(), if_version=5)
        assert swapped is not None
        assert swapped.version == 6
        assert (await store.get("tiktok", "victim")).version == 6


async def test_entries_written_before_versions_were_bound_are_read_then_rewritten(
    tmp_path: Path,
) -> None:
    """Migration: a value in the earlier format (associated data without the version) is
    still read; the next write stores it bound to its version."""
    path = tmp_path / "tokens.db"
    async with SQLiteTokenStore(path, secret=SECRET) as store:
        await store.put("tiktok", "victim", tokens(1), scopes=())
    version, _ = _row(path)
    cipher = TokenCipher(SECRET)
    legacy = cipher.encrypt(
        {"tokens": tokens(7).to_dict(), "granted_scopes": [], "updated_at": 1.0},
        associated_data("tiktok", "victim"),
    )
    legacy = b"\x01" + legacy[1:]  # the earlier writer's format byte
    _write_payload(path, legacy)
    async with SQLiteTokenStore(path, secret=SECRET) as store:
        grant = await store.get("tiktok", "victim")
        assert grant is not None
        assert grant.tokens.access_token == "act.access-7"
        await store.put("tiktok", "victim", grant.tokens, scopes=(), if_version=version)
    _, rewritten = _row(path)
    assert rewritten[:1] == b"\x02"


async def test_redis_refuses_an_older_value_written_back(redis_url: str) -> None:
    import redis.asyncio

    from keyloom_core.tokens.redis import RedisTokenStore

    async with RedisTokenStore(redis_url, secret=SECRET) as store:
        key = store.key("tiktok", "victim")
        raw = redis.asyncio.Redis.from_url(redis_url)
        try:
            await store.put("tiktok", "victim", tokens(1), scopes=())
            old = await raw.hget(key, "d")
            await store.put("tiktok", "victim", tokens(2), scopes=(), if_version=1)
            assert int(await raw.hget(key, "v")) == 2
            await raw.hset(key, "d", old)
            with pytest.raises(TokenDecryptionError):
                await store.get("tiktok", "victim")
            grant = await store.put("tiktok", "victim", tokens(3), scopes=())
            assert grant is not None
            assert grant.version == 3
            assert (await store.get("tiktok", "victim")).tokens.refresh_token == "rft.refresh-3"
            assert await store.put("tiktok", "new", tokens(1), scopes=(), if_version=0) is None
            assert await store.get("tiktok", "new") is None
            assert base64.b64decode(await raw.hget(key, "d"))[:1] == b"\x02"
        finally:
            await raw.aclose()


# -- the upgrade order: write 0x01 during a rolling deploy, rewrite, then refuse 0x01 ------


def _legacy_blob(n: int, account: str = "victim") -> bytes:
    """An entry as the earlier release wrote it: ``0x01``, bound to provider and account."""
    value = TokenCipher(SECRET).encrypt(
        {"tokens": tokens(n).to_dict(), "granted_scopes": [], "updated_at": 1.0},
        associated_data("tiktok", account),
    )
    return b"\x01" + value[1:]


async def test_a_store_in_write_mode_writes_what_the_earlier_release_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.db"
    async with SQLiteTokenStore(path, secret=SECRET, legacy_entries="write") as store:
        await store.put("tiktok", "victim", tokens(1), scopes=())
        assert (await store.get("tiktok", "victim")).tokens.access_token == "act.access-1"
        assert await store.legacy_accounts() == [("tiktok", "victim")]
    _, blob = _row(path)
    assert blob[:1] == b"\x01"
    # the earlier release decrypts with the provider and account only
    earlier = TokenCipher(SECRET).decrypt(blob, associated_data("tiktok", "victim"))
    assert earlier["tokens"]["access_token"] == "act.access-1"


async def test_sqlite_upgrade_rewrites_every_earlier_entry_then_refuse_mode_reads_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.db"
    async with SQLiteTokenStore(path, secret=SECRET, legacy_entries="write") as store:
        for account in ("a", "b", "c"):
            await store.put("tiktok", account, tokens(1), scopes=())
    async with SQLiteTokenStore(path, secret=SECRET) as store:
        await store.put("tiktok", "d", tokens(1), scopes=())  # already current
        assert sorted(await store.legacy_accounts()) == [("tiktok", a) for a in "abc"]
        assert await store.upgrade_legacy() == 3
        assert await store.legacy_accounts() == []
        assert await store.upgrade_legacy() == 0
    async with SQLiteTokenStore(path, secret=SECRET, legacy_entries="refuse") as store:
        for account in "abcd":
            grant = await store.get("tiktok", account)
            assert grant is not None
            assert grant.tokens.access_token == "act.access-1"


async def test_refuse_mode_refuses_an_earlier_value_written_back(tmp_path: Path) -> None:
    """Once every entry is rewritten, an old ``0x01`` copy put back no longer decrypts."""
    path = tmp_path / "tokens.db"
    async with SQLiteTokenStore(path, secret=SECRET) as store:
        await store.put("tiktok", "victim", tokens(2), scopes=())
    _write_payload(path, _legacy_blob(1))
    async with SQLiteTokenStore(path, secret=SECRET) as store:  # "read": still accepted
        assert (await store.get("tiktok", "victim")).tokens.access_token == "act.access-1"
    async with SQLiteTokenStore(path, secret=SECRET, legacy_entries="refuse") as store:
        with pytest.raises(TokenDecryptionError, match="earlier unversioned format") as info:
            await store.get("tiktok", "victim")
        assert "act.access" not in str(info.value)


async def test_upgrade_needs_read_mode_and_the_choice_is_checked(tmp_path: Path) -> None:
    from keyloom_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="legacy_entries must be one of"):
        SQLiteTokenStore(tmp_path / "t.db", secret=SECRET, legacy_entries="maybe")  # type: ignore[arg-type]
    for mode in ("write", "refuse"):
        async with SQLiteTokenStore(tmp_path / "t.db", secret=SECRET, legacy_entries=mode) as s:
            with pytest.raises(ConfigurationError, match="legacy_entries='read'"):
                await s.upgrade_legacy()


@pytest.mark.parametrize("hash_tags", [False, True])
async def test_redis_upgrade_order(redis_url: str, hash_tags: bool) -> None:
    import redis.asyncio

    from keyloom_core.tokens.redis import RedisTokenStore

    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with RedisTokenStore(
            redis_url, secret=SECRET, legacy_entries="write", hash_tags=hash_tags
        ) as store:
            await store.put("tiktok", "a:1", tokens(1), scopes=())
            await store.put("tiktok", "b", tokens(1), scopes=())
            key = store.key("tiktok", "a:1")
            assert base64.b64decode(await raw.hget(key, "d"))[:1] == b"\x01"
        async with RedisTokenStore(redis_url, secret=SECRET, hash_tags=hash_tags) as store:
            await store.put("tiktok", "c", tokens(1), scopes=())
            assert sorted(await store.legacy_accounts()) == [("tiktok", "a:1"), ("tiktok", "b")]
            assert await store.upgrade_legacy() == 2
            assert await store.legacy_accounts() == []
            old = base64.b64encode(_legacy_blob(1, "a:1"))
        async with RedisTokenStore(
            redis_url, secret=SECRET, legacy_entries="refuse", hash_tags=hash_tags
        ) as store:
            for account in ("a:1", "b", "c"):
                assert (await store.get("tiktok", account)).tokens.access_token == "act.access-1"
            await raw.hset(key, "d", old)  # an old 0x01 copy written back
            with pytest.raises(TokenDecryptionError, match="earlier unversioned format"):
                await store.get("tiktok", "a:1")
    finally:
        await raw.aclose()


async def test_redis_a_corrupt_version_is_a_typed_store_error(redis_url: str) -> None:
    import redis.asyncio

    from keyloom_core.tokens import TokenStoreError
    from keyloom_core.tokens.redis import RedisTokenStore

    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with RedisTokenStore(redis_url, secret=SECRET) as store:
            await store.put("tiktok", "victim", tokens(1), scopes=())
            await raw.hset(store.key("tiktok", "victim"), "v", "not-a-number")
            with pytest.raises(TokenStoreError, match="version number"):
                await store.get("tiktok", "victim")
    finally:
        await raw.aclose()
