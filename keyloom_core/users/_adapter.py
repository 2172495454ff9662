"""The adapter protocol (where users and accounts live) and the in-memory adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import anyio

from ._errors import (
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    UserNotFoundError,
)
from ._model import Account, User

__all__ = ["Adapter", "AtomicUnlinkAdapter", "MemoryAdapter"]


@runtime_checkable
class Adapter(Protocol):
    """Where users and their linked accounts are kept.

    Every method is ``async``. The one invariant an adapter must enforce itself, atomically
    (a unique constraint in a database): a ``(provider, provider_account_id)`` pair belongs
    to at most one user. The contract suite
    (:class:`keyloom_core.testing.adapter.AdapterContract`) checks every rule below.
    """

    async def create_user(self, user: User) -> User:
        """Store a new *user* (its id is given) and return it."""
        ...

    async def get_user(self, user_id: str) -> User | None:
        """The user *user_id*, or ``None``."""
        ...

    async def get_user_by_email(self, email: str) -> User | None:
        """The oldest user with this e-mail address (compared case-insensitively), or ``None``."""
        ...

    async def get_user_by_account(self, provider: str, provider_account_id: str) -> User | None:
        """The user the account is linked to, or ``None``."""
        ...

    async def update_user(self, user: User) -> User:
        """Replace the stored user of the same id; return it.

        :raises UserNotFoundError: no such user.
        """
        ...

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user and its accounts; whether it existed."""
        ...

    async def link_account(self, account: Account) -> Account:
        """Link *account* to ``account.user_id``, or update it if that user already has it.

        :raises AccountConflictError: another user holds the account (nothing changes).
        :raises UserNotFoundError: no such user.
        """
        ...

    async def unlink_account(self, provider: str, provider_account_id: str) -> bool:
        """Remove the account's link; whether it existed."""
        ...

    async def list_accounts(self, user_id: str) -> Sequence[Account]:
        """The user's accounts, ordered by provider then account id."""
        ...

    async def aclose(self) -> None:
        """Release connections (reopened on next use)."""
        ...


@runtime_checkable
class AtomicUnlinkAdapter(Adapter, Protocol):
    """An :class:`Adapter` that can refuse to unlink a user's last account atomically.

    The method is optional: an adapter without it still works, and
    :meth:`keyloom_core.users.Users.unlink` falls back to checking the user's accounts
    and then unlinking (one unlink at a time per user in a process, re-checked after the
    unlink and undone if it left the user with none). Only this method makes two unlinks
    of a user's two accounts at once, from two processes, end with exactly one unlinked.
    """

    async def unlink_account_unless_last(
        self, user_id: str, provider: str, provider_account_id: str
    ) -> Account:
        """Unlink the user's account, unless it is the user's last one; return it.

        The check and the removal are one atomic step (one transaction that locks the
        user's row, or one conditional statement): of two concurrent calls for a user's
        two accounts, exactly one succeeds.

        :raises AccountNotFoundError: the user has no such account (nothing changes).
        :raises LastAccountError: it is the user's last account (nothing changes).
        """
        ...


class MemoryAdapter:
    """An :class:`Adapter` in process memory, for tests and single-process demos."""

    def __init__(self) -> None:
        self._users: dict[str, User] = {}
        self._accounts: dict[tuple[str, str], Account] = {}
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<MemoryAdapter users={len(self._users)} accounts={len(self._accounts)}>"

    async def create_user(self, user: User) -> User:
        """Store a new *user*; :class:`ValueError` if the id is taken."""
        async with self._lock:
            if user.id in self._users:
                msg = "a user with this id exists"
                raise ValueError(msg)
            self._users[user.id] = user
        return user

    async def get_user(self, user_id: str) -> User | None:
        """The user *user_id*, or ``None``."""
        await anyio.lowlevel.checkpoint()
        return self._users.get(user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        """The oldest user with this e-mail address, or ``None``."""
        await anyio.lowlevel.checkpoint()
        wanted = email.lower()
        found = [u for u in self._users.values() if u.email and u.email.lower() == wanted]
        return min(found, key=lambda u: (u.created_at, u.id), default=None)

    async def get_user_by_account(self, provider: str, provider_account_id: str) -> User | None:
        """The user the account is linked to, or ``None``."""
        await anyio.lowlevel.checkpoint()
        account = self._accounts.get((provider, provider_account_id))
        return None if account is None else self._users.get(account.user_id)

    async def update_user(self, user: User) -> User:
        """Replace the stored user of the same id."""
        async with self._lock:
            if user.id not in self._users:
                msg = "no such user"
                raise UserNotFoundError(msg)
            self._users[user.id] = user
        return user

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user and its accounts."""
        async with self._lock:
            for key in [k for k, a in self._accounts.items() if a.user_id == user_id]:
                del self._accounts[key]
            return self._users.pop(user_id, None) is not None

    async def link_account(self, account: Account) -> Account:
        """Link *account*, or update the same user's link."""
        async with self._lock:
            held = self._accounts.get(account.key)
            if held is not None and held.user_id != account.user_id:
                msg = "this account is linked to another user"
                raise AccountConflictError(msg, provider_id=account.provider)
            if account.user_id not in self._users:
                msg = "no such user"
                raise UserNotFoundError(msg)
            self._accounts[account.key] = account
        return account

    async def unlink_account(self, provider: str, provider_account_id: str) -> bool:
        """Remove the account's link."""
        async with self._lock:
            return self._accounts.pop((provider, provider_account_id), None) is not None

    async def unlink_account_unless_last(
        self, user_id: str, provider: str, provider_account_id: str
    ) -> Account:
        """Unlink the user's account unless it is the last one (under the adapter's lock)."""
        async with self._lock:
            found = self._accounts.get((provider, provider_account_id))
            if found is None or found.user_id != user_id:
                msg = "no such account is linked to this user"
                raise AccountNotFoundError(msg, provider_id=provider)
            if not any(a.user_id == user_id and a is not found for a in self._accounts.values()):
                msg = "this is the only account left to sign in with"
                raise LastAccountError(msg, provider_id=provider)
            del self._accounts[found.key]
        return found

    async def list_accounts(self, user_id: str) -> Sequence[Account]:
        """The user's accounts."""
        await anyio.lowlevel.checkpoint()
        return sorted(
            (a for a in self._accounts.values() if a.user_id == user_id), key=lambda a: a.key
        )

    async def aclose(self) -> None:
        """Nothing to release."""
        await anyio.lowlevel.checkpoint()
