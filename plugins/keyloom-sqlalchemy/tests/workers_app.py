"""The multi-worker test app (the core's ``tests/workers/apps.py``) on a SQLAlchemyStore.

``KEYLOOM_STORE`` is a ``postgresql+asyncpg://`` URL: each worker process opens its own
:class:`~keyloom_sqlalchemy.SQLAlchemyStore` (a pool of at most 10 connections) on it, for
used states, sessions, rate limits and tokens. Served by ``uvicorn workers_app:asgi_app
--factory``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from keyloom_sqlalchemy import SQLAlchemyStore

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "workers"))
apps: Any = importlib.import_module("apps")


def open_store(url: str, *, namespace: str = "app") -> SQLAlchemyStore:
    """The app's store: PostgreSQL through SQLAlchemy instead of the core's URL schemes."""
    return SQLAlchemyStore(
        url, namespace=namespace, engine_options={"pool_size": 5, "max_overflow": 5}
    )


apps.open_store = open_store
asgi_app = apps.asgi_app
