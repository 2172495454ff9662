"""The token manager: valid access tokens on demand, refreshed once, saved before use."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import attrs

from ..errors import KeyloomError, ReauthenticationRequiredError, ScopeDeniedError
from ..hookspecs import hookimpl
from ..models import LoginResult, Provider, TokenSet, parse_scopes
from ._store import (
    KeyedLocks,
    NotSignedInError,
    StoredGrant,
    TokenDecryptionError,
    TokenStore,
    TokenStoreError,
    TokenStoreWriteError,
)

if TYPE_CHECKING:
    from .._keyloom import Keyloom
    from ..sessions import Session

__all__ = ["TokenManager", "TokenStorePlugin"]

log = logging.getLogger("keyloom.tokens")

Key = tuple[str, str]


@attrs.frozen
class _Held:
    """Refreshed tokens not yet written: the only copy of a rotated refresh token."""

    base_version: int
    tokens: TokenSet = attrs.field(repr=False)
    scopes: frozenset[str]


class TokenManager:
    """Hands out valid access tokens for stored accounts, refreshing them when due.

    Build it with a store, bind it to the Keyloom instance, and sign-ins store their
    tokens by themselves::

        manager = TokenManager(SQLiteTokenStore("tokens.db", secret=SECRET))
        keyloom = define_keyloom(providers=[tiktok()], secret=SECRET, plugins=[manager.plugin])
        manager.bind(keyloom)
        ...
        token = await manager.access_token("tiktok", account_id, needs={"video.list"})

    **Refresh.** A token that expires within *skew* seconds is refreshed (within half its
    lifetime, for tokens that live less than twice the skew). One refresh per
    account runs at a time: in the process (an :class:`anyio.Lock` per account, kept only
    while in use) and across processes (the store's lease lock). After taking the locks the
    manager reads the store again, and if another task or process refreshed meanwhile it
    uses that token and does not refresh. The new token set, with the rotated refresh token,
    is written with a compare-and-swap on the version it replaces *before* the access token
    is returned; refresh and write are shielded from cancellation (bounded by the provider
    timeout and the store's own timeouts), so a cancelled request cannot drop them.

    **Failures.**

    - The provider answers ``invalid_grant`` (or the refresh token is known to have
      expired, or there is none): the entry is deleted (only the version that failed) and
      :class:`~keyloom_core.ReauthenticationRequiredError` is raised: sign in again. No
      entry at all raises its subclass :class:`NotSignedInError`.
    - A needed scope the user did not grant raises :class:`~keyloom_core.ScopeDeniedError`
      before any provider call.
    - Writing refreshed tokens fails: the write is retried *write_attempts* times with a
      doubling backoff from *write_backoff* seconds. If every attempt fails the token set
      stays in this manager's recovery slot (process memory), an error is logged (provider,
      account and cause; never a token) and :class:`TokenStoreWriteError` is raised. No
      access token from the unsaved set is handed out. Every later call for the account
      (``access_token``, ``logout``) first writes the held set (compare-and-swap on the
      version it replaces), and :meth:`flush` writes them all; call it before the process
      exits. If the stored entry changed meanwhile (a new sign-in) the held set is dropped
      in favour of the store. What stays unrecoverable: the process dying while it holds
      a set, and other processes that, seeing the old entry, refresh with the dead refresh
      token; they get ``invalid_grant`` and delete only that old version.

    :param store: where tokens live.
    :param keyloom: the instance to refresh and revoke with; or call :meth:`bind` later.
    :param skew: refresh tokens expiring within this many seconds.
    :param lock_ttl: seconds a refresh lock lasts if its holder dies; default
        ``2 * keyloom.timeout + 10``.
    :param lock_wait: seconds to wait for a refresh lock; default ``lock_ttl + 5``.
    :param write_attempts: tries to write refreshed tokens before holding them.
    :param write_backoff: first pause between write attempts, doubled each time.
    :param clock: the time source for expiry checks.
    """

    def __init__(
        self,
        store: TokenStore,
        keyloom: Keyloom | None = None,
        *,
        skew: float = 60.0,
        lock_ttl: float | None = None,
        lock_wait: float | None = None,
        write_attempts: int = 3,
        write_backoff: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if write_attempts < 1:
            msg = "write_attempts must be at least 1"
            raise ValueError(msg)
        self.store = store
        self.skew = skew
        self.write_attempts = write_attempts
        self.write_backoff = write_backoff
        self._lock_ttl = lock_ttl
        self._lock_wait = lock_wait
        self._clock = clock
        self._keyloom: Keyloom | None = None
        self._locks = KeyedLocks()
        self._held: dict[Key, _Held] = {}
        self.plugin = TokenStorePlugin(self)
        if keyloom is not None:
            self.bind(keyloom)

    def __repr__(self) -> str:
        return f"TokenManager(store={self.store!r}, skew={self.skew:g}, held={len(self._held)})"

    # -- wiring --------------------------------------------------------------------------

    def bind(self, keyloom: Keyloom) -> TokenManager:
        """Use *keyloom* for refresh and revocation.

        Its sign-ins store their tokens here when :attr:`plugin` was passed to
        ``define_keyloom(plugins=[...])``; a Keyloom instance takes no plugins afterwards.
        Binding an instance built without it still registers it, with a
        :class:`DeprecationWarning` (this will become an error).

        :raises RuntimeError: already bound to another instance.
        """
        if self._keyloom is not None and self._keyloom is not keyloom:
            msg = "this TokenManager is already bound to another Keyloom instance"
            raise RuntimeError(msg)
        self._keyloom = keyloom
        if not keyloom.registry.pm.is_registered(self.plugin):
            warnings.warn(
                "pass the token manager's plugin to define_keyloom(plugins=[manager.plugin]); "
                "adding it in bind() is deprecated",
                DeprecationWarning,
                stacklevel=2,
            )
            keyloom.registry.add(self.plugin, "keyloom.tokens")
        return self

    def _bound(self) -> Keyloom:
        if self._keyloom is None:
            msg = "TokenManager is not bound: call manager.bind(keyloom)"
            raise RuntimeError(msg)
        return self._keyloom

    @property
    def lock_ttl(self) -> float:
        """Seconds a refresh lock lasts if its holder dies."""
        if self._lock_ttl is not None:
            return self._lock_ttl
        timeout = self._keyloom.timeout if self._keyloom is not None else 10.0
        return 2 * timeout + 10

    @property
    def lock_wait(self) -> float:
        """Seconds to wait for a refresh lock."""
        return self._lock_wait if self._lock_wait is not None else self.lock_ttl + 5

    @property
    def held(self) -> frozenset[Key]:
        """``(provider_id, account_id)`` of refreshed token sets not yet written."""
        return frozenset(self._held)

    # -- sign-in and sign-out ------------------------------------------------------------

    async def save_login(self, result: LoginResult) -> StoredGrant:
        """Store a sign-in's tokens, replacing the account's previous ones.

        The account id is ``result.tokens.account_id`` or else the profile id (as in the
        session cookie's ``provider_account_id``).
        """
        account_id = result.tokens.account_id or result.profile.id
        key = (result.provider_id, account_id)
        self._held.pop(key, None)  # a new sign-in supersedes unsaved older tokens
        grant = await self.store.put(*key, result.tokens, scopes=result.granted_scopes)
        if grant is None:  # pragma: no cover - an unconditional put always writes
            msg = "the token store refused an unconditional write"
            raise TokenStoreError(msg, provider_id=key[0], account_id=account_id)
        log.info("stored tokens: provider=%s account=%s v%d", key[0], account_id, grant.version)
        return grant

    async def logout(self, provider_id: str, account_id: str, *, revoke: bool = True) -> bool:
        """Delete the account's tokens, then revoke them at the provider (unless *revoke* is false).

        Waits for a refresh in progress, so the newest tokens are the ones revoked; tokens
        held after a failed write are revoked too. The entry is deleted first, so the user
        is signed out here even if the provider is slow or refuses; a failed revocation is
        logged. Returns whether an entry was deleted.
        """
        key = (provider_id, account_id)
        async with (
            self._locks.hold(key, wait=self.lock_wait),
            self.store.lock(*key, ttl=self.lock_ttl, wait=self.lock_wait),
        ):
            held = self._held.pop(key, None)
            try:
                grant = await self.store.get(*key)
            except TokenDecryptionError:
                grant = None
            deleted = await self.store.delete(*key)
        log.info("signed out: provider=%s account=%s", provider_id, account_id)
        if revoke:
            if held is not None:
                await self._revoke(provider_id, held.tokens)
            if grant is not None:
                await self._revoke(provider_id, grant.tokens)
        return deleted

    async def on_logout(self, session: Session) -> None:
        """The web integrations' ``on_logout``: sign the account out here and at the provider.

        ``setup_keyloom(app, keyloom, on_logout=manager.on_logout)`` (or ``KeyloomASGI``).
        Returns ``None`` so the web layer does not revoke a second time.
        """
        await self.logout(session.provider_id, session.provider_account_id)

    async def _revoke(self, provider_id: str, tokens: TokenSet) -> None:
        try:
            await self._bound().revoke(provider_id, tokens)
        except KeyloomError as exc:
            log.warning("could not revoke tokens at %s: %s", provider_id, exc.code)

    # -- access tokens -------------------------------------------------------------------

    async def access_token(
        self, provider_id: str, account_id: str, *, needs: Iterable[str] = ()
    ) -> str:
        """A valid access token for the account, refreshed first if it is due.

        :param needs: scopes the caller's API call needs; checked against the granted
            scopes before any provider call.
        :raises NotSignedInError: nothing is stored for the account.
        :raises ReauthenticationRequiredError: the refresh token is dead (entry deleted).
        :raises ScopeDeniedError: a needed scope was not granted (``.missing`` names it).
        :raises TokenStoreWriteError: refreshed tokens could not be saved (held for a retry).
        :raises TokenStoreError: the store failed; :class:`TokenLockTimeoutError` if the
            refresh lock stayed taken.
        :raises ProviderError: the refresh failed for another reason (nothing changed).
        """
        grant = await self.grant(provider_id, account_id, needs=needs)
        return grant.tokens.access_token

    async def grant(
        self, provider_id: str, account_id: str, *, needs: Iterable[str] = ()
    ) -> StoredGrant:
        """The account's stored grant with a valid access token, refreshed first if due.

        Raises as :meth:`access_token` does.
        """
        key = (provider_id, account_id)
        needed = parse_scopes(needs)
        if key not in self._held:
            grant = await self._read(key)
            self._check_scopes(grant, needed)
            if self._fresh(grant):
                return grant
        async with self._locks.hold(key, wait=self.lock_wait):
            if key in self._held:
                grant, _ = await self._write_held(key)
            else:
                grant = await self._read(key)
            self._check_scopes(grant, needed)
            if self._fresh(grant):
                return grant
            async with self.store.lock(*key, ttl=self.lock_ttl, wait=self.lock_wait):
                grant = await self._read(key)  # another process may have refreshed
                self._check_scopes(grant, needed)
                if self._fresh(grant):
                    return grant
                with anyio.CancelScope(shield=True):
                    grant = await self._refresh(grant)
        self._check_scopes(grant, needed)
        return grant

    async def flush(self) -> int:
        """Write every held token set; return how many are still held (0: all saved)."""
        for key in list(self._held):
            async with self._locks.hold(key, wait=self.lock_wait):
                if key in self._held:
                    try:
                        await self._write_held(key)
                    except KeyloomError as exc:
                        log.warning(
                            "held tokens not written: provider=%s account=%s: %s",
                            key[0],
                            key[1],
                            exc.code,
                        )
        return len(self._held)

    # -- internals -----------------------------------------------------------------------

    def _fresh(self, grant: StoredGrant) -> bool:
        expires_at = grant.tokens.expires_at
        if expires_at is None:
            return True
        # Never refresh more than halfway through a token's life, so a provider whose
        # tokens live shorter than the skew does not cause a refresh on every call.
        skew = min(self.skew, max(expires_at - grant.updated_at, 0.0) / 2)
        return expires_at - skew > self._clock()

    @staticmethod
    def _check_scopes(grant: StoredGrant, needed: frozenset[str]) -> None:
        missing = needed - grant.granted_scopes
        if missing:
            raise ScopeDeniedError(missing, provider_id=grant.provider_id)

    async def _read(self, key: Key) -> StoredGrant:
        grant = await self.store.get(*key)
        if grant is None:
            msg = "no tokens are stored for this account: sign in"
            raise NotSignedInError(msg, provider_id=key[0])
        return grant

    async def _refresh(self, grant: StoredGrant, *, retry: bool = True) -> StoredGrant:
        key = (grant.provider_id, grant.account_id)
        keyloom = self._bound()
        tokens = grant.tokens
        expired = tokens.refresh_expires_at is not None and tokens.refresh_expires_at <= (
            self._clock()
        )
        if not tokens.refresh_token or expired:
            replaced = await self._forget(grant, "refresh token missing or expired")
            if replaced is not None:
                return replaced
            msg = "the refresh token has expired: sign in again"
            raise ReauthenticationRequiredError(msg, provider_id=key[0])
        try:
            new = await keyloom.refresh(key[0], tokens)
        except ReauthenticationRequiredError:
            replaced = await self._forget(grant, "refresh token refused")
            if replaced is not None:
                return replaced
            raise
        scopes = new.scopes if new.scopes is not None else grant.granted_scopes
        self._held[key] = _Held(grant.version, new, frozenset(scopes))
        saved, written = await self._write_held(key)
        if not written:
            if retry and not self._fresh(saved):
                return await self._refresh(saved, retry=False)
            return saved
        log.info("refreshed tokens: provider=%s account=%s v%d", key[0], key[1], saved.version)
        return saved

    async def _forget(self, grant: StoredGrant, why: str) -> StoredGrant | None:
        """Delete the dead *grant* (that version only); return a fresh replacement, if any."""
        key = (grant.provider_id, grant.account_id)
        deleted = await self.store.delete(*key, if_version=grant.version)
        log.info("%s: provider=%s account=%s v%d deleted=%s", why, *key, grant.version, deleted)
        if deleted:
            return None
        current = await self.store.get(*key)  # replaced meanwhile (a new sign-in)?
        return current if current is not None and self._fresh(current) else None

    async def _write_held(self, key: Key) -> tuple[StoredGrant, bool]:
        """Write the held set (compare-and-swap), retrying; the store wins a conflict.

        Returns the stored grant and whether it is the held set (``False``: the stored
        entry had changed, and the held set was dropped).
        """
        held = self._held[key]
        failure: BaseException | None = None
        for attempt in range(self.write_attempts):
            if attempt:
                await anyio.sleep(self.write_backoff * 2 ** (attempt - 1))
            try:
                saved = await self.store.put(
                    *key, held.tokens, scopes=held.scopes, if_version=held.base_version
                )
            except Exception as exc:  # any store failure: the tokens must not be lost
                failure = exc
                log.warning(
                    "writing refreshed tokens failed: provider=%s account=%s attempt %d/%d: %s",
                    key[0],
                    key[1],
                    attempt + 1,
                    self.write_attempts,
                    type(exc).__name__,
                )
                continue
            del self._held[key]
            if saved is not None:
                return saved, True
            log.warning(
                "stored tokens changed during a refresh; keeping the store's: "
                "provider=%s account=%s",
                key[0],
                key[1],
            )
            return await self._read(key), False
        log.error(
            "refreshed tokens could not be written: provider=%s account=%s; held in memory "
            "until a later call or flush() writes them",
            key[0],
            key[1],
        )
        msg = (
            f"refreshed tokens could not be saved after {self.write_attempts} attempts; "
            "they are held in this process for a retry"
        )
        raise TokenStoreWriteError(msg, provider_id=key[0], account_id=key[1]) from failure


class TokenStorePlugin:
    """The Keyloom plugin that stores every sign-in's tokens with a :class:`TokenManager`.

    Available as ``manager.plugin``; pass it to ``define_keyloom(plugins=[...])``.

    Attributes:
        manager: The manager that stores the tokens.
    """

    def __init__(self, manager: TokenManager) -> None:
        self.manager = manager

    def __repr__(self) -> str:
        return "TokenStorePlugin()"

    @hookimpl
    async def login_succeeded(self, provider: Provider, result: LoginResult) -> None:
        """Store the tokens; a store failure fails the sign-in (a :class:`TokenStoreError`)."""
        del provider
        await self.manager.save_login(result)
