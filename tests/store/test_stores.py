"""The store contract on every backend: memory, an SQLite file, a real Redis on 127.0.0.1."""

from __future__ import annotations

import socket
import sqlite3
import time

import anyio
import pytest

from keyloom_core import ConfigurationError
from keyloom_core.models import TokenSet
from keyloom_core.store import (
    SessionRecord,
    SessionRegistry,
    StoreUnavailableError,
    new_session_id,
    open_store,
    session_tag,
)

pytestmark = pytest.mark.anyio
SECRET = "store-test-secret-0123456789-abcdefghijklmnop"


def record(user_id: str = "u1", *, now: float | None = None, **changes: object) -> SessionRecord:
    now = time.time() if now is None else now
    values: dict[str, object] = {
        "id": new_session_id(user_id),
        "user_id": user_id,
        "user": {"id": user_id, "name": "Alice"},
        "provider_id": "tiktok",
        "provider_account_id": f"open-{user_id}",
        "scopes": {"user.info.basic"},
        "created_at": now,
        "expires_at": now + 3600,
        "last_seen_at": now,
        "idle_ttl": 600.0,
        **changes,
    }
    return SessionRecord(**values)  # type: ignore[arg-type]


async def test_a_state_is_used_once_across_connections(store_kind, make_store):
    first, second = make_store(store_kind), make_store(store_kind)
    expires = time.time() + 60
    assert await first.use_once("nonce-1", expires)
    assert not await second.use_once("nonce-1", expires)
    assert not await first.use_once("nonce-1", expires)
    assert await second.use_once("nonce-2", expires)


async def test_concurrent_uses_of_one_state_accept_exactly_one(store_kind, make_store):
    stores = [make_store(store_kind) for _ in range(4)]
    results: list[bool] = []

    async def use(index: int) -> None:
        results.append(await stores[index % 4].use_once("race", time.time() + 60))

    async with anyio.create_task_group() as tasks:
        for index in range(20):
            tasks.start_soon(use, index)
    assert results.count(True) == 1


async def test_an_expired_state_key_may_be_recorded_again(store_kind, make_store):
    store = make_store(store_kind)
    assert await store.use_once("old", time.time() + 0.2)
    await anyio.sleep(0.35)
    assert await store.use_once("old", time.time() + 60)


async def test_session_round_trip_and_delete(store_kind, make_store):
    writer, reader = make_store(store_kind), make_store(store_kind)
    rec = record()
    await writer.create_session(rec)
    found = await reader.get_session(rec.id)
    assert found == rec
    assert found is not None
    assert found.user == {"id": "u1", "name": "Alice"}
    assert await reader.delete_session(rec.id)
    assert await writer.get_session(rec.id) is None
    assert not await writer.delete_session(rec.id)
    assert not await writer.touch_session(rec.id, time.time())
    assert await writer.get_session(rec.id) is None  # touch never recreates it


async def test_touch_moves_last_seen(store_kind, make_store):
    store = make_store(store_kind)
    rec = record(now=time.time() - 100)
    await store.create_session(rec)
    later = time.time()
    assert await store.touch_session(rec.id, later)
    found = await store.get_session(rec.id)
    assert found is not None
    assert found.last_seen_at == pytest.approx(later)


async def test_idle_and_absolute_ends(store_kind, make_store):
    store = make_store(store_kind)
    now = time.time()
    idle = record(now=now - 700)  # idle 600 s: ended 100 s ago
    absolute = record(now=now - 10, expires_at=now - 1)
    live = record(now=now)
    for rec in (idle, absolute, live):
        await store.create_session(rec)
    assert await store.get_session(idle.id) is None
    assert await store.get_session(absolute.id) is None
    assert await store.get_session(live.id) == live
    assert [r.id for r in await store.list_sessions("u1")] == [live.id]


async def test_list_and_delete_by_user(store_kind, make_store):
    store = make_store(store_kind)
    now = time.time()
    mine = [record("alice", now=now + i) for i in range(3)]
    other = record("bob", now=now)
    for rec in (*mine, other):
        await store.create_session(rec)
    listed = await store.list_sessions("alice")
    assert [r.id for r in listed] == [r.id for r in mine]
    assert await store.delete_user_sessions("alice") == 3
    assert await store.list_sessions("alice") == []
    for rec in mine:
        assert await store.get_session(rec.id) is None
    assert await store.get_session(other.id) == other
    assert await store.delete_user_sessions("alice") == 0


async def test_unknown_or_malformed_session_ids(store_kind, make_store):
    store = make_store(store_kind)
    for sid in ("", "nope", "x" * 300, "0123456789abcdef.", new_session_id("ghost")):
        assert await store.get_session(sid) is None
        assert not await store.delete_session(sid)


async def test_namespaces_are_separate(store_kind, make_store):
    one, two = make_store(store_kind, namespace="one"), make_store(store_kind, namespace="two")
    expires = time.time() + 60
    assert await one.use_once("n", expires)
    assert await two.use_once("n", expires)
    rec = record()
    await one.create_session(rec)
    assert await two.get_session(rec.id) is None
    assert await two.list_sessions("u1") == []
    assert (await one.hit("k", 60))[0] == 1
    assert (await two.hit("k", 60))[0] == 1


async def test_fixed_window_counter(store_kind, make_store):
    first, second = make_store(store_kind), make_store(store_kind)
    counts = [(await (first if i % 2 else second).hit("ip", 0.5))[0] for i in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    count, reset = await first.hit("ip", 0.5, 0)
    assert count == 5
    assert time.time() < reset <= time.time() + 0.5
    await anyio.sleep(0.6)
    assert (await second.hit("ip", 0.5))[0] == 1


async def test_tokens_on_the_same_backend(store_kind, make_store):
    store = make_store(store_kind)
    tokens = store.token_store(secret=SECRET)
    try:
        written = await tokens.put(
            "tiktok", "open-1", TokenSet(access_token="at", refresh_token="rt"), scopes=["a"]
        )
        assert written is not None
        got = await tokens.get("tiktok", "open-1")
        assert got is not None
        assert got.tokens.refresh_token == "rt"
    finally:
        await tokens.aclose()


# -- the registry: lifetimes, renewal, revocation --------------------------------------------


class CountingTouches:
    """A real memory store that counts the writes of last use."""

    def __init__(self, store):
        self.store = store
        self.touches = 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    async def touch_session(self, session_id, last_seen_at):
        self.touches += 1
        return await self.store.touch_session(session_id, last_seen_at)


async def test_sliding_renewal_writes_at_most_once_per_interval(make_store):
    store = CountingTouches(make_store("memory"))
    registry = SessionRegistry(store, absolute_ttl=3600, idle_ttl=600, touch_interval=60)
    start = time.time()
    rec = await registry.create(
        user={"id": "u1"}, provider_id="p", provider_account_id="a", scopes=[], now=start
    )
    for second in range(0, 300, 5):  # one read every 5 s for 5 minutes
        assert await registry.get(rec.id, now=start + second) is not None
    assert store.touches == 4  # at 60, 120, 180, 240
    # Idle for longer than idle_ttl: ended, even though the absolute end is far.
    assert await registry.get(rec.id, now=start + 240 + 601) is None


async def test_absolute_lifetime_ends_an_active_session(make_store):
    registry = SessionRegistry(
        make_store("memory"), absolute_ttl=100, idle_ttl=60, touch_interval=10
    )
    start = time.time()
    rec = await registry.create(
        user={"id": "u1"}, provider_id="p", provider_account_id="a", scopes=[], now=start
    )
    for second in range(0, 100, 20):
        assert await registry.get(rec.id, now=start + second) is not None
    assert await registry.get(rec.id, now=start + 100) is None


async def test_every_login_gets_a_new_id_and_revoke_all(store_kind, make_store):
    registry = SessionRegistry(
        make_store(store_kind), absolute_ttl=3600, idle_ttl=600, touch_interval=60
    )
    ids = {
        (
            await registry.create(
                user={"id": "u7"}, provider_id="p", provider_account_id="a", scopes=["s"]
            )
        ).id
        for _ in range(3)
    }
    assert len(ids) == 3
    assert all(i.startswith(session_tag("u7") + ".") for i in ids)
    assert {r.id for r in await registry.list("u7")} == ids
    assert await registry.revoke_all("u7") == 3
    assert [await registry.get(i) for i in ids] == [None, None, None]


async def test_two_providers_with_one_account_id_are_listed_and_revoked_apart(
    store_kind, make_store
):
    """Without a users adapter a user id is the provider's account id; two providers may
    hand out the same one, and naming the provider keeps their sessions apart."""
    registry = SessionRegistry(
        make_store(store_kind), absolute_ttl=3600, idle_ttl=600, touch_interval=60
    )
    made = {}
    for provider in ("tiktok", "github", "github"):
        record = await registry.create(
            user={"id": "12345"}, provider_id=provider, provider_account_id="12345", scopes=[]
        )
        made.setdefault(provider, set()).add(record.id)
    assert {r.id for r in await registry.list("12345", provider_id="github")} == made["github"]
    assert len(await registry.list("12345")) == 3
    assert await registry.revoke_all("12345", provider_id="github") == 2
    assert [await registry.get(i) for i in made["github"]] == [None, None]
    assert [r.id for r in await registry.list("12345")] == list(made["tiktok"])


async def test_stateless_registry_cannot_list_or_revoke():
    registry = SessionRegistry.stateless()
    assert not registry.server_side
    with pytest.raises(ConfigurationError, match="stateless"):
        await registry.revoke_all("u1")
    with pytest.raises(ConfigurationError):
        await registry.list("u1")


# -- failures are typed ----------------------------------------------------------------------


async def test_redis_down_is_store_unavailable(make_store):
    pytest.importorskip("redis")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = make_store("redis", url=f"redis://127.0.0.1:{port}/0")
    rec = record()
    calls = [
        store.use_once("n", time.time() + 60),
        store.create_session(rec),
        store.get_session(rec.id),
        store.delete_session(rec.id),
        store.list_sessions("u1"),
        store.hit("k", 60),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailableError) as caught:
            await call
        assert caught.value.status == 503
        assert rec.id not in str(caught.value)


async def test_sqlite_locked_is_store_unavailable(tmp_path):
    from keyloom_core.store import SQLiteStore

    path = tmp_path / "locked.db"
    store = SQLiteStore(path, busy_timeout=0.2)
    async with store:
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailableError) as caught:
                await store.use_once("n", time.time() + 60)
            assert caught.value.status == 503
            assert caught.value.code == "store_unavailable"
            assert "locked" not in caught.value.hint.lower()
            blocker.execute("ROLLBACK")
            assert await store.use_once("n", time.time() + 60)  # recovers by itself
        finally:
            blocker.close()


def test_open_store_urls(tmp_path):
    from keyloom_core.store import MemoryStore, SQLiteStore

    assert isinstance(open_store("memory://"), MemoryStore)
    sqlite_store = open_store(f"sqlite://{tmp_path}/a.db", namespace="x")
    assert isinstance(sqlite_store, SQLiteStore)
    assert str(sqlite_store.path) == f"{tmp_path}/a.db"
    assert sqlite_store.namespace == "x"
    with pytest.raises(ConfigurationError, match="store URL"):
        open_store("postgres://db")
    with pytest.raises(ConfigurationError, match="needs a file"):
        open_store("sqlite://")


def _key_slot(key: str) -> int:
    """Redis Cluster's slot of *key* (CRC16/XMODEM of the hash tag, mod 16384)."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    crc = 0
    for byte in key.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


async def test_redis_keys_of_one_user_and_one_account_share_a_slot(make_store, redis_url):
    store = make_store("redis", namespace="shop")
    ids = [new_session_id("alice") for _ in range(5)]
    keys = [store.session_key(i) for i in ids]
    assert all(k is not None and k.startswith("keyloom:shop:session:{") for k in keys)
    slots = {_key_slot(k) for k in keys if k} | {_key_slot(store.user_key(session_tag("alice")))}
    assert len(slots) == 1
    tokens = store.token_store(secret=SECRET)
    grant, lock = tokens.key("tiktok", "open-1"), tokens.lock_key("tiktok", "open-1")
    assert grant.startswith("keyloom:shop:tokens:grant:{")
    assert _key_slot(grant) == _key_slot(lock)
    # What is really in Redis carries the namespace and nothing else.
    await store.create_session(record("alice"))
    await store.use_once("nonce", time.time() + 60)
    await store.hit("start:127.0.0.1", 60)
    raw = sorted(k.decode() for k in await store.client.keys("*"))
    assert raw
    assert all(k.startswith("keyloom:shop:") for k in raw)


async def test_a_closed_store_reconnects_on_next_use(store_kind, make_store):
    store = make_store(store_kind)
    assert await store.use_once("before", time.time() + 60)
    await store.aclose()
    assert not await store.use_once("before", time.time() + 60)
    assert await store.use_once("after", time.time() + 60)
