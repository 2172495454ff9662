"""Rule 6 under concurrency: the atomic adapter path and the fallback for older adapters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import pytest

from keyloom_core import Keyloom, hookimpl
from keyloom_core.users import (
    Account,
    AtomicUnlinkAdapter,
    LastAccountError,
    MemoryAdapter,
    User,
    Users,
)

pytestmark = pytest.mark.anyio

RUNS = 50


class LegacyAdapter:
    """An adapter written before ``unlink_account_unless_last``: the protocol's methods only.

    ``pause`` yields to the other tasks inside each call, as a database round trip would.
    """

    def __init__(self, inner: MemoryAdapter) -> None:
        self.inner = inner

    async def create_user(self, user: User) -> User:
        return await self.inner.create_user(user)

    async def get_user(self, user_id: str) -> User | None:
        return await self.inner.get_user(user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        return await self.inner.get_user_by_email(email)

    async def get_user_by_account(self, provider: str, provider_account_id: str) -> User | None:
        return await self.inner.get_user_by_account(provider, provider_account_id)

    async def update_user(self, user: User) -> User:
        return await self.inner.update_user(user)

    async def delete_user(self, user_id: str) -> bool:
        return await self.inner.delete_user(user_id)

    async def link_account(self, account: Account) -> Account:
        return await self.inner.link_account(account)

    async def unlink_account(self, provider: str, provider_account_id: str) -> bool:
        await anyio.sleep(0)
        return await self.inner.unlink_account(provider, provider_account_id)

    async def list_accounts(self, user_id: str) -> Sequence[Account]:
        found = await self.inner.list_accounts(user_id)
        await anyio.sleep(0)
        return found

    async def aclose(self) -> None:
        await self.inner.aclose()


class Unlinked:
    """Records ``account_unlinked``."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    async def account_unlinked(self, user: User, account: Account) -> None:
        del user
        self.seen.append(account.provider)


async def _two_account_user(adapter: MemoryAdapter | LegacyAdapter, run: int) -> User:
    user = await adapter.create_user(User(id=f"user-{run}"))
    for provider in ("alpha", "beta"):
        await adapter.link_account(Account(user.id, provider, f"acct-{run}"))
    return user


async def _race(users: Sequence[Users], user: User, run: int) -> tuple[list[str], list[str]]:
    """Unlink the user's two accounts at once (``users[i]`` unlinks the i-th)."""
    done: list[str] = []
    refused: list[str] = []

    async def one(rules: Users, provider: str) -> None:
        try:
            await rules.unlink(user.id, provider, f"acct-{run}")
        except LastAccountError:
            refused.append(provider)
        else:
            done.append(provider)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one, users[0], "alpha")
            tasks.start_soon(one, users[-1], "beta")
    return done, refused


def test_the_protocol_stays_backward_compatible() -> None:
    legacy = LegacyAdapter(MemoryAdapter())
    assert not isinstance(legacy, AtomicUnlinkAdapter)
    assert isinstance(MemoryAdapter(), AtomicUnlinkAdapter)


async def test_the_rules_use_the_atomic_unlink(make_keyloom: Callable[..., Keyloom]) -> None:
    adapter, events = MemoryAdapter(), Unlinked()
    async with make_keyloom(adapter=adapter, plugins=[events]) as keyloom:
        users = keyloom.users
        assert isinstance(users, Users)
        for run in range(RUNS):
            user = await _two_account_user(adapter, run)
            done, refused = await _race([users], user, run)
            assert len(done) == 1, f"run {run}"
            assert [a.provider for a in await adapter.list_accounts(user.id)] == refused
    assert len(events.seen) == RUNS  # one event per unlink that happened


async def test_the_fallback_serialises_unlinks_in_a_process(
    make_keyloom: Callable[..., Keyloom],
) -> None:
    adapter = LegacyAdapter(MemoryAdapter())
    async with make_keyloom(adapter=adapter) as keyloom:
        users = keyloom.users
        assert isinstance(users, Users)
        for run in range(RUNS):
            user = await _two_account_user(adapter, run)
            done, refused = await _race([users], user, run)
            assert len(done) == 1, f"run {run}"
            assert len(refused) == 1, f"run {run}"
            assert [a.provider for a in await adapter.list_accounts(user.id)] == refused


async def test_the_fallback_never_leaves_a_user_without_an_account_across_processes(
    make_keyloom: Callable[..., Keyloom],
) -> None:
    # two Keyloom instances on one adapter: two worker processes, the per-process lock
    # cannot order them; the check after the unlink puts a removed last account back
    adapter = LegacyAdapter(MemoryAdapter())
    async with make_keyloom(adapter=adapter) as one, make_keyloom(adapter=adapter) as two:
        assert isinstance(one.users, Users)
        assert isinstance(two.users, Users)
        for run in range(RUNS):
            user = await _two_account_user(adapter, run)
            done, refused = await _race([one.users, two.users], user, run)
            left = [a.provider for a in await adapter.list_accounts(user.id)]
            assert left, f"run {run}: the user has no account left"
            assert len(done) <= 1, f"run {run}"
            assert sorted(left) == sorted(refused), f"run {run}"


class BlindAfterUnlink(LegacyAdapter):
    """The fallback's second check made blind: it always sees an account left."""

    async def list_accounts(self, user_id: str) -> Sequence[Account]:
        blind = self.unlinking  # as the list is read, before the round trip's pause
        found = await super().list_accounts(user_id)
        return [Account(user_id, "x", "y")] if blind else found

    async def unlink_account(self, provider: str, provider_account_id: str) -> bool:
        self.unlinking = True
        return await super().unlink_account(provider, provider_account_id)

    unlinking = False


async def test_without_the_check_after_the_fallback_two_processes_would_unlink_both(
    make_keyloom: Callable[..., Keyloom],
) -> None:
    # what the fallback's second check is for: the same race interleaves both unlinks
    adapter = BlindAfterUnlink(MemoryAdapter())
    emptied = 0
    async with make_keyloom(adapter=adapter) as one, make_keyloom(adapter=adapter) as two:
        assert isinstance(one.users, Users)
        assert isinstance(two.users, Users)
        for run in range(5):
            user = await _two_account_user(adapter, run)
            adapter.unlinking = False
            await _race([one.users, two.users], user, run)
            emptied += not await adapter.inner.list_accounts(user.id)
    assert emptied == 5
