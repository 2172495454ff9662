"""TokenManager against the real TikTok emulator: refresh once, save first, fail safely."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from keyloom_core import (
    Keyloom,
    LoginResult,
    ReauthenticationRequiredError,
    ScopeDeniedError,
    TokenSet,
)
from keyloom_core.testing.emulator import AccessToken, TokenFailure
from keyloom_core.tokens import (
    MemoryTokenStore,
    NotSignedInError,
    SQLiteTokenStore,
    StoredGrant,
    TokenManager,
    TokenStoreError,
    TokenStoreWriteError,
)

pytestmark = pytest.mark.anyio

SCOPES = ("user.info.basic", "video.list")
SECRET = "token-store-test-secret-0123456789-abcdefghij"
Clock = Any  # conftest.Clock
CountingEmulator = Any  # conftest.CountingEmulator

Login = Callable[[Keyloom], Any]


class FlakyStore(MemoryTokenStore):
    """A memory store whose next ``put`` calls fail, like a store that went read-only."""

    def __init__(self) -> None:
        super().__init__()
        self.failing_puts = 0
        self.puts = 0

    async def put(self, *args: Any, **kwargs: Any) -> StoredGrant | None:
        self.puts += 1
        if self.failing_puts:
            self.failing_puts -= 1
            msg = "disk I/O error"
            raise TokenStoreError(msg)
        return await super().put(*args, **kwargs)


async def signed_in(
    make_keyloom: Callable[..., Keyloom], login: Login, manager: TokenManager
) -> tuple[Keyloom, LoginResult]:
    keyloom = make_keyloom(manager.plugin)
    manager.bind(keyloom)
    async with keyloom:
        result = await login(keyloom)
    return keyloom, result


async def test_login_stores_the_grant_through_the_hook(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store)
    keyloom = make_keyloom(manager.plugin)  # passed to define_keyloom, then bound
    manager.bind(keyloom)
    async with keyloom:
        result = await login(keyloom)
    account = result.profile.id
    grant = await store.get("tiktok", account)
    assert grant is not None
    assert grant.version == 1
    assert grant.tokens == result.tokens
    assert grant.granted_scopes == frozenset(SCOPES)
    assert grant.expires_at == result.tokens.expires_at
    assert grant.refresh_expires_at is not None
    assert grant.refresh_expires_at > grant.expires_at
    assert result.tokens.access_token not in repr(grant)
    assert result.tokens.refresh_token not in repr(grant)
    assert emulator.refresh_requests == 0


async def test_bind_registers_the_plugin_once(make_keyloom: Callable[..., Keyloom]) -> None:
    manager = TokenManager(MemoryTokenStore())
    keyloom = make_keyloom(manager.plugin)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the documented way warns about nothing
        assert manager.bind(keyloom) is manager
        manager.bind(keyloom)
    impls = keyloom.registry.pm.hook.login_succeeded.get_hookimpls()
    assert [i.plugin for i in impls].count(manager.plugin) == 1
    with pytest.raises(RuntimeError, match="another Keyloom"):
        manager.bind(make_keyloom())


async def test_binding_an_instance_built_without_the_plugin_is_deprecated(
    make_keyloom: Callable[..., Keyloom],
) -> None:
    manager = TokenManager(MemoryTokenStore())
    keyloom = make_keyloom()
    with pytest.warns(DeprecationWarning, match=r"define_keyloom\(plugins=\[manager.plugin\]\)"):
        manager.bind(keyloom)
    impls = keyloom.registry.pm.hook.login_succeeded.get_hookimpls()
    assert [i.plugin for i in impls].count(manager.plugin) == 1


async def test_fresh_token_is_returned_without_a_refresh(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    manager = TokenManager(MemoryTokenStore(), clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    async with keyloom:
        token = await manager.access_token("tiktok", result.profile.id, needs={"video.list"})
    assert token == result.tokens.access_token
    assert emulator.refresh_requests == 0


async def test_expiring_token_is_refreshed_and_the_rotated_token_saved(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store, clock=clock, skew=60)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    account = result.profile.id
    emulator.access_token_ttl = 86_400
    clock.advance(600 - 30)  # the 600 s token now expires within the skew
    async with keyloom:
        token = await manager.access_token("tiktok", account)
        again = await manager.access_token("tiktok", account)
    assert token != result.tokens.access_token
    assert again == token
    assert emulator.refreshes == 1
    grant = await store.get("tiktok", account)
    assert grant is not None
    assert grant.version == 2
    assert grant.tokens.access_token == token
    assert grant.tokens.refresh_token not in (None, result.tokens.refresh_token)
    assert grant.granted_scopes == frozenset(SCOPES)
    # The old refresh token was rotated away at the provider; the new access token works.
    old = emulator.book.refresh(
        result.tokens.refresh_token or "", client_id=emulator.default_app.client_key
    )
    assert old is TokenFailure.REVOKED
    assert isinstance(emulator.book.lookup_access(token), AccessToken)


async def test_concurrent_tasks_refresh_once(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store, clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    emulator.access_token_ttl = 86_400
    emulator.refresh_delay = 0.2
    clock.advance(3_600)
    tokens: list[str] = []

    async def ask() -> None:
        tokens.append(await manager.access_token("tiktok", result.profile.id))

    async with keyloom, anyio.create_task_group() as tg:
        for _ in range(25):
            tg.start_soon(ask)
    assert emulator.refresh_requests == 1
    assert len(set(tokens)) == 1
    assert tokens[0] != result.tokens.access_token
    assert len(manager._locks) == 0  # the per-account lock table is emptied after use


async def test_short_lived_tokens_are_not_refreshed_on_every_call(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator
) -> None:
    emulator.access_token_ttl = 40  # shorter than the 60 s skew
    manager = TokenManager(MemoryTokenStore(), skew=60)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    async with keyloom:
        assert await manager.access_token("tiktok", result.profile.id) == (
            result.tokens.access_token
        )
    assert emulator.refresh_requests == 0


async def test_missing_scope_fails_before_any_provider_call(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    manager = TokenManager(MemoryTokenStore(), clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    clock.advance(3_600)  # expired: a refresh would be due
    before = emulator.token_requests
    async with keyloom:
        with pytest.raises(ScopeDeniedError) as info:
            await manager.access_token(
                "tiktok", result.profile.id, needs={"video.list", "video.upload"}
            )
    assert info.value.missing == {"video.upload"}
    assert emulator.token_requests == before
    assert emulator.refresh_requests == 0


async def test_invalid_grant_deletes_and_asks_to_sign_in_again(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store, clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    account = result.profile.id
    assert emulator.book.revoke(result.tokens.refresh_token or "") is None  # user revoked
    clock.advance(3_600)
    async with keyloom:
        with pytest.raises(ReauthenticationRequiredError) as info:
            await manager.access_token("tiktok", account)
        assert info.value.error == "invalid_grant"
        assert await store.get("tiktok", account) is None
        with pytest.raises(NotSignedInError):
            await manager.access_token("tiktok", account)
    assert emulator.refresh_requests == 1


async def test_expired_refresh_token_deletes_without_a_provider_call(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store, clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    clock.advance(400 * 86_400)  # past the refresh token lifetime (180 days)
    async with keyloom:
        with pytest.raises(ReauthenticationRequiredError):
            await manager.access_token("tiktok", result.profile.id)
    assert await store.get("tiktok", result.profile.id) is None
    assert emulator.refresh_requests == 0


async def test_a_failed_write_is_retried(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = FlakyStore()
    manager = TokenManager(store, clock=clock, write_backoff=0.01)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    emulator.access_token_ttl = 86_400
    clock.advance(3_600)
    store.failing_puts = 1
    async with keyloom:
        token = await manager.access_token("tiktok", result.profile.id)
    grant = await store.get("tiktok", result.profile.id)
    assert grant is not None
    assert grant.tokens.access_token == token
    assert grant.version == 2
    assert emulator.refreshes == 1
    assert manager.held == frozenset()


async def test_write_failure_holds_the_tokens_reports_and_recovers(
    make_keyloom: Callable[..., Keyloom],
    login: Login,
    emulator: CountingEmulator,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    manager = TokenManager(store, clock=clock, write_attempts=2, write_backoff=0.01)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    account = result.profile.id
    key = ("tiktok", account)
    emulator.access_token_ttl = 86_400
    clock.advance(3_600)
    store.failing_puts = 2
    caplog.set_level(logging.DEBUG)
    async with keyloom:
        with pytest.raises(TokenStoreWriteError) as info:
            await manager.access_token("tiktok", account)
        assert info.value.account_id == account
        assert info.value.status == 503
        # The store still has version 1, whose refresh token the provider rotated away...
        stale = await store.get(*key)
        assert stale is not None
        assert stale.version == 1
        assert manager.held == {key}
        # ...so the new token set is held, and the store still fails: reported again.
        store.failing_puts = 2
        with pytest.raises(TokenStoreWriteError):
            await manager.access_token("tiktok", account)
        # The store recovers: the held set is written; no second refresh happens.
        token = await manager.access_token("tiktok", account)
    assert emulator.refreshes == 1
    assert manager.held == frozenset()
    grant = await store.get(*key)
    assert grant is not None
    assert grant.version == 2
    assert grant.tokens.access_token == token
    assert grant.tokens.refresh_token != result.tokens.refresh_token
    assert "could not be written" in caplog.text
    assert grant.tokens.refresh_token not in caplog.text
    assert token not in caplog.text
    assert token not in str(info.value)


async def test_flush_writes_held_tokens(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = FlakyStore()
    manager = TokenManager(store, clock=clock, write_attempts=1)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    clock.advance(3_600)
    store.failing_puts = 2
    async with keyloom:
        with pytest.raises(TokenStoreWriteError):
            await manager.access_token("tiktok", result.profile.id)
        assert await manager.flush() == 1  # still failing: still held
        assert await manager.flush() == 0
    grant = await store.get("tiktok", result.profile.id)
    assert grant is not None
    assert grant.version == 2
    assert emulator.refreshes == 1


async def test_a_new_login_wins_over_held_tokens(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = FlakyStore()
    manager = TokenManager(store, clock=clock, write_attempts=1)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    clock.advance(3_600)
    store.failing_puts = 1
    async with keyloom:
        with pytest.raises(TokenStoreWriteError):
            await manager.access_token("tiktok", result.profile.id)
        clock.offset = 0
        second = await login(keyloom)
        assert manager.held == frozenset()
        assert await manager.access_token("tiktok", result.profile.id) == (
            second.tokens.access_token
        )


async def test_cancelled_caller_does_not_lose_the_refresh(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store, clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    emulator.access_token_ttl = 86_400
    emulator.refresh_delay = 0.3
    clock.advance(3_600)
    async with keyloom:
        with anyio.move_on_after(0.1) as scope:
            await manager.access_token("tiktok", result.profile.id)
        assert scope.cancel_called  # the caller gave up during the refresh
        grant = await store.get("tiktok", result.profile.id)
        assert grant is not None
        assert grant.version == 2  # the refresh finished and was saved
        assert await manager.access_token("tiktok", result.profile.id) == (
            grant.tokens.access_token
        )
    assert emulator.refresh_requests == 1


async def test_logout_revokes_and_deletes(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    account = result.profile.id
    assert isinstance(emulator.book.lookup_access(result.tokens.access_token), AccessToken)
    async with keyloom:
        assert await manager.logout("tiktok", account) is True
        assert await manager.logout("tiktok", account) is False
    assert await store.get("tiktok", account) is None
    # Revoked at the provider: the access and the refresh token are dead.
    assert emulator.book.lookup_access(result.tokens.access_token) is TokenFailure.REVOKED
    dead = emulator.book.refresh(
        result.tokens.refresh_token or "", client_id=emulator.default_app.client_key
    )
    assert dead is TokenFailure.REVOKED


async def test_unbound_manager_says_so(
    make_keyloom: Callable[..., Keyloom], login: Login, clock: Clock
) -> None:
    store = MemoryTokenStore()
    await store.put(
        "tiktok",
        "someone",
        TokenSet(access_token="a", refresh_token="r", expires_at=0.0),
        scopes=SCOPES,
    )
    manager = TokenManager(store, clock=clock)
    with pytest.raises(RuntimeError, match="bind"):
        await manager.access_token("tiktok", "someone")


async def test_sqlite_store_with_manager(
    make_keyloom: Callable[..., Keyloom],
    login: Login,
    emulator: CountingEmulator,
    clock: Clock,
    tmp_path: Path,
) -> None:
    async with SQLiteTokenStore(tmp_path / "tokens.db", secret=SECRET) as store:
        manager = TokenManager(store, clock=clock)
        keyloom, result = await signed_in(make_keyloom, login, manager)
        emulator.access_token_ttl = 86_400
        emulator.refresh_delay = 0.1
        clock.advance(3_600)
        tokens: list[str] = []

        async def ask() -> None:
            tokens.append(await manager.access_token("tiktok", result.profile.id))

        async with keyloom, anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(ask)
        assert len(set(tokens)) == 1
        assert emulator.refreshes == 1
        grant = await store.get("tiktok", result.profile.id)
        assert grant is not None
        assert attrs.evolve(grant.tokens).access_token == tokens[0]


async def test_logout_waits_for_a_refresh_in_flight_and_revokes_its_result(
    make_keyloom: Callable[..., Keyloom], login: Login, emulator: CountingEmulator, clock: Clock
) -> None:
    store = MemoryTokenStore()
    manager = TokenManager(store, clock=clock)
    keyloom, result = await signed_in(make_keyloom, login, manager)
    account = result.profile.id
    emulator.access_token_ttl = 86_400
    emulator.refresh_delay = 0.3
    clock.advance(3_600)
    refreshed: list[str] = []

    async def use() -> None:
        refreshed.append(await manager.access_token("tiktok", account))

    async with keyloom, anyio.create_task_group() as tg:
        tg.start_soon(use)
        await anyio.sleep(0.1)  # the refresh is at the provider now
        assert await manager.logout("tiktok", account) is True
    assert emulator.refreshes == 1
    assert await store.get("tiktok", account) is None
    assert emulator.book.lookup_access(refreshed[0]) is TokenFailure.REVOKED
