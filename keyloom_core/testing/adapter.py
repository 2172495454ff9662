"""The adapter contract: what every :class:`~keyloom_core.users.Adapter` must do.

In an adapter's tests, subclass :class:`AdapterContract` (in a class named ``Test…``) and
give it a fresh, empty adapter::

    import pytest
    from keyloom_core.testing.adapter import AdapterContract

    class TestMyAdapter(AdapterContract):
        @pytest.fixture
        async def adapter(self):
            adapter = MyAdapter("sqlite+aiosqlite:///:memory:")
            yield adapter
            await adapter.aclose()

pytest then runs one test per rule (needs the ``anyio`` pytest plugin, which anyio
installs). The rules: users round-trip with their times; e-mail lookup is
case-insensitive and finds the oldest user; an account belongs to at most one user
(:class:`~keyloom_core.users.AccountConflictError`, nothing changes), linking again
updates it; unlinking and deleting remove exactly what they say; concurrent first links
of one account leave it with one user.

The optional ``unlink_account_unless_last``
(:class:`~keyloom_core.users.AtomicUnlinkAdapter`) is checked when the adapter has it,
and skipped otherwise: it refuses another user's account and the last one, and of two
unlinks of a two-account user's accounts at once exactly one succeeds (run
:data:`UNLINK_RACE_RUNS` times).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import anyio
import pytest

from keyloom_core.users import (
    Account,
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    User,
    UserNotFoundError,
    new_user_id,
)

if TYPE_CHECKING:
    from keyloom_core.users import Adapter

__all__ = ["UNLINK_RACE_RUNS", "AdapterContract"]

#: How many times the concurrent-unlink race runs (a fresh user each time).
UNLINK_RACE_RUNS: Final = 50

_Unlink = Callable[[str, str, str], Awaitable[Account]]

_T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _check(condition: bool, what: str = "the adapter broke the contract") -> None:
    """Fail the check (an :class:`AssertionError`, kept under ``python -O``)."""
    if not condition:
        raise AssertionError(what)


def _user(**changes: object) -> User:
    values: dict[str, object] = {
        "id": new_user_id(),
        "email": None,
        "email_verified": None,
        "name": "Ada",
        "image": "https://img.example.com/ada.png",
        "created_at": _T0,
        "updated_at": _T0,
    }
    values.update(changes)
    return User(**values)  # type: ignore[arg-type]


def _atomic_unlink(adapter: Adapter) -> _Unlink:
    """The adapter's ``unlink_account_unless_last``; the test is skipped without it."""
    method = getattr(adapter, "unlink_account_unless_last", None)
    if not callable(method):
        pytest.skip("the adapter has no unlink_account_unless_last (optional)")
    unlink: _Unlink = method
    return unlink


@pytest.mark.anyio
class AdapterContract:
    """Pytest base class: every rule an adapter must follow, one test each.

    Subclasses provide the ``adapter`` fixture (a fresh, empty adapter).
    """

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The contract runs on asyncio."""
        return "asyncio"

    async def test_user_round_trip(self, adapter: Adapter) -> None:
        """A created user reads back equal, times included (to the millisecond, in UTC)."""
        user = _user(email="ada@example.com", email_verified=_T0 + timedelta(seconds=1))
        _check(await adapter.create_user(user) == user)
        _check(await adapter.get_user(user.id) == user)
        _check(await adapter.get_user("no-such-user") is None)

    async def test_update_user(self, adapter: Adapter) -> None:
        """``update_user`` replaces the fields; an unknown id is :class:`UserNotFoundError`."""
        user = await adapter.create_user(_user())
        changed = User(
            id=user.id,
            email="new@example.com",
            email_verified=_T0,
            name=None,
            image=None,
            created_at=user.created_at,
            updated_at=_T0 + timedelta(days=1),
        )
        _check(await adapter.update_user(changed) == changed)
        _check(await adapter.get_user(user.id) == changed)
        with pytest.raises(UserNotFoundError):
            await adapter.update_user(_user())

    async def test_user_by_email(self, adapter: Adapter) -> None:
        """E-mail lookup ignores case and finds the oldest user with that address."""
        old = await adapter.create_user(_user(email="Ada@Example.com"))
        await adapter.create_user(_user(email="ada@example.com", created_at=_T0 + timedelta(1)))
        found = await adapter.get_user_by_email("ADA@example.COM")
        _check(found is not None and found.id == old.id)
        _check(await adapter.get_user_by_email("nobody@example.com") is None)

    async def test_link_and_find_by_account(self, adapter: Adapter) -> None:
        """A linked account finds its user; linking again updates scope and expiry."""
        user = await adapter.create_user(_user())
        account = Account(user.id, "alpha", "42", frozenset({"read"}), 1_800_000_000.0)
        _check(await adapter.link_account(account) == account)
        _check(await adapter.get_user_by_account("alpha", "42") == user)
        _check(await adapter.get_user_by_account("alpha", "43") is None)
        _check(await adapter.get_user_by_account("beta", "42") is None)
        again = Account(user.id, "alpha", "42", frozenset({"read", "write"}), None)
        await adapter.link_account(again)
        _check(list(await adapter.list_accounts(user.id)) == [again])

    async def test_an_account_has_one_user(self, adapter: Adapter) -> None:
        """Linking another user's account is :class:`AccountConflictError`; nothing moves."""
        owner = await adapter.create_user(_user())
        other = await adapter.create_user(_user())
        await adapter.link_account(Account(owner.id, "alpha", "42"))
        with pytest.raises(AccountConflictError):
            await adapter.link_account(Account(other.id, "alpha", "42"))
        holder = await adapter.get_user_by_account("alpha", "42")
        _check(holder is not None and holder.id == owner.id)
        _check(list(await adapter.list_accounts(other.id)) == [])

    async def test_link_to_a_missing_user(self, adapter: Adapter) -> None:
        """Linking to a user that does not exist is :class:`UserNotFoundError`."""
        with pytest.raises(UserNotFoundError):
            await adapter.link_account(Account("no-such-user", "alpha", "42"))
        _check(await adapter.get_user_by_account("alpha", "42") is None)

    async def test_list_accounts_in_order(self, adapter: Adapter) -> None:
        """A user's accounts, by provider then account id; only theirs."""
        user = await adapter.create_user(_user())
        other = await adapter.create_user(_user())
        for provider, account_id in [("beta", "b"), ("alpha", "2"), ("alpha", "1")]:
            await adapter.link_account(Account(user.id, provider, account_id))
        await adapter.link_account(Account(other.id, "alpha", "3"))
        keys = [a.key for a in await adapter.list_accounts(user.id)]
        _check(keys == [("alpha", "1"), ("alpha", "2"), ("beta", "b")])

    async def test_unlink(self, adapter: Adapter) -> None:
        """Unlinking removes exactly that account; a second time says it was not there."""
        user = await adapter.create_user(_user())
        await adapter.link_account(Account(user.id, "alpha", "1"))
        await adapter.link_account(Account(user.id, "beta", "1"))
        _check(await adapter.unlink_account("alpha", "1") is True)
        _check(await adapter.unlink_account("alpha", "1") is False)
        _check([a.key for a in await adapter.list_accounts(user.id)] == [("beta", "1")])
        _check(await adapter.get_user_by_account("alpha", "1") is None)

    async def test_delete_user_removes_its_accounts(self, adapter: Adapter) -> None:
        """Deleting a user removes it and its accounts, and no one else's."""
        user = await adapter.create_user(_user())
        other = await adapter.create_user(_user())
        await adapter.link_account(Account(user.id, "alpha", "1"))
        await adapter.link_account(Account(other.id, "alpha", "2"))
        _check(await adapter.delete_user(user.id) is True)
        _check(await adapter.delete_user(user.id) is False)
        _check(await adapter.get_user(user.id) is None)
        _check(await adapter.get_user_by_account("alpha", "1") is None)
        _check(list(await adapter.list_accounts(user.id)) == [])
        _check(await adapter.get_user_by_account("alpha", "2") == other)
        # the account is free again
        again = await adapter.create_user(_user())
        await adapter.link_account(Account(again.id, "alpha", "1"))

    async def test_concurrent_links_of_one_account(self, adapter: Adapter) -> None:
        """Ten users linking one account at once: exactly one wins, the rest conflict."""
        users = [await adapter.create_user(_user()) for _ in range(10)]
        won: list[str] = []
        lost: list[str] = []

        async def link(user: User) -> None:
            try:
                await adapter.link_account(Account(user.id, "alpha", "race"))
            except AccountConflictError:
                lost.append(user.id)
            else:
                won.append(user.id)

        async with anyio.create_task_group() as tasks:
            for user in users:
                tasks.start_soon(link, user)
        _check(len(won) == 1)
        _check(len(lost) == len(users) - 1)
        holder = await adapter.get_user_by_account("alpha", "race")
        _check(holder is not None and holder.id == won[0])

    async def test_unlink_unless_last(self, adapter: Adapter) -> None:
        """The atomic unlink removes the user's account, refuses others' and the last one."""
        unlink = _atomic_unlink(adapter)
        user = await adapter.create_user(_user())
        other = await adapter.create_user(_user())
        first = await adapter.link_account(Account(user.id, "alpha", "1", {"read"}, 1.5e9))
        await adapter.link_account(Account(user.id, "beta", "1"))
        await adapter.link_account(Account(other.id, "alpha", "2"))
        with pytest.raises(AccountNotFoundError):
            await unlink(user.id, "alpha", "2")  # another user's
        with pytest.raises(AccountNotFoundError):
            await unlink(user.id, "gamma", "1")  # nobody's
        _check(await unlink(user.id, "alpha", "1") == first)
        _check([a.key for a in await adapter.list_accounts(user.id)] == [("beta", "1")])
        with pytest.raises(LastAccountError) as caught:
            await unlink(user.id, "beta", "1")
        _check(caught.value.status == 409, "LastAccountError answers 409")
        _check([a.key for a in await adapter.list_accounts(user.id)] == [("beta", "1")])
        _check([a.key for a in await adapter.list_accounts(other.id)] == [("alpha", "2")])

    async def test_concurrent_unlinks_keep_one_account(self, adapter: Adapter) -> None:
        """Two unlinks of a two-account user's accounts at once: exactly one succeeds.

        The other gets :class:`LastAccountError`; the user keeps that other account.
        """
        unlink = _atomic_unlink(adapter)
        for run in range(UNLINK_RACE_RUNS):
            user = await adapter.create_user(_user())
            for provider in ("alpha", "beta"):
                await adapter.link_account(Account(user.id, provider, f"race-{run}"))
            done, refused = await _unlink_both_at_once(unlink, user.id, f"race-{run}")
            _check(len(done) == 1, f"run {run}: {len(done)} of 2 concurrent unlinks succeeded")
            _check(len(refused) == 1, f"run {run}: the other unlink was not refused")
            left = [a.provider for a in await adapter.list_accounts(user.id)]
            _check(left == refused, f"run {run}: the user kept {left}, expected {refused}")


async def _unlink_both_at_once(
    unlink: _Unlink, user_id: str, account_id: str
) -> tuple[list[str], list[str]]:
    """Unlink the user's ``alpha`` and ``beta`` accounts at once: (unlinked, refused)."""
    done: list[str] = []
    refused: list[str] = []

    async def one(provider: str) -> None:
        try:
            await unlink(user_id, provider, account_id)
        except LastAccountError:
            refused.append(provider)
        else:
            done.append(provider)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(one, "alpha")
            tasks.start_soon(one, "beta")
    return done, refused
