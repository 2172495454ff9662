"""An in-process token store, for tests, scripts and single-process apps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from ._store import KeyedLocks, StoredGrant

if TYPE_CHECKING:
    from ..models import TokenSet

__all__ = ["MemoryTokenStore"]


class MemoryTokenStore:
    """A :class:`~keyloom_core.tokens.TokenStore` in a dict: lost when the process exits.

    Nothing is encrypted (nothing is at rest) and the lock only covers this process, so
    use it for tests and single-process tools; apps with several processes need
    :class:`~keyloom_core.tokens.SQLiteTokenStore` or
    :class:`~keyloom_core.tokens.RedisTokenStore`.

    :param clock: the time source of ``updated_at``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._grants: dict[tuple[str, str], StoredGrant] = {}
        self._locks = KeyedLocks()

    def __repr__(self) -> str:
        return f"MemoryTokenStore(entries={len(self._grants)})"

    def __len__(self) -> int:
        return len(self._grants)

    async def get(self, provider_id: str, account_id: str) -> StoredGrant | None:
        """The stored grant, or ``None``."""
        return self._grants.get((provider_id, account_id))

    async def put(
        self,
        provider_id: str,
        account_id: str,
        tokens: TokenSet,
        *,
        scopes: Iterable[str],
        if_version: int | None = None,
    ) -> StoredGrant | None:
        """Write the next version; with *if_version*, only over exactly that version."""
        key = (provider_id, account_id)
        current = self._grants.get(key)
        if if_version is not None and (current is None or current.version != if_version):
            return None
        version = 1 if current is None else current.version + 1
        grant = StoredGrant.new(provider_id, account_id, tokens, scopes, version, now=self._clock())
        self._grants[key] = grant
        return grant

    async def delete(
        self, provider_id: str, account_id: str, *, if_version: int | None = None
    ) -> bool:
        """Remove the entry (only version *if_version*, when given)."""
        key = (provider_id, account_id)
        current = self._grants.get(key)
        if current is None or (if_version is not None and current.version != if_version):
            return False
        del self._grants[key]
        return True

    def lock(
        self, provider_id: str, account_id: str, *, ttl: float, wait: float
    ) -> AbstractAsyncContextManager[None]:
        """An in-process lock (*ttl* is moot: a dead holder took the process with it)."""
        del ttl
        return self._locks.hold((provider_id, account_id), wait=wait)

    async def aclose(self) -> None:
        """Nothing to release."""
