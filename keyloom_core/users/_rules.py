"""The sign-in and linking rules, in one place; the core enforces them on every login.

With an adapter (``define_keyloom(adapter=...)``), ``complete_login`` asks
:meth:`Users.sign_in` which user a login is, before the ``login_succeeded`` hooks run
(``result.user`` is set for them):

1. **A known account signs its user in.** The account is the pair ``(provider,
   provider_account_id)``, the id being ``TokenSet.account_id`` or else the profile's id.
   The profile refresh policy: a ``name`` or ``image`` the provider gives replaces the
   stored one, a missing one never erases it; the e-mail is replaced only by an address the
   provider asserts verified (``emailVerified`` becomes the time of that sign-in); ``id``
   and ``createdAt`` never change, ``updatedAt`` moves only when something changed. The
   account's granted scope and token expiry are updated.
2. **An unknown account creates a new user** (``user_created``, then ``account_linked``)…
3. …**unless the login was started to link** (``begin_login(..., link_to=user_id)``, or
   ``/oauth/{provider}/start?link=1`` from a signed-in browser): it is linked to that user
   (``account_linked``); the user's empty ``name`` / ``image`` are filled in, nothing else
   changes.
4. **An account already linked to another user is refused in link mode** with
   :class:`AccountConflictError` (HTTP 409), and never moved. The provider's tokens of
   the refused login are revoked.
5. **Linking by e-mail** (an unknown account joining the existing user with the same
   address) happens only when the app turned it on (``link_by_email=True``, or a set of
   provider ids) **and** the provider asserts the address verified
   (``Profile.email_verified``). It never happens for TikTok: its profile has no e-mail
   (its plugin always leaves ``email`` empty and ``email_verified`` false).
6. **Unlinking the last account is refused** (:class:`LastAccountError`, 409): the user
   would have no way to sign in. Unlinking removes the account's stored tokens and
   revokes them at the provider. The check and the unlink are one atomic step in the
   adapter (:meth:`~keyloom_core.users.AtomicUnlinkAdapter.unlink_account_unless_last`):
   two unlinks of a two-account user's accounts at once unlink exactly one. An adapter
   without that method gets a fallback: the rules unlink one account at a time per user
   in a process, check the accounts left afterwards and link the account back if none is
   left (two processes racing may then both be refused, but never leave the user with
   no account once both are done).
7. **Deleting a user** ends its server-side sessions, removes it and its accounts, deletes
   the tokens of every account and revokes them at the providers (``user_deleted``).
8. **Two first logins of the same account at once create one user**: the adapter's unique
   constraint on the account decides; the loser deletes the user it had just created and
   retries, finding the account known (rule 1).

Events are broadcast to every plugin after the change is stored; a failing listener is
logged and ignored (the change stays). A ``login_succeeded`` hook that vetoes a login
after rule 2 leaves the new user in place, without a session.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from ..errors import ConfigurationError
from ..models import LoginResult
from ._errors import (
    AccountConflictError,
    AccountNotFoundError,
    LastAccountError,
    UserNotFoundError,
)
from ._model import Account, User, new_user_id, now_utc

if TYPE_CHECKING:
    from .._dispatch import HookDispatcher
    from .._settings import Settings
    from .._state import LoginState
    from ..models import Profile, Provider, TokenSet
    from ..store._sessions import SessionRegistry
    from ._adapter import Adapter

__all__ = [
    "Users",
    "check_link_to",
    "login_result",
    "refreshed_user",
    "users_for",
]

log = logging.getLogger("keyloom.users")

_ATTEMPTS = 3  # a lost race makes the account known; a third try never needs to happen
_UNLINK_STRIPES = 64  # locks of the fallback unlink, shared by user ids of equal hash


class _TokenOwner(Protocol):
    async def logout(self, provider_id: str, account_id: str, *, revoke: bool = True) -> bool: ...


def refreshed_user(user: User, profile: Profile, now: datetime) -> User:
    """*user* after a sign-in with *profile*, per the profile refresh policy (rule 1)."""
    changes: dict[str, Any] = {}
    if profile.name and profile.name != user.name:
        changes["name"] = profile.name
    if profile.image and profile.image != user.image:
        changes["image"] = profile.image
    if profile.email and profile.email_verified:
        if profile.email != user.email:
            changes["email"] = profile.email
        if user.email_verified is None or "email" in changes:
            changes["email_verified"] = now
    if not changes:
        return user
    return attrs.evolve(user, **changes, updated_at=now)


class Users:
    """The rules applied to an adapter; ``keyloom.users`` when an adapter is configured.

    :param adapter: where users and accounts live.
    :param hooks: the instance's hook dispatcher (events; the token manager's plugin).
    :param sessions: the instance's session registry (ended when a user is deleted).
    :param link_by_email: rule 5: ``True`` for every provider, or the ids of the providers
        trusted to link by verified e-mail; ``False`` (the default) for none.
    """

    def __init__(
        self,
        adapter: Adapter,
        *,
        hooks: HookDispatcher,
        sessions: SessionRegistry,
        link_by_email: bool | Collection[str] = False,
    ) -> None:
        self._hooks = hooks
        self._sessions = sessions
        self.adapter = adapter
        # the fallback unlink of adapters without unlink_account_unless_last: one at a time
        # per user (striped: a bounded number of locks whatever the number of users)
        self._unlink_locks = [anyio.Lock() for _ in range(_UNLINK_STRIPES)]
        self.link_by_email: bool | frozenset[str] = (
            link_by_email if isinstance(link_by_email, bool) else frozenset(link_by_email)
        )

    def __repr__(self) -> str:
        return f"<Users adapter={type(self.adapter).__name__}>"

    def links_by_email(self, provider_id: str, profile: Profile) -> bool:
        """Whether rule 5 lets this login join a user by its e-mail address."""
        if not (profile.email and profile.email_verified):
            return False
        if isinstance(self.link_by_email, bool):
            return self.link_by_email
        return provider_id in self.link_by_email

    async def _emit(self, hook: str, **kwargs: Any) -> None:
        await self._hooks.broadcast(hook, tolerant=True, **kwargs)

    async def sign_in(
        self,
        provider_id: str,
        profile: Profile,
        tokens: TokenSet,
        granted: frozenset[str],
        *,
        link_to: str | None = None,
    ) -> User:
        """The user a completed login is (rules 1 to 5 and 8); creates or links as needed.

        :raises AccountConflictError: link mode, and the account belongs to another user.
        :raises UserNotFoundError: link mode, and the user to link to no longer exists.
        """
        account_id = tokens.account_id or profile.id

        def account(user_id: str) -> Account:
            return Account(user_id, provider_id, account_id, granted, tokens.expires_at)

        adapter = self.adapter
        for _ in range(_ATTEMPTS):
            now = now_utc()
            user = await adapter.get_user_by_account(provider_id, account_id)
            if user is not None:  # rule 1 (or rule 4 in link mode)
                if link_to is not None and user.id != link_to:
                    msg = "this account is already linked to another user"
                    raise AccountConflictError(msg, provider_id=provider_id)
                await adapter.link_account(account(user.id))  # scope and expiry
                fresh = refreshed_user(user, profile, now)
                return await adapter.update_user(fresh) if fresh is not user else user
            target = await self._target(provider_id, profile, link_to)
            created = target is None
            if target is None:  # rule 2
                target = await adapter.create_user(self._new_user(profile, now))
            try:
                linked = await adapter.link_account(account(target.id))
            except AccountConflictError:  # rule 8: another login linked it first
                if created:
                    await adapter.delete_user(target.id)
                continue
            if created:
                await self._emit("user_created", user=target, account=linked)
            elif link_to is not None:
                target = await self._fill(target, profile, now)
            await self._emit("account_linked", user=target, account=linked)
            return target
        msg = "the account changed hands during the sign-in"  # pragma: no cover - see rule 8
        raise AccountConflictError(msg, provider_id=provider_id)  # pragma: no cover

    async def _fill(self, user: User, profile: Profile, now: datetime) -> User:
        """*user* with its empty ``name`` / ``image`` filled from a linked account (rule 3)."""
        fill = {
            k: getattr(profile, k)
            for k in ("name", "image")
            if getattr(user, k) is None and getattr(profile, k)
        }
        if not fill:
            return user
        return await self.adapter.update_user(attrs.evolve(user, **fill, updated_at=now))

    async def _target(self, provider_id: str, profile: Profile, link_to: str | None) -> User | None:
        """The existing user an unknown account joins (rules 3 and 5), or ``None``."""
        if link_to is not None:
            user = await self.adapter.get_user(link_to)
            if user is None:
                msg = "the user to link this account to no longer exists"
                raise UserNotFoundError(msg, provider_id=provider_id)
            return user
        if profile.email and self.links_by_email(provider_id, profile):
            return await self._vouched_user(profile.email)
        return None

    async def _vouched_user(self, email: str) -> User | None:
        """The user with *email*, if only providers trusted for e-mail linking vouch for it.

        With a set of trusted providers, a user who also has an account elsewhere is no
        target: that other provider may have asserted the address first (an attacker's
        identity provider claiming the victim's verified e-mail, before the victim signs in
        with a trusted one), and linking would hand the victim's account to its holder.
        """
        user = await self.adapter.get_user_by_email(email)
        if user is None or self.link_by_email is True:
            return user
        accounts = await self.adapter.list_accounts(user.id)
        trusted = self.link_by_email or frozenset()
        return user if accounts and all(a.provider in trusted for a in accounts) else None

    @staticmethod
    def _new_user(profile: Profile, now: datetime) -> User:
        return User(
            id=new_user_id(),
            email=profile.email,
            email_verified=now if profile.email and profile.email_verified else None,
            name=profile.name,
            image=profile.image,
            created_at=now,
            updated_at=now,
        )

    async def get(self, user_id: str) -> User | None:
        """The user *user_id*, or ``None``."""
        return await self.adapter.get_user(user_id)

    async def accounts(self, user_id: str) -> Sequence[Account]:
        """The accounts linked to *user_id*."""
        return await self.adapter.list_accounts(user_id)

    def _tokens(self) -> _TokenOwner | None:
        """The token manager registered as a plugin (``manager.plugin``), if any."""
        for plugin in self._hooks.registry.pm.get_plugins():
            manager = getattr(plugin, "manager", None)
            if type(plugin).__name__ == "TokenStorePlugin" and manager is not None:
                owner: _TokenOwner = manager
                return owner
        return None

    async def _forget_tokens(self, account: Account) -> None:
        tokens = self._tokens()
        if tokens is not None:
            await tokens.logout(account.provider, account.provider_account_id, revoke=True)

    async def unlink(self, user_id: str, provider: str, provider_account_id: str) -> Account:
        """Unlink one of the user's accounts (rule 6); its tokens are deleted and revoked.

        :raises AccountNotFoundError: the user has no such account.
        :raises LastAccountError: it is the user's last account.
        """
        atomic = getattr(self.adapter, "unlink_account_unless_last", None)
        if callable(atomic):
            found: Account = await atomic(user_id, provider, provider_account_id)
        else:
            found = await self._unlink_checked(user_id, provider, provider_account_id)
        await self._forget_tokens(found)
        user = await self.adapter.get_user(user_id)
        if user is not None:
            await self._emit("account_unlinked", user=user, account=found)
        return found

    async def _unlink_checked(
        self, user_id: str, provider: str, provider_account_id: str
    ) -> Account:
        """Rule 6 for an adapter without ``unlink_account_unless_last`` (the fallback)."""
        lock = self._unlink_locks[hash(user_id) % _UNLINK_STRIPES]
        async with lock:
            accounts = await self.adapter.list_accounts(user_id)
            key = (provider, provider_account_id)
            found = next((a for a in accounts if a.key == key), None)
            if found is None:
                msg = "no such account is linked to this user"
                raise AccountNotFoundError(msg, provider_id=provider)
            if len(accounts) == 1:
                msg = "this is the only account left to sign in with"
                raise LastAccountError(msg, provider_id=provider)
            await self.adapter.unlink_account(provider, provider_account_id)
            if not await self.adapter.list_accounts(user_id):  # another process's unlink
                await self.adapter.link_account(found)
                msg = "this was the only account left to sign in with"
                raise LastAccountError(msg, provider_id=provider)
        return found

    async def delete(self, user_id: str) -> bool:
        """Delete the user (rule 7): sessions, accounts, tokens (revoked); whether it existed."""
        user = await self.adapter.get_user(user_id)
        if user is None:
            return False
        accounts = await self.adapter.list_accounts(user_id)
        if self._sessions.server_side:
            await self._sessions.revoke_all(user_id)
        await self.adapter.delete_user(user_id)
        for account in accounts:
            await self._forget_tokens(account)
        await self._emit("user_deleted", user=user)
        log.info("deleted a user and its %d account(s)", len(accounts))
        return True


def users_for(settings: Settings, hooks: HookDispatcher, sessions: SessionRegistry) -> Users | None:
    """The rules for an instance's adapter (``keyloom.users``); ``None`` without an adapter."""
    if settings.adapter is None:
        return None
    return Users(
        settings.adapter, hooks=hooks, sessions=sessions, link_by_email=settings.link_by_email
    )


def check_link_to(users: Users | None, provider_id: str, link_to: str | None) -> str | None:
    """*link_to*, for ``begin_login``; linking needs an adapter.

    :raises ConfigurationError: *link_to* is given and no adapter is configured.
    """
    if link_to is not None and users is None:
        msg = "linking accounts needs an adapter: define_keyloom(adapter=...)"
        raise ConfigurationError(msg, provider_id=provider_id)
    return link_to


async def login_result(
    users: Users | None,
    provider: Provider,
    profile: Profile,
    tokens: TokenSet,
    granted: frozenset[str],
    state: LoginState,
) -> LoginResult:
    """The result of a completed login, with its user when there is an adapter (the rules)."""
    user = None
    if users is not None:
        user = await users.sign_in(provider.id, profile, tokens, granted, link_to=state.link_to)
    return LoginResult(
        provider_id=provider.id,
        profile=profile,
        tokens=tokens,
        granted_scopes=granted,
        requested_scopes=provider.scopes,
        callback_url=state.callback_url,
        user=user,
    )
