"""One store for everything an app's processes share: used login states, sessions, rate limits.

Configure it once, ``define_keyloom(store=...)``, and every process of the app agrees:

- a login state is accepted once, whichever worker sees the callback;
- sessions live server-side (the cookie holds a signed, opaque id): logout and
  ``keyloom.sessions.revoke_all(user_id)`` end them on every worker at the next request;
- inbound rate limits on ``/start`` and ``/callback`` count across workers;
- ``store.token_store(secret=...)`` gives a :class:`~keyloom_core.tokens.TokenManager` a
  token store on the same backend (one SQLite file or one Redis for all of it).

Stores:

- :class:`MemoryStore`: one process; tests.
- :class:`SQLiteStore` (``keyloom_core.store.sqlite``): one file, WAL, off the event loop;
  the processes of one host. The embedded default.
- :class:`RedisStore` (``keyloom_core.store.redis``, ``keyloom-core[redis]``): every host;
  Redis Cluster works (one user's keys share a hash tag).

``define_keyloom(store="sqlite:///var/lib/app/keyloom.db")`` or ``"redis://host:6379/0"``
builds one from a URL (:func:`open_store`); ``KEYLOOM_STORE`` is read when no store is given.
Other schemes come from installed packages' ``keyloom.stores`` entry points, named by the
scheme (``keyloom-sqlalchemy``: ``postgresql+asyncpg://…``).
Backend failures raise :class:`StoreUnavailableError`, which the web routes answer with
``503 {"error": "store_unavailable"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import SessionRecord as SessionRecord
from ._base import Store as Store
from ._base import StoreUnavailableError as StoreUnavailableError
from ._base import TooManyRequestsError as TooManyRequestsError
from ._base import new_session_id as new_session_id
from ._base import session_tag as session_tag
from ._limits import Limit as Limit
from ._limits import RateLimits as RateLimits
from ._limits import client_address as client_address
from ._sessions import SessionRegistry as SessionRegistry
from .memory import MemoryStore as MemoryStore

if TYPE_CHECKING:
    from .redis import RedisStore as RedisStore
    from .sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "Limit",
    "MemoryStore",
    "RateLimits",
    "RedisStore",
    "SQLiteStore",
    "SessionRecord",
    "SessionRegistry",
    "Store",
    "StoreUnavailableError",
    "TooManyRequestsError",
    "client_address",
    "new_session_id",
    "open_store",
    "session_tag",
]


#: The entry-point group of stores other packages provide, by URL scheme. Each entry point
#: is a callable ``(url, *, namespace) -> Store``.
STORE_ENTRY_POINTS = "keyloom.stores"


def open_store(url: str, *, namespace: str = "app") -> Store:
    """A store from a URL: ``memory://``, ``sqlite:///path/file.db`` (or ``sqlite:relative.db``),
    ``redis://…`` / ``rediss://…`` / ``unix://…``, or a scheme an installed package offers
    through the ``keyloom.stores`` entry points (``postgresql+asyncpg://…`` with
    ``keyloom-sqlalchemy``). Nothing connects until first use.

    :raises ConfigurationError: an unknown scheme.
    """  # noqa: D205
    from ..errors import ConfigurationError  # noqa: PLC0415

    scheme, sep, rest = url.partition(":")
    if sep and scheme == "memory":
        return MemoryStore(namespace=namespace)
    if sep and scheme == "sqlite":
        path = rest.removeprefix("//")
        if not path:
            msg = "a sqlite store URL needs a file: sqlite:///path/to/keyloom.db"
            raise ConfigurationError(msg)
        from .sqlite import SQLiteStore  # noqa: PLC0415

        return SQLiteStore(path, namespace=namespace)
    if sep and scheme in {"redis", "rediss", "unix"}:
        from .redis import RedisStore  # noqa: PLC0415

        return RedisStore(url, namespace=namespace)
    if sep and (factory := _entry_point_store(scheme)) is not None:
        store: Store = factory(url, namespace=namespace)
        return store
    msg = "the store URL must start with memory://, sqlite:/// or redis://"
    hint = None
    if "+" in scheme or scheme in {"postgresql", "postgres", "mysql"}:
        hint = "pip install keyloom-sqlalchemy, and name an async driver: postgresql+asyncpg://"
    raise ConfigurationError(msg, hint=hint)


def _entry_point_store(scheme: str) -> Any:
    """The factory an installed package registered for *scheme*, or ``None``."""
    from importlib.metadata import entry_points  # noqa: PLC0415

    for entry_point in entry_points(group=STORE_ENTRY_POINTS, name=scheme):
        return entry_point.load()
    return None


def __getattr__(name: str) -> Any:
    # Imported on first use: SQLite and anyio stay off the import of keyloom_core.
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore  # noqa: PLC0415

        return SQLiteStore
    if name == "RedisStore":
        from .redis import RedisStore  # noqa: PLC0415

        return RedisStore
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
