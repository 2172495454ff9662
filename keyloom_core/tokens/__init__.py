"""Token lifecycle: encrypted token stores and a manager that refreshes once, safely.

A sign-in is only the start: the app then calls the provider for months with the user's
tokens. TikTok's access tokens are short-lived and its refresh tokens rotate, so two
workers refreshing one account at once, or a crash between receiving and saving the new
refresh token, would lock the user out. :class:`TokenManager` prevents the first (one
refresh per account at a time, across processes) and narrows the second to the moment
between the provider's answer and the store's write (retried, then held for a retry).

Stores (all implement :class:`TokenStore`):

- :class:`MemoryTokenStore`: one process; tests and scripts.
- :class:`SQLiteTokenStore` (``keyloom_core.tokens.sqlite``): a file; the processes of one host.
- :class:`RedisTokenStore` (``keyloom_core.tokens.redis``, ``keyloom-core[redis]``): every host.

SQLite and Redis encrypt tokens at rest (AES-256-GCM, key derived from the app's secret
with HKDF-SHA256; old secrets still decrypt, writes re-encrypt with the current one).

Usage::

    from keyloom_core.tokens import SQLiteTokenStore, TokenManager

    manager = TokenManager(SQLiteTokenStore("tokens.db", secret=SECRET))
    keyloom = define_keyloom(providers=[tiktok()], secret=SECRET, plugins=[manager.plugin])
    manager.bind(keyloom)               # refresh / revoke through this instance
    async with keyloom:
        token = await manager.access_token("tiktok", open_id, needs={"video.list"})
        ...
        await manager.logout("tiktok", open_id)   # revoke at TikTok, then delete

:class:`RedisTokenStore` is imported lazily, so this package does not need ``redis``
unless it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._crypto import LegacyEntries as LegacyEntries
from ._crypto import TokenCipher as TokenCipher
from ._manager import TokenManager as TokenManager
from ._manager import TokenStorePlugin as TokenStorePlugin
from ._store import NotSignedInError as NotSignedInError
from ._store import StoredGrant as StoredGrant
from ._store import TokenDecryptionError as TokenDecryptionError
from ._store import TokenLockTimeoutError as TokenLockTimeoutError
from ._store import TokenStore as TokenStore
from ._store import TokenStoreError as TokenStoreError
from ._store import TokenStoreWriteError as TokenStoreWriteError
from ._store import hold_lease as hold_lease
from .memory import MemoryTokenStore as MemoryTokenStore
from .sqlite import SQLiteTokenStore as SQLiteTokenStore

if TYPE_CHECKING:
    from .redis import RedisTokenStore as RedisTokenStore

__all__ = [
    "LegacyEntries",
    "MemoryTokenStore",
    "NotSignedInError",
    "RedisTokenStore",
    "SQLiteTokenStore",
    "StoredGrant",
    "TokenCipher",
    "TokenDecryptionError",
    "TokenLockTimeoutError",
    "TokenManager",
    "TokenStore",
    "TokenStoreError",
    "TokenStorePlugin",
    "TokenStoreWriteError",
    "hold_lease",
]


def __getattr__(name: str) -> Any:
    if name == "RedisTokenStore":
        from .redis import RedisTokenStore  # noqa: PLC0415

        return RedisTokenStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
